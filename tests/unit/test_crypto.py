"""repobox_cli.crypto on its own: key formats, every decrypt failure, masking, token kinds."""

from __future__ import annotations

import base64
import os
import shutil

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from repobox_cli.crypto import (
    EncryptionKey,
    decrypt,
    encrypt,
    mask_token,
    parse_key,
    token_kind,
)
from repobox_cli.errors import DecryptError, KeyFormatError, RepoboxError, SettingsError

KEY_BYTES = bytes(range(32))
HEX_KEY = KEY_BYTES.hex()
BASE64_KEY = base64.b64encode(KEY_BYTES).decode()
RAW_KEY = "0123456789abcdefghijklmnopqrstuv"
TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encrypt_bytes(plaintext: bytes, key: bytes, iv: bytes | None = None) -> str:
    """An independent AES-256-GCM implementation (pyca/cryptography), in the web app's format."""
    iv = os.urandom(12) if iv is None else iv
    sealed = AESGCM(key).encrypt(iv, plaintext, None)
    body, tag = sealed[:-16], sealed[-16:]
    return f"{b64(iv)}:{b64(tag)}:{b64(body)}"


@pytest.fixture
def key() -> EncryptionKey:
    return parse_key(HEX_KEY)


# -- parse_key ----------------------------------------------------------------------------------


def test_hex_key() -> None:
    parsed = parse_key(HEX_KEY)
    assert parsed.key_bytes == KEY_BYTES
    assert "hex" in parsed.key_format


def test_hex_key_upper_case() -> None:
    assert parse_key(HEX_KEY.upper()).key_bytes == KEY_BYTES


def test_base64_key() -> None:
    assert len(BASE64_KEY) == 44
    parsed = parse_key(BASE64_KEY)
    assert parsed.key_bytes == KEY_BYTES
    assert "base64" in parsed.key_format


def test_raw_key() -> None:
    parsed = parse_key(RAW_KEY)
    assert parsed.key_bytes == RAW_KEY.encode()
    assert "raw" in parsed.key_format


def test_formats_are_tried_in_order_hex_first() -> None:
    # 64 characters that are hex: hex, not a 64-byte raw key (which would be refused anyway)
    assert parse_key("ab" * 32).key_bytes == b"\xab" * 32
    # 32 hex characters are not a hex key (16 bytes) but a valid raw key
    assert parse_key("ab" * 16).key_format == parse_key(RAW_KEY).key_format
    assert parse_key("ab" * 16).key_bytes == b"ab" * 16


def test_key_repr_hides_the_bytes() -> None:
    assert KEY_BYTES.hex() not in repr(parse_key(HEX_KEY))
    assert repr(KEY_BYTES) not in repr(parse_key(HEX_KEY))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "short",
        HEX_KEY[:-1],  # 63 hex characters
        HEX_KEY + "0",  # 65 hex characters
        "g" * 64,  # 64 characters, not hex, not 32
        RAW_KEY + "x",  # 33 raw characters
        RAW_KEY[:-1],  # 31 raw characters
        "!" * 44,  # 44 characters, not base64
        b64(bytes(33))[:44],  # 44 base64 characters that do not decode to 32 bytes
        HEX_KEY + "\n",  # a trailing newline is not silently accepted
        " " + RAW_KEY,
    ],
)
def test_bad_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        parse_key(text)
    message = str(info.value)
    assert "64 hex" in message and "44 base64" in message and "32 raw" in message
    assert f"got {len(text)} characters" in message
    if text:
        assert text.strip() not in message  # the key itself is never echoed


def test_key_errors_are_settings_errors() -> None:
    assert issubclass(KeyFormatError, SettingsError)
    assert issubclass(DecryptError, RepoboxError)


# -- decrypt ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_text", [HEX_KEY, BASE64_KEY, RAW_KEY])
def test_round_trip_with_each_key_format(key_text: str) -> None:
    key = parse_key(key_text)
    assert decrypt(encrypt(TOKEN, key), key) == TOKEN


def test_decrypts_what_an_independent_implementation_encrypted(key: EncryptionKey) -> None:
    assert decrypt(encrypt_bytes(TOKEN.encode(), KEY_BYTES), key) == TOKEN


def test_unicode_and_empty_plaintexts(key: EncryptionKey) -> None:
    for text in ["", "glpat-ü€😀", "a:b:c"]:
        assert decrypt(encrypt_bytes(text.encode(), KEY_BYTES), key) == text


def test_surrounding_whitespace_is_ignored(key: EncryptionKey) -> None:
    assert decrypt("  " + encrypt(TOKEN, key) + "\n", key) == TOKEN


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("key_text", [HEX_KEY, BASE64_KEY, RAW_KEY])
def test_decrypts_what_node_encrypted(key_text: str) -> None:
    from tests.support.node_crypto import node_encrypt

    assert decrypt(node_encrypt(TOKEN, key_text), parse_key(key_text)) == TOKEN


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_decrypts_what_encrypt_wrote(key: EncryptionKey) -> None:
    """`repobox demo` stores tokens with `encrypt`: the web app's own decrypt must read them."""
    from tests.support.node_crypto import node_decrypt

    for text in (TOKEN, "", "ünïcødé ✓ token"):
        assert node_decrypt(encrypt(text, key), key.key_bytes.hex()) == text


@pytest.mark.parametrize("text", ["", "abc", "a:b", "a:b:c:d", "::::"])
def test_wrong_number_of_parts(key: EncryptionKey, text: str) -> None:
    with pytest.raises(DecryptError, match=r"not in iv:authTag:ciphertext form .*expected 3"):
        decrypt(text, key)


