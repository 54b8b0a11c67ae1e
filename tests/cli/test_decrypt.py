"""`repobox decrypt` as a subprocess, against tokens encrypted by Node's crypto (as the web app does)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.node_crypto import node_encrypt, node_encrypt_many
from tests.support.redis_server import RedisServer

CLI_DEADLINE_S = 30.0
KEY_BYTES = bytes(range(100, 132))
KEYS = {
    "hex": KEY_BYTES.hex(),
    "base64": base64.b64encode(KEY_BYTES).decode(),
    "raw": "Th1s-is-a-32-character-raw-key!!",
}
GITHUB_CLASSIC = "ghp_" + "Zq9Xw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa"
GITHUB_FINE = "github_pat_11AAAAAAA0" + "b" * 20 + "_" + "C" * 40
GITLAB = "glpat-" + "xY7wV6uT5sR4qP3oN2mL"
UNKNOWN = "some-opaque-token-0123456789"
TOKENS = {
    "GitHub classic": GITHUB_CLASSIC,
    "GitHub fine-grained": GITHUB_FINE,
    "GitLab": GITLAB,
    "unknown": UNKNOWN,
}

pytestmark = pytest.mark.timeout(90)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def repobox_decrypt(
    *args: str,
    key: str | None = KEYS["hex"],
    stdin: str | None = None,
    redis_url: str = "redis://127.0.0.1:1",
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDIS_URL": redis_url}
    if key is not None:
        env["ENCRYPTION_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "repobox_cli", "decrypt", *args],
        env=env,
        input="" if stdin is None else stdin,
        capture_output=True,
        text=True,
        timeout=CLI_DEADLINE_S,
        cwd=cwd or Path(__file__).resolve().parents[2],
    )


def shown(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The decrypt report as {label: value}, e.g. {"token": "ghp_****BcBa", "kind": ...}."""
    rows = {}
    for line in result.stdout.splitlines():
        if line.strip():
            label, _, value = re.split(r"(\s{2,})", line.strip(), maxsplit=1)
            rows[label] = value.strip()
    return rows


def assert_never_shows(result: subprocess.CompletedProcess[str], token: str) -> None:
    for stream in (result.stdout, result.stderr):
        assert token not in stream
        if len(token) > 12:
            assert token[4:-4] not in stream  # not even the hidden middle


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout.strip() == ""
    return lines[0]


def assert_report(result: subprocess.CompletedProcess[str], token: str, kind: str, key_format: str) -> None:
    assert result.returncode == 0, result.stderr
    rows = shown(result)
    assert rows["token"] == f"{token[:4]}****{token[-4:]}"
    assert kind in rows["kind"]
    if kind == "unknown":
        assert rows["kind"] == "unknown"
    assert rows["length"] == f"{len(token)} characters"
    assert key_format in rows["key format"]
    assert_never_shows(result, token)


# -- the three key formats, as argument and on stdin ---------------------------------------------


@pytest.mark.parametrize(
    ("key_format", "kind"),
    [
        ("hex", "GitHub classic"),
        ("base64", "GitHub fine-grained"),
        ("raw", "GitLab"),
        ("hex", "unknown"),
    ],
)
def test_argument_with_each_key_format_and_token_kind(key_format: str, kind: str) -> None:
    key, token = KEYS[key_format], TOKENS[kind]
    result = repobox_decrypt(node_encrypt(token, key), key=key)
    assert_report(result, token, kind, key_format)


@pytest.mark.parametrize("key_format", list(KEYS))
def test_stdin_with_each_key_format(key_format: str) -> None:
    key = KEYS[key_format]
    result = repobox_decrypt(key=key, stdin=node_encrypt(GITHUB_CLASSIC, key) + "\n")
    assert_report(result, GITHUB_CLASSIC, "GitHub classic", key_format)


def test_short_token_is_fully_masked() -> None:
    token = "glpat-abc123"  # 12 characters
    result = repobox_decrypt(node_encrypt(token, KEYS["hex"]))
    assert result.returncode == 0, result.stderr
    assert shown(result)["token"] == "****"
    assert shown(result)["length"] == "12 characters"
    assert_never_shows(result, token)


# -- a stored provider token from a real Redis ---------------------------------------------------


@pytest.mark.parametrize("key_format", list(KEYS))
def test_user_and_provider_from_redis(redis_server: RedisServer, key_format: str) -> None:
    key = KEYS[key_format]
    github, gitlab = node_encrypt_many([GITHUB_FINE, GITLAB], key)
    client = redis_server.client()
    client.hset(
        "git_provider:user-1:prov-gh",
        mapping={"type": "github", "url": "https://github.com", "token": github, "username": "u"},
    )
    client.hset(
        "git_provider:user-1:prov-gl",
        mapping={"type": "gitlab", "url": "https://gitlab.com", "token": gitlab, "username": "u"},
    )
    result = repobox_decrypt("--user", "user-1", "--provider", "prov-gh", key=key, redis_url=redis_server.url)
    assert_report(result, GITHUB_FINE, "GitHub fine-grained", key_format)
    result = repobox_decrypt("--user", "user-1", "--provider", "prov-gl", key=key, redis_url=redis_server.url)
    assert_report(result, GITLAB, "GitLab", key_format)


