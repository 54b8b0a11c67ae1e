"""A job's control: why it must stop (if it must), its deadline, the process groups to signal."""

from __future__ import annotations

import logging
import signal
import threading
import time
from enum import StrEnum

from repobox_cli import procs
from repobox_cli.errors import JobStopped

log = logging.getLogger(__name__)

# A group stopped with a gentler signal than SIGKILL (a sandbox's keeper, which then ends all
# below it) and still there this long after is killed outright: a stop always ends.
STOP_GRACE_S = 10.0


class StopReason(StrEnum):
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease lost"
    SHUTDOWN = "shutdown"
    INTERRUPTED = "interrupted"


class JobControl:
    """Shared by a job's thread and the runner's supervisor; `cancel` is safe from any thread."""

    def __init__(self, timeout_s: float, *, stop_grace_s: float = STOP_GRACE_S) -> None:
        self.timeout_s = timeout_s
        self.stop_grace_s = stop_grace_s
        self.deadline = time.monotonic() + timeout_s
        self.stopped = threading.Event()
        self.reason: StopReason | None = None
        self._lock = threading.RLock()  # a signal handler may cancel while this thread holds it
        self._groups: dict[int, int] = {}  # process group -> the signal that stops it
        self.escalation: threading.Timer | None = None  # SIGKILL after the grace, for gently stopped groups

    def register(self, pgid: int, signum: int = signal.SIGKILL) -> None:
        with self._lock:
            self._groups[pgid] = signum
            stopped = self.stopped.is_set()
        if stopped:
            self._stop({pgid: signum})

    def unregister(self, pgid: int) -> None:
        with self._lock:
            self._groups.pop(pgid, None)

    def cancel(self, reason: StopReason) -> bool:
        """Stop the job: kill its process groups. True the first time only."""
        with self._lock:
            if self.stopped.is_set():
                return False
            self.reason = reason
            self.stopped.set()
            groups = dict(self._groups)
        self._stop(groups)
        return True

    def _stop(self, groups: dict[int, int]) -> None:
        for pgid, signum in groups.items():
            procs.kill_group(pgid, signum)
        if any(signum != signal.SIGKILL for signum in groups.values()):
            self.escalation = threading.Timer(self.stop_grace_s, self._escalate)
            self.escalation.daemon = True
            self.escalation.start()

    def _escalate(self) -> None:
        """After the grace: SIGKILL for every gently stopped group still registered (its process
        has not been waited for yet, so its group id is still its own)."""
        with self._lock:
            late = [pgid for pgid, signum in self._groups.items() if signum != signal.SIGKILL]
        for pgid in late:
            log.warning("process group %d still there %g s after its stop signal: killed", pgid, self.stop_grace_s)
            procs.kill_group(pgid, signal.SIGKILL)

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

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
        return "runner is shutting down"
