"""The web app's token encryption (AES-256-GCM, `iv:tag:ciphertext` in base64), key parsing, masking."""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from typing import Any

from repobox_cli.errors import DecryptError, KeyFormatError

KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
HEX_KEY_CHARS = 64
BASE64_KEY_CHARS = 44
MASK_KEEP_CHARS = 4
SHORT_TOKEN_CHARS = 12

_HEX_RE = re.compile(r"\A[0-9a-fA-F]{64}\Z")
_BASE64_RE = re.compile(r"\A[A-Za-z0-9+/_-]{43}=\Z")  # Node also reads the URL-safe alphabet

TOKEN_KINDS: tuple[tuple[str, str], ...] = (
    ("github_pat_", "GitHub fine-grained personal access token"),
    ("ghp_", "GitHub classic personal access token"),
    ("gho_", "GitHub OAuth token"),
    ("ghs_", "GitHub App installation token"),
    ("glpat-", "GitLab personal access token"),
)


@dataclass(frozen=True)
class EncryptionKey:
    """A parsed ENCRYPTION_KEY: 32 key bytes and which of the three formats they came in."""

    key_bytes: bytes = field(repr=False)
    key_format: str


def parse_key(text: str) -> EncryptionKey:
    """Parse ENCRYPTION_KEY as 64 hex chars, else 44 base64 chars, else 32 UTF-8 bytes."""
    if _HEX_RE.match(text):
        return EncryptionKey(bytes.fromhex(text), "hex (64 characters)")
    if _BASE64_RE.match(text):
        decoded = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        if len(decoded) == KEY_BYTES:
            return EncryptionKey(decoded, "base64 (44 characters)")
    raw = text.encode("utf-8", errors="surrogatepass")
    if len(text) == KEY_BYTES and len(raw) == KEY_BYTES:
        return EncryptionKey(raw, "raw (32 bytes)")
    raise KeyFormatError(
        f"ENCRYPTION_KEY must be 64 hex characters, 44 base64 characters or 32 raw bytes (got {len(text)} characters)"
    )


def _b64_part(part: str, name: str) -> bytes:
    try:
        return base64.b64decode(part.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecryptError(f"the {name} is not valid base64") from exc


def _aes_gcm(key: bytes, iv: bytes) -> Any:
    """A new AES-256-GCM cipher. pycryptodome is imported here, not at start: loading it costs
    ≈ 50 ms that every command but the ones that decrypt would pay (`repobox --help`, `pending`)."""
    from Crypto.Cipher import AES

    return AES.new(key, AES.MODE_GCM, nonce=iv)


def decrypt(ciphertext: str, key: EncryptionKey) -> str:
    """Decrypt `base64(iv):base64(tag):base64(ciphertext)`; every failure is a DecryptError."""
    parts = ciphertext.strip().split(":")
    if len(parts) != 3:
        raise DecryptError(f"not in iv:authTag:ciphertext form ({len(parts)} part(s) separated by ':', expected 3)")
    iv = _b64_part(parts[0], "IV")
    tag = _b64_part(parts[1], "auth tag")
    body = _b64_part(parts[2], "ciphertext")
    if len(iv) != IV_BYTES:
        raise DecryptError(f"the IV is {len(iv)} bytes, expected {IV_BYTES}")
    if len(tag) != TAG_BYTES:
        raise DecryptError(f"the auth tag is {len(tag)} bytes, expected {TAG_BYTES}")
    cipher = _aes_gcm(key.key_bytes, iv)
    try:
        plain: bytes = cipher.decrypt_and_verify(body, tag)
    except ValueError as exc:
        raise DecryptError("authentication failed: wrong ENCRYPTION_KEY, or the data was altered") from exc
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecryptError("the decrypted data is not UTF-8 text") from exc


def encrypt_token(plaintext: str, key: bytes) -> str:
    """Encrypt as the web app's `crypto.ts` does: AES-256-GCM with a random 12-byte IV, stored as
    `base64(iv):base64(authTag):base64(ciphertext)` of the UTF-8 plaintext. `key` is the 32 key bytes."""
    if len(key) != KEY_BYTES:
        raise KeyFormatError(f"the key is {len(key)} bytes, expected {KEY_BYTES}")
    iv = os.urandom(IV_BYTES)
    cipher = _aes_gcm(key, iv)
    body, tag = cipher.encrypt_and_digest(plaintext.encode("utf-8"))
    return ":".join(base64.b64encode(p).decode("ascii") for p in (iv, tag, body))


def encrypt(plaintext: str, key: EncryptionKey) -> str:
    """`encrypt_token` with a parsed ENCRYPTION_KEY."""
    return encrypt_token(plaintext, key.key_bytes)


def mask_token(token: str) -> str:
    """`****` for 12 characters or fewer, else the first and last 4 around `****`."""
    if len(token) <= SHORT_TOKEN_CHARS:
        return "****"
    return f"{token[:MASK_KEEP_CHARS]}****{token[-MASK_KEEP_CHARS:]}"


def token_kind(token: str) -> str:
    """The token's kind by its prefix, or 'unknown'."""
    for prefix, kind in TOKEN_KINDS:
        if token.startswith(prefix):
            return kind
    return "unknown"
