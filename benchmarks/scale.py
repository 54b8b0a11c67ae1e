"""Item 7: scale. Pickup and Redis commands per job with a stream history ("backlog") of 10 vs.
100,000 entries (delivered and acknowledged: what a busy stream holds until it is trimmed), in
interleaved rounds, and the
pickup of 8 jobs enqueued at once by 1 user vs. by 8 users. Jobs end right after they start
(no provider record): the figures are the runner's, not git's."""

from __future__ import annotations

import time

from benchmarks import pickup
from benchmarks.env import Bench, KeyspaceClock, stream_fields
from benchmarks.monitor import CommandCounter
from benchmarks.stats import median, ratio
from benchmarks.table import Row, fmt_ms
from repobox_cli import keys
from tests.support.world import RunnerProcess

FILL_BATCH = 5000
BURST = 8


def _fill(bench: Bench, count: int) -> None:
    """`count` entries in the stream, all already read by the runners' group (none pending)."""
    fields = {"job_id": "0" * 8, "user_id": bench.world.default_user, "provider_id": bench.world.provider_id}
    fields |= {"repo_url": bench.world.repo_url, "prompt": "old", "environment": "default"}
    for start in range(0, count, FILL_BATCH):
        pipe = bench.client.pipeline(transaction=False)
        for _ in range(min(FILL_BATCH, count - start)):
            pipe.xadd(keys.JOBS_STREAM, fields)
        pipe.execute()
    bench.client.xgroup_create(keys.JOBS_STREAM, keys.RUNNERS_GROUP, id="$", mkstream=True)


def _backlog(bench: Bench, clock: KeyspaceClock, history: int, jobs: int) -> tuple[list[float], int, RunnerProcess]:
    """Pickup latencies and the runner's Redis commands (output pushes excluded) for `jobs` jobs
    with `history` entries in the stream; the runner, still running (MAX_CONCURRENT_JOBS 8)."""
    bench.client.delete(keys.JOBS_STREAM)
    _fill(bench, history)
    runner = bench.start_runner(name=f"scale-{history}", MAX_CONCURRENT_JOBS=str(BURST))
    counter = CommandCounter(bench.redis_server.port, runner.pid)
    try:
        time.sleep(pickup.SETTLE_S)
        counter.counting.set()
        latencies = [pickup._one(bench, clock, keys.JOBS_STREAM, runner=True) for _ in range(jobs)]
    except BaseException:
        bench.stop_runner(runner)
        raise
    finally:
        commands = counter.close()
    return latencies, sum(n for name, n in commands.items() if not name.endswith("(output)")), runner


def _burst(bench: Bench, clock: KeyspaceClock, users: int) -> float:
    """Median pickup of BURST jobs written at once, spread over `users` users."""
    ids = [
        bench.world.add_job(enqueue=False, provider_record=False, user=bench.world.user(f"u{i % users}"))
        for i in range(BURST)
    ]
    entries = [stream_fields(bench, job_id) for job_id in ids]
    pipe = bench.client.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(keys.JOBS_STREAM, fields)
    for job_id in ids:
        clock.arm(f"job:{job_id}")
    pipe.execute()
    latencies = [clock.wait(f"job:{job_id}") for job_id in ids]
    for job_id in ids:
        bench.wait_final(job_id)
    return median(latencies)


def run(bench: Bench, quick: bool) -> list[Row]:
    big = 1_000 if quick else 100_000
    rounds, jobs = (1, 3) if quick else (6, 15)
    clock = KeyspaceClock(bench.client, "job:*", "hset")
    samples: dict[int, list[float]] = {10: [], big: []}
    commands: dict[int, int] = {10: 0, big: 0}
    try:
        # Rounds interleaved, each on a fresh stream and runner: a drift of the machine's pace
        # weighs on both sides alike. The last runner stays up for the bursts.
        runner: RunnerProcess | None = None
        for _ in range(rounds):
            for history in (10, big):
                if runner is not None:
                    bench.stop_runner(runner)
                latencies, count, runner = _backlog(bench, clock, history, jobs)
                samples[history] += latencies
                commands[history] += count
        assert runner is not None
        small_pickup, big_pickup = median(samples[10]), median(samples[big])
        small_rt, big_rt = commands[10] / (rounds * jobs), commands[big] / (rounds * jobs)
        try:
            one_user = median([_burst(bench, clock, 1) for _ in range(1 if quick else 3)])
            eight_users = median([_burst(bench, clock, 8) for _ in range(1 if quick else 3)])
        finally:
            bench.stop_runner(runner)
    finally:
        clock.close()
    pickup_ratio, rt_ratio = ratio(big_pickup, small_pickup), ratio(big_rt, small_rt)
    return [
        Row(
            "7",
            f"pickup p50, stream history {big:,} vs 10 entries",
            fmt_ms(big_pickup),
            fmt_ms(small_pickup),
            pickup_ratio,
            "≤ 1.2 ×",
            pickup_ratio <= 1.2,
        ),
        Row(
            "7",
            f"Redis commands per job, history {big:,} vs 10",
            f"{big_rt:.1f}",
            f"{small_rt:.1f}",
            rt_ratio,
            "≤ 1.2 ×",
            rt_ratio <= 1.2,
        ),
        Row(
            "7",
            f"pickup p50 of {BURST} jobs at once, 8 users vs 1 user (MAX_JOBS_PER_USER 3)",
            fmt_ms(eight_users),
            fmt_ms(one_user),
            ratio(eight_users, one_user),
        ),
    ]
