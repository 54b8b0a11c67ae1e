"""Encrypt secrets exactly like the web app does (Node ``crypto``, AES-256-GCM).

Output format: ``base64(iv):base64(authTag):base64(ciphertext)`` with a random
12-byte IV.  Key and plaintexts travel to node via stdin as JSON, never argv.
"""

from __future__ import annotations

import json
import subprocess

NODE_DEADLINE_S = 30.0

# Mirrors the web app's key parsing and encryption routine.
_NODE_SCRIPT = r"""
const crypto = require('crypto');

function parseKey(key) {
  if (/^[0-9a-fA-F]{64}$/.test(key)) {
    return Buffer.from(key, 'hex');
  }
  if (key.length === 44) {
    const buf = Buffer.from(key, 'base64');
    if (buf.length === 32) return buf;
  }
  if (key.length === 32) {
    return Buffer.from(key, 'utf8');
  }
  throw new Error(
    'Invalid encryption key: expected 64 hex chars, 44 base64 chars or 32 characters');
}

function encrypt(plaintext, key) {
  const iv = crypto.randomBytes(12);
  const cipher = crypto.createCipheriv('aes-256-gcm', key, iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  const authTag = cipher.getAuthTag();
  return `${iv.toString('base64')}:${authTag.toString('base64')}:${ciphertext.toString('base64')}`;
}

const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  try {
    const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const key = parseKey(input.key);
    const out = input.plaintexts.map((p) => encrypt(p, key));
    process.stdout.write(JSON.stringify(out));
  } catch (err) {
    process.stderr.write(String(err && err.message ? err.message : err));
    process.exit(2);
  }
});
"""


class NodeCryptoError(RuntimeError):
    pass


def node_encrypt_many(plaintexts: list[str], key: str) -> list[str]:
    """Encrypt each plaintext with `key` in a single node process."""
    payload = json.dumps({"key": key, "plaintexts": list(plaintexts)})
    result = subprocess.run(
        ["node", "-e", _NODE_SCRIPT],
        input=payload.encode(),
        capture_output=True,
        timeout=NODE_DEADLINE_S,
    )
    if result.returncode != 0:
        raise NodeCryptoError(
            f"node encryption failed ({result.returncode}): {result.stderr.decode(errors='replace').strip()}"
        )
    out = json.loads(result.stdout)
    if not isinstance(out, list) or len(out) != len(plaintexts):
        raise NodeCryptoError(f"unexpected node output: {result.stdout!r}")
    return [str(item) for item in out]


def node_encrypt(plaintext: str, key: str) -> str:
    """Encrypt one plaintext exactly like the web app."""
    return node_encrypt_many([plaintext], key)[0]


# Mirrors the web app's decrypt routine: the stored `iv:authTag:ciphertext` back to UTF-8 text.
_NODE_DECRYPT_SCRIPT = r"""
const crypto = require('crypto');
PARSE_KEY
function decrypt(stored, key) {
  const [iv, authTag, ciphertext] = stored.split(':').map((p) => Buffer.from(p, 'base64'));
  const decipher = crypto.createDecipheriv('aes-256-gcm', key, iv);
  decipher.setAuthTag(authTag);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
}
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  try {
    const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    process.stdout.write(JSON.stringify(decrypt(input.stored, parseKey(input.key))));
  } catch (err) {
    process.stderr.write(String(err && err.message ? err.message : err));
    process.exit(2);
  }
});
""".replace("PARSE_KEY", _NODE_SCRIPT.split("function encrypt", 1)[0].split("require('crypto');", 1)[1])


def node_decrypt(stored: str, key: str) -> str:
    """Decrypt a stored token exactly like the web app (key and ciphertext via stdin)."""
    result = subprocess.run(
        ["node", "-e", _NODE_DECRYPT_SCRIPT],
        input=json.dumps({"key": key, "stored": stored}).encode(),
        capture_output=True,
        timeout=NODE_DEADLINE_S,
    )
    if result.returncode != 0:
        raise NodeCryptoError(f"node decryption failed: {result.stderr.decode(errors='replace').strip()}")
    return str(json.loads(result.stdout))
