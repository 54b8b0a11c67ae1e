"""What happens to one delivered entry: refused, skipped (already final), dead-lettered, started
on a worker, or left waiting for a worker or a user slot.

Called from the consumer thread (new entries) and the supervisor thread (takeovers, waiting
heads). It holds no lock across a Redis call: a worker is reserved in the pool first, the begin
script runs, then the job starts or the reservation is released. Inside `batch()` (per thread),
entries whose jobs are already final are acknowledged together when the batch ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from functools import partial

import redis

from repobox_cli import metrics, validation
from repobox_cli.active import ActiveJob
from repobox_cli.control import JobControl
from repobox_cli.errors import JobDataError
from repobox_cli.jobs import Status, StreamEntry, is_final, now_ms
from repobox_cli.kinds import WorkKind
from repobox_cli.leases import Attempt, BeginOutcome, BeginResult, Leases
from repobox_cli.logs import JobLog
from repobox_cli.redaction import one_line
from repobox_cli.redis_conn import CONNECTION_ERRORS, RedisHealth
from repobox_cli.settings import Settings
from repobox_cli.waiting import Waiting, WaitingQueues
from repobox_cli.workers import WorkerPool

log = logging.getLogger(__name__)


class StartOutcome(StrEnum):
    STARTED = "started"
    NO_WORKER = "no worker"  # every worker busy (or stopping): wait
    BUSY = "busy"  # the user is at the limit: wait
    ACTIVE = "active"  # the job runs elsewhere (a duplicate entry, `exec`): wait behind others
    RETRY = "retry"  # Redis went away mid-begin: try the same attempt again
    SETTLED = "settled"  # final, missing or no longer ours: the entry is done here
    LOAD = "load"  # the job is another user's than its entry says: read it first, then admit it

    @property
    def keeps_waiting(self) -> bool:
        return self in (StartOutcome.NO_WORKER, StartOutcome.BUSY, StartOutcome.ACTIVE, StartOutcome.RETRY)


class Admission:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        kind: WorkKind,
        leases: Leases,
        pool: WorkerPool,
        waiting: WaitingQueues,
        health: RedisHealth,
        stopping: threading.Event,
        log: JobLog,
    ) -> None:
        self.settings = settings
        self.client = client
        self.kind = kind
        self.leases = leases
        self.pool = pool
        self.waiting = waiting
        self.health = health
        self.stopping = stopping
        self.log = log
        self.consumer = settings.runner_id
        self.lease_ms = int(settings.claim_min_idle_s * 1000)
        self._deferred = threading.local()  # .acks: entry ids to acknowledge when this thread's batch ends

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Admit a batch read at once: entries whose jobs are already final are acknowledged in one
        round trip at the end (an entry left unacked by a crash is delivered again, and skipped again)."""
        self._deferred.acks = []
        try:
            yield
        finally:
            acks: list[str] = self._deferred.acks
            self._deferred.acks = None
            if acks:
                self.leases.acknowledge_many(self.consumer, acks)

    # -- one delivered entry ---------------------------------------------------------------
    def admit_safely(self, entry_id: str, fields: Mapping[str, str] | None, *, deliveries: int) -> None:
        """`admit_many` for one entry."""
        self.admit_many([(entry_id, fields, deliveries)])

    def _safely(self, entry_id: str, admit: Callable[[], None]) -> None:
        try:
            admit()
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - boundary: one bad entry must not stop the runner
            # It stays pending: a sweep re-delivers it later, and MAX_DELIVERIES bounds the tries.
            self.log.error("entry %s could not be admitted: %s: %s", entry_id, type(exc).__name__, one_line(str(exc)))

    def admit_many(self, entries: Sequence[tuple[str, Mapping[str, str] | None, int]]) -> None:
        """Admit delivered entries (id, fields, delivery count): those whose jobs the begin script
        reads begin together, in one round trip (`Leases.begin_many`); the rest one by one. Never
        raises for one entry's bad data (it is logged, and stays pending), only for a Redis
        outage: then the entries already given a worker wait to begin again."""
        together: list[Waiting] = []
        try:
            for entry_id, fields, deliveries in entries:
                self._safely(entry_id, partial(self.admit, entry_id, fields, deliveries, together))
        except BaseException:
            self._hold(together)
            raise
        if together:
            self._after_begins(together, self._begin_reserved(together))

    def _after_begins(self, waitings: list[Waiting], outcomes: list[StartOutcome]) -> None:
        for waiting, outcome in zip(waitings, outcomes, strict=True):
            if outcome.keeps_waiting:
                self.waiting.add(waiting)
            elif outcome is StartOutcome.LOAD:
                self._safely(waiting.entry_id, partial(self._admit_loaded, waiting.entry))

    def _hold(self, reserved: list[Waiting]) -> None:
        """Entries holding a reserved worker whose begin did not run (or whose outcome was not
        seen): the workers are released and the entries wait; a retried begin is the same attempt."""
        for waiting in reserved:
            self.pool.release()
            self.waiting.add(waiting)

    def admit(self, entry_id: str, fields: Mapping[str, str] | None, deliveries: int, together: list[Waiting]) -> None:
        """Decide what to do with one delivered entry; never raises for bad data. An entry whose
        job the begin script may read is given a worker and added to `together`, to begin with
        the others (`admit_many`)."""
        if self.pool.has(self.kind.name, entry_id) or entry_id in self.waiting:
            return
        try:
            entry = self.kind.decode(entry_id, fields)
        except JobDataError as exc:
            self.reject(entry_id, fields or {}, f"malformed stream entry: {exc}")
            return
        if deliveries > self.settings.max_deliveries:
            reason = (
                f"delivered {deliveries} times (MAX_DELIVERIES={self.settings.max_deliveries}): "
                "moved to the dead letters"
            )
            self.reject(entry_id, entry.fields, reason, dead_letter=True, deliveries=deliveries)
            return
        user = self.kind.entry_user(entry)
        # With a worker free, the begin script reads the job itself. Without one, the job is read
        # first, so that final, missing and unusable ones are settled at once, not held waiting.
        if user is not None and not self.stopping.is_set() and self.pool.reserve():
            together.append(Waiting(entry, user))
            return
        self._admit_loaded(entry)

    def _admit_loaded(self, entry: StreamEntry) -> None:
        """Read what the entry names first, then settle, forward or start it."""
        entry_id = entry.entry_id
        try:
            job = self.kind.load(entry)
        except redis.ResponseError as exc:  # WRONGTYPE: the key is not a hash
            self.reject(entry_id, entry.fields, f"job key unusable: {exc}")
            return
        except JobDataError as exc:
            self.reject(entry_id, entry.fields, f"job refused: {exc}")
            return
        if job is None:
            self.reject(entry_id, entry.fields, "job hash missing")
            return
        if is_final(job.status):
            self._skip_final(entry_id, job.id, job.user_id, job.status)
            return
        owner = self.kind.forward(entry_id, job, self.consumer)
        if owner:
            self.log.info(
                "entry %s forwarded to runner %s, which holds its session",
                entry_id,
                owner,
                extra={"job_id": job.id, "user_id": job.user_id},
            )
            return
        waiting = Waiting(entry, job.user_id, job)
        if self.try_start(waiting).keeps_waiting:
            self.waiting.add(waiting)

    def start_waiting(self) -> None:
        """Each user's oldest waiting entry gets a try at a slot, while workers are free."""
        for head in self.waiting.heads():
            if self.pool.free() <= 0:
                return
            outcome = self.try_start(head)
            if outcome in (StartOutcome.BUSY, StartOutcome.NO_WORKER, StartOutcome.RETRY):
                continue
            # ACTIVE: its job runs elsewhere; let the user's other entries go first.
            self.waiting.settle(head, to_back=outcome is StartOutcome.ACTIVE)
            if outcome is StartOutcome.LOAD:
                try:
                    self._safely(head.entry_id, partial(self._admit_loaded, head.entry))
                except CONNECTION_ERRORS:
                    self.waiting.add(head)  # still this runner's: read again once Redis is back
                    raise

    # -- starting ----------------------------------------------------------------------------
    def try_start(self, waiting: Waiting) -> StartOutcome:
        """Start the job if a worker and a user slot are free. A job that must wait is marked as
        waiting in Redis (its takeover will not count a delivery). A job not yet read is read by
        the begin script (`WorkKind.entry_user`): LOAD when it is another user's than its entry says."""
        if self.stopping.is_set() or not self.pool.reserve():
            self._mark_waiting(waiting)
            return StartOutcome.NO_WORKER
        return self._begin_reserved([waiting])[0]

    def _begin_reserved(self, waitings: list[Waiting]) -> list[StartOutcome]:
        """Begin entries that each hold a reserved worker, in one round trip; each worker is
        started or released by the outcome."""
        attempts = [
            Attempt(w.job.id if w.job else w.entry.job_id, w.user_id, self.consumer, w.entry_id, w.attempt_id)
            for w in waitings
        ]
        sent = time.monotonic()  # the leases run from here at the latest: the local lease clock starts now
        try:
            results = self.leases.begin_many(
                [(attempt, waiting.job is None) for attempt, waiting in zip(attempts, waitings, strict=True)],
                limit=self.kind.user_limit(),
                lease_ms=self.lease_ms,
                started_at=now_ms(),
            )
        except CONNECTION_ERRORS as exc:
            for _ in waitings:
                self.pool.release()
            self.health.lost(exc)
            return [StartOutcome.RETRY] * len(waitings)  # the begins may have run: the same attempts are retried
        except BaseException:
            for _ in waitings:
                self.pool.release()
            raise
        outcomes: list[StartOutcome] = []
        for index, (waiting, attempt, result) in enumerate(zip(waitings, attempts, results, strict=True)):
            try:
                outcomes.append(self._begun(waiting, attempt, result, sent))
            except BaseException:
                self._hold(waitings[index + 1 :])
                raise
        return outcomes

    def _begun(self, waiting: Waiting, attempt: Attempt, result: BeginResult, sent: float) -> StartOutcome:
        """What a begin's result means for its entry; its reserved worker is started or released."""
        job = waiting.job
        if job is None and result.record is not None:
            try:
                job = waiting.job = self.kind.decode_record(waiting.entry, result.record)
            except JobDataError as exc:
                self.pool.release()
                return self._refuse_read(waiting, attempt, result.outcome, f"job refused: {exc}")
        if result.outcome is BeginOutcome.OK:
            assert job is not None  # read=True always carries the fields with OK
            control = JobControl(self.settings.job_timeout_s)
            output = self.kind.open_output(job, self.health)
            self.pool.start(
                ActiveJob(
                    job,
                    attempt,
                    control,
                    output,
                    result.previous_consumer,
                    lane=self.kind.name,
                    leases=self.leases,
                    renewed_monotonic=sent,
                )
            )
            return StartOutcome.STARTED
        self.pool.release()
        if result.outcome in (BeginOutcome.BUSY, BeginOutcome.ACTIVE):
            self._mark_waiting(waiting)
            return StartOutcome(result.outcome.value)
        if result.outcome is BeginOutcome.OTHER_USER:
            return StartOutcome.LOAD
        if result.outcome is BeginOutcome.FINAL:
            self._skip_final(waiting.entry_id, attempt.job_id, waiting.user_id, str(result.final_status))
        elif result.outcome is BeginOutcome.MISSING:
            self.reject(waiting.entry_id, waiting.entry.fields, "job hash missing")
        else:
            self.log.info("entry %s is no longer ours: another runner took it", waiting.entry_id)
        return StartOutcome.SETTLED

    def _mark_waiting(self, waiting: Waiting) -> None:
        if waiting.entry_id not in self.waiting:  # marked once, when it starts waiting
            self.leases.mark_waiting(self.consumer, waiting.entry_id)

    # -- settling without running ----------------------------------------------------------
    def _skip_final(self, entry_id: str, job_id: str, user_id: str, status: str) -> None:
        self.log.info(
            "job %s is already %s: entry %s acknowledged, not run again",
            job_id,
            status,
            entry_id,
            extra={"job_id": job_id, "user_id": user_id},
        )
        deferred: list[str] | None = getattr(self._deferred, "acks", None)
        if deferred is None:
            self.leases.acknowledge(self.consumer, entry_id)
        else:
            deferred.append(entry_id)

    def _refuse_read(self, waiting: Waiting, attempt: Attempt, outcome: BeginOutcome, reason: str) -> StartOutcome:
        """A job the begin script read and that cannot be used. Not begun (busy, active): refused
        like any entry. Begun: failed as a running attempt fails (its slot freed, its entry
        acknowledged), with the reason; if Redis is away meanwhile it stays waiting, and its retried
        begin (the same attempt) fails it again."""
        if outcome is not BeginOutcome.OK:
            self.reject(waiting.entry_id, waiting.entry.fields, reason)
            return StartOutcome.SETTLED
        reason = one_line(reason)
        self.log.warning("entry %s: %s", waiting.entry_id, reason, extra={"job_id": attempt.job_id})
        try:
            self.kind.rejected(waiting.entry.fields, reason, self.health)
            self.leases.finish(attempt, now_ms(), {"status": Status.FAILED, "error_message": reason})
        except CONNECTION_ERRORS as exc:
            self.health.lost(exc)
            return StartOutcome.RETRY
        self.pool.count("refused")
        return StartOutcome.SETTLED

    def reject(
        self, entry_id: str, fields: Mapping[str, str], reason: str, *, dead_letter: bool = False, deliveries: int = 1
    ) -> None:
        """Fail the entry's job (if any) with `reason`, optionally as a dead letter, and ack it."""
        job_id = fields.get("job_id", "")
        try:
            validation.safe_name(job_id, "job_id")
        except JobDataError:
            job_id = ""
        reason = one_line(reason)
        self.log.warning("entry %s: %s", entry_id, reason, extra={"job_id": job_id or None})
        self.kind.rejected(fields, reason, self.health)
        self.leases.reject(
            self.consumer,
            entry_id,
            fields,
            reason,
            now_ms(),
            job_id=job_id,
            dead_letter=dead_letter,
            deliveries=deliveries,
        )
        self.pool.count("dead-lettered" if dead_letter else "refused")
        if dead_letter:
            metrics.dead_lettered(self.consumer, self.kind.stream)
