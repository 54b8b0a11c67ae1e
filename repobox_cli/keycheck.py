"""A start-up check that ENCRYPTION_KEY is the web app's key: a wrong key must not drain the queue
by failing every job it is handed."""

from __future__ import annotations

import redis

from repobox_cli import keys
from repobox_cli.crypto import EncryptionKey, decrypt
from repobox_cli.errors import DecryptError, SettingsError

SAMPLE_TOKENS = 20
SCAN_BATCH = 500
MAX_SCAN_CALLS = 40  # a bound on start-up time on a huge keyspace


def sample_tokens(client: redis.Redis, limit: int = SAMPLE_TOKENS) -> list[str]:
    """Up to `limit` stored provider tokens (ciphertexts), found with SCAN."""
    found: list[str] = []
    cursor = 0
    for _ in range(MAX_SCAN_CALLS):
        cursor, names = client.scan(cursor, match=keys.GIT_PROVIDER_PATTERN, count=SCAN_BATCH, _type="hash")
        for name in names:
            token = client.hget(name, "token")
            if token:
                found.append(str(token))
            if len(found) >= limit:
                return found
        if int(cursor) == 0:
            break
    return found


def check_key(client: redis.Redis, key: EncryptionKey) -> int:
    """How many sampled tokens decrypt; SettingsError when there are some and none does."""
    tokens = sample_tokens(client)
    good = 0
    for ciphertext in tokens:
        try:
            decrypt(ciphertext, key)
        except DecryptError:
            continue
        good += 1
    if tokens and not good:
        raise SettingsError(
            f"ENCRYPTION_KEY decrypts none of the {len(tokens)} stored provider token(s) "
            "sampled: it is not the web app's key (refusing to fail every job)"
        )
    return good
