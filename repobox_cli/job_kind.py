"""Single-shot jobs (`jobs:stream` → `job:{id}`) as a kind of work for the engine."""

from __future__ import annotations

from collections.abc import Mapping

import redis

from repobox_cli import keys
from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.executor import Executor
from repobox_cli.jobs import Job, StreamEntry


class JobKind:
    name = "job"
    stream = keys.JOBS_STREAM
    group = keys.RUNNERS_GROUP

    def __init__(self, client: redis.Redis, executor: Executor) -> None:
        self.client = client
        self.executor = executor

    def decode(self, entry_id: str, fields: Mapping[str, str] | None) -> StreamEntry:
        return StreamEntry.decode(entry_id, fields)

    def load(self, entry: StreamEntry) -> Job | None:
        data = self.client.hgetall(keys.job(entry.job_id))
        return Job.decode(entry.job_id, data) if data else None

    def execute(self, active: ActiveJob) -> RunOutcome:
        return self.executor.execute(active)
