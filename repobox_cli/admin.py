"""Jobs by hand, as the web app handles them: enqueue, read the output, cancel, retry; and a
health probe. Domain functions: they return data or raise RepoboxError, never print."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis
from redis.client import Pipeline

from repobox_cli import keys, validation
from repobox_cli.errors import JobDataError, RepoboxError
from repobox_cli.jobs import DEFAULT_BRANCH, Status, is_final, now_ms
from repobox_cli.output import OUTPUT_TTL_S, RUNNER_SOURCE

FOLLOW_POLL_S = 0.2
HEARTBEAT_STALE_MS = 10_000
RETRY_SEPARATOR = "Retrying the job: its earlier output is above this line"


@dataclass(frozen=True)
class NewJob:
    user_id: str
    provider_id: str
    repo_url: str
    prompt: str
    branch: str = DEFAULT_BRANCH
    environment: str = "default"


def enqueue(client: redis.Redis, new: NewJob) -> str:
    """Create a job exactly as the web app does (hash, `jobs:user:{u}`, stream entry); its id."""
    validation.key_part(new.user_id, "--user")
    validation.key_part(new.provider_id, "--provider")
    validation.repo_url(new.repo_url, allow_http=True)
    validation.branch_name(new.branch)
    validation.prompt_text(new.prompt)
    validation.environment_name(new.environment)
    job_id = str(uuid.uuid4())
    now = str(now_ms())
    name = new.repo_url.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1]
    fields = {
        "id": job_id,
        "user_id": new.user_id,
        "provider_id": new.provider_id,
        "repo_url": new.repo_url,
        "repo_name": name,
        "branch": new.branch,
        "prompt": new.prompt,
        "environment": new.environment,
        "status": Status.PENDING,
        "created_at": now,
    }
    entry_fields = ("user_id", "provider_id", "repo_url", "prompt", "environment")
    with _typed_transaction(client, {keys.user_jobs(new.user_id): "zset", keys.JOBS_STREAM: "stream"}) as pipe:
        pipe.hset(keys.job(job_id), mapping=fields)
        pipe.zadd(keys.user_jobs(new.user_id), {job_id: int(now)})
        pipe.xadd(keys.JOBS_STREAM, {"job_id": job_id, **{f: fields[f] for f in entry_fields}})
    return job_id


@contextmanager
def _typed_transaction(client: redis.Redis, expected: Mapping[str, str]) -> Iterator[Pipeline]:
    """A MULTI … EXEC of what the block queues, only while each key of `expected` is missing or of
    its type (WATCHed from the check to the EXEC). Redis does not roll a transaction back when one
    command fails for a key's type: without this, a job could be written without its entry."""
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(*expected)
        for key, kind in expected.items():
            found = pipe.type(key)
            if found not in (kind, "none"):
                raise RepoboxError(f"{key} in Redis is a {found}, not a {kind}: nothing was written")
        pipe.multi()
        yield pipe
        try:
            pipe.execute()
        except redis.WatchError:
            raise RepoboxError("Redis changed one of the keys meanwhile: nothing was written; try again") from None


def job_status(client: redis.Redis, job_id: str) -> str:
    """The job's status; RepoboxError when there is no such job."""
    validation.safe_name(job_id, "job id")
    status = client.hget(keys.job(job_id), "status")
    if status is None:
        raise RepoboxError(f"job {job_id} not found (no {keys.job(job_id)} in Redis)")
    return str(status)


@dataclass(frozen=True)
class OutputLine:
    line: str
    stream: str
    source: str


def _decode(raw: str) -> OutputLine:
    try:
        item: Any = json.loads(raw)
        return OutputLine(str(item["line"]), str(item.get("stream", "stdout")), str(item.get("source", "")))
    except (ValueError, KeyError, TypeError):
        return OutputLine(raw, "stdout", "")


