"""Watching running jobs: deadlines, the web app's cancel, lease renewal, output catch-up."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis

from repobox_cli import keys
from repobox_cli.active import ActiveJob
from repobox_cli.control import StopReason
from repobox_cli.jobs import Status
from repobox_cli.leases import Leases
from repobox_cli.redis_conn import RedisHealth
from repobox_cli.settings import Settings
from repobox_cli.supervisor import Every

log = logging.getLogger(__name__)

# How often running jobs' statuses are read for the web app's cancel (one pipelined round trip for
# all of them): the spec asks for a stop "within seconds"; every tick would be 4 reads a second.
CANCEL_CHECK_S = 1.0


class JobWatch:
    """The supervisor's steps for running jobs. `enforce`, which needs no Redis and runs every
    tick on the watchdog's thread, outage or not: deadlines, and leases this runner could not
    renew in time. `tick`: the web app's cancel, lease renewal (every CLAIM_MIN_IDLE/3, and at once
    after an outage), output held back by an outage."""

    def __init__(self, settings: Settings, client: redis.Redis, leases: Leases, health: RedisHealth) -> None:
        self.settings = settings
        self.client = client
        self.leases = leases
        self.health = health
        self._renewal = Every(settings.lease_renew_s)
        self._cancel_check = Every(CANCEL_CHECK_S)

    @property
    def lease_ms(self) -> int:
        return int(self.settings.claim_min_idle_s * 1000)

    def enforce(self, actives: Sequence[ActiveJob], woke_late: bool = False) -> None:
        """JOB_TIMEOUT, and the lease: a job whose lease this runner has not renewed for
        CLAIM_MIN_IDLE (Redis unreachable, from here at least, or the supervisor held up) is
        stopped, since another runner may take it over from then on. Its entry is handed back if it
        is still this runner's. `woke_late` (the whole process was paused): leases are judged at the
        next tick, once the supervisor had its chance to renew them (or to learn they were lost)."""
        now = time.monotonic()
        lease_s = self.lease_ms / 1000
        for active in actives:
            if active.finished.is_set() or active.finishing.is_set():
                continue
            if active.control.expired():
                active.control.cancel(StopReason.TIMEOUT)
            elif woke_late or not active.attempt.entry_id:
                continue  # judged next tick; or `repobox exec`: no stream entry another runner's sweep could take
            elif now - active.renewed_monotonic >= lease_s and active.control.cancel(StopReason.LEASE_EXPIRED):
                log.warning(
                    "could not renew the job's lease for %g s (CLAIM_MIN_IDLE): stopping it",
                    lease_s,
                    extra={"job_id": active.job.id},
                )

    def tick(self, actives: Sequence[ActiveJob], recovered: bool) -> None:
        """Raises a connection error when Redis is away (the supervisor backs off)."""
        actives = [a for a in actives if not a.finished.is_set()]
        if recovered:
            # Redis is back: renew at once, before any runner's sweep mistakes the outage for death.
            self._renewal.now()
        if not actives:
            return
        if self._cancel_check.due():
            self._check_cancelled(actives)
        if self._renewal.due():
            self._renew(actives)
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
            if active.control.reason in (StopReason.LEASE_LOST, StopReason.LEASE_EXPIRED):
                continue
            sent = time.monotonic()
            if (active.leases or self.leases).renew(active.attempt, self.lease_ms):
                active.renewed_monotonic = sent
                continue
            if active.finished.is_set() or active.finishing.is_set():
                continue  # it finished meanwhile: nothing was lost
            if active.control.cancel(StopReason.LEASE_LOST):
                log.warning("lost the job's lease to another runner: stopping it", extra={"job_id": active.job.id})
