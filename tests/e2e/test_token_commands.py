"""`repobox token set` and `token check` against a real Redis and the suite's HTTPS git server:
the stored hash is the web app's (its Node code decrypts it), the token is never on a command line
(repobox's or git's) nor printed."""

from __future__ import annotations

import base64
import os
import pty
import select
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from repobox_cli.crypto import mask_token
from tests.support.node_crypto import node_decrypt
from tests.support.world import PROCESS_DEADLINE_S, World

NEW_TOKEN = "ghp_" + "N3wT0k3nF0rTh3W3bApp0123456789abcdef"
PTY_DEADLINE_S = 30.0

pytestmark = pytest.mark.timeout(120)


def token_set(world: World, user: str, provider: str, token: str, **env: str) -> subprocess.CompletedProcess[str]:
    return world.repobox(
        "token", "set", "--user", user, "--provider", provider, "--type", "github", "--url", world.git.base_url,
        input=token + "\n",
        **env,
    )  # fmt: skip


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def git_recording_argv(world: World) -> tuple[Path, Path]:
    """A `git` first on PATH that records its arguments and runs the real one; (bin dir, log)."""
    bin_dir = world.tmp / "bin"
    bin_dir.mkdir()
    log = world.tmp / "git-argv.log"
    real = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    (bin_dir / "git").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    (bin_dir / "git").chmod(0o755)
    return bin_dir, log


def test_token_set_writes_the_provider_hash_the_web_app_decrypts(world: World) -> None:
    user, provider = world.user("setter"), str(uuid.uuid4())

    result = token_set(world, user, provider, NEW_TOKEN)

    assert result.returncode == 0, result.stderr
    record = world.client.hgetall(f"git_provider:{user}:{provider}")
    assert record["type"] == "github" and record["url"] == world.git.base_url
    assert set(record) == {"type", "url", "token", "username", "verified", "repos_count", "created_at"}
    assert record["created_at"].isdigit()
    iv, tag, body = (base64.b64decode(part) for part in record["token"].split(":"))
    assert (len(iv), len(tag)) == (12, 16)
    assert node_decrypt(record["token"], world.key) == NEW_TOKEN
    assert NEW_TOKEN not in result.stdout + result.stderr
    assert mask_token(NEW_TOKEN) in result.stdout


def test_token_set_updates_an_existing_record_keeping_the_web_apps_fields(world: World) -> None:
    user = world.user("updater")
    world.add_provider(user, token="ghp_" + "0ld" * 12)
    before = world.client.hgetall(f"git_provider:{user}:{world.provider_id}")

    result = token_set(world, user, world.provider_id, NEW_TOKEN)

    assert result.returncode == 0, result.stderr
    after = world.client.hgetall(f"git_provider:{user}:{world.provider_id}")
    assert node_decrypt(after["token"], world.key) == NEW_TOKEN
    assert {k: after[k] for k in ("username", "verified", "created_at")} == {
        k: before[k] for k in ("username", "verified", "created_at")
    }


