"""Watching running jobs: deadlines, the web app's cancel, lease renewal, output catch-up."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis

from repobox_cli import keys
from repobox_cli.control import StopReason
from repobox_cli.executor import ActiveJob
from repobox_cli.jobs import Status
from repobox_cli.leases import Leases
from repobox_cli.redis_conn import CONNECTION_ERRORS, RedisHealth
from repobox_cli.settings import Settings

log = logging.getLogger(__name__)


class JobWatch:
    """Call `tick` often (every REPOBOX_TICK_MS); it does each duty when it is due."""

    def __init__(self, settings: Settings, client: redis.Redis, leases: Leases, health: RedisHealth) -> None:
        self.settings = settings
        self.client = client
        self.leases = leases
        self.health = health
        self._next_renew = 0.0
        self._recoveries_seen = 0

    @property
    def lease_ms(self) -> int:
        return int(self.settings.claim_min_idle_s * 1000)

    def tick(self, actives: Sequence[ActiveJob]) -> None:
        """Raises a connection error when Redis is away (the caller backs off)."""
        actives = [a for a in actives if not a.finished.is_set()]
        for active in actives:
            if active.control.expired() and not active.finishing.is_set():
                active.control.cancel(StopReason.TIMEOUT)
        if self.health.is_lost:
            self.client.ping()
            self.health.ok()
        if self.health.recoveries != self._recoveries_seen:
            # Redis is back: renew at once, before any runner's sweep mistakes the outage for death.
            self._recoveries_seen = self.health.recoveries
            self._next_renew = 0.0
        if not actives:
            return
        self._check_cancelled(actives)
        if time.monotonic() >= self._next_renew:
            self._renew(actives)
            self._next_renew = time.monotonic() + self.settings.lease_renew_s
        for active in actives:
            if active.output.pending_lines:
                active.output.flush()

    def _check_cancelled(self, actives: Sequence[ActiveJob]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for active in actives:
            pipe.hget(keys.job(active.job.id), "status")
        for active, status in zip(actives, pipe.execute(), strict=True):
            if active.finishing.is_set():
                continue
            if status == Status.CANCELLED and active.control.cancel(StopReason.CANCELLED):
                log.info("job cancelled by the web app: stopping it", extra={"job_id": active.job.id})

    def _renew(self, actives: Sequence[ActiveJob]) -> None:
        for active in actives:
            if active.control.reason is StopReason.LEASE_LOST:
                continue
            if not self.leases.renew(active.attempt, self.lease_ms):
                if active.finished.is_set() or active.finishing.is_set():
                    continue  # it finished meanwhile: nothing was lost
                if active.control.cancel(StopReason.LEASE_LOST):
                    log.warning("lost the job's lease to another runner: stopping it",
                                extra={"job_id": active.job.id})


def run_watch_loop(watch: JobWatch, actives: Callable[[], Sequence[ActiveJob]], stop: threading.Event,
                   extra: Callable[[], None] | None = None) -> None:
    """The supervisor thread: tick until `stop`, riding out Redis outages, never dying."""
    while not stop.wait(watch.settings.tick_s):
        try:
            watch.tick(actives())
            if extra is not None:
                extra()
        except CONNECTION_ERRORS as exc:
            watch.health.lost(exc)
        except Exception as exc:  # noqa: BLE001 - boundary: the supervisor must outlive any bug
            log.error("supervisor error: %s: %s", type(exc).__name__, exc)
