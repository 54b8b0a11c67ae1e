"""A work session's three kinds of work on the engine (SESSIONS.md): init, prompt and push, each
on its own stream and group, with the engine's leases, fencing, takeovers and dead letters.

- A **prompt** is an attempt on the web app's own `job:{jid}` hash, like a single-shot job: it
  takes one of the user's slots (`MAX_JOBS_PER_USER`, shared with jobs).
- An **init** or a **push** has no job hash: its attempt runs on a runner-owned record
  `runner:session_step:{step}` (step = `init-<entry id>` / `push-<entry id>`), with slots of its
  own that do not count against the user's limit (init must reach `ready` fast).

Every line goes to `work_session:{sid}:output` (7 days, refreshed on each write).
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from repobox_cli import keys, sessions, validation
from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.errors import JobDataError
from repobox_cli.jobs import Job, Status, StreamEntry, is_final, now_ms
from repobox_cli.leases import Leases
from repobox_cli.output import JobOutput
from repobox_cli.output_batcher import OutputBatcher
from repobox_cli.redis_conn import RedisHealth
from repobox_cli.session_owner import read_owner
from repobox_cli.session_work import SessionWork
from repobox_cli.sessions import ENDED_STATUSES, SessionJob, SessionStatus, Step

STEP_RECORD_TTL_S = 7 * 24 * 3600
STEP_USER_LIMIT = 1000  # inits and pushes are never held back by the user's job limit


def session_output(
    client: redis.Redis, session_id: str, health: RedisHealth, batcher: OutputBatcher | None = None
) -> JobOutput:
    return JobOutput(
        client,
        session_id,
        health,
        key=keys.work_session_output(session_id),
        ttl_s=sessions.SESSION_OUTPUT_TTL_S,
        batcher=batcher,
    )


def load_session(client: redis.Redis, session_id: str) -> sessions.Session | None:
    data = client.hgetall(keys.work_session(session_id))
    return sessions.Session.decode(session_id, data) if data else None


class _SessionKind:
    """What the three kinds share: output, rejection, execution."""

    name: str
    stream: str
    group: str
    step: Step

    def __init__(
        self, client: redis.Redis, work: SessionWork, leases: Leases, batcher: OutputBatcher | None = None
    ) -> None:
        self.client = client
        self.work = work
        self._leases = leases
        self.batcher = batcher

    def leases(self) -> Leases:
        return self._leases

    def user_limit(self) -> int:
        return STEP_USER_LIMIT

    def open_output(self, job: Job, health: RedisHealth) -> JobOutput:
        assert isinstance(job, SessionJob)
        return session_output(self.client, job.session_id, health, self.batcher)

    def execute(self, active: ActiveJob) -> RunOutcome:
        return self.work.execute(active)

    def entry_user(self, entry: StreamEntry) -> str | None:
        return None  # a session's record is read, and its entry perhaps forwarded, before it begins

    def decode_record(self, entry: StreamEntry, data: Mapping[str, str]) -> Job:
        raise JobDataError(f"a {self.name} entry is loaded before it begins")

    def forward(self, entry_id: str, job: Job, consumer: str) -> str:
        """Prompts and pushes go to the live runner holding the session's working copy."""
        if self.step is Step.INIT or not isinstance(job, SessionJob):
            return ""
        owner = read_owner(self.client, job.session_id)
        if owner is None or owner.runner == consumer:
            return ""
        return owner.runner if self._leases.forward(consumer, entry_id, owner.runner) else ""

    def rejected(self, fields: Mapping[str, str], reason: str, health: RedisHealth) -> None:
        """Say why in the session's output and leave the session where the web app moves on."""
        session_id = fields.get("session_id", "")
        try:
            validation.safe_name(session_id, "session_id")
        except JobDataError:
            return
        key = keys.work_session(session_id)
        if self.client.type(key) != "hash":
            return
        session_output(self.client, session_id, health).error(reason)
        status = self.client.hget(key, "status")
        if status in ENDED_STATUSES:
            return
        fields_out: dict[str, str | int] = {"last_activity_at": now_ms()}
        if self.step is Step.INIT:
            fields_out.update(status=SessionStatus.FAILED, error_message=reason)
        elif self.step is Step.PROMPT:
            fields_out.update(status=SessionStatus.READY, error_message=reason, last_job_status=Status.FAILED)
        else:
            fields_out.update(status=SessionStatus.READY, mr_warning=reason)
        self.client.hset(key, mapping=fields_out)