def test_token_set_reads_stdin_and_the_token_is_never_in_its_command_line(world: World) -> None:
    user, provider = world.user("argv"), str(uuid.uuid4())
    process = subprocess.Popen(
        [sys.executable, "-m", "repobox_cli", "token", "set", "--user", user, "--provider", provider,
         "--type", "gitlab", "--url", world.git.base_url],
        env=world.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=world.tmp,
    )  # fmt: skip
    try:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        out, err = process.communicate(NEW_TOKEN.encode() + b"\n", timeout=PROCESS_DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, err
    assert NEW_TOKEN.encode() not in cmdline + out + err
    assert world.client.hget(f"git_provider:{user}:{provider}", "type") == "gitlab"


def test_token_set_on_a_terminal_asks_with_a_hidden_prompt(world: World) -> None:
    user, provider = world.user("tty"), str(uuid.uuid4())
    pid, fd = pty.fork()
    if pid == 0:  # the child: repobox on the pseudo-terminal
        args = ["token", "set", "--user", user, "--provider", provider, "--type", "github", "--url", world.git.base_url]
        os.execve(sys.executable, [sys.executable, "-m", "repobox_cli", *args], world.env())
    seen = b""
    try:
        deadline = time.monotonic() + PTY_DEADLINE_S
        while b"Token" not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([fd], [], [], 0.2)[0]:
                seen += os.read(fd, 4096)
        os.write(fd, NEW_TOKEN.encode() + b"\n")
        while True:
            assert time.monotonic() < deadline, seen
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert NEW_TOKEN.encode() not in seen  # not echoed, not printed
    assert node_decrypt(world.client.hget(f"git_provider:{user}:{provider}", "token"), world.key) == NEW_TOKEN


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--url", "ftp://example.com"], "--url"),
        (["--url", "https://user:pw@example.com"], "credentials"),
        (["--user", "bad user"], "--user"),
        (["--type", "bitbucket"], "--type"),
    ],
)
def test_token_set_refuses_bad_input_in_one_line(world: World, args: list[str], needle: str) -> None:
    base = {"--user": world.user("bad"), "--provider": str(uuid.uuid4()), "--type": "github", "--url": "https://x.io"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [part for pair in base.items() for part in pair]

    result = world.repobox("token", "set", *flat, input=NEW_TOKEN + "\n")

    assert_one_line(result, 2, needle)
    assert world.client.keys("git_provider:*") == []


def test_token_set_refuses_an_empty_token(world: World) -> None:
    result = token_set(world, world.user("empty"), str(uuid.uuid4()), "")

    assert_one_line(result, 2, "empty")


def test_token_set_refuses_a_token_that_is_not_ascii(world: World) -> None:
    token = NEW_TOKEN[:12] + "é" + NEW_TOKEN[12:]  # a mis-paste: no forge issues such a token

    result = token_set(world, world.user("paste"), str(uuid.uuid4()), token)

    assert_one_line(result, 2, "not ASCII")
    assert token not in result.stdout + result.stderr and world.client.keys("git_provider:*") == []


def test_token_check_lists_the_repository_with_the_token_passed_only_in_gits_environment(world: World) -> None:
    user = world.user("checker")
    assert token_set(world, user, world.provider_id, world.token).returncode == 0
    bin_dir, argv_log = git_recording_argv(world)

    result = world.repobox(
        "token", "check", "--user", user, "--provider", world.provider_id, "--repo", world.repo_url,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert mask_token(world.token) in result.stdout and "default branch main" in result.stdout
    assert world.token not in result.stdout + result.stderr
    argv = argv_log.read_text()
    assert "ls-remote" in argv and world.token not in argv
    assert any(r.authorization for r in world.git.requests)  # the header reached the server


def test_token_check_without_a_repository_only_decrypts(world: World) -> None:
    world.add_provider(world.default_user)

    result = world.repobox("token", "check", "--user", world.default_user, "--provider", world.provider_id)

    assert result.returncode == 0, result.stderr
    assert "decrypts" in result.stdout and mask_token(world.token) in result.stdout
    assert world.token not in result.stdout


def test_token_check_of_a_refused_token_is_one_line_and_exit_1(world: World) -> None:
    user = world.user("refused")
    world.add_provider(user, token=NEW_TOKEN)  # the git server only knows world.token

    result = world.repobox("token", "check", "--user", user, "--provider", world.provider_id, "--repo", world.repo_url)

    assert_one_line(result, 1, "401")
    assert NEW_TOKEN not in result.stdout + result.stderr


def test_token_check_with_another_key_is_one_line_and_exit_1(world: World) -> None:
    world.add_provider(world.default_user)

    result = world.repobox(
        "token", "check", "--user", world.default_user, "--provider", world.provider_id, ENCRYPTION_KEY="ab" * 32
    )

    assert_one_line(result, 1, "decrypt")


def test_token_check_of_an_unreachable_server_is_exit_1(world: World) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    world.add_provider(world.default_user, url=f"https://127.0.0.1:{port}")

    result = world.repobox(
        "token", "check", "--user", world.default_user, "--provider", world.provider_id,
        "--repo", f"https://127.0.0.1:{port}/x.git",
    )  # fmt: skip

    assert_one_line(result, 1, "ls-remote")


@pytest.mark.parametrize(
    ("provider", "repo", "needle"),
    [
        ("missing", None, "no git provider"),
        (None, "ssh://git@127.0.0.1/x.git", "--repo"),
        (None, "https://elsewhere.example/x.git", "not the provider's"),
    ],
)
def test_token_check_bad_input_is_exit_2(world: World, provider: str | None, repo: str | None, needle: str) -> None:
    world.add_provider(world.default_user)
    args = ["--user", world.default_user, "--provider", provider or world.provider_id]
    if repo is not None:
        args += ["--repo", repo]

    result = world.repobox("token", "check", *args)

    assert_one_line(result, 2, needle)