def test_missing_provider(redis_server: RedisServer) -> None:
    result = repobox_decrypt("--user", "user-1", "--provider", "nope", redis_url=redis_server.url)
    assert_one_line_error(result, "git_provider:user-1:nope")


def test_provider_without_user() -> None:
    assert_one_line_error(repobox_decrypt("--provider", "p"), "--user and --provider go together")


def test_user_id_with_a_control_character_is_refused(redis_server: RedisServer) -> None:
    result = repobox_decrypt("--user", "github:1\x1b[2J", "--provider", "p", redis_url=redis_server.url)
    assert_one_line_error(result, "control characters")


def test_web_app_user_id_with_no_stored_token_names_the_key(redis_server: RedisServer) -> None:
    result = repobox_decrypt("--user", "github:12345678", "--provider", "p", redis_url=redis_server.url)
    assert_one_line_error(result, "no token stored at git_provider:github:12345678:p")


def test_unreachable_redis_for_a_stored_token() -> None:
    result = repobox_decrypt("--user", "u", "--provider", "p", redis_url="redis://127.0.0.1:1")
    assert_one_line_error(result, "cannot reach Redis")


# -- malformed input: exit 1, one line naming the cause, no traceback ------------------------------


@pytest.fixture(scope="module")
def good() -> tuple[str, str, str]:
    iv, tag, body = node_encrypt(GITHUB_CLASSIC, KEYS["hex"]).split(":")
    return iv, tag, body


def _flip(part: str) -> str:
    raw = bytearray(base64.b64decode(part))
    raw[-1] ^= 0x80
    return b64(bytes(raw))


def test_wrong_key(good: tuple[str, str, str]) -> None:
    result = repobox_decrypt(":".join(good), key="00" * 32)
    assert_one_line_error(result, "authentication failed", "wrong ENCRYPTION_KEY")


def test_upper_case_hex_key(good: tuple[str, str, str]) -> None:
    result = repobox_decrypt(":".join(good), key=KEYS["hex"].upper())
    assert_report(result, GITHUB_CLASSIC, "GitHub classic", "hex")


def test_bad_iv_length(good: tuple[str, str, str]) -> None:
    _, tag, body = good
    result = repobox_decrypt(f"{b64(os.urandom(16))}:{tag}:{body}")
    assert_one_line_error(result, "IV is 16 bytes, expected 12")


def test_bad_tag_length(good: tuple[str, str, str]) -> None:
    iv, _, body = good
    result = repobox_decrypt(f"{iv}:{b64(os.urandom(8))}:{body}")
    assert_one_line_error(result, "auth tag is 8 bytes, expected 16")


@pytest.mark.parametrize(("index", "name"), [(0, "IV"), (1, "auth tag"), (2, "ciphertext")])
def test_bad_base64(good: tuple[str, str, str], index: int, name: str) -> None:
    parts = list(good)
    parts[index] = "not base64!"
    result = repobox_decrypt(":".join(parts))
    assert_one_line_error(result, f"the {name} is not valid base64")


@pytest.mark.parametrize("index", [0, 1, 2], ids=["iv", "tag", "ciphertext"])
def test_tampered_data(good: tuple[str, str, str], index: int) -> None:
    parts = list(good)
    parts[index] = _flip(parts[index])
    result = repobox_decrypt(":".join(parts))
    assert_one_line_error(result, "authentication failed", "altered")
    assert_never_shows(result, GITHUB_CLASSIC)


@pytest.mark.parametrize("text", ["abc", "a:b", "a:b:c:d"])
def test_not_three_parts(text: str) -> None:
    assert_one_line_error(repobox_decrypt(text), "iv:authTag:ciphertext", "expected 3")


def test_not_three_parts_on_stdin() -> None:
    assert_one_line_error(repobox_decrypt(stdin="only:two\n"), "iv:authTag:ciphertext")


def test_empty_stdin() -> None:
    assert_one_line_error(repobox_decrypt(stdin=""), "empty")


def test_bad_key_format_is_a_settings_error(good: tuple[str, str, str]) -> None:
    result = repobox_decrypt(":".join(good), key="too-short")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ENCRYPTION_KEY must be" in lines[0]
    assert "too-short" not in result.stderr


def test_missing_key(good: tuple[str, str, str]) -> None:
    result = repobox_decrypt(":".join(good), key=None)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ENCRYPTION_KEY is not set" in lines[0]
