"""Item 1: pickup latency, `XADD` → the job's `status=running` write, for an idle runner and for
the bare redis-py loop, plus the first job after an idle period.

The jobs have no provider record, so each fails right after it starts: the figure is the pickup,
not git. Time is taken from keyspace notifications (no polling), the same clock for every side.

Two baselines: the bare loop (a plain `HSET`), and the bare loop running the runner's own begin
script (`bare_loop` mode `begin`): the least any consumer pays that marks a job running only
together with its checks and user slot, as repobox must. The runner's figure over the second is
what its own code costs.

That clock hears a write made inside a Lua script (the runner's `begin`) later than a plain
`HSET` (the bare loop's): Redis queues a command's reply before the notifications of its writes,
but a script's reply after them, so the script's caller is written to (and woken) first. The
last row measures that difference alone, the same `HSET` sent both ways from one client.
"""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass

from benchmarks.env import BareLoop, Bench, KeyspaceClock, stream_fields
from benchmarks.stats import percentile, ratio
from benchmarks.table import Row, fmt_ms

SETTLE_S = 0.03  # let the consumer go back into its blocking read between jobs


@dataclass(frozen=True)
class Sizes:
    jobs: int
    rounds: int
    idle_s: float
    idle_rounds: int


QUICK = Sizes(jobs=10, rounds=1, idle_s=0.5, idle_rounds=1)
FULL = Sizes(jobs=240, rounds=4, idle_s=10.0, idle_rounds=2)
SCRIPTED_HSET = "redis.call('HSET', KEYS[1], 'status', 'running') return 1"


def _one(bench: Bench, clock: KeyspaceClock, stream: str, *, runner: bool) -> float:
    job_id = bench.world.add_job(enqueue=False, provider_record=False)
    if not runner:
        bench.client.hset(f"job:{job_id}", "status", "pending")
    fields = stream_fields(bench, job_id)
    clock.arm(f"job:{job_id}")
    bench.client.xadd(stream, fields)
    latency = clock.wait(f"job:{job_id}")
    bench.wait_final(job_id)
    time.sleep(SETTLE_S)
    return latency


def _clock_bias(bench: Bench, clock: KeyspaceClock, trials: int) -> tuple[float, float]:
    """Medians of send → heard for one `HSET`, inside a Lua script and plain, interleaved."""
    script = bench.client.register_script(SCRIPTED_HSET)
    scripted: list[float] = []
    plain: list[float] = []
    for _ in range(trials):
        for inside, samples in ((True, scripted), (False, plain)):
            key = f"job:clock-{uuid.uuid4()}"
            clock.arm(key)
            if inside:
                script(keys=[key])
            else:
                bench.client.hset(key, "status", "running")
            samples.append(clock.wait(key))
            bench.client.delete(key)
            time.sleep(SETTLE_S / 10)
    return percentile(scripted, 50), percentile(plain, 50)


def run(bench: Bench, sizes: Sizes) -> list[Row]:
    ours: list[float] = []
    base: list[float] = []
    base_begin: list[float] = []
    idle_ours: list[float] = []
    idle_base: list[float] = []
    with ExitStack() as started:  # whatever started is stopped, whichever start or step fails
        clock = KeyspaceClock(bench.client, "job:*", "hset")
        started.callback(clock.close)
        runner = bench.start_runner(name="pickup", MAX_CONCURRENT_JOBS="4")
        started.callback(bench.stop_runner, runner)
        bare = BareLoop(bench, "pickup", "bench:pickup")
        started.callback(bare.close)
        scripted = BareLoop(bench, "begin", "bench:pickup-begin")
        started.callback(scripted.close)
        per_round = max(1, sizes.jobs // sizes.rounds)
        for _ in range(sizes.rounds):
            for _ in range(per_round):
                ours.append(_one(bench, clock, "jobs:stream", runner=True))
                base.append(_one(bench, clock, bare.stream, runner=False))
                base_begin.append(_one(bench, clock, scripted.stream, runner=False))
        for _ in range(sizes.idle_rounds):
            time.sleep(sizes.idle_s)
            idle_ours.append(_one(bench, clock, "jobs:stream", runner=True))
            time.sleep(sizes.idle_s)
            idle_base.append(_one(bench, clock, bare.stream, runner=False))
        bias_script, bias_plain = _clock_bias(bench, clock, sizes.jobs)
    p50, p99 = percentile(ours, 50), percentile(ours + idle_ours, 99)
    b50, b99 = percentile(base, 50), percentile(base + idle_base, 99)
    first, first_base = max(idle_ours), max(idle_base)
    s50 = percentile(base_begin, 50)
    n = len(ours) + len(idle_ours)
    return [
        Row("1", f"pickup p50 ({n} jobs)", fmt_ms(p50), fmt_ms(b50), ratio(p50, b50), "≤ 1 ms", p50 <= 0.001),
        Row(
            "1",
            "pickup p50 against the bare loop running the same begin script",
            fmt_ms(p50),
            fmt_ms(s50),
            ratio(p50, s50),
        ),
        Row("1", "pickup p99, idle firsts included", fmt_ms(p99), fmt_ms(b99), ratio(p99, b99), "≤ 3 ms", p99 <= 0.003),
        Row(
            "1",
            f"pickup, first job after {sizes.idle_s:g} s idle (worst)",
            fmt_ms(first),
            fmt_ms(first_base),
            ratio(first, first_base),
            "≤ 3 ms",
            first <= 0.003,
        ),
        Row(
            "1",
            "the clock alone: one HSET heard, sent in a Lua script vs plain (p50)",
            fmt_ms(bias_script),
            fmt_ms(bias_plain),
            ratio(bias_script, bias_plain),
        ),
    ]
