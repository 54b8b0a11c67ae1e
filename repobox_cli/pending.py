"""What `repobox pending` shows: the group's pending entries, lag, consumers, dead letters."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from repobox_cli import keys
from repobox_cli.leases import Attempt, Leases

DEAD_LETTERS_SHOWN = 100
PENDING_SHOWN = 1000


@dataclass(frozen=True)
class PendingEntry:
    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int
    job_id: str
    user_id: str
    job_status: str
    claimable: bool


@dataclass(frozen=True)
class ConsumerInfo:
    """A consumer of the group; host, pid, jobs and heartbeat age come from its runner's
    heartbeat (empty/None when the runner is gone)."""

    name: str
    idle_ms: int
    pending: int
    alive: bool
    host: str = ""
    pid: int | None = None
    running: int | None = None
    waiting: int | None = None
    heartbeat_age_ms: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: str
    entry_id: str
    job_id: str
    reason: str
    deliveries: str


@dataclass
class PendingReport:
    group_exists: bool
    lag: int | None = None
    stream_length: int = 0
    entries: list[PendingEntry] = field(default_factory=list)
    consumers: list[ConsumerInfo] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _group_info(client: redis.Redis) -> dict[str, Any] | None:
    try:
        groups = client.xinfo_groups(keys.JOBS_STREAM)
    except redis.ResponseError:
        return None  # no stream yet
    for group in groups:
        if group["name"] == keys.RUNNERS_GROUP:
            return dict(group)
    return None


def pending_report(client: redis.Redis, claim_min_idle_s: float) -> PendingReport:
    group = _group_info(client)
    report = PendingReport(group_exists=group is not None)
    report.dead_letters = [
        DeadLetter(
            id=i,
            entry_id=f.get("entry_id", ""),
            job_id=f.get("job_id", ""),
            reason=f.get("reason", ""),
            deliveries=f.get("deliveries", ""),
        )
        for i, f in client.xrevrange(keys.DEAD_LETTERS_STREAM, count=DEAD_LETTERS_SHOWN)
    ]
    if group is None:
        return report
    lag = group.get("lag")
    report.lag = int(lag) if lag is not None else None
    report.stream_length = int(client.xlen(keys.JOBS_STREAM))
    rows = client.xpending_range(keys.JOBS_STREAM, keys.RUNNERS_GROUP, min="-", max="+", count=PENDING_SHOWN)
    pipe = client.pipeline(transaction=False)
    for row in rows:
        pipe.xrange(keys.JOBS_STREAM, min=row["message_id"], max=row["message_id"], count=1)
    fetched = pipe.execute()
    fields_by_id = [(found[0][1] if found else {}) for found in fetched]
    pipe = client.pipeline(transaction=False)
    for fields in fields_by_id:
        pipe.hget(keys.job(fields.get("job_id", "")), "status")
    statuses = pipe.execute()
    min_idle_ms = int(claim_min_idle_s * 1000)
    for row, fields, status in zip(rows, fields_by_id, statuses, strict=True):
        idle = int(row["time_since_delivered"])
        report.entries.append(
            PendingEntry(
                entry_id=str(row["message_id"]),
                consumer=str(row["consumer"]),
                idle_ms=idle,
                deliveries=int(row["times_delivered"]),
                job_id=fields.get("job_id", ""),
                user_id=fields.get("user_id", ""),
                job_status=status or "(no job)",
                claimable=idle >= min_idle_ms,
            )
        )
    now = _redis_now_ms(client)
    for consumer in client.xinfo_consumers(keys.JOBS_STREAM, keys.RUNNERS_GROUP):
        name = str(consumer["name"])
        beat = _heartbeat(client, name)
        report.consumers.append(
            ConsumerInfo(
                name=name,
                idle_ms=int(consumer["idle"]),
                pending=int(consumer["pending"]),
                alive=beat is not None,
                host=str((beat or {}).get("host", "")),
                pid=_int_or_none((beat or {}).get("pid")),
                running=_int_or_none((beat or {}).get("running")),
                waiting=_int_or_none((beat or {}).get("waiting")),
                heartbeat_age_ms=max(0, now - at) if beat and (at := _int_or_none(beat.get("at"))) else None,
            )
        )
    return report


def _redis_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _heartbeat(client: redis.Redis, runner: str) -> dict[str, Any] | None:
    """The runner's last heartbeat, or None when it is gone (expired) or unreadable."""
    raw = client.get(keys.heartbeat(runner))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def claim_idle(client: redis.Redis, min_idle_s: float, runner: str | None = None) -> list[str]:
    """Make pending entries claimable at once by a live runner.

    Without `runner`: every entry idle longer than `min_idle_s` whose runner is gone (no
    heartbeat); entries of live runners are left alone. With `runner`: every entry of that runner,
    alive or not, at once — fencing makes a mistake harmless: a live runner whose entry is taken
    over loses its next lease check and stops without writing anything."""
    idle_ms = 0 if runner is not None else int(min_idle_s * 1000)
    rows = client.xpending_range(
        keys.JOBS_STREAM,
        keys.RUNNERS_GROUP,
        min="-",
        max="+",
        count=PENDING_SHOWN,
        idle=idle_ms,
        **({"consumername": runner} if runner is not None else {}),
    )
    leases = Leases(client)
    handed: list[str] = []
    alive: dict[str, bool] = {}
    for row in rows:
        consumer, entry_id = str(row["consumer"]), str(row["message_id"])
        if runner is not None:
            if _abandon_for(client, leases, runner, entry_id):
                handed.append(entry_id)
            continue
        if consumer not in alive:
            alive[consumer] = bool(client.exists(keys.heartbeat(consumer)))
        if not alive[consumer]:
            handed += leases.hand_back(consumer, [entry_id])
    return handed


def _abandon_for(client: redis.Redis, leases: Leases, runner: str, entry_id: str) -> bool:
    """Abandon `runner`'s attempt of the entry's job on its behalf: its user slot is freed too, so
    the job can start again at once instead of after the slot's lease runs out."""
    found = client.xrange(leases.stream, min=entry_id, max=entry_id, count=1)
    job_id = (found[0][1] if found else {}).get("job_id", "")
    token = str(client.get(keys.job_attempt(job_id)) or "") if job_id else ""
    attempt_id, _, owner = token.partition("|")
    user_id = str(client.hget(keys.job(job_id), "user_id") or "") if job_id else ""
    if owner == runner and user_id:
        return leases.abandon(Attempt(job_id, user_id, runner, entry_id, attempt_id), hand_back=True)
    return bool(leases.hand_back(runner, [entry_id]))
