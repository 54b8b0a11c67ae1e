"""One git-sized child run on the calling thread (`repobox_cli/child.py`): its output, its input,
and an end even when something it left behind holds its pipes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

from repobox_cli.child import PIPE_GRACE_S, Child
from tests.support.reliability_helpers import processes_with

ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def run(script: str, tmp_path: Path, stdin: str | None = None) -> tuple[int, str, str]:
    errors: list[str] = []
    child = Child(["sh", "-c", script], env=ENV, cwd=tmp_path, stdin=stdin, on_stderr=errors.append)
    finished = child.finish()
    return finished.code, finished.stdout, "".join(errors)


def test_stdout_stderr_and_the_exit_status_are_collected(tmp_path: Path) -> None:
    assert run("echo out; echo err >&2; exit 3", tmp_path) == (3, "out\n", "err\n")


def test_stdin_larger_than_a_pipe_is_written_while_output_is_read(tmp_path: Path) -> None:
    data = "line of input\n" * 50_000  # 700 kB: more than a pipe holds, both ways
    code, out, _ = run("cat", tmp_path, stdin=data)
    assert (code, out) == (0, data)


def test_a_process_left_behind_holding_the_pipes_does_not_hold_the_wait(tmp_path: Path) -> None:
    marker = f"60.{uuid.uuid4().int % 10**6:06d}"
    try:
        started = time.monotonic()
        code, out, _ = run(f"setsid sleep {marker} & echo done", tmp_path)
        elapsed = time.monotonic() - started
        assert (code, out) == (0, "done\n")
        assert elapsed < PIPE_GRACE_S + 3, f"waited {elapsed:.1f} s for a pipe the child no longer owned"
    finally:
        for pid in processes_with(f"sleep {marker}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
