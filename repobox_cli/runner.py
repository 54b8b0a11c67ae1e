"""`repobox run`: the engine's wiring and its consumer loop.

Threads, and what each owns:
- the **consumer thread** (the caller of `Runner.run`) reads the group with XREADGROUP, asking
  only for as many entries as there are free workers, and admits each entry (`Admission`);
- the **supervisor thread** (`supervisor.supervise`) watches running jobs (`JobWatch`: deadlines,
  cancels, renewals) and does the runner's duties: start waiting entries, heartbeat and renew
  waiting claims, take over idle entries (`ClaimSweeper`), housekeeping;
- **worker threads** (`WorkerPool`) each run one job (`WorkKind.execute`) to its final state;
- the **stop-now thread** waits for a second signal (handlers only set flags).

Shared state lives in thread-safe objects with their own locks: `WorkerPool` (running jobs and
reservations) and `WaitingQueues`. No Redis call is ever made under either lock; the sweeper's
cursor has its own lock, taken only by sweeps. Flags between threads are `threading.Event`s.

One job's path: `cli.run` → `Runner.run` → `Admission.admit` (decode, load, begin) →
`WorkerPool.start` → `JobKind.execute` → `Executor.execute` (its steps; `Leases.finish`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import redis

from repobox_cli import keys, procs, workdir
from repobox_cli.active import ActiveJob
from repobox_cli.admission import Admission
from repobox_cli.control import StopReason
from repobox_cli.executor import Executor
from repobox_cli.heartbeat import HEARTBEAT_INTERVAL_S, Heartbeat
from repobox_cli.housekeeping import HOUSEKEEPING_INTERVAL_S, remove_stale_workdirs, tidy_group
from repobox_cli.job_kind import JobKind
from repobox_cli.kinds import WorkKind
from repobox_cli.leases import Leases
from repobox_cli.logs import JobLog
from repobox_cli.redis_conn import CONNECTION_ERRORS, Backoff, Durability, RedisHealth, describe
from repobox_cli.settings import Settings
from repobox_cli.supervisor import Every, supervise
from repobox_cli.sweeper import ClaimSweeper
from repobox_cli.waiting import WaitingQueues
from repobox_cli.watch import JobWatch
from repobox_cli.workers import WorkerPool

log = logging.getLogger(__name__)

MAX_WAITING_ENTRIES = 1000  # entries held for users at their limit; beyond this, stop reading
CLAIM_SWEEP_MAX_S = 5.0
OUTAGE_GRACE_S = 3.0  # after Redis returns, live runners renew before anyone sweeps
SUPERVISOR_JOIN_S = 5.0


def ensure_group(client: redis.Redis, stream: str = keys.JOBS_STREAM, group: str = keys.RUNNERS_GROUP) -> None:
    """Create the consumer group (and the stream) when missing; BUSYGROUP means it exists."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
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
        self.stopping = threading.Event()
        self.hard_stop = threading.Event()
        self.supervisor_stop = threading.Event()
        self._stop_now_requested = threading.Event()
        self.leases = Leases(client, durability=Durability.of(settings.redis))
        self.kind: WorkKind = JobKind(client, Executor(settings, client, self.leases, self.health, self.hard_stop))
        self.pool = WorkerPool(settings.max_concurrent_jobs, self.kind.execute)
        self.waiting = WaitingQueues(MAX_WAITING_ENTRIES)
        self.admission = Admission(
            settings, client, self.kind, self.leases, self.pool, self.waiting, self.health, self.stopping, self.log
        )
        self.watch = JobWatch(settings, client, self.leases, self.health)
        self.sweeper = ClaimSweeper(client, self.leases, self.consumer, int(settings.claim_min_idle_s * 1000))
        self.heartbeat = Heartbeat(client, self.consumer, settings.max_concurrent_jobs)
        self._beat = Every(min(HEARTBEAT_INTERVAL_S, settings.lease_renew_s))
        self._sweep = Every(min(CLAIM_SWEEP_MAX_S, settings.claim_min_idle_s / 2))
        self._tidy = Every(HOUSEKEEPING_INTERVAL_S)

    # -- life cycle ----------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped (or, in burst mode, until nothing is left); the exit code."""
        procs.harden_process()
        self._startup()
        supervisor = threading.Thread(
            target=supervise,
            name="supervisor",
            daemon=True,
            args=(
                self.client,
                self.health,
                self.settings.tick_s,
                self.supervisor_stop,
                [self._watch_jobs, self._duties],
            ),
        )
        supervisor.start()
        # Started now so a signal handler never has to start a thread (it only sets an event).
        threading.Thread(target=self._stop_now_when_asked, name="stop-now", daemon=True).start()
        self._log_start()
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

    def _log_start(self) -> None:
        """One line saying what this runner will do; a warning when it would push a test file."""
        s = self.settings
        # Not the command's text: operators put API keys inline in it (`KEY=… claude …`).
        agent = "the AGENT_COMMAND agent" if s.agent_command else "the placeholder agent"
        self.log.info(
            "runner %s started: Redis %s, %d workers, %d jobs per user, job timeout %g s, TEMP_DIR %s, %s, "
            "sandbox %s (network %s)",
            self.consumer,
            describe(s.redis),
            s.max_concurrent_jobs,
            s.max_jobs_per_user,
            s.job_timeout_s,
            s.temp_dir,
            agent,
            s.agent_sandbox,
            s.agent_network,
        )
        if not s.agent_command:
            self.log.warning(
                "no AGENT_COMMAND: every job pushes a placeholder file (.repobox-test.md) to its repository"
            )

    def _startup(self) -> None:
        ensure_group(self.client, self.kind.stream, self.kind.group)
        self.heartbeat.beat(0, 0)
        workdir.ensure_private_dir(self.settings.temp_dir)
        if self.settings.cleanup_after_job:
            remove_stale_workdirs(self.client, Path(self.settings.temp_dir))

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
        actives = self.pool.actives()
        for active in actives:
            active.finished.set()  # no renewal may undo the abandon below
            active.control.cancel(StopReason.SHUTDOWN)
        try:
            for active in actives:
                self.leases.abandon(active.attempt, hand_back=True)
            self.leases.release_unstarted(self.consumer, self.waiting.clear())
        except (redis.RedisError, OSError):
            pass  # they become claimable after CLAIM_MIN_IDLE anyway
        self.log.warning("second signal: stopped now; %d running job(s) left for another runner", len(actives))
        for handler in logging.getLogger("repobox_cli").handlers:
            handler.flush()
        os._exit(1)

    def _shutdown(self, supervisor: threading.Thread) -> int:
        self._release_unstarted(self.waiting.clear())
        running = self.pool.running_count()
        if running:
            self.log.info("stopping: waiting for %d running job(s) to finish", running)
        self.pool.wait_idle(time.monotonic() + self.settings.shutdown_timeout_s, self.settings.tick_s)
        still = self.pool.actives()
        for active in still:
            self.log.warning("shutdown timeout: stopping job", extra={"job_id": active.job.id})
            active.control.cancel(StopReason.SHUTDOWN)
        if still:
            self.hard_stop.set()  # jobs still waiting for Redis give up: SHUTDOWN_TIMEOUT is a bound
        self.pool.shutdown()
        self.supervisor_stop.set()
        supervisor.join(timeout=SUPERVISOR_JOIN_S)
        try:
            tidy_group(self.client, self.leases, self.consumer)
        except (redis.RedisError, OSError) as exc:
            self.log.warning("stream housekeeping at stop failed: %s", exc)
        self._leave_group()
        self.log.info("runner %s stopped: %s", self.consumer, self.pool.summary())
        return 0

    def _leave_group(self) -> None:
        try:
            self.heartbeat.stop()
            pending = self.client.xpending_range(
                self.kind.stream, self.kind.group, min="-", max="+", count=1, consumername=self.consumer
            )
            if not pending:
                self.client.xgroup_delconsumer(self.kind.stream, self.kind.group, self.consumer)
        except (redis.RedisError, OSError) as exc:
            self.log.warning("could not leave the consumer group cleanly: %s", exc)

    # -- the consumer thread -------------------------------------------------------------
    def _read_once(self) -> bool | None:
        """Read and admit a batch; False when the stream had nothing, None when no room to read."""
        free = self.pool.free()
        if free <= 0 or self.waiting.full():
            self.pool.wait_for_room(self.settings.tick_s)
            return None
        reply = self.client.xreadgroup(
            self.kind.group, self.consumer, {self.kind.stream: ">"}, count=free, block=self.settings.block_ms
        )
        self.health.ok()
        entries = reply[0][1] if reply else []
        with self.admission.batch():
            for entry_id, fields in entries:
                if self.stopping.is_set():
                    self._release_unstarted([entry_id])
                    continue
                self.admission.admit_safely(entry_id, fields, deliveries=1)
        return bool(entries)

    def _burst_done(self) -> bool:
        if self.pool.running_count() or len(self.waiting):
            return False
        return not self._take_over()

    def _on_response_error(self, exc: redis.ResponseError) -> None:
        if "NOGROUP" in str(exc):
            self.log.warning("consumer group missing (Redis restarted empty?): creating it again")
            ensure_group(self.client, self.kind.stream, self.kind.group)
        else:
            self.log.error("Redis refused a command: %s", exc)

    def _release_unstarted(self, ids: list[str]) -> None:
        """Entries held but never started: claimable at once, their takeover not counted."""
        if not ids:
            return
        try:
            self.leases.release_unstarted(self.consumer, ids)
            self.log.info("handed back %d entries not started here, for other runners", len(ids))
        except CONNECTION_ERRORS:
            self.log.warning("could not hand back %d entries: they become claimable after CLAIM_MIN_IDLE", len(ids))

    # -- the supervisor's steps ----------------------------------------------------------
    def _watch_jobs(self, recovered: bool) -> None:
        self.watch.tick(self._actives(), recovered)

    def _actives(self) -> list[ActiveJob]:
        return self.pool.actives()

    def _duties(self, recovered: bool) -> None:
        self.admission.start_waiting()
        if recovered:
            self._beat.now()  # renew waiting entries' claims at once
        if self._beat.due():
            self.heartbeat.beat(self.pool.running_count(), len(self.waiting))
            lost = self.leases.renew_waiting(self.consumer, self.waiting.ids())
            if lost:
                self.waiting.drop(set(lost))
        if not self.stopping.is_set() and self._sweep_allowed() and self._sweep.due():
            self._take_over()
        if self._tidy.due():
            tidy_group(self.client, self.leases, self.consumer)

    def _sweep_allowed(self) -> bool:
        """Not right after an outage: every live runner first renews the claims the outage aged."""
        grace_s = OUTAGE_GRACE_S + 4 * self.settings.tick_s
        return time.monotonic() - self.health.back_at >= grace_s

    def _take_over(self) -> bool:
        """Claim entries idle ≥ CLAIM_MIN_IDLE (their runner is gone) and admit them; True if any."""
        room = self.pool.free() + max(0, MAX_WAITING_ENTRIES - len(self.waiting))
        claimed = self.sweeper.sweep(room)
        for item in claimed:
            self.log.info("took over entry %s (idle past CLAIM_MIN_IDLE, delivery %d)", item.entry_id, item.deliveries)
            self.admission.admit_safely(item.entry_id, item.fields, deliveries=item.deliveries)
        return bool(claimed)
