"""Single-shot jobs (`jobs:stream` → `job:{id}`) as a kind of work for the engine."""

from __future__ import annotations

from collections.abc import Mapping

import redis

from repobox_cli import keys, validation
from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.errors import JobDataError
from repobox_cli.executor import Executor
from repobox_cli.jobs import Job, StreamEntry
from repobox_cli.leases import Leases
from repobox_cli.output import JobOutput
from repobox_cli.output_batcher import OutputBatcher
from repobox_cli.output_limits import OutputLimits
from repobox_cli.redis_conn import RedisHealth


class JobKind:
    name = "job"
    stream = keys.JOBS_STREAM
    group = keys.RUNNERS_GROUP
    receives_forwarded = False

    def __init__(
        self,
        client: redis.Redis,
        executor: Executor,
        leases: Leases,
        max_jobs_per_user: int,
        limits: OutputLimits,
        batcher: OutputBatcher | None = None,
    ) -> None:
        self.client = client
        self.limits = limits
        self.batcher = batcher
        self.executor = executor
        self._leases = leases
        self.max_jobs_per_user = max_jobs_per_user

    def decode(self, entry_id: str, fields: Mapping[str, str] | None) -> StreamEntry:
        return StreamEntry.decode(entry_id, fields)

    def load(self, entry: StreamEntry) -> Job | None:
        data = self.client.hgetall(keys.job(entry.job_id))
        return self.decode_record(entry, data) if data else None

    def entry_user(self, entry: StreamEntry) -> str | None:
        try:
            return validation.key_part(entry.fields.get("user_id", ""), "user_id")
        except JobDataError:
            return None  # `load` reads the hash, which is the truth

    def decode_record(self, entry: StreamEntry, data: Mapping[str, str]) -> Job:
        return Job.decode(entry.job_id, data)

    def execute(self, active: ActiveJob) -> RunOutcome:
        return self.executor.execute(active)

    def leases(self) -> Leases:
        return self._leases

    def user_limit(self) -> int:
        return self.max_jobs_per_user

    def open_output(self, job: Job, health: RedisHealth) -> JobOutput:
        return JobOutput(self.client, job.id, health, limits=self.limits, batcher=self.batcher)

    def forward(self, entry_id: str, job: Job, consumer: str) -> str:
        return ""  # any runner may run a job

    def rejected(self, fields: Mapping[str, str], reason: str, health: RedisHealth) -> None:
        job_id = fields.get("job_id", "")
        try:
            validation.safe_name(job_id, "job_id")
        except JobDataError:
            return
        JobOutput(self.client, job_id, health).error(reason)