def output_lines(
    client: redis.Redis, job_id: str, *, follow: bool, sleep: Callable[[float], None] = time.sleep
) -> Iterator[OutputLine]:
    """The job's output as stored; with `follow`, new lines until the job is final."""
    job_status(client, job_id)
    seen = 0
    while True:
        batch = client.lrange(keys.job_output(job_id), seen, -1)
        for raw in batch:
            yield _decode(str(raw))
        seen += len(batch)
        if not follow or is_final(job_status(client, job_id)):
            # One last read: lines written between the read above and the final status.
            for raw in client.lrange(keys.job_output(job_id), seen, -1) if follow else []:
                yield _decode(str(raw))
            return
        sleep(FOLLOW_POLL_S)


def cancel(client: redis.Redis, job_id: str) -> str:
    """What the web app's cancel does: `status=cancelled` unless the job is already final (a
    running job is stopped by its runner within a tick or two). The status after the call."""
    status = job_status(client, job_id)
    if is_final(status):
        return status
    client.hset(keys.job(job_id), "status", Status.CANCELLED)
    return Status.CANCELLED


def retry(client: redis.Redis, job_id: str) -> None:
    """A failed, cancelled or dead-lettered job back to `pending` and enqueued again; its old
    output is kept, followed by a separator line."""
    status = job_status(client, job_id)
    if status not in (Status.FAILED, Status.CANCELLED):
        raise RepoboxError(f"job {job_id} is {status}: only a failed or cancelled job can be retried")
    data = client.hgetall(keys.job(job_id))
    try:
        entry = {f: data[f] for f in ("user_id", "provider_id", "repo_url", "prompt")}
    except KeyError as exc:
        raise JobDataError(f"job {job_id} lacks {exc.args[0]}: cannot enqueue it again") from None
    line = json.dumps({"timestamp": now_ms(), "line": RETRY_SEPARATOR, "stream": "stdout", "source": RUNNER_SOURCE})
    expected = {keys.job(job_id): "hash", keys.job_output(job_id): "list", keys.JOBS_STREAM: "stream"}
    with _typed_transaction(client, expected) as pipe:
        pipe.hdel(keys.job(job_id), "started_at", "finished_at", "error_message")
        pipe.hset(keys.job(job_id), "status", Status.PENDING)
        pipe.rpush(keys.job_output(job_id), line)
        pipe.expire(keys.job_output(job_id), OUTPUT_TTL_S)
        pipe.xadd(keys.JOBS_STREAM, {"job_id": job_id, **entry, "environment": data.get("environment", "")})


class Health(IntEnum):
    """`repobox health` exit codes, one per failure."""

    OK = 0
    REDIS_UNREACHABLE = 1
    NO_GROUP = 3
    RUNNER_GONE = 4
    RUNNER_STALE = 5


def health(client: redis.Redis, runner_id: str | None) -> tuple[Health, str]:
    """Redis reachable, the consumer group present, and (with `runner_id`) that runner's
    heartbeat fresh. The first failure and one line."""
    try:
        client.ping()
        groups = [str(g["name"]) for g in client.xinfo_groups(keys.JOBS_STREAM)]
    except redis.ResponseError:
        groups = []  # no stream yet
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        return Health.REDIS_UNREACHABLE, f"Redis unreachable: {exc}"
    if keys.RUNNERS_GROUP not in groups:
        return Health.NO_GROUP, f"consumer group {keys.RUNNERS_GROUP} missing: no runner has started"
    if runner_id is None:
        return Health.OK, "Redis reachable, consumer group present"
    raw = client.get(keys.heartbeat(runner_id))
    if raw is None:
        return Health.RUNNER_GONE, f"runner {runner_id}: no heartbeat (not running, or dead)"
    try:
        at = int(json.loads(raw)["at"])
    except (ValueError, KeyError, TypeError):
        return Health.RUNNER_STALE, f"runner {runner_id}: unreadable heartbeat"
    seconds, micros = client.time()
    age_ms = int(seconds) * 1000 + int(micros) // 1000 - at
    if age_ms > HEARTBEAT_STALE_MS:
        return Health.RUNNER_STALE, f"runner {runner_id}: heartbeat {age_ms / 1000:.1f} s old"
    return Health.OK, f"runner {runner_id}: alive, heartbeat {age_ms / 1000:.1f} s old"