class _StepKind(_SessionKind):
    """Init and push: the attempt runs on the runner's own step record."""

    def decode(self, entry_id: str, fields: Mapping[str, str] | None) -> StreamEntry:
        if not fields:
            raise JobDataError(f"stream entry {entry_id} has no fields")
        self._message(entry_id, fields)
        return StreamEntry(entry_id=entry_id, job_id=f"{self.step}-{entry_id}", fields=dict(fields))

    def _message(self, entry_id: str, fields: Mapping[str, str]) -> sessions.InitMessage | sessions.PushMessage:
        if self.step is Step.INIT:
            return sessions.InitMessage.decode(entry_id, fields)
        return sessions.PushMessage.decode(entry_id, fields)

    def load(self, entry: StreamEntry) -> Job | None:
        message = self._message(entry.entry_id, entry.fields)
        session = load_session(self.client, message.session_id)
        if session is None:
            return None
        record = keys.session_step(entry.job_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hsetnx(record, "status", Status.PENDING)
        pipe.hset(record, "session_id", session.id)
        pipe.expire(record, STEP_RECORD_TTL_S)
        pipe.hget(record, "status")
        status = str(pipe.execute()[-1])
        if not is_final(status) and session.status in ENDED_STATUSES:
            status = Status.CANCELLED  # pushed, failed or archived: nothing to do
        push = message if isinstance(message, sessions.PushMessage) else None
        return SessionJob(
            id=entry.job_id,
            user_id=session.user_id,
            provider_id=session.provider_id,
            repo_url=session.repo_url,
            branch=session.base_branch,
            prompt="",
            environment="",
            status=status,
            session_id=session.id,
            step=self.step,
            title=push.title if push else "",
            description=push.description if push else "",
        )


class InitKind(_StepKind):
    name = "session-init"
    stream = keys.SESSION_INIT_STREAM
    group = keys.SESSION_INIT_GROUP
    step = Step.INIT
    receives_forwarded = False


class PushKind(_StepKind):
    name = "session-push"
    stream = keys.SESSION_PUSH_STREAM
    group = keys.SESSION_PUSH_GROUP
    step = Step.PUSH
    receives_forwarded = True


class PromptKind(_SessionKind):
    """A prompt runs on the web app's `job:{jid}` hash, under the user's job limit."""

    name = "session-prompt"
    stream = keys.SESSION_JOBS_STREAM
    group = keys.SESSION_JOBS_GROUP
    step = Step.PROMPT
    receives_forwarded = True

    def __init__(
        self,
        client: redis.Redis,
        work: SessionWork,
        leases: Leases,
        max_jobs_per_user: int,
        batcher: OutputBatcher | None = None,
    ) -> None:
        super().__init__(client, work, leases, batcher)
        self.max_jobs_per_user = max_jobs_per_user

    def user_limit(self) -> int:
        return self.max_jobs_per_user

    def decode(self, entry_id: str, fields: Mapping[str, str] | None) -> StreamEntry:
        if not fields:
            raise JobDataError(f"stream entry {entry_id} has no fields")
        message = sessions.PromptMessage.decode(entry_id, fields)
        return StreamEntry(entry_id=entry_id, job_id=message.job_id, fields=dict(fields))

    def load(self, entry: StreamEntry) -> Job | None:
        message = sessions.PromptMessage.decode(entry.entry_id, entry.fields)
        data = self.client.hgetall(keys.job(message.job_id))
        session = load_session(self.client, message.session_id)
        if not data or session is None:
            return None
        job = Job.decode(message.job_id, {**data, "branch": session.work_branch})
        if job.user_id != session.user_id:
            raise JobDataError("the prompt's job belongs to another user than its session")
        return SessionJob(
            id=job.id,
            user_id=job.user_id,
            provider_id=session.provider_id,
            repo_url=session.repo_url,
            branch=session.base_branch,
            prompt=job.prompt or message.prompt,
            environment=message.environment or job.environment,
            status=job.status,
            session_id=session.id,
            step=Step.PROMPT,
        )
