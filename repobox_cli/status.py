"""What `repobox status` shows: live runners, user slots in use, the stream, dead letters, and the
jobs finished in the last hour by status. Reads only; keys found by SCAN on fixed prefixes."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from repobox_cli import keys

SCAN_BATCH = 500
RECENT_MS = 3600 * 1000


@dataclass(frozen=True)
class RunnerInfo:
    runner_id: str
    host: str
    pid: int | None
    started_at: int | None
    concurrency: int | None
    running: int
    waiting: int
    heartbeat_age_ms: int


@dataclass
class StatusReport:
    runners: list[RunnerInfo] = field(default_factory=list)
    slots: dict[str, int] = field(default_factory=dict)  # user id -> live slots
    stream_length: int = 0
    lag: int | None = None
    pending: int = 0
    dead_letters: int = 0
    finished_last_hour: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _redis_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _runners(client: redis.Redis, now: int) -> list[RunnerInfo]:
    found = []
    for name in client.scan_iter(match=f"{keys.HEARTBEAT_PREFIX}*", count=SCAN_BATCH, _type="string"):
        raw = client.get(name)
        try:
            beat = json.loads(raw) if raw else None
        except ValueError:
            beat = None
        if not isinstance(beat, dict):
            continue
        found.append(
            RunnerInfo(
                runner_id=str(name)[len(keys.HEARTBEAT_PREFIX) :],
                host=str(beat.get("host", "")),
                pid=_int(beat.get("pid")),
                started_at=_int(beat.get("started_at")),
                concurrency=_int(beat.get("concurrency")),
                running=_int(beat.get("running")) or 0,
                waiting=_int(beat.get("waiting")) or 0,
                heartbeat_age_ms=max(0, now - (_int(beat.get("at")) or now)),
            )
        )
    return sorted(found, key=lambda r: r.runner_id)


def status_report(client: redis.Redis) -> StatusReport:
    now = _redis_now_ms(client)
    report = StatusReport(runners=_runners(client, now))
    for name in client.scan_iter(match=f"{keys.SLOTS_PREFIX}*", count=SCAN_BATCH, _type="zset"):
        live = int(client.zcount(name, now, "+inf"))
        if live:
            report.slots[str(name)[len(keys.SLOTS_PREFIX) :]] = live  # the prefix off, never a split
    try:
        groups = {str(g["name"]): g for g in client.xinfo_groups(keys.JOBS_STREAM)}
        report.stream_length = int(client.xlen(keys.JOBS_STREAM))
    except redis.ResponseError:
        groups = {}  # no stream yet
    group = groups.get(keys.RUNNERS_GROUP)
    if group is not None:
        report.lag = _int(group.get("lag"))
        report.pending = int(group.get("pending", 0))
    report.dead_letters = int(client.xlen(keys.DEAD_LETTERS_STREAM))
    recent = client.zrangebyscore(keys.RECENTLY_FINISHED, now - RECENT_MS, "+inf")
    report.finished_last_hour = dict(Counter(str(m).partition("|")[0] for m in recent))
    return report
