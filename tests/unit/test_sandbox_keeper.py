"""The sandbox's keeper (`python -m repobox_cli.sandbox_launch`) as a real process, keeping real
programs in bwrap's place: what it leaves running when the program exits, dies in the middle of
its set-up, is stopped, or the runner (the lifeline's writer) goes away.

The stand-in program does what bwrap does on the way to a sandbox: it forks a child that blocks
on a descriptor only the child still holds (bwrap's namespace init waits on an eventfd for its
parent's word), so the child waits for ever once its parent is gone. The e2e sandbox tests run
the same cases with bwrap itself, where the window is a few microseconds wide."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
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
print("forked", flush=True)
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

    def __init__(self, program: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        lifeline_read, self.lifeline = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-m", "repobox_cli.sandbox_launch", "-", "0", *program],
                stdin=lifeline_read,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        finally:
            os.close(lifeline_read)

    def line(self) -> str:
        """The program's next line of output (read without a deadline of its own: the test's
        keeper is bounded by the program, which prints right after it starts)."""
        assert self.process.stdout is not None
        return self.process.stdout.readline().decode().strip()

    def wait_forked(self) -> None:
        """Until the program has forked the child that waits for ever."""
        assert self.line() == "forked"

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


def test_keeper_kills_what_a_program_dying_during_set_up_left_waiting(marker: bytes) -> None:
    kept = Kept(stand_in("die", marker))
    code, _, err = kept.wait()
    assert code == 128 + signal.SIGKILL, err
    assert wait_gone(marker) == [], "the child the program left waiting outlived the keeper"


def test_keeper_ends_the_program_and_all_below_it_when_the_lifeline_ends(marker: bytes) -> None:
    kept = Kept(stand_in("sleep", marker))
    kept.wait_forked()
    kept.end_lifeline()  # what the kernel does when the runner dies, however it dies
    code, _, err = kept.wait()
    assert code == 128 + signal.SIGKILL, err
    assert wait_gone(marker) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["TERM", "INT", "HUP"])
def test_keeper_ends_the_program_and_all_below_it_on_a_stop_signal(marker: bytes, signum: int) -> None:
    kept = Kept(stand_in("sleep", marker))
    kept.wait_forked()
    os.killpg(kept.process.pid, signum)  # SIGTERM: how a job's stop reaches it
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


def test_program_gets_dev_null_for_stdin_and_the_keeper_keeps_nothing_it_handed_over(marker: bytes) -> None:
    handed_read, handed_write = os.pipe()  # stands for bwrap's --info-fd
    try:
        kept = Kept(stand_in("report-stdin", marker), pass_fds=(handed_write,))
        kept.wait_forked()
        stdin, fds = kept.line().split(" ", 1)
        keepers = os.listdir(f"/proc/{kept.process.pid}/fd")
        kept.end_lifeline()
        kept.wait()
    finally:
        os.close(handed_read)
        os.close(handed_write)
    assert stdin == "/dev/null"
    # stdin, stdout, stderr, what was handed over, what the stand-in opened itself (its pipe, the
    # listing's own), and nothing of the keeper's.
    program_fds = set(ast.literal_eval(fds))
    assert handed_write in program_fds, fds
    assert program_fds - {handed_write} == {0, 1, 2, 3, 4, 5}, fds
    assert str(handed_write) not in keepers, "the keeper still holds what it handed to the program"


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
