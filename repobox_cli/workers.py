"""The worker threads and the jobs they run.

Thread-safe: one Condition guards `running` and the reservations. A worker is *reserved* before
the (Redis) begin call, made outside the lock, and then either started or released; so the
consumer thread and the supervisor can both start jobs without ever exceeding the pool and
without holding a lock across the network.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from repobox_cli import metrics
from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.redaction import one_line

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, size: int, work: Callable[[ActiveJob], RunOutcome]) -> None:
        self.size = size
        self._work = work
        self._pool = ThreadPoolExecutor(size, thread_name_prefix="worker")
        self._cond = threading.Condition()
        self._running: dict[tuple[str, str], ActiveJob] = {}  # by (lane, entry id): ids repeat across streams
        self._reserved = 0
        self._changes = 0  # counts finished work and wakes: what `wait_for_change` waits on
        self._stats: Counter[str] = Counter()

    def free(self) -> int:
        with self._cond:
            return self.size - len(self._running) - self._reserved

    def reserve(self) -> bool:
        """Hold a worker for a job about to begin; False when none is free."""
        with self._cond:
            if len(self._running) + self._reserved >= self.size:
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        """Give back a reservation whose job did not begin."""
        with self._cond:
            self._reserved -= 1
            self._cond.notify_all()

    def start(self, active: ActiveJob) -> None:
        """Run `active` on the reserved worker."""
        with self._cond:
            self._reserved -= 1
            self._running[(active.lane, active.attempt.entry_id)] = active
        self._pool.submit(self._run, active)

    def _run(self, active: ActiveJob) -> None:
        try:
            outcome = self._work(active)
        except Exception as exc:  # noqa: BLE001 - boundary: keep the worker alive, whatever happens
            log.error("worker error: %s: %s", type(exc).__name__, one_line(str(exc)), extra={"job_id": active.job.id})
            outcome = RunOutcome.ERROR
        metrics.work_finished(active, outcome)
        with self._cond:
            self._running.pop((active.lane, active.attempt.entry_id), None)
            self._stats[outcome] += 1
            self._changes += 1
            self._cond.notify_all()

    def count(self, label: str) -> None:
        """Count an event for the shutdown summary (entries refused, dead-lettered…)."""
        with self._cond:
            self._stats[label] += 1

    def summary(self) -> str:
        with self._cond:
            return ", ".join(f"{n} {k}" for k, n in sorted(self._stats.items())) or "no jobs"

    def has(self, lane: str, entry_id: str) -> bool:
        with self._cond:
            return (lane, entry_id) in self._running

    def actives(self) -> list[ActiveJob]:
        with self._cond:
            return list(self._running.values())

    def running_count(self) -> int:
        with self._cond:
            return len(self._running)

    def wait_for_room(self, timeout_s: float) -> None:
        """Block until a worker may be free (or `timeout_s` passes)."""
        with self._cond:
            if len(self._running) + self._reserved >= self.size:
                self._cond.wait(timeout_s)

    def changes(self) -> int:
        with self._cond:
            return self._changes

    def wait_for_change(self, seen: int, timeout_s: float) -> None:
        """Block until work has finished (or `wake` was called) since `changes()` returned `seen`,
        or `timeout_s` passes."""
        with self._cond:
            if self._changes == seen:
                self._cond.wait(timeout_s)

    def wake(self) -> None:
        """End every wait on this pool now (the runner is stopping)."""
        with self._cond:
            self._changes += 1
            self._cond.notify_all()

    def wait_idle(self, deadline: float, tick_s: float) -> bool:
        """Wait until nothing runs or the monotonic `deadline`; True when idle."""
        with self._cond:
            while self._running and time.monotonic() < deadline:
                self._cond.wait(min(tick_s, max(0.0, deadline - time.monotonic())))
            return not self._running

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
