"""Work a runner does beside its jobs, off the supervisor's thread: one task at a time on a thread
of its own, under a deadline, killed at the runner's stop. The supervisor's tick renews leases and
enforces deadlines: it must never wait on a remote (a user's git host can stall for ever) or
on a slow disk."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from repobox_cli.control import JobControl, StopReason
from repobox_cli.redaction import one_line

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0  # how long a stop waits for the killed task to end

Task = Callable[[JobControl], None]


class OneAtATime:
    """Runs a task on a thread named `name`, one at a time. The task gets a `JobControl` whose
    deadline a timer enforces (its git, registered with it, is killed then) and that `stop`
    cancels; an error it raises is logged, never passed on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._running: tuple[threading.Thread, JobControl] | None = None
        self._stopped = False

    def start(self, task: Task, timeout_s: float) -> bool:
        """Start `task` with `timeout_s` to run; False (not started) while the last one runs, after
        `stop`, or when no thread can be had."""
        with self._lock:
            if self._stopped or self._running is not None:
                return False
            control = JobControl(timeout_s)
            thread = threading.Thread(target=self._run, args=(task, control), name=self.name, daemon=True)
            self._running = (thread, control)
            try:
                thread.start()
            except RuntimeError as exc:
                self._running = None
                log.warning("%s: cannot start a thread: %s", self.name, exc)
                return False
        return True

    def _run(self, task: Task, control: JobControl) -> None:
        # Here, not at the top: the clone cache imports this module, and commands that need no
        # Redis (`--help`, `decrypt`) must not pay for importing its client.
        from repobox_cli.redis_conn import CONNECTION_ERRORS

        try:
            with control.enforced():
                task(control)
        except CONNECTION_ERRORS as exc:
            log.warning("%s: Redis unreachable: %s", self.name, one_line(str(exc)))
        except Exception as exc:  # noqa: BLE001 - a thread's boundary: the runner goes on without it
            log.error("%s: internal error: %s: %s", self.name, type(exc).__name__, one_line(str(exc)))
        finally:
            with self._lock:
                self._running = None

    def wait(self, timeout_s: float) -> bool:
        """Wait for the task under way; whether none is left."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                running = self._running
            if running is None:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            running[0].join(remaining)

    def stop(self, timeout_s: float = STOP_WAIT_S) -> bool:
        """Kill the task under way (what it registered with its control) and start no more; whether
        it ended within `timeout_s`."""
        with self._lock:
            self._stopped = True
            running = self._running
        if running is not None:
            running[1].cancel(StopReason.SHUTDOWN)
        return self.wait(timeout_s)
