"""A job's control: why it must stop (if it must), its deadline, the process groups to signal."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from enum import StrEnum

from repobox_cli import procs
from repobox_cli.errors import JobStopped

log = logging.getLogger(__name__)

# A group stopped with a gentler signal than SIGKILL (a sandbox's keeper, which then ends all
# below it) and still there this long after is killed outright.
STOP_GRACE_S = 10.0
WAIT_TICK_S = 0.5  # how often a wait for a gently stopped group checks its grace


class StopReason(StrEnum):
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease lost"
    LEASE_EXPIRED = "lease expired"  # not renewed for CLAIM_MIN_IDLE (Redis unreachable): another runner may take it
    SHUTDOWN = "shutdown"
    INTERRUPTED = "interrupted"


# A job stopped for these gives its entry back for another runner at once (if it is still this
# runner's: an expired lease may already have been taken over, and then nothing is written).
HANDED_BACK_ON = frozenset({StopReason.SHUTDOWN, StopReason.LEASE_EXPIRED})


class JobControl:
    """Shared by a job's thread and the runner's supervisor; `cancel` is safe from any thread
    (a signal handler's included: it starts no thread and takes no lock but its own)."""

    def __init__(self, timeout_s: float, *, stop_grace_s: float = STOP_GRACE_S) -> None:
        self.timeout_s = timeout_s
        self.stop_grace_s = stop_grace_s
        self.deadline = time.monotonic() + timeout_s
        self.stopped = threading.Event()
        self.reason: StopReason | None = None
        self._lock = threading.RLock()  # a signal handler may cancel while this thread holds it
        self._groups: dict[int, int] = {}  # process group -> the signal that stops it
        self._signalled: dict[int, float] = {}  # process group -> when it was sent its stop signal

    def register(self, pgid: int, signum: int = signal.SIGKILL) -> None:
        with self._lock:
            self._groups[pgid] = signum
            stopped = self.stopped.is_set()
        if stopped:
            self._signal(pgid, signum)

    def unregister(self, pgid: int) -> None:
        with self._lock:
            self._groups.pop(pgid, None)
            self._signalled.pop(pgid, None)

    def cancel(self, reason: StopReason) -> bool:
        """Stop the job: signal its process groups. True the first time only."""
        with self._lock:
            if self.stopped.is_set():
                return False
            self.reason = reason
            self.stopped.set()
            groups = dict(self._groups)
        for pgid, signum in groups.items():
            self._signal(pgid, signum)
        return True

    def _signal(self, pgid: int, signum: int) -> None:
        with self._lock:  # held while signalling: `wait` unregisters under it before it reaps
            self._signalled.setdefault(pgid, time.monotonic())
            procs.kill_group(pgid, signum)

    def wait(self, process: subprocess.Popen[bytes]) -> int:
        """Wait for a registered group's leader; its exit status. A group stopped with a gentler
        signal than SIGKILL (a sandbox's keeper) and still there `stop_grace_s` after its signal
        gets SIGKILL: a stop ends what SIGKILL can end. The leader is unregistered once it has
        exited and only then reaped, so no stop ever signals its group id after it was freed."""
        if process.returncode is not None:
            return process.returncode
        try:
            pidfd = os.pidfd_open(process.pid)  # not reaped yet (this is its waiter): it exists
        except ProcessLookupError:
            return process.wait()
        try:
            killed = False
            while not procs.readable(pidfd, WAIT_TICK_S):
                if not killed and self._past_grace(process.pid):
                    log.warning(
                        "process group %d still there %g s after its stop signal: killed",
                        process.pid,
                        self.stop_grace_s,
                    )
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # the leader, even outside its group
                    procs.kill_group(process.pid, signal.SIGKILL)
                    killed = True
        finally:
            os.close(pidfd)
        self.unregister(process.pid)
        return process.wait()

    def _past_grace(self, pgid: int) -> bool:
        with self._lock:
            signum, signalled = self._groups.get(pgid), self._signalled.get(pgid)
        if signum in (None, signal.SIGKILL) or signalled is None:
            return False
        return time.monotonic() - signalled >= self.stop_grace_s

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    @contextlib.contextmanager
    def enforced(self) -> Iterator[JobControl]:
        """For work no supervisor watches (a job's deadline is the supervisor's to enforce): a
        timer cancels this control at its deadline (TIMEOUT), killing what is registered then."""
        timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self.cancel, args=(StopReason.TIMEOUT,))
        timer.daemon = True
        timer.start()
        try:
            yield self
        finally:
            timer.cancel()

    def check(self) -> None:
        """Raise JobStopped if the job must stop."""
        if self.expired():
            self.cancel(StopReason.TIMEOUT)
        if self.stopped.is_set():
            raise JobStopped(self.describe())

    def describe(self) -> str:
        if self.reason is StopReason.TIMEOUT:
            return f"job timed out after {self.timeout_s:g} s"
        if self.reason is StopReason.CANCELLED:
            return "job was cancelled"
        if self.reason is StopReason.INTERRUPTED:
            return "interrupted by the operator"
        if self.reason is StopReason.LEASE_LOST:
            return "this runner lost the job to another runner"
        if self.reason is StopReason.LEASE_EXPIRED:
            return "this runner could not renew the job's lease in time: another runner may take it over"
        return "runner is shutting down"
