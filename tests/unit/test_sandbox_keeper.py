"""The sandbox's keeper (`python -m repobox_cli.sandbox_launch`) as a real process, keeping real
programs in bwrap's place: what it leaves running when the program exits, dies in the middle of
its set-up, is stopped, or the runner (the lifeline's writer) goes away.

The stand-in program does what bwrap does on the way to a sandbox: it forks a child that blocks
on a descriptor only the child still holds (bwrap's namespace init waits on an eventfd for its
parent's word), so the child waits for ever once its parent is gone. The e2e sandbox tests run
the same cases with bwrap itself, where the window is a few microseconds wide."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.security_helpers import processes_with_marker, wait_gone

KEEPER_EXIT_S = 10.0

STAND_IN = r"""
import os, signal, sys, time
then = sys.argv[1]
read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    os.read(read_end, 1)  # never returns: this process holds the write end too
    os._exit(0)
if then == "die":
    os.kill(os.getpid(), signal.SIGKILL)  # the parent dies in the middle of the set-up
if then == "exit-3":
    sys.exit(3)
if then == "report-stdin":
    print(os.readlink("/proc/self/fd/0"), sorted(int(fd) for fd in os.listdir("/proc/self/fd")), flush=True)
time.sleep(600)
"""


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[bytes]:
    tag = f"repobox-keeper-probe-{os.getpid()}-{tmp_path.name}"
    yield tag.encode()
    for pid in processes_with_marker(tag.encode()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Kept:
    """A keeper started as the runner starts it: own session, the lifeline's read end for stdin."""

    def __init__(self, program: list[str]) -> None:
        lifeline_read, self.lifeline = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-m", "repobox_cli.sandbox_launch", "-", "0", *program],
                stdin=lifeline_read,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            os.close(lifeline_read)

    def end_lifeline(self) -> None:
        os.close(self.lifeline)
        self.lifeline = -1

    def wait(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=KEEPER_EXIT_S)
        if self.lifeline >= 0:
            self.end_lifeline()
        return self.process.returncode, out.decode(), err.decode()


def stand_in(then: str, marker: bytes) -> list[str]:
    return [sys.executable, "-c", STAND_IN, then, marker.decode()]


def wait_started(marker: bytes, count: int) -> None:
    deadline = time.monotonic() + KEEPER_EXIT_S
    while len(processes_with_marker(marker)) < count:
        assert time.monotonic() < deadline, "the program never started"
        time.sleep(0.01)


def test_keeper_kills_what_a_program_dying_during_set_up_left_waiting(marker: bytes) -> None:
    kept = Kept(stand_in("die", marker))
    code, _, err = kept.wait()
    assert code == 128 + signal.SIGKILL, err
    assert wait_gone(marker) == [], "the child the program left waiting outlived the keeper"


def test_keeper_ends_the_program_and_all_below_it_when_the_lifeline_ends(marker: bytes) -> None:
    kept = Kept(stand_in("sleep", marker))
    wait_started(marker, 2)
    kept.end_lifeline()  # what the kernel does when the runner dies, however it dies
    code, _, err = kept.wait()
    assert code == 128 + signal.SIGKILL, err
    assert wait_gone(marker) == []


def test_keeper_ends_the_program_and_all_below_it_on_sigterm(marker: bytes) -> None:
    kept = Kept(stand_in("sleep", marker))
    wait_started(marker, 2)
    os.killpg(kept.process.pid, signal.SIGTERM)  # how a job's stop reaches it
    code, _, err = kept.wait()
    assert code != 0, err
    assert wait_gone(marker) == []


def test_keeper_exits_with_the_programs_status_and_leaves_nothing_behind(marker: bytes) -> None:
    kept = Kept(stand_in("exit-3", marker))
    code, _, err = kept.wait()
    assert code == 3, err
    assert wait_gone(marker) == []


def test_keeper_whose_lifeline_is_already_gone_leaves_nothing(marker: bytes) -> None:
    kept = Kept(stand_in("sleep", marker))
    kept.end_lifeline()  # the runner died before the keeper even started
    code, _, err = kept.wait()
    assert code != 0, err
    assert wait_gone(marker) == []


def test_program_gets_dev_null_for_stdin_and_nothing_of_the_keepers(marker: bytes) -> None:
    kept = Kept(stand_in("report-stdin", marker))
    assert kept.process.stdout is not None
    line = kept.process.stdout.readline().decode()
    kept.end_lifeline()
    kept.wait()
    stdin, fds = line.split(" ", 1)
    assert stdin == "/dev/null"
    # stdin, stdout, stderr, and what the stand-in opened itself: its pipe, the listing's own.
    assert fds.strip() == "[0, 1, 2, 3, 4, 5]", fds


@pytest.mark.parametrize("argv", [[], ["-"], ["-", "x", "/bin/true"], ["0:0", "0", "/bin/true"], ["-", "0"]])
def test_keeper_refuses_bad_arguments_with_one_line(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-m", "repobox_cli.sandbox_launch", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=KEEPER_EXIT_S,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("usage:"), done.stderr
