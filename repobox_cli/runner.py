"""`repobox run`: the engine's wiring and its consumer loops.

Threads, and what each owns:
- the caller of `Runner.run` (the main thread) waits until the runner is stopping, ends the
  consumers' reads at once (`Lane.wake`) and shuts down;
- one **consumer thread** per lane (`lanes.Lane`: one kind of work on its stream and group), named
  `consumer-<kind>`. Each reads its group with XREADGROUP, asking only for as many entries as
  there are free workers, and admits each entry (`Admission`). In burst mode reads do not block:
  between empty reads a lane waits for work to finish, and the jobs lane ends the run once every
  lane is dry and nothing runs;
- the **supervisor thread** (`supervisor.supervise`) watches running work (`JobWatch.tick`:
  cancels, renewals) and does the runner's duties for every lane: start waiting entries, heartbeat
  and renew waiting claims, take over idle entries (`ClaimSweeper`), stream housekeeping; its
  **watchdog thread** enforces deadlines and lapsed leases (`JobWatch.enforce`), whatever the
  supervisor waits for;
- the **session-tidy thread** (`background.OneAtATime`) removes stale session working copies,
  deleting archived sessions' checkpoints from their remotes (which can stall), under a deadline;
- **worker threads** (`WorkerPool`, shared by all lanes) each run one attempt (`WorkKind.execute`)
  to its final state;
- the **signals thread** reads SIGINT/SIGTERM from `StopSignals` (handlers do nothing): the first
  stops the runner, the second stops it now.

Shared state lives in thread-safe objects with their own locks: `WorkerPool` (running work and
reservations) and each lane's `WaitingQueues`. No Redis call is ever made under either lock; each
sweeper's cursor has its own lock, taken only by sweeps. Flags between threads are `threading.Event`s.

One job's path: `cli.run` → `Runner.run` → `Runner._consume` → `Lane.read_once` → `Admission.admit` (decode,
begin, which reads the job) → `WorkerPool.start` → `JobKind.execute` → `Executor.execute` (its steps; `Leases.finish`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from functools import partial
from pathlib import Path

import redis

from repobox_cli import clone_cache, keys, procs, workdir
from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.background import OneAtATime
from repobox_cli.control import JobControl, StopReason
from repobox_cli.executor import Executor
from repobox_cli.heartbeat import HEARTBEAT_INTERVAL_S, Heartbeat
from repobox_cli.housekeeping import HOUSEKEEPING_INTERVAL_S, remove_stale_workdirs
from repobox_cli.job_kind import JobKind
from repobox_cli.kinds import WorkKind
from repobox_cli.lanes import POLL_MS, Lane
from repobox_cli.leases import Leases
from repobox_cli.logs import JobLog
from repobox_cli.output_batcher import OutputBatcher
from repobox_cli.redaction import one_line
from repobox_cli.redis_conn import CONNECTION_ERRORS, Backoff, Durability, RedisHealth, describe
from repobox_cli.session_housekeeping import remove_stale_sessions
from repobox_cli.session_kinds import InitKind, PromptKind, PushKind
from repobox_cli.session_work import CHECKPOINT_DROP_TIMEOUT_S, SessionWork
from repobox_cli.sessions import SessionJob
from repobox_cli.settings import Settings, misspelled
from repobox_cli.stop_signals import StopSignals
from repobox_cli.supervisor import Every, supervise
from repobox_cli.watch import JobWatch
from repobox_cli.workers import WorkerPool

log = logging.getLogger(__name__)

CLAIM_SWEEP_MAX_S = 5.0
OUTAGE_GRACE_S = 3.0  # after Redis returns, live runners renew before anyone sweeps
SUPERVISOR_JOIN_S = 5.0
STOP_NOW_FLUSH_S = 1.0  # a second signal still sends the output lines waiting in their batch, for this long at most
REAP_INTERVAL_S = 5.0  # exit statuses of processes re-parented to the runner are collected this often
WAKE_AGAIN_S = 0.05  # a consumer not yet blocked when woken is woken again this often


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
        self.pool = WorkerPool(settings.max_concurrent_jobs, self._execute)
        self.output_batcher = OutputBatcher()
        self.lanes = [
            Lane(settings, client, kind, self.pool, self.health, self.stopping, self.log) for kind in self._kinds()
        ]
        self.kinds = {lane.name: lane.kind for lane in self.lanes}
        self.session_work.on_claim = self._sessions_claimed
        self.watch = JobWatch(settings, client, self.lanes[0].leases, self.health)
        self.heartbeat = Heartbeat(client, self.consumer, settings.max_concurrent_jobs)
        self._beat = Every(min(HEARTBEAT_INTERVAL_S, settings.lease_renew_s))
        self._sweep = Every(min(CLAIM_SWEEP_MAX_S, settings.claim_min_idle_s / 2))
        self._tidy = Every(HOUSEKEEPING_INTERVAL_S)
        self._reap = Every(REAP_INTERVAL_S)
        self._session_tidy = OneAtATime("session-tidy")

    # -- life cycle ----------------------------------------------------------------------
    def run(self, signals: StopSignals | None = None) -> int:
        """Serve until stopped (by `signals`, or in burst mode when nothing is left); the exit code."""
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
                [lambda woke_late: self.watch.enforce(self._actives(), woke_late)],
            ),
        )
        supervisor.start()
        if signals is not None:
            threading.Thread(target=self._obey, args=(signals,), name="signals", daemon=True).start()
        self._log_start()
        consumers = [
            threading.Thread(target=self._consume, args=(lane,), name=f"consumer-{lane.name}", daemon=True)
            for lane in self.lanes
        ]
        for thread in consumers:
            thread.start()
        self.stopping.wait()
        self._end_reads(consumers)
        return self._shutdown(supervisor)

    def _end_reads(self, consumers: list[threading.Thread]) -> None:
        """Wake every consumer until it has ended: a blocked read returns at once, and entries a read
        returned after the stop are handed back by its consumer (`Lane.read_once`)."""
        deadline = time.monotonic() + self.settings.block_ms / 1000 + SUPERVISOR_JOIN_S
        for lane, thread in zip(self.lanes, consumers, strict=True):
            while thread.is_alive() and time.monotonic() < deadline:
                lane.wake()
                thread.join(WAKE_AGAIN_S)
            if not thread.is_alive():
                lane.close_reader()

    def _kinds(self) -> list[WorkKind]:
        """The kinds of work this runner serves; the first is read on the caller's thread."""
        client, limit, batcher = self.client, self.settings.max_jobs_per_user, self.output_batcher
        durability = Durability.of(self.settings.redis)
        leases = Leases(client, durability=durability)
        executor = Executor(self.settings, client, leases, self.health, self.hard_stop)
        work = self.session_work = SessionWork(self.settings, client, executor, self.health, self.hard_stop)

        def step_leases(stream: str, group: str) -> Leases:
            return Leases(
                client,
                stream=stream,
                group=group,
                durability=durability,
                record_key=keys.session_step,
                slots_key=keys.session_step_slots,
            )

        prompt_leases = Leases(
            client, stream=keys.SESSION_JOBS_STREAM, group=keys.SESSION_JOBS_GROUP, durability=durability
        )
        return [
            JobKind(client, executor, leases, limit, self.settings.output_limits, batcher),
            InitKind(client, work, step_leases(keys.SESSION_INIT_STREAM, keys.SESSION_INIT_GROUP), batcher),
            PromptKind(client, work, prompt_leases, limit, batcher),
            PushKind(client, work, step_leases(keys.SESSION_PUSH_STREAM, keys.SESSION_PUSH_GROUP), batcher),
        ]

    def _execute(self, active: ActiveJob) -> RunOutcome:
        return self.kinds[active.lane].execute(active)

    def _consume(self, lane: Lane) -> None:
        """A lane's consumer loop, until stopping (or, in burst mode, until nothing is left)."""
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                if self.burst:
                    self._burst_step(lane)
                else:
                    lane.read_once(self._block_ms(lane))
                backoff.reset()
            except CONNECTION_ERRORS as exc:
                self.health.lost(exc)
                self.stopping.wait(backoff.next_delay())
            except redis.ResponseError as exc:
                try:
                    lane.on_response_error(exc)
                except CONNECTION_ERRORS as again:
                    self.health.lost(again)
                except redis.RedisError as again:
                    self.log.error("Redis refused a command: %s", one_line(str(again)))
                self.stopping.wait(backoff.next_delay())
            except Exception as exc:  # noqa: BLE001 - boundary: a consumer must outlive any bug, as the supervisor
                self.log.error("%s consumer error: %s: %s", lane.name, type(exc).__name__, one_line(str(exc)))
                self.stopping.wait(backoff.next_delay())

    def _block_ms(self, lane: Lane) -> int:
        """How long a read may block: BLOCK_MS, but at most POLL_MS for the lanes that find forwarded
        entries between reads while this runner holds sessions (`_sessions_claimed` wakes them)."""
        if lane.kind.receives_forwarded and self.session_work.holds_any():
            return min(self.settings.block_ms, POLL_MS)
        return self.settings.block_ms

    def _sessions_claimed(self) -> None:
        if self.stopping.is_set():
            return  # the reads are ending anyway
        for lane in self.lanes:
            if lane.kind.receives_forwarded:
                lane.wake()

    def _burst_step(self, lane: Lane) -> None:
        """Read without blocking; after an empty read, end the run (the jobs lane, when every lane
        is dry and nothing runs) or wait until work finishes, at most POLL_MS, and read again."""
        seen = self.pool.changes()
        if lane.read_once(None) is not False:
            return
        if lane is self.lanes[0] and self._burst_done():
            self.stopping.set()  # the main thread ends every lane's consumer
            return
        self.pool.wait_for_change(seen, min(self.settings.block_ms, POLL_MS) / 1000)

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
        for line in misspelled(os.environ):
            self.log.warning("%s", line)

    def _startup(self) -> None:
        # Started as Redis came back, maybe: live runners renew the claims an outage aged before this
        # one sweeps for takeovers, as after an outage it saw itself (`_sweep_allowed`).
        self.health.back_at = time.monotonic()
        for lane in self.lanes:
            lane.ensure_group()
        self.heartbeat.beat(0, 0)
        workdir.ensure_private_dir(self.settings.temp_dir)
        if self.settings.cleanup_after_job:
            remove_stale_workdirs(self.client, Path(self.settings.temp_dir))
        self._session_tidy.start(self._tidy_sessions, CHECKPOINT_DROP_TIMEOUT_S)

    def _obey(self, signals: StopSignals) -> None:
        """First signal: stop reading, finish running work. Second: stop now."""
        first = signals.wait()
        if not self.stopping.is_set():  # else the runner was stopping already (burst done): now
            self.log.info("%s: stopping (a second signal stops running work now)", first.name)
            self.stopping.set()
            signals.wait()
        self.stop_now()

    def stop_now(self) -> None:
        """Kill running work and exit at once; its entries are handed back for takeover."""
        self.hard_stop.set()
        actives = self.pool.actives()
        for active in actives:
            active.finished.set()  # no renewal may undo the abandon below
            active.control.cancel(StopReason.SHUTDOWN)
        # Lines still in their batch go before the entries are handed back (a takeover's lines come after).
        self.output_batcher.stop(join_s=STOP_NOW_FLUSH_S)
        try:
            for active in actives:
                (active.leases or self.lanes[0].leases).abandon(active.attempt, hand_back=True)
            for lane in self.lanes:
                lane.leases.release_unstarted(self.consumer, lane.waiting.clear())
        except (redis.RedisError, OSError):
            pass  # they become claimable after CLAIM_MIN_IDLE anyway
        self.log.warning("second signal: stopped now; %d running job(s) left for another runner", len(actives))
        for handler in logging.getLogger("repobox_cli").handlers:
            handler.flush()
        os._exit(1)

    def _shutdown(self, supervisor: threading.Thread) -> int:
        try:  # first: from then on no runner forwards a session's work here (`forward.lua`)
            self.heartbeat.stopping(self.pool.running_count(), 0)
        except (redis.RedisError, OSError) as exc:
            self.log.warning("could not say in the heartbeat that this runner stops: %s", one_line(str(exc)))
        for lane in self.lanes:
            lane.release_held()
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
        clone_cache.background.stop()  # the mirrors' maintenance: the next job starts it again
        self._session_tidy.stop()  # a checkpoint's deletion under way: its working copy stays for the next start
        self.output_batcher.stop()  # every job drained its output; lines of jobs left behind go now
        self.supervisor_stop.set()
        supervisor.join(timeout=SUPERVISOR_JOIN_S)
        for lane in self.lanes:
            try:
                lane.tidy()
            except (redis.RedisError, OSError) as exc:
                self.log.warning("stream housekeeping at stop failed: %s", exc)
        self._leave_groups()
        self.log.info("runner %s stopped: %s", self.consumer, self.pool.summary())
        return 0

    def _leave_groups(self) -> None:
        try:
            self.heartbeat.stop()
            for lane in self.lanes:
                lane.leave_group()
        except (redis.RedisError, OSError) as exc:
            self.log.warning("could not leave the consumer groups cleanly: %s", exc)

    def _burst_done(self) -> bool:
        if self.pool.running_count() or any(len(lane.waiting) for lane in self.lanes):
            return False
        if not all(lane.idle.is_set() for lane in self.lanes):
            return False
        if self.health.recoveries and not self._sweep_allowed():
            return False  # Redis just came back: live runners renew first (a burst run does not wait at its start)
        return not any([lane.take_over() for lane in self.lanes])

    # -- the supervisor's steps ----------------------------------------------------------
    def _watch_jobs(self, recovered: bool) -> None:
        self.watch.tick(self._actives(), recovered)

    def _actives(self) -> list[ActiveJob]:
        return self.pool.actives()

    def _duties(self, recovered: bool) -> None:
        for lane in self.lanes:
            lane.admission.start_waiting()
        if recovered:
            self._beat.now()  # renew waiting entries' claims at once
        if self._beat.due():
            self.heartbeat.beat(self.pool.running_count(), sum(len(lane.waiting) for lane in self.lanes))
            for lane in self.lanes:
                lane.renew_waiting()
        if not self.stopping.is_set() and self._sweep_allowed() and self._sweep.due():
            for lane in self.lanes:
                lane.take_over()
        if self._tidy.due():
            for lane in self.lanes:
                lane.tidy()
            # On a thread of its own: an archived session's checkpoint is deleted from the user's
            # remote, which can stall; this thread renews leases and must never wait on one.
            self._session_tidy.start(self._tidy_sessions, CHECKPOINT_DROP_TIMEOUT_S)
        if self._reap.due():
            # A stopped step's process group is killed whole: git's helpers (git-remote-https,
            # index-pack) outlive git by a moment and are re-parented to the runner, a subreaper.
            procs.reap_orphans()

    def _tidy_sessions(self, control: JobControl) -> None:
        """Working copies of sessions pushed, archived, gone, idle or held elsewhere: removed.
        `control`: the pass's deadline and the runner's stop (the rest wait for the next pass)."""
        busy = {active.job.session_id for active in self.pool.actives() if isinstance(active.job, SessionJob)}
        remove_stale_sessions(
            self.client,
            Path(self.settings.temp_dir),
            self.settings.session_idle_ttl_s,
            busy,
            on_archived=partial(self.session_work.drop_checkpoint, control=control),
            stopped=control.stopped.is_set,
            lock_of=self.session_work.locks.get,
        )

    def _sweep_allowed(self) -> bool:
        """Not right after an outage: every live runner first renews the claims the outage aged."""
        grace_s = OUTAGE_GRACE_S + 4 * self.settings.tick_s
        return time.monotonic() - self.health.back_at >= grace_s
