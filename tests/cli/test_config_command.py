"""`repobox config [--check]`: every setting of the table with its value and source, secrets
hidden; the checks against a real Redis, the sandbox, TEMP_DIR and git."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from repobox_cli.settings import SETTINGS
from tests.support.world import World

pytestmark = pytest.mark.timeout(90)

AGENT_SECRET = "sk-ant-" + "S3cr3tInl1neAp1K3y"
REDIS_PASSWORD = "r3d1s-pa55w0rd-xyz"


def rows(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """setting -> (value, source) from the printed table."""
    found = {}
    for line in result.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            found[parts[0]] = (" ".join(parts[1:-1]), parts[-1])
    return found


def key_file(world: World) -> Path:
    path = world.secrets_dir / "key"
    path.write_text(world.key + "\n")
    path.chmod(0o600)
    return path


def test_config_lists_every_setting_with_its_source_and_hides_secrets(world: World) -> None:
    result = world.repobox(
        "config",
        "--concurrency",
        "3",
        ENCRYPTION_KEY="",
        ENCRYPTION_KEY_FILE=str(key_file(world)),
        MAX_JOBS_PER_USER="2",
        AGENT_COMMAND=f"ANTHROPIC_API_KEY={AGENT_SECRET} claude",
        REDIS_URL=f"redis://runner:{REDIS_PASSWORD}@127.0.0.1:{world.redis_server.port}/0",
    )

    assert result.returncode == 0, result.stderr
    shown = rows(result)
    assert list(shown) == [s.env for s in SETTINGS]  # the table, in its order: no second list
    assert shown["MAX_CONCURRENT_JOBS"] == ("3", "option")
    assert shown["MAX_JOBS_PER_USER"] == ("2", "env")
    assert shown["ENCRYPTION_KEY"] == ("set (hex (64 characters))", "file")
    assert shown["JOB_TIMEOUT"] == ("3600", "default")
    assert shown["SHUTDOWN_TIMEOUT"] == ("3600", "default")  # computed from JOB_TIMEOUT
    assert shown["AGENT_COMMAND"] == ("set (hidden)", "env")
    assert shown["REDIS_URL"][0] == f"redis://runner:****@127.0.0.1:{world.redis_server.port}/0"
    for secret in (world.key, AGENT_SECRET, REDIS_PASSWORD):
        assert secret not in result.stdout + result.stderr


def test_config_with_a_bad_setting_is_one_line_and_exit_2(world: World) -> None:
    result = world.repobox("config", MAX_CONCURRENT_JOBS="many")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "MAX_CONCURRENT_JOBS" in result.stderr


def test_config_check_passes_on_a_working_host_one_line_per_check(world: World) -> None:
    world.add_provider(world.default_user)

    result = world.repobox("config", "--check")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok   settings",
        "ok   ENCRYPTION_KEY",
        "ok   redis",
        "ok   stored tokens",
        "ok   sandbox",
        "warn agent",  # no AGENT_COMMAND here: placeholder jobs
        "ok   TEMP_DIR",
        "ok   CACHE_DIR",
        "ok   git",
    ], lines
    version = world.client.info("server")["redis_version"]
    assert f"version {version}" in lines[2]
    assert "decrypts the 1 sampled" in lines[3]
    assert "git version" not in lines[8] and "version 2." in lines[8]


def test_config_check_fails_on_the_key_that_decrypts_no_stored_token(world: World) -> None:
    world.add_provider(world.default_user)

    result = world.repobox("config", "--check", ENCRYPTION_KEY="ab" * 32)

    assert result.returncode == 2
    assert any(line.startswith("FAIL stored tokens:") for line in result.stdout.splitlines()), result.stdout


def test_config_check_fails_on_an_unreachable_redis_and_goes_on_with_the_other_checks(world: World) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}"

    result = world.repobox("config", "--check", REDIS_URL=url)

    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("FAIL redis:") for line in lines), lines
    assert [line.split(":")[0] for line in lines][-5:] == [
        "ok   sandbox",
        "warn agent",
        "ok   TEMP_DIR",
        "ok   CACHE_DIR",
        "ok   git",
    ], lines


def test_config_check_fails_without_a_key(world: World) -> None:
    result = world.repobox("config", "--check", ENCRYPTION_KEY="")

    assert result.returncode == 2
    assert "FAIL ENCRYPTION_KEY: not set" in result.stdout


def test_config_check_fails_for_a_claude_agent_not_in_path_and_warns_of_an_unusable_cache(world: World) -> None:
    (world.tmp / "a-file").write_text("not a directory\n")

    result = world.repobox(  # no extra sandbox paths: the test's directory would show CACHE_DIR
        "config",
        "--check",
        AGENT="claude",
        CACHE_DIR=str(world.tmp / "a-file"),
        PATH="/usr/bin:/bin",
        AGENT_SANDBOX_PATHS="",
    )

    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert "FAIL agent: claude is not in PATH (/usr/bin:/bin): every job would fail" in lines, lines
    assert any(line.startswith("warn CACHE_DIR:") and "jobs would clone uncached" in line for line in lines), lines


def test_config_check_finds_the_program_an_agent_command_starts(world: World) -> None:
    found = world.repobox("config", "--check", AGENT_COMMAND="LANG=C git status")
    missing = world.repobox("config", "--check", AGENT_COMMAND="no-such-agent-9f3 --fast")
    shell = world.repobox("config", "--check", AGENT_COMMAND='echo "$REPOBOX_PROMPT" >> notes.md')

    assert "ok   agent: git found in PATH" in found.stdout.splitlines(), found.stdout
    assert any(line.startswith("warn agent: no-such-agent-9f3 is not in PATH") for line in missing.stdout.splitlines())
    assert "ok   agent: a command the shell reads (its program is not checked)" in shell.stdout.splitlines()
    assert "REPOBOX_PROMPT" not in shell.stdout  # the command's text is never shown: it may hold an API key


def test_config_check_warns_of_a_misspelled_setting(world: World) -> None:
    result = world.repobox("config", "--check", AGENT_SANBOX="none")

    warning = "warn settings: AGENT_SANBOX is not a setting: did you mean AGENT_SANDBOX? (it is ignored)"
    assert warning in result.stdout.splitlines(), result.stdout
