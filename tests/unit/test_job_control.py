"""A job's stop as real processes see it: each registered process group gets its own signal, and
a group stopped gently (SIGTERM, as a sandbox's keeper is) that is still there after the grace
is killed outright, so a stop always ends."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from repobox_cli.control import JobControl, StopReason

GRACE_S = 0.3
EXIT_S = 10.0

IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)
ENDS_ON_TERM = "import time; print('ready', flush=True); time.sleep(60)"


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def start(processes: list[subprocess.Popen[str]], code: str) -> subprocess.Popen[str]:
    """A process leading its own group, once its signal disposition is set."""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    processes.append(process)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


def test_a_group_that_ignores_its_stop_signal_is_killed_after_the_grace(
    started: list[subprocess.Popen[str]],
) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    stubborn = start(started, IGNORES_TERM)
    control.register(stubborn.pid, signal.SIGTERM)
    control.cancel(StopReason.CANCELLED)
    assert stubborn.wait(timeout=EXIT_S) == -signal.SIGKILL


def test_a_group_registered_after_the_stop_is_stopped_and_killed_after_the_grace(
    started: list[subprocess.Popen[str]],
) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    control.cancel(StopReason.TIMEOUT)
    stubborn = start(started, IGNORES_TERM)
    control.register(stubborn.pid, signal.SIGTERM)
    assert stubborn.wait(timeout=EXIT_S) == -signal.SIGKILL


def test_a_group_that_ends_on_its_stop_signal_ends_by_that_signal(started: list[subprocess.Popen[str]]) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    gentle = start(started, ENDS_ON_TERM)
    control.register(gentle.pid, signal.SIGTERM)
    control.cancel(StopReason.SHUTDOWN)
    assert gentle.wait(timeout=EXIT_S) == -signal.SIGTERM


def test_a_group_unregistered_within_the_grace_is_not_killed(started: list[subprocess.Popen[str]]) -> None:
    """Unregistered once its process is waited for, a group's id may be reused: never escalated."""
    control = JobControl(60, stop_grace_s=GRACE_S)
    stubborn = start(started, IGNORES_TERM)
    control.register(stubborn.pid, signal.SIGTERM)
    control.cancel(StopReason.CANCELLED)
    control.unregister(stubborn.pid)
    assert control.escalation is not None
    control.escalation.join(timeout=EXIT_S)
    assert not control.escalation.is_alive()
    assert stubborn.poll() is None


def test_a_stop_of_groups_killed_outright_needs_no_escalation(started: list[subprocess.Popen[str]]) -> None:
    control = JobControl(60, stop_grace_s=GRACE_S)
    stubborn = start(started, IGNORES_TERM)
    control.register(stubborn.pid)
    control.cancel(StopReason.CANCELLED)
    assert stubborn.wait(timeout=EXIT_S) == -signal.SIGKILL
    assert control.escalation is None
