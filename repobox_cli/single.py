"""`repobox exec`: one job now, in the foreground, written to Redis as a worker would."""

from __future__ import annotations

import threading

import redis

from repobox_cli import clone_cache, keys, procs, validation
from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.control import JobControl
from repobox_cli.errors import JobDataError, RepoboxError
from repobox_cli.executor import ExecOptions, Executor
from repobox_cli.jobs import Job, is_final, now_ms
from repobox_cli.leases import Attempt, BeginOutcome, Leases, new_attempt_id
from repobox_cli.output import Echo, JobOutput
from repobox_cli.redis_conn import Durability, RedisHealth
from repobox_cli.settings import Settings
from repobox_cli.supervisor import supervise
from repobox_cli.watch import JobWatch


def load_job(client: redis.Redis, job_id: str) -> Job:
    validation.safe_name(job_id, "job id")
    data = client.hgetall(keys.job(job_id))
    if not data:
        raise JobDataError(f"job {job_id} not found (no {keys.job(job_id)} in Redis)")
    return Job.decode(job_id, data)


class SingleJob:
    """Prepared by `start`, run by `run`; `control` lets the CLI stop it on Ctrl-C."""

    def __init__(self, settings: Settings, client: redis.Redis, options: ExecOptions) -> None:
        self.settings = settings
        self.client = client
        self.options = options
        self.health = RedisHealth()
        self.leases = Leases(client, durability=Durability.of(settings.redis))
        self.control = JobControl(settings.job_timeout_s)
        self.work_dir = ""
        self.hard_stop = threading.Event()

    def run(self, job_id: str, echo: Echo | None) -> RunOutcome:
        job = load_job(self.client, job_id)
        if is_final(job.status):
            raise JobDataError(f"job {job_id} is already {job.status}: not run again")
        attempt = Attempt(job.id, job.user_id, f"{self.settings.runner_id}:exec", "", new_attempt_id())
        watch = JobWatch(self.settings, self.client, self.leases, self.health)
        begun = self.leases.begin(
            attempt, limit=self.settings.max_jobs_per_user, lease_ms=watch.lease_ms, started_at=now_ms()
        )
        if begun.outcome is BeginOutcome.BUSY:
            raise RepoboxError(
                f"user {job.user_id} already runs {self.settings.max_jobs_per_user} job(s) "
                "(MAX_JOBS_PER_USER): try again when one ends"
            )
        if begun.outcome is BeginOutcome.ACTIVE:
            raise RepoboxError(f"job {job_id} is running on another runner right now: not started twice")
        if begun.outcome is not BeginOutcome.OK:
            raise RepoboxError(f"job {job_id} cannot start: {begun.outcome} {begun.final_status or ''}".strip())
        procs.harden_process()
        output = JobOutput(self.client, job.id, self.health, echo, self.settings.output_limits)
        active = ActiveJob(job, attempt, self.control, output, begun.previous_consumer)
        stop = threading.Event()
        watcher = threading.Thread(
            target=supervise,
            daemon=True,
            args=(
                self.client,
                self.health,
                self.settings.tick_s,
                stop,
                [lambda r: watch.tick([active], r)],
                [lambda woke_late: watch.enforce([active], woke_late)],
            ),
        )
        watcher.start()
        try:
            return Executor(self.settings, self.client, self.leases, self.health, self.hard_stop, self.options).execute(
                active
            )
        finally:
            self.work_dir = active.work_dir
            clone_cache.background.stop()  # a mirror's maintenance this job started: a later job does it
            stop.set()
            watcher.join(timeout=5)
