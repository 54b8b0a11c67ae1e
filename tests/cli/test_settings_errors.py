"""Bad settings stop `repobox` at once: one line on stderr, non-zero exit, never a traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repobox_cli.settings import RUN, load_settings
from tests.support.redis_server import RedisServer

HEX_KEY = "5e" * 32
CLI_DEADLINE_S = 30.0
FAIL_FAST_S = 10.0  # "at once": generous for a loaded CI machine, far below any retry loop

pytestmark = pytest.mark.timeout(90)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def repobox(*args: str, tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "TEMP_DIR": str(tmp_path / "work"),
        "LOG_FORMAT": "json",
        "REDIS_URL": f"redis://127.0.0.1:{closed_port()}",
    }
    base.update(env)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "repobox_cli", *args],
        env=base,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=CLI_DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )
    return result, time.monotonic() - started


def assert_stops_with_one_line(result: subprocess.CompletedProcess[str], elapsed_s: float, *needles: str) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert elapsed_s < FAIL_FAST_S, f"took {elapsed_s:.1f}s to refuse"
    return lines[0]


# -- repobox run ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        pytest.param([], {"ENCRYPTION_KEY": "too-short"}, ["ENCRYPTION_KEY", "64 hex"], id="short-key"),
        pytest.param([], {"ENCRYPTION_KEY": HEX_KEY[:-2]}, ["ENCRYPTION_KEY", "got 62 characters"], id="62-hex-key"),
        pytest.param([], {}, ["ENCRYPTION_KEY is not set"], id="missing-key"),
        pytest.param(
            [],
            {"ENCRYPTION_KEY": HEX_KEY, "MAX_JOBS_PER_USER": "-1"},
            ["MAX_JOBS_PER_USER", "-1"],
            id="negative-per-user",
        ),
        pytest.param(
            ["--concurrency", "0"], {"ENCRYPTION_KEY": HEX_KEY}, ["MAX_CONCURRENT_JOBS", "0"], id="zero-concurrency"
        ),
        pytest.param(
            ["--max-jobs-per-user", "0"], {"ENCRYPTION_KEY": HEX_KEY}, ["MAX_JOBS_PER_USER"], id="zero-per-user-option"
        ),
        pytest.param(
            [],
            {"ENCRYPTION_KEY": HEX_KEY, "JOB_TIMEOUT": "abc"},
            ["JOB_TIMEOUT", "'abc'"],
            id="job-timeout-not-a-number",
        ),
        pytest.param(
            [], {"ENCRYPTION_KEY": HEX_KEY, "CLEANUP_AFTER_JOB": "perhaps"}, ["CLEANUP_AFTER_JOB"], id="bad-bool"
        ),
        pytest.param(
            [], {"ENCRYPTION_KEY": HEX_KEY, "CLAIM_MIN_IDLE": "1e16"}, ["CLAIM_MIN_IDLE", "at most"], id="huge-seconds"
        ),
        pytest.param(
            [],
            {"ENCRYPTION_KEY": HEX_KEY, "REPOBOX_BLOCK_MS": "10000000000000"},
            ["REPOBOX_BLOCK_MS", "at most 3600000"],
            id="huge-block",
        ),
        pytest.param(
            [],
            {"ENCRYPTION_KEY": HEX_KEY, "REDIS_WAIT_REPLICAS": "10000000000000000000"},
            ["REDIS_WAIT_REPLICAS", "at most 100"],
            id="huge-replica-count",
        ),
        pytest.param([], {"ENCRYPTION_KEY": HEX_KEY, "LOG_FORMAT": "xml"}, ["LOG_FORMAT"], id="bad-log-format"),
        pytest.param([], {"ENCRYPTION_KEY": HEX_KEY, "AGENT_ENV": "ENCRYPTION_KEY"}, ["AGENT_ENV"], id="agent-env-key"),
        pytest.param(
            [],
            {"ENCRYPTION_KEY": HEX_KEY, "CLAIM_MIN_IDLE": "30", "REPOBOX_TICK_MS": "6000"},
            ["REPOBOX_TICK_MS=6000", "CLAIM_MIN_IDLE=30", "at most 5000 ms"],
            id="tick-longer-than-half-a-renewal",
        ),
    ],
)
def test_bad_setting_stops_run(tmp_path: Path, args: list[str], env: dict[str, str], needles: list[str]) -> None:
    result, elapsed_s = repobox("run", *args, tmp_path=tmp_path, **env)
    line = assert_stops_with_one_line(result, elapsed_s, *needles)
    assert HEX_KEY not in line and "too-short" not in line
    assert not (tmp_path / "work").exists()  # refused before doing anything


@pytest.mark.parametrize("command", [["run"], ["exec", "0e8f9a6c-2c1e-4a57-9d3b-6f0f1b7e2a10"]])
@pytest.mark.parametrize(
    ("temp_dir", "needles"),
    [
        pytest.param("afile", ["TEMP_DIR", "afile is a file"], id="a-file"),
        pytest.param("afile/below", ["TEMP_DIR", "afile is a file"], id="below-a-file"),
        pytest.param("/proc/repobox-work", ["TEMP_DIR", "cannot be created in /proc"], id="not-creatable"),
    ],
)
def test_a_temp_dir_that_cannot_be_used_is_a_bad_setting(
    tmp_path: Path, command: list[str], temp_dir: str, needles: list[str]
) -> None:
    (tmp_path / "afile").write_text("not a directory\n")

    result, elapsed_s = repobox(*command, tmp_path=tmp_path, ENCRYPTION_KEY=HEX_KEY, TEMP_DIR=temp_dir)

    assert_stops_with_one_line(result, elapsed_s, *needles)
    assert result.returncode == 2


def test_unreachable_redis_stops_run_quickly(tmp_path: Path) -> None:
    port = closed_port()
    result, elapsed_s = repobox("run", tmp_path=tmp_path, ENCRYPTION_KEY=HEX_KEY, REDIS_URL=f"redis://127.0.0.1:{port}")
    assert_stops_with_one_line(result, elapsed_s, "cannot reach Redis", f"127.0.0.1:{port}")


def test_unreachable_redis_hides_its_password(tmp_path: Path) -> None:
    port = closed_port()
    result, elapsed_s = repobox(
        "run", tmp_path=tmp_path, ENCRYPTION_KEY=HEX_KEY, REDIS_URL=f"redis://:hunter2secret@127.0.0.1:{port}/0"
    )
    line = assert_stops_with_one_line(result, elapsed_s, "cannot reach Redis")
    assert "hunter2secret" not in result.stderr + result.stdout
    assert f"127.0.0.1:{port}" in line


def test_unreachable_sentinels_are_one_short_line(tmp_path: Path) -> None:
    port = closed_port()
    result, elapsed_s = repobox(
        "pending", tmp_path=tmp_path, REDIS_SENTINELS=f"127.0.0.1:{port}", REDIS_SENTINEL_MASTER="mymaster"
    )
    line = assert_stops_with_one_line(result, elapsed_s, "'mymaster'", f"127.0.0.1:{port}", "no Sentinel answered")
    assert "object at" not in line and len(line) < 240, line


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "localhost:6379", "mysql://127.0.0.1/x"])
def test_invalid_redis_url_scheme_stops_run(tmp_path: Path, url: str) -> None:
    result, elapsed_s = repobox("run", tmp_path=tmp_path, ENCRYPTION_KEY=HEX_KEY, REDIS_URL=url)
    assert_stops_with_one_line(result, elapsed_s, "REDIS_URL", "redis://")


def test_invalid_redis_url_option_stops_run(tmp_path: Path) -> None:
    result, elapsed_s = repobox(
        "run", "--redis-url", "http://127.0.0.1:6379", tmp_path=tmp_path, ENCRYPTION_KEY=HEX_KEY
    )
    assert_stops_with_one_line(result, elapsed_s, "REDIS_URL")


@pytest.mark.parametrize("command", [["run"], ["pending"], ["health"]])
@pytest.mark.parametrize(
    ("query", "needles"),
    [
        pytest.param("foo=bar", ["REDIS_URL", "'foo'"], id="unknown-option"),
        pytest.param("ssl_cert_reqs=none", ["REDIS_URL", "'ssl_cert_reqs'"], id="tls-option-on-redis-url"),
        pytest.param("socket_timeout=-1", ["REDIS_URL's socket_timeout", "-1"], id="negative-timeout"),
    ],
)
def test_a_redis_url_option_redis_py_cannot_use_is_a_bad_setting(
    tmp_path: Path, command: list[str], query: str, needles: list[str]
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}?{query}"

    result, elapsed_s = repobox(*command, tmp_path=tmp_path, ENCRYPTION_KEY=HEX_KEY, REDIS_URL=url)

    assert_stops_with_one_line(result, elapsed_s, *needles)
    assert result.returncode == 2 and "internal error" not in result.stderr


# -- repobox exec --------------------------------------------------------------------------------


def test_exec_unknown_job(tmp_path: Path, redis_server: RedisServer) -> None:
    result, elapsed_s = repobox(
        "exec", "no-such-job", tmp_path=tmp_path, ENCRYPTION_KEY=HEX_KEY, REDIS_URL=redis_server.url
    )
    assert result.returncode == 1
    assert_stops_with_one_line(result, elapsed_s, "no-such-job", "not found")
    assert redis_server.client().exists("job:no-such-job") == 0  # nothing written for it


def test_exec_unsafe_job_id(tmp_path: Path, redis_server: RedisServer) -> None:
    result, elapsed_s = repobox("exec", "../etc", tmp_path=tmp_path, ENCRYPTION_KEY=HEX_KEY, REDIS_URL=redis_server.url)
    assert result.returncode == 1
    assert_stops_with_one_line(result, elapsed_s, "not a safe name")


def test_exec_without_key(tmp_path: Path, redis_server: RedisServer) -> None:
    result, elapsed_s = repobox("exec", "job-1", tmp_path=tmp_path, REDIS_URL=redis_server.url)
    assert_stops_with_one_line(result, elapsed_s, "ENCRYPTION_KEY is not set")


# -- repobox --help ------------------------------------------------------------------------------


def test_help_lists_the_four_commands(tmp_path: Path) -> None:
    result, _ = repobox("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("run", "exec", "decrypt", "pending"):
        assert re.search(rf"^\W*{command}\b", result.stdout, re.MULTILINE), (command, result.stdout)


def test_no_arguments_shows_help_once(tmp_path: Path) -> None:
    result, _ = repobox(tmp_path=tmp_path)
    assert "Traceback" not in result.stderr
    assert "decrypt" in result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("Usage:") == 1


def test_a_command_group_without_a_command_shows_its_help_once(tmp_path: Path) -> None:
    result, _ = repobox("token", tmp_path=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert result.stdout.count("Usage:") == 1 and "check" in result.stdout


def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    result, elapsed_s = repobox("run", "--concurrency", "many", tmp_path=tmp_path)
    assert_stops_with_one_line(result, elapsed_s, "--concurrency")
    assert result.returncode == 2


def test_no_module_imports_typers_private_modules() -> None:
    package = Path(__file__).resolve().parents[2] / "repobox_cli"
    offending = [
        f"{path.name}:{number}"
        for path in sorted(package.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\btyper\._|\b_click\b", line)
    ]
    assert not offending, offending


def test_encryption_key_is_never_an_option(tmp_path: Path) -> None:
    result, _ = repobox("run", "--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--encryption-key" not in result.stdout
    result, _ = repobox("run", "--encryption-key", HEX_KEY, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


BUG_SCRIPT = (
    "import sys\n"
    "from repobox_cli import cli, completions\n"
    "def broken(shell):\n"
    "    raise RuntimeError('a bug\\nover two lines')\n"
    "completions.render = broken\n"
    "sys.argv = ['repobox', 'completion', 'bash']\n"
    "cli.main()\n"
)


def test_an_unexpected_error_is_one_line_and_exit_1_with_the_traceback_only_on_request() -> None:
    plain = subprocess.run([sys.executable, "-c", BUG_SCRIPT], capture_output=True, text=True, timeout=60)
    debug = subprocess.run(
        [sys.executable, "-c", BUG_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REPOBOX_DEBUG": "1"},
    )

    assert plain.returncode == 1
    assert plain.stderr.strip().splitlines() == [
        "repobox: internal error (RuntimeError): a bug over two lines; REPOBOX_DEBUG=1 shows the traceback"
    ]
    assert "Traceback" in debug.stderr and debug.returncode == 1


def test_the_default_tick_is_shortened_to_fit_a_short_claim_min_idle() -> None:
    settings = load_settings(env={"CLAIM_MIN_IDLE": "1"}, command=RUN, stderr_is_tty=False)

    assert settings.tick_s == pytest.approx(1 / 6)
    assert load_settings(env={}, command=RUN, stderr_is_tty=False).tick_s == pytest.approx(0.25)
