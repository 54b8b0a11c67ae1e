"""The work-kind interface: what the engine needs to know about one kind of work.

The engine (reading a group, admission, per-user slots and waiting, leases and fencing,
takeovers, dead letters, heartbeats, shutdown) knows streams and entries, not jobs. A kind of
work says which stream and group it reads, how to decode an entry and load what it names, and
how to run it. Single-shot jobs (`job_kind.JobKind`) are the first kind; a work session's init,
prompts and push (`session_kinds.py`) are three more, each on its own stream and group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.jobs import Job, StreamEntry
from repobox_cli.leases import Leases
from repobox_cli.output import JobOutput
from repobox_cli.redis_conn import RedisHealth


class WorkKind(Protocol):
    name: str
    stream: str
    group: str
    receives_forwarded: bool  # other runners may move entries to this runner's pending list

    def decode(self, entry_id: str, fields: Mapping[str, str] | None) -> StreamEntry:
        """The entry's checked fields; raises JobDataError naming what is wrong."""
        ...

    def load(self, entry: StreamEntry) -> Job | None:
        """What the entry names, checked; None when it does not exist; JobDataError when it
        cannot be used. redis.ResponseError for a key of the wrong type."""
        ...

    def entry_user(self, entry: StreamEntry) -> str | None:
        """The user the entry names, when its record may be read by the begin script itself (one
        round trip less per pickup): a kind that never forwards, whose record is the entry's
        `job_id` hash. None: `load` first (another kind, or an unusable user id)."""
        ...

    def decode_record(self, entry: StreamEntry, data: Mapping[str, str]) -> Job:
        """The record's fields as the begin script read them, checked as `load` checks them."""
        ...

    def execute(self, active: ActiveJob) -> RunOutcome:
        """Run one attempt to its end, writing its final state through the leases; never raises."""
        ...

    def leases(self) -> Leases:
        """The lease scripts bound to this kind's stream, group, records and slots."""
        ...

    def user_limit(self) -> int:
        """How many attempts of this kind one user may run at once (their slots' limit)."""
        ...

    def open_output(self, job: Job, health: RedisHealth) -> JobOutput:
        """Where the attempt's output lines go."""
        ...

    def forward(self, entry_id: str, job: Job, consumer: str) -> str:
        """Hand the entry to the runner that must run it (a live session owner that is not
        `consumer`); the runner it went to, or '' to run it here."""
        ...

    def rejected(self, fields: Mapping[str, str], reason: str, health: RedisHealth) -> None:
        """An entry of this kind was refused or dead-lettered (before its record is failed and the
        entry acked): tell whoever watches it. Never raises for bad data."""
        ...
