"""`repobox run`: read → admit → dispatch → (worker) → finish; claims, waiting jobs, heartbeats.

One consumer thread reads the stream, asking only for as many entries as it has idle workers.
An entry whose user is at the limit *waits* here without holding a worker: its claim is kept
alive (XCLAIM JUSTID, no delivery counted) and it starts as soon as a slot frees anywhere.
A supervisor thread watches running jobs and does the periodic duties.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis

from repobox_cli import keys, procs, validation, workdir
from repobox_cli.control import JobControl, StopReason
from repobox_cli.errors import JobDataError
from repobox_cli.executor import ActiveJob, Executor
from repobox_cli.jobs import Job, StreamEntry, is_final, now_ms
from repobox_cli.leases import Attempt, Leases, new_attempt_id
from repobox_cli.logs import JobLog
from repobox_cli.output import JobOutput
from repobox_cli.redaction import one_line
from repobox_cli.redis_conn import CONNECTION_ERRORS, Backoff, RedisHealth
from repobox_cli.settings import Settings
from repobox_cli.watch import JobWatch, run_watch_loop

log = logging.getLogger(__name__)

MAX_WAITING_ENTRIES = 1000  # entries held for users at their limit; beyond this, stop reading
HEARTBEAT_INTERVAL_S = 2.0
HOUSEKEEPING_INTERVAL_S = 30.0
CLAIM_SWEEP_MAX_S = 5.0
OUTAGE_GRACE_S = 3.0  # after Redis returns, live runners renew before anyone sweeps


@dataclass
class Waiting:
    """An admitted entry not yet running. Its attempt id is fixed, so a retried begin after a
    lost reply is recognised as the same attempt."""

    entry: StreamEntry
    job: Job
    attempt_id: str = field(default_factory=new_attempt_id)


def ensure_group(client: redis.Redis) -> None:
    """Create the consumer group (and the stream) when missing; BUSYGROUP means it exists."""
    try:
        client.xgroup_create(keys.JOBS_STREAM, keys.RUNNERS_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Runner:
    def __init__(self, settings: Settings, client: redis.Redis, *, burst: bool = False) -> None:
        self.settings = settings
        self.client = client
        self.burst = burst
        self.consumer = settings.runner_id
        self.health = RedisHealth()
        self.log = JobLog(log, {"runner_id": self.consumer})
        self.leases = Leases(client)
        self.stopping = threading.Event()
        self.hard_stop = threading.Event()
        self.executor = Executor(settings, client, self.leases, self.health, self.hard_stop)
        self.watch = JobWatch(settings, client, self.leases, self.health)
        self.pool = ThreadPoolExecutor(settings.max_concurrent_jobs, thread_name_prefix="worker")
        self._lock = threading.Condition()
        self.running: dict[str, ActiveJob] = {}
        self.waiting: dict[str, deque[Waiting]] = {}
        self.stats: Counter[str] = Counter()
        self._sweep_cursor = "0-0"
        self._next_sweep = 0.0
        self._next_heartbeat = 0.0
        self._next_housekeeping = 0.0
        self.supervisor_stop = threading.Event()
        self._stop_now_requested = threading.Event()
        self._recoveries_seen = 0

    # -- life cycle ----------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped (or, in burst mode, until nothing is left); the exit code."""
        procs.harden_process()
        self._startup()
        supervisor = threading.Thread(
            target=run_watch_loop, name="supervisor",
            args=(self.watch, self._actives, self.supervisor_stop, self._duties), daemon=True)
        supervisor.start()
        # Started now so a signal handler never has to start a thread (it only sets an event).
        threading.Thread(target=self._stop_now_when_asked, name="stop-now", daemon=True).start()
        self.log.info("runner %s started: %d workers, %d jobs per user", self.consumer,
                 self.settings.max_concurrent_jobs, self.settings.max_jobs_per_user)
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                if self._read_once() is False and self.burst and self._burst_done():
                    break
                backoff.reset()
            except CONNECTION_ERRORS as exc:
                self.health.lost(exc)
                self.stopping.wait(backoff.next_delay())
            except redis.ResponseError as exc:
                self._on_response_error(exc)
                self.stopping.wait(backoff.next_delay())
        return self._shutdown(supervisor)

    def _startup(self) -> None:
        ensure_group(self.client)
        self._heartbeat()
        self._remove_stale_workdirs()

    def request_stop(self) -> None:
        """From a signal handler. First signal: stop reading, finish running jobs. Second: stop now.
        Only flags are touched here; the work happens on other threads (no lock is re-entered)."""
        if self.stopping.is_set():
            self._stop_now_requested.set()
            return
        self.stopping.set()

    def _stop_now_when_asked(self) -> None:
        self._stop_now_requested.wait()
        self.stop_now()

    def stop_now(self) -> None:
        """Kill running jobs and exit at once; their entries are handed back for takeover."""
        self.hard_stop.set()
        actives = self._actives()
        for active in actives:
            active.finished.set()  # no renewal may undo the release and hand-back below
            active.control.cancel(StopReason.SHUTDOWN)
        try:
            for active in actives:
                self.leases.release_slot(active.attempt)
            ids = [a.attempt.entry_id for a in actives] + self._waiting_ids()
            self.leases.hand_back(self.consumer, ids)
        except (redis.RedisError, OSError):
            pass  # they become claimable after CLAIM_MIN_IDLE anyway
        self.log.warning("second signal: stopped now; %d running job(s) left for another runner", len(actives))
        for handler in logging.getLogger("repobox_cli").handlers:
            handler.flush()
        os._exit(1)

    def _shutdown(self, supervisor: threading.Thread) -> int:
        self._hand_back_waiting()
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        with self._lock:
            if self.running:
                self.log.info("stopping: waiting for %d running job(s) to finish", len(self.running))
            while self.running and time.monotonic() < deadline:
                self._lock.wait(self.settings.tick_s)
        for active in self._actives():
            self.log.warning("shutdown timeout: stopping job", extra={"job_id": active.job.id})
            active.control.cancel(StopReason.SHUTDOWN)
        if self._actives():
            self.hard_stop.set()  # jobs still waiting for Redis give up: SHUTDOWN_TIMEOUT is a bound
        self.pool.shutdown(wait=True)
        self.supervisor_stop.set()
        supervisor.join(timeout=5)
        try:
            self._housekeeping()
        except (redis.RedisError, OSError) as exc:
            self.log.warning("stream housekeeping at stop failed: %s", exc)
        self._leave_group()
        summary = ", ".join(f"{n} {k}" for k, n in sorted(self.stats.items())) or "no jobs"
        self.log.info("runner %s stopped: %s", self.consumer, summary)
        return 0

    # -- reading -------------------------------------------------------------------------
    def _free_workers(self) -> int:
        return self.settings.max_concurrent_jobs - len(self.running)

    def _waiting_count(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def _read_once(self) -> bool | None:
        """Read and admit a batch; False when the stream had nothing, None when no room to read."""
        with self._lock:
            free = self._free_workers()
            if free <= 0 or self._waiting_count() >= MAX_WAITING_ENTRIES:
                self._lock.wait(self.settings.tick_s)
                return None
        block_ms = self.settings.block_ms
        reply = self.client.xreadgroup(keys.RUNNERS_GROUP, self.consumer, {keys.JOBS_STREAM: ">"},
                                       count=free, block=block_ms)
        self.health.ok()
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            if self.stopping.is_set():
                self._hand_back_unstarted([entry_id])
                continue
            self._admit_safely(entry_id, fields, deliveries=1)
        return bool(entries)

    def _admit_safely(self, entry_id: str, fields: Mapping[str, str] | None, *, deliveries: int) -> None:
        try:
            self.admit(entry_id, fields, deliveries=deliveries)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - boundary: one bad entry must not stop the runner
            # It stays pending: a sweep re-delivers it later, and MAX_DELIVERIES bounds the tries.
            self.log.error("entry %s could not be admitted: %s: %s", entry_id, type(exc).__name__, one_line(str(exc)))

    def _burst_done(self) -> bool:
        with self._lock:
            if self.running or self.waiting:
                return False
        return not self._claim_sweep()

    def _on_response_error(self, exc: redis.ResponseError) -> None:
        if "NOGROUP" in str(exc):
            self.log.warning("consumer group missing (Redis restarted empty?): creating it again")
            ensure_group(self.client)
        else:
            self.log.error("Redis refused a command: %s", exc)

    # -- admitting -----------------------------------------------------------------------
    def admit(self, entry_id: str, fields: Mapping[str, str] | None, *, deliveries: int) -> None:
        """Decide what to do with one delivered entry; never raises for bad data."""
        with self._lock:
            if entry_id in self.running or any(w.entry.entry_id == entry_id for q in self.waiting.values() for w in q):
                return
        try:
            entry = StreamEntry.decode(entry_id, fields)
        except JobDataError as exc:
            self._reject(entry_id, fields or {}, f"malformed stream entry: {exc}")
            return
        if deliveries > self.settings.max_deliveries:
            reason = f"delivered {deliveries} times (MAX_DELIVERIES={self.settings.max_deliveries}): moved to the dead letters"
            self._reject(entry_id, entry.fields, reason, dead_letter=True, deliveries=deliveries)
            return
        try:
            data = self.client.hgetall(keys.job(entry.job_id))
        except redis.ResponseError as exc:  # WRONGTYPE: job:{id} is not a hash
            self._reject(entry_id, entry.fields, f"job key unusable: {exc}")
            return
        if not data:
            self.log.warning("job hash %s is missing: entry %s acknowledged, nothing run", keys.job(entry.job_id),
                             entry_id, extra={"job_id": entry.job_id})
            self._reject(entry_id, entry.fields, "job hash missing")
            return
        try:
            job = Job.decode(entry.job_id, data)
        except JobDataError as exc:
            self._reject(entry_id, entry.fields, f"job refused: {exc}")
            return
        if is_final(job.status):
            self.log.info("job %s is already %s: entry %s acknowledged, not run again", job.id, job.status,
                          entry_id, extra={"job_id": job.id, "user_id": job.user_id})
            self.client.xack(keys.JOBS_STREAM, keys.RUNNERS_GROUP, entry_id)
            return
        self._try_start(Waiting(entry, job), queue_if_busy=True)

    def _reject(self, entry_id: str, fields: Mapping[str, str], reason: str, *, dead_letter: bool = False,
                deliveries: int = 1) -> None:
        job_id = fields.get("job_id", "")
        try:
            validation.safe_name(job_id, "job_id")
        except JobDataError:
            job_id = ""
        reason = one_line(reason)
        self.log.warning("entry %s: %s", entry_id, reason, extra={"job_id": job_id or None})
        if job_id:
            JobOutput(self.client, job_id, self.health).runner(reason)
        self.leases.reject(self.consumer, entry_id, fields, reason, now_ms(), job_id=job_id,
                           dead_letter=dead_letter, deliveries=deliveries)
        self.stats["dead-lettered" if dead_letter else "refused"] += 1

    def _try_start(self, waiting: Waiting, *, queue_if_busy: bool) -> str:
        """Start the job if a worker and a user slot are free; else (optionally) let it wait.
        Returns the outcome: ok | busy | active | no worker | retry | final | missing | lost."""
        job = waiting.job
        attempt = Attempt(job.id, job.user_id, self.consumer, waiting.entry.entry_id, waiting.attempt_id)
        with self._lock:
            if self._free_workers() <= 0 or self.stopping.is_set():
                outcome = "no worker"
            else:
                try:
                    result = self.leases.begin(attempt, limit=self.settings.max_jobs_per_user,
                                               lease_ms=self.watch.lease_ms, started_at=now_ms())
                    outcome = result.outcome
                except CONNECTION_ERRORS as exc:
                    self.health.lost(exc)
                    outcome = "retry"  # the begin may have run: the same attempt id is retried
                if outcome == "ok":
                    self._dispatch(job, attempt, result.previous_consumer)
                    return outcome
            if outcome in ("no worker", "busy", "active", "retry"):
                if queue_if_busy:
                    self.waiting.setdefault(job.user_id, deque()).append(waiting)
                    if outcome != "retry":
                        self.leases.mark_waiting(self.consumer, waiting.entry.entry_id)
                return outcome
        self._not_started(waiting, outcome, result.final_status)
        return outcome

    def _not_started(self, waiting: Waiting, outcome: str, final_status: str) -> None:
        entry_id = waiting.entry.entry_id
        if outcome == "final":
            self.log.info("job %s is already %s: not run again", waiting.job.id, final_status,
                          extra={"job_id": waiting.job.id, "user_id": waiting.job.user_id})
            self.client.xack(keys.JOBS_STREAM, keys.RUNNERS_GROUP, entry_id)
        elif outcome == "missing":
            self._reject(entry_id, waiting.entry.fields, "job hash missing")
        else:
            self.log.info("entry %s is no longer ours: another runner took it", entry_id)

    def _dispatch(self, job: Job, attempt: Attempt, previous: str) -> None:
        control = JobControl(self.settings.job_timeout_s)
        output = JobOutput(self.client, job.id, self.health, limits=self.settings.output_limits)
        active = ActiveJob(job, attempt, control, output, previous)
        self.running[attempt.entry_id] = active
        self.pool.submit(self._work, active)

    def _work(self, active: ActiveJob) -> None:
        try:
            outcome = self.executor.execute(active)
        except Exception as exc:  # noqa: BLE001 - boundary: keep the worker alive, whatever happens
            self.log.error("worker error: %s: %s", type(exc).__name__, one_line(str(exc)), extra={"job_id": active.job.id})
            outcome = "error"
        with self._lock:
            self.running.pop(active.attempt.entry_id, None)
            self.stats[outcome] += 1
            self._lock.notify_all()

    # -- supervisor duties ---------------------------------------------------------------
    def _actives(self) -> list[ActiveJob]:
        with self._lock:
            return list(self.running.values())

    def _waiting_ids(self) -> list[str]:
        with self._lock:
            return [w.entry.entry_id for q in self.waiting.values() for w in q]

    def _duties(self) -> None:
        now = time.monotonic()
        self._start_waiting()
        if now >= self._next_heartbeat:
            self._heartbeat()
            lost = set(self.leases.renew_waiting(self.consumer, self._waiting_ids()))
            if lost:
                self._drop_waiting(lost)
            self._next_heartbeat = now + min(HEARTBEAT_INTERVAL_S, self.settings.lease_renew_s)
        if self.health.recoveries != self._recoveries_seen:
            self._recoveries_seen = self.health.recoveries
            self._next_heartbeat = 0.0  # renew waiting entries' claims at once
        if now >= self._next_sweep and not self.stopping.is_set() and self._sweep_allowed(now):
            self._claim_sweep()
            self._next_sweep = now + min(CLAIM_SWEEP_MAX_S, self.settings.claim_min_idle_s / 2)
        if now >= self._next_housekeeping:
            self._housekeeping()
            self._next_housekeeping = now + HOUSEKEEPING_INTERVAL_S

    def _sweep_allowed(self, now: float) -> bool:
        """Not right after an outage: every live runner first renews the claims the outage aged."""
        grace_s = OUTAGE_GRACE_S + 4 * self.settings.tick_s
        return now - self.health.back_at >= grace_s

    def _start_waiting(self) -> None:
        """Each user's oldest waiting entry gets a try at a slot, while workers are free."""
        with self._lock:
            users = [u for u, q in self.waiting.items() if q]
        for user in users:
            with self._lock:
                queue = self.waiting.get(user)
                if not queue or self._free_workers() <= 0:
                    continue
                head = queue[0]
            outcome = self._try_start(head, queue_if_busy=False)
            if outcome in ("busy", "no worker", "retry"):
                continue
            with self._lock:
                if queue and queue[0] is head:
                    queue.popleft()
                    if outcome == "active":
                        # Its job runs elsewhere (a duplicate entry, or `exec`): let the
                        # user's other entries go first; it is acked once that run ends.
                        queue.append(head)
                if not queue:
                    self.waiting.pop(user, None)

    def _drop_waiting(self, lost: set[str]) -> None:
        with self._lock:
            for user in list(self.waiting):
                kept = deque(w for w in self.waiting[user] if w.entry.entry_id not in lost)
                if kept:
                    self.waiting[user] = kept
                else:
                    del self.waiting[user]

    def _claim_sweep(self) -> bool:
        """Take over entries idle ≥ CLAIM_MIN_IDLE (their runner is gone); True if any."""
        with self._lock:
            room = self._free_workers() + max(0, MAX_WAITING_ENTRIES - self._waiting_count())
        if room <= 0:
            return False
        min_idle_ms = int(self.settings.claim_min_idle_s * 1000)
        reply = self.client.xautoclaim(keys.JOBS_STREAM, keys.RUNNERS_GROUP, self.consumer, min_idle_ms,
                                       start_id=self._sweep_cursor, count=min(room, 100))
        self._sweep_cursor = str(reply[0]) if reply else "0-0"
        claimed = [(i, f) for i, f in (reply[1] if reply else []) if i]
        if not claimed:
            return False
        counts = self._delivery_counts([i for i, _ in claimed])
        for entry_id, fields in claimed:
            deliveries = self._uncount_waiting(entry_id, counts.get(entry_id, 1))
            self.log.info("took over entry %s (idle past CLAIM_MIN_IDLE, delivery %d)", entry_id, deliveries)
            self._admit_safely(entry_id, fields, deliveries=deliveries)
        return True

    def _uncount_waiting(self, entry_id: str, deliveries: int) -> int:
        """A delivery to a runner that died while the entry only *waited* for a slot does not
        count toward MAX_DELIVERIES: waiting must not burn a job's budget."""
        if not self.leases.take_waiting_mark(entry_id) or deliveries <= 1:
            return deliveries
        self.client.xclaim(keys.JOBS_STREAM, keys.RUNNERS_GROUP, self.consumer, 0, [entry_id],
                           retrycount=deliveries - 1, justid=True)
        return deliveries - 1

    def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        rows = self.client.xpending_range(keys.JOBS_STREAM, keys.RUNNERS_GROUP, min=min(ids, key=_id_key),
                                          max=max(ids, key=_id_key), count=len(ids) + 1000, consumername=self.consumer)
        return {str(r["message_id"]): int(r["times_delivered"]) for r in rows}

    def _heartbeat(self) -> None:
        ttl_s = max(10, int(self.settings.claim_min_idle_s))
        info = {"runner_id": self.consumer, "host": socket.gethostname(), "pid": os.getpid(),
                "running": len(self.running), "waiting": self._waiting_count(), "at": now_ms()}
        self.client.set(keys.heartbeat(self.consumer), json.dumps(info), ex=ttl_s)

    def _housekeeping(self) -> None:
        trimmed = self.leases.trim()
        if trimmed:
            self.log.info("trimmed %d acknowledged entries from %s", trimmed, keys.JOBS_STREAM)
        for consumer in self.client.xinfo_consumers(keys.JOBS_STREAM, keys.RUNNERS_GROUP):
            name = str(consumer["name"])
            if name != self.consumer and int(consumer["pending"]) == 0 and self.leases.remove_consumer_if_gone(name):
                self.log.info("removed consumer %s of a runner that is gone and held nothing", name)

    # -- stopping --------------------------------------------------------------------------
    def _hand_back_waiting(self) -> None:
        ids = self._waiting_ids()
        with self._lock:
            self.waiting.clear()
        self._hand_back_unstarted(ids)

    def _hand_back_unstarted(self, ids: list[str]) -> None:
        """Entries this runner holds but never started: claimable at once by another runner, and
        marked as only waited on, so the takeover does not count as a delivery."""
        if not ids:
            return
        try:
            for entry_id in ids:
                self.leases.mark_waiting(self.consumer, entry_id)
            self.leases.hand_back(self.consumer, ids)
            self.log.info("handed back %d entries not started here, for other runners", len(ids))
        except CONNECTION_ERRORS:
            self.log.warning("could not hand back %d entries: they become claimable after CLAIM_MIN_IDLE", len(ids))

    def _leave_group(self) -> None:
        try:
            self.client.delete(keys.heartbeat(self.consumer))
            pending = self.client.xpending_range(keys.JOBS_STREAM, keys.RUNNERS_GROUP, min="-", max="+",
                                                 count=1, consumername=self.consumer)
            if not pending:
                self.client.xgroup_delconsumer(keys.JOBS_STREAM, keys.RUNNERS_GROUP, self.consumer)
        except (redis.RedisError, OSError) as exc:
            self.log.warning("could not leave the consumer group cleanly: %s", exc)

    def _remove_stale_workdirs(self) -> None:
        """Work dirs of jobs that are final or gone (a crash left them): removed at start, unless
        the operator keeps work dirs (CLEANUP_AFTER_JOB=false)."""
        temp_dir = self.settings.temp_dir
        workdir.ensure_private_dir(temp_dir)
        if not self.settings.cleanup_after_job:
            return
        try:
            children = list(temp_dir.iterdir())
        except OSError as exc:
            raise workdir.WorkDirError(f"cannot read TEMP_DIR {temp_dir}: {exc.strerror}") from exc
        for child in children:
            try:
                self._remove_stale_workdir(child)
            except CONNECTION_ERRORS:
                raise  # Redis is away: as before, not an odd entry
            except Exception as exc:  # noqa: BLE001 - boundary: one odd entry must not stop the runner
                self.log.warning("stale work directory %s left in place: %s: %s", child, type(exc).__name__, exc)

    def _remove_stale_workdir(self, child: Path) -> None:
        """Remove `child` if repobox made it and its job is final or gone; a failure is logged."""
        if not workdir.looks_like_job_dir(child):
            return  # not made by repobox: never removed
        try:
            status = self.client.hget(keys.job(child.name), "status")
        except redis.ResponseError:
            return  # not a job's directory we can judge
        if status is None or is_final(status):
            workdir.remove_tree(child)  # logs what it cannot remove and leaves it


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
