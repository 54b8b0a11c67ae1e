"""A unit of work this process is running, and how a run ended."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum

from repobox_cli.control import JobControl
from repobox_cli.jobs import Job
from repobox_cli.leases import Attempt, Leases
from repobox_cli.output import JobOutput


class RunOutcome(StrEnum):
    """How one run of a job ended on this runner (counted in the shutdown summary)."""

    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PENDING = "returned to pending"  # exec --no-push
    INTERRUPTED = "interrupted: back to pending"  # Ctrl-C during exec
    LOST = "lost"  # another runner took it over: nothing written
    HANDED_BACK = "handed back"  # this runner stopped: another runner takes it
    MISSING = "missing"  # the job hash was deleted while it ran
    ERROR = "error"  # a bug escaped the executor (logged)


@dataclass
class ActiveJob:
    """A job this process is running: what the supervisor watches and renews.

    Shared by its worker thread and the supervisor thread: `control` and the two events are
    thread-safe; the other fields are set before the job is handed to a worker."""

    job: Job
    attempt: Attempt
    control: JobControl
    output: JobOutput
    previous_consumer: str = ""
    started_monotonic: float = field(default_factory=time.monotonic)
    # When its lease was last renewed (the renewal's send time; its begin's, at first): it runs
    # out CLAIM_MIN_IDLE later by this runner's clock, and Redis's cannot end it sooner.
    renewed_monotonic: float = field(default_factory=time.monotonic)
    # Set when the job starts writing its final state: no more cancels or timeouts apply.
    finishing: threading.Event = field(default_factory=threading.Event)
    # Set once the final state is written (slot freed, entry acked): no more renewals.
    finished: threading.Event = field(default_factory=threading.Event)
    work_dir: str = ""
    lane: str = "job"  # the kind of work (WorkKind.name): which stream its entry belongs to
    leases: Leases | None = None  # the leases of its stream (None: the jobs stream's)
