"""The Job model: decoding stream entries and job hashes (failing loudly), statuses, output lines."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from repobox_cli import validation
from repobox_cli.errors import JobDataError

DEFAULT_BRANCH = "main"
STREAM_FIELDS = ("job_id", "user_id", "provider_id", "repo_url", "prompt", "environment")


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({Status.SUCCESS, Status.FAILED, Status.CANCELLED})


def is_final(status: str | None) -> bool:
    return status in FINAL_STATUSES


def checked_hash_id(what: str, key_id: str, data: Mapping[str, str]) -> None:
    """The id in a hash's key is a safe name and matches the hash's own `id` field, if it has one."""
    validation.safe_name(key_id, f"{what} id")
    stored = data.get("id", key_id)
    if stored != key_id:
        raise JobDataError(f"{what} hash id {stored[:40]!r} does not match {key_id!r}")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class StreamEntry:
    """One delivered entry of jobs:stream. `job_id` is checked; the job hash is the truth for the rest."""

    entry_id: str
    job_id: str
    fields: Mapping[str, str]

    @classmethod
    def decode(cls, entry_id: str, fields: Mapping[str, str] | None) -> StreamEntry:
        """Raise JobDataError naming what is wrong with the entry."""
        if not fields:
            raise JobDataError(f"stream entry {entry_id} has no fields")
        missing = [name for name in STREAM_FIELDS if name not in fields]
        job_id = fields.get("job_id", "")
        if "job_id" in missing:
            raise JobDataError(f"stream entry {entry_id} has no job_id")
        validation.safe_name(job_id, "job_id")
        if missing:
            raise JobDataError(f"stream entry {entry_id} lacks {', '.join(missing)}")
        return cls(entry_id=entry_id, job_id=job_id, fields=dict(fields))


@dataclass(frozen=True)
class Job:
    """A job as stored in `job:{id}`, with every field that reaches a path, ref or command checked."""

    id: str
    user_id: str
    provider_id: str
    repo_url: str
    branch: str
    prompt: str
    environment: str
    status: str

    @classmethod
    def decode(cls, job_id: str, data: Mapping[str, str]) -> Job:
        """Raise JobDataError naming the first unusable field."""
        checked_hash_id("job", job_id, data)
        return cls(
            id=job_id,
            user_id=validation.key_part(data.get("user_id", ""), "user_id"),
            provider_id=validation.key_part(data.get("provider_id", ""), "provider_id"),
            repo_url=data.get("repo_url", ""),
            branch=validation.branch_name(data.get("branch") or DEFAULT_BRANCH),
            prompt=validation.prompt_text(data.get("prompt", "")),
            environment=validation.environment_name(data.get("environment", "")),
            status=data.get("status", Status.PENDING),
        )

    @property
    def work_branch(self) -> str:
        """The branch the runner pushes: `repobox/<first 8 characters of the job id>`."""
        return f"repobox/{self.id[:8]}"


def output_line(line: str, *, stream: str = "stdout", source: str = "runner") -> str:
    """One JSON object of the job output list, as the web app reads it."""
    return json.dumps(
        {"timestamp": now_ms(), "line": line, "stream": stream, "source": source},
        ensure_ascii=False,
    )