@pytest.mark.parametrize(("index", "name"), [(0, "IV"), (1, "auth tag"), (2, "ciphertext")])
def test_bad_base64_names_the_part(key: EncryptionKey, index: int, name: str) -> None:
    parts = encrypt(TOKEN, key).split(":")
    parts[index] = "%%not*base64%%"
    with pytest.raises(DecryptError, match=f"^the {name} is not valid base64$"):
        decrypt(":".join(parts), key)


def test_truncated_base64_is_bad_base64(key: EncryptionKey) -> None:
    iv, tag, body = encrypt(TOKEN, key).split(":")
    with pytest.raises(DecryptError, match="the ciphertext is not valid base64"):
        decrypt(f"{iv}:{tag}:{body[:-3]}", key)


@pytest.mark.parametrize("iv_len", [0, 8, 11, 13, 16])
def test_iv_length(key: EncryptionKey, iv_len: int) -> None:
    _, tag, body = encrypt(TOKEN, key).split(":")
    with pytest.raises(DecryptError, match=f"^the IV is {iv_len} bytes, expected 12$"):
        decrypt(f"{b64(os.urandom(iv_len))}:{tag}:{body}", key)


@pytest.mark.parametrize("tag_len", [0, 12, 15, 17, 32])
def test_tag_length(key: EncryptionKey, tag_len: int) -> None:
    iv, _, body = encrypt(TOKEN, key).split(":")
    with pytest.raises(DecryptError, match=f"^the auth tag is {tag_len} bytes, expected 16$"):
        decrypt(f"{iv}:{b64(os.urandom(tag_len))}:{body}", key)


def _flip_first_byte(part: str) -> str:
    raw = bytearray(base64.b64decode(part))
    raw[0] ^= 0x01
    return b64(bytes(raw))


@pytest.mark.parametrize("index", [0, 1, 2], ids=["iv", "tag", "ciphertext"])
def test_tampered_data_fails_the_mac(key: EncryptionKey, index: int) -> None:
    parts = encrypt(TOKEN, key).split(":")
    parts[index] = _flip_first_byte(parts[index])
    with pytest.raises(DecryptError, match="authentication failed") as info:
        decrypt(":".join(parts), key)
    assert "altered" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)  # translated where it entered, with `from`


def test_wrong_key_fails_the_mac(key: EncryptionKey) -> None:
    other = parse_key("00" * 32)
    with pytest.raises(DecryptError, match="authentication failed: wrong ENCRYPTION_KEY"):
        decrypt(encrypt(TOKEN, key), other)


def test_non_utf8_plaintext(key: EncryptionKey) -> None:
    with pytest.raises(DecryptError, match="^the decrypted data is not UTF-8 text$") as info:
        decrypt(encrypt_bytes(b"\xff\xfe\x00bad", KEY_BYTES), key)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_each_failure_has_its_own_message(key: EncryptionKey) -> None:
    iv, tag, body = encrypt(TOKEN, key).split(":")
    cases = {
        "parts": "a:b",
        "base64": f"{iv}:{tag}:***",
        "iv": f"{b64(bytes(16))}:{tag}:{body}",
        "tag": f"{iv}:{b64(bytes(8))}:{body}",
        "mac": f"{iv}:{tag}:{_flip_first_byte(body)}",
        "utf8": encrypt_bytes(b"\xc3\x28", KEY_BYTES),
    }
    messages = {}
    for name, text in cases.items():
        with pytest.raises(DecryptError) as info:
            decrypt(text, key)
        messages[name] = str(info.value)
        assert "\n" not in messages[name]
        assert TOKEN not in messages[name]
    assert len(set(messages.values())) == len(cases), messages


# -- mask_token and token_kind -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "masked"),
    [
        ("", "****"),
        ("a", "****"),
        ("ghp_12345678", "****"),  # 12 characters: fully masked
        ("ghp_123456789", "ghp_****6789"),  # 13 characters: first 4 and last 4
        ("ghp_abcdefghij", "ghp_****ghij"),  # the SPEC's example
        (TOKEN, "ghp_****Q7r8"),
    ],
)
def test_mask_token(token: str, masked: str) -> None:
    assert mask_token(token) == masked


@given(st.text(min_size=13, max_size=200))
def test_mask_never_keeps_more_than_eight_characters(token: str) -> None:
    masked = mask_token(token)
    assert masked == token[:4] + "****" + token[-4:]
    assert len(masked) == 12


@given(st.text(max_size=12))
def test_short_tokens_are_fully_masked(token: str) -> None:
    assert mask_token(token) == "****"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("ghp_" + "x" * 36, "GitHub classic"),
        ("github_pat_11ABCDEFG0_" + "x" * 59, "GitHub fine-grained"),
        ("glpat-" + "x" * 20, "GitLab"),
        ("gho_" + "x" * 36, "OAuth"),
        ("ghs_" + "x" * 36, "App installation"),
        ("x" * 40, "unknown"),
        ("GHP_" + "x" * 36, "unknown"),  # prefixes are case-sensitive
        ("", "unknown"),
    ],
)
def test_token_kind(token: str, expected: str) -> None:
    kind = token_kind(token)
    assert expected in kind
    if expected == "unknown":
        assert kind == "unknown"


def test_raw_key_counts_characters_like_the_web_app() -> None:
    # 16 two-byte characters are 32 bytes but 16 characters: the web app refuses such a key.
    with pytest.raises(KeyFormatError):
        parse_key("é" * 16)


def test_base64_key_may_use_the_url_safe_alphabet_as_node_does() -> None:
    key = bytes([0xFB, 0xFF] * 16)
    standard = base64.b64encode(key).decode()
    url_safe = base64.urlsafe_b64encode(key).decode()
    assert standard != url_safe
    assert parse_key(url_safe).key_bytes == parse_key(standard).key_bytes == key
