"""A job's stop as real processes see it: each registered process group gets its own signal, and
a group stopped gently (SIGTERM, as a sandbox's keeper is) that is still there after the grace
is killed outright by the thread that waits for it, so a stop always ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from repobox_cli.control import JobControl, StopReason

GRACE_S = 0.3
EXIT_S = 10.0

IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)
ENDS_ON_TERM = "import time; print('ready', flush=True); time.sleep(60)"


def start(processes: list[subprocess.Popen[bytes]], code: str) -> subprocess.Popen[bytes]:
    """A process leading its own group, once its signal disposition is set."""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    processes.append(process)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


def wait_in_thread(control: JobControl, process: subprocess.Popen[bytes]) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    waiter = threading.Thread(target=lambda: codes.append(control.wait(process)), daemon=True)
    waiter.start()
    return waiter, codes


def status_after_stop(control: JobControl, process: subprocess.Popen[bytes], reason: StopReason) -> list[int]:
    """Register `process` to be stopped with SIGTERM, wait for it in a thread, stop the job: the
    status the wait gave (none if it had not ended within EXIT_S)."""
    control.register(process.pid, signal.SIGTERM)
    waiter, codes = wait_in_thread(control, process)
    control.cancel(reason)
    waiter.join(EXIT_S)
    return codes


def test_a_group_that_ignores_its_stop_signal_is_killed_after_the_grace(
    started: list[subprocess.Popen[bytes]],
) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    stubborn = start(started, IGNORES_TERM)
    assert status_after_stop(control, stubborn, StopReason.CANCELLED) == [-signal.SIGKILL]


def test_a_group_registered_after_the_stop_is_stopped_and_killed_after_the_grace(
    started: list[subprocess.Popen[bytes]],
) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    control.cancel(StopReason.TIMEOUT)
    stubborn = start(started, IGNORES_TERM)
    control.register(stubborn.pid, signal.SIGTERM)
    waiter, codes = wait_in_thread(control, stubborn)
    waiter.join(EXIT_S)
    assert codes == [-signal.SIGKILL]


def test_a_group_that_ends_on_its_stop_signal_ends_by_that_signal(started: list[subprocess.Popen[bytes]]) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    gentle = start(started, ENDS_ON_TERM)
    assert status_after_stop(control, gentle, StopReason.SHUTDOWN) == [-signal.SIGTERM]


def test_a_gently_stopped_group_is_not_killed_before_the_grace(started: list[subprocess.Popen[bytes]]) -> None:
    control = JobControl(60, stop_grace_s=EXIT_S)
    stubborn = start(started, IGNORES_TERM)
    control.register(stubborn.pid, signal.SIGTERM)
    waiter, codes = wait_in_thread(control, stubborn)
    control.cancel(StopReason.CANCELLED)
    with pytest.raises(subprocess.TimeoutExpired):
        stubborn.wait(timeout=1.0)  # still there well past a wait's tick: the grace holds
    assert codes == [] and waiter.is_alive()


def test_a_group_stopped_with_sigkill_is_waited_for_as_is(started: list[subprocess.Popen[bytes]]) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    stubborn = start(started, IGNORES_TERM)
    control.register(stubborn.pid)
    control.cancel(StopReason.CANCELLED)
    assert control.wait(stubborn) == -signal.SIGKILL


def test_a_gently_stopped_leader_that_exited_before_the_wait_gives_its_status(
    started: list[subprocess.Popen[bytes]],
) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    gentle = start(started, ENDS_ON_TERM)
    control.register(gentle.pid, signal.SIGTERM)
    control.cancel(StopReason.CANCELLED)
    os.waitid(os.P_PID, gentle.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    assert control.wait(gentle) == -signal.SIGTERM
    assert control.wait(gentle) == -signal.SIGTERM  # and once reaped, as it was


def test_a_wait_for_a_job_never_stopped_returns_the_exit_status(started: list[subprocess.Popen[bytes]]) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    quick = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    started.append(quick)
    control.register(quick.pid, signal.SIGTERM)
    assert control.wait(quick) == 3
