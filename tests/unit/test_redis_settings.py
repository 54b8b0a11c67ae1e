"""Redis connection settings: password file, TLS files, Sentinel, and secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from repobox_cli.errors import SettingsError
from repobox_cli.redis_conn import Durability, describe, open_client
from repobox_cli.settings import load_settings

SECRET = "s3cret-" + "redis-password"


def _password_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "redis-password"
    path.write_text(SECRET + "\n")
    path.chmod(mode)
    return path


def test_password_file_is_read_once_and_never_shown(tmp_path: Path) -> None:
    settings = load_settings(
        {"REDIS_URL": "redis://runner@127.0.0.1:6379", "REDIS_PASSWORD_FILE": str(_password_file(tmp_path))}
    )
    assert settings.redis.password == SECRET
    assert SECRET not in repr(settings) and SECRET not in describe(settings.redis)


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="REDIS_PASSWORD_FILE .* readable by others"):
        load_settings({"REDIS_PASSWORD_FILE": str(_password_file(tmp_path, 0o644))})


def test_a_password_in_the_url_is_kept_out_of_repr_and_messages() -> None:
    settings = load_settings({"REDIS_URL": f"rediss://runner:{SECRET}@redis.internal:6380"})
    assert SECRET not in repr(settings) and SECRET not in describe(settings.redis)


def test_password_in_url_and_file_together_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="give one"):
        load_settings({"REDIS_URL": "redis://u:p@h:6379", "REDIS_PASSWORD_FILE": str(_password_file(tmp_path))})


def test_sentinels_are_parsed_and_wait_for_one_replica_by_default() -> None:
    settings = load_settings({"REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380", "REDIS_SENTINEL_MASTER": "main"})
    assert settings.redis.sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert settings.redis.wait_replicas == 1
    assert load_settings({}).redis.wait_replicas == 0


@pytest.mark.parametrize(
    "env, message",
    [
        ({"REDIS_SENTINELS": "host-without-port"}, "host:port"),
        ({"REDIS_SENTINELS": "h:26379"}, "go together"),
        ({"REDIS_URL": "http://h"}, "redis://, rediss:// or unix://"),
        ({"REDIS_WAIT_TIMEOUT": "0"}, "REDIS_WAIT_TIMEOUT"),
    ],
)
def test_bad_redis_settings_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env)


@pytest.mark.parametrize(("block_ms", "expected_s"), [(5000, 15.0), (0, 1.0)])
def test_a_url_socket_timeout_never_cuts_a_blocking_read_short(block_ms: int, expected_s: float) -> None:
    """A read that blocks 5 s on a connection timing out after 1 s would look like a lost Redis."""
    settings = load_settings({"REDIS_URL": "redis://127.0.0.1:1?socket_timeout=1"})

    client = open_client(settings.redis, block_ms=block_ms)  # nothing is sent: no server needed

    assert client.connection_pool.connection_kwargs["socket_timeout"] == expected_s
    client.close()


def test_a_wait_timeout_under_a_millisecond_waits_a_millisecond_not_for_ever() -> None:
    settings = load_settings({"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT": "0.0001"})
    assert Durability.of(settings.redis).timeout_ms == 1  # `WAIT 1 0` would block until a replica answers


@pytest.mark.parametrize("sentinels", [{}, {"REDIS_SENTINELS": "127.0.0.1:1", "REDIS_SENTINEL_MASTER": "main"}])
def test_a_tls_url_with_its_ca_and_client_certificate_makes_a_client(tmp_path: Path, sentinels: dict[str, str]) -> None:
    files = {name: tmp_path / name.lower() for name in ("REDIS_CA_FILE", "REDIS_CERT_FILE", "REDIS_KEY_FILE")}
    for path in files.values():
        path.write_text("read only when a connection is made\n")
        path.chmod(0o600)
    env = {"REDIS_URL": "rediss://127.0.0.1:1", **{k: str(v) for k, v in files.items()}, **sentinels}

    client = open_client(load_settings(env).redis)  # nothing is connected: no server needed

    client.close()
