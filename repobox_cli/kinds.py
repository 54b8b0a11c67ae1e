"""The work-kind interface: what the engine needs to know about one kind of work.

The engine (reading a group, admission, per-user slots and waiting, leases and fencing,
takeovers, dead letters, heartbeats, shutdown) knows streams and entries, not jobs. A kind of
work says which stream and group it reads, how to decode an entry and load what it names, and
how to run it. Single-shot jobs (`job_kind.JobKind`) are the first kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.jobs import Job, StreamEntry


class WorkKind(Protocol):
    name: str
    stream: str
    group: str

    def decode(self, entry_id: str, fields: Mapping[str, str] | None) -> StreamEntry:
        """The entry's checked fields; raises JobDataError naming what is wrong."""
        ...

    def load(self, entry: StreamEntry) -> Job | None:
        """What the entry names, checked; None when it does not exist; JobDataError when it
        cannot be used. redis.ResponseError for a key of the wrong type."""
        ...

    def execute(self, active: ActiveJob) -> RunOutcome:
        """Run one attempt to its end, writing its final state through the leases; never raises."""
        ...
