"""Item 2: the dispatch fast path, entries/s for entries whose jobs are already final (a runner
must read, look at the job, and ack without running it) — against the bare loop doing
XREADGROUP (COUNT 10) → HGETALL → XACK. Both get the same batch, written at once."""

from __future__ import annotations

import time
import uuid

from benchmarks.env import BareLoop, Bench, wait_until
from benchmarks.stats import median, ratio
from benchmarks.table import Row, fmt_rate
from repobox_cli import keys

QUICK_ENTRIES, FULL_ENTRIES = 200, 3000
QUICK_ROUNDS, FULL_ROUNDS = 1, 3
DRAIN_DEADLINE_S = 120.0


def _final_jobs(bench: Bench, count: int) -> list[dict[str, str]]:
    """Jobs as the web app writes them, already `success`; their stream fields."""
    user = bench.world.default_user
    provider = bench.world.provider_id
    url = bench.world.repo_url
    entries = []
    pipe = bench.client.pipeline(transaction=False)
    for _ in range(count):
        job_id = str(uuid.uuid4())
        fields = {"job_id": job_id, "user_id": user, "provider_id": provider, "repo_url": url}
        fields |= {"prompt": "Add a test file", "environment": "default"}
        pipe.hset(f"job:{job_id}", mapping={**fields, "id": job_id, "status": "success", "created_at": "1"})
        entries.append(fields)
    pipe.execute()
    return entries


def _drained(bench: Bench, stream: str, group: str) -> bool:
    for info in bench.client.xinfo_groups(stream):
        if info["name"] == group:
            return bool(info["lag"] == 0 and info["pending"] == 0)
    return False


def _drain(bench: Bench, stream: str, group: str, count: int) -> float:
    """Entries/s from writing `count` entries to all of them acknowledged by `group`."""
    entries = _final_jobs(bench, count)
    pipe = bench.client.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(stream, fields)
    started = time.perf_counter()
    pipe.execute()
    wait_until(lambda: _drained(bench, stream, group), DRAIN_DEADLINE_S, f"{group} to drain", poll_s=0.005)
    return count / (time.perf_counter() - started)


def run(bench: Bench, quick: bool) -> list[Row]:
    count = QUICK_ENTRIES if quick else FULL_ENTRIES
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    runner = bench.start_runner(name="dispatch")
    bare = BareLoop(bench, "dispatch", "bench:dispatch")
    ours: list[float] = []
    base: list[float] = []
    try:
        for round_no in range(rounds):
            if round_no % 2:
                base.append(_drain(bench, bare.stream, "bare", count))
            ours.append(_drain(bench, keys.JOBS_STREAM, keys.RUNNERS_GROUP, count))
            if not round_no % 2:
                base.append(_drain(bench, bare.stream, "bare", count))
    finally:
        bare.close()
        bench.stop_runner(runner)
    rate, base_rate = median(ours), median(base)
    share = ratio(rate, base_rate)
    return [
        Row(
            "2",
            f"dispatch fast path ({count} final entries)",
            fmt_rate(rate, "entries/s"),
            fmt_rate(base_rate, "entries/s"),
            share,
            "≥ 0.6 ×",
            share >= 0.6,
        )
    ]
