"""Item 5: the runner's RSS idle and with 8 jobs in flight (children excluded), and the Redis
commands one job costs (MONITOR, the runner's own connections; Lua-internal calls not counted)."""

from __future__ import annotations

import time

from benchmarks.env import Bench, wait_until
from benchmarks.monitor import CommandCounter
from benchmarks.procinfo import rss_kib
from benchmarks.table import Row

IN_FLIGHT, QUICK_IN_FLIGHT = 8, 2
SETTLE_S = 1.0
AGENT_MARK = "bench-agent-started"


def _rss(bench: Bench, agent_sleep_s: int, in_flight: int) -> tuple[float, float]:
    """MiB idle (after start and a settle) and with `in_flight` agents running."""
    runner = bench.start_runner(
        name="memory",
        MAX_CONCURRENT_JOBS=str(in_flight),
        MAX_JOBS_PER_USER=str(in_flight),
        AGENT_COMMAND=f"echo {AGENT_MARK}; sleep {agent_sleep_s}",
        AGENT_SANDBOX="none",
    )
    try:
        time.sleep(SETTLE_S)
        idle = rss_kib(runner.pid) / 1024
        ids = [bench.world.add_job() for _ in range(in_flight)]

        def agents_running() -> bool:
            return all(AGENT_MARK in bench.world.output_text(job_id) for job_id in ids)

        wait_until(agents_running, 60, f"{in_flight} agents to start", poll_s=0.05)
        busy = rss_kib(runner.pid) / 1024
        for job_id in ids:
            bench.wait_final(job_id)
    finally:
        bench.stop_runner(runner)
    return idle, busy


def _commands_per_job(bench: Bench, jobs: int) -> tuple[float, float, str]:
    runner = bench.start_runner(name="commands", MAX_CONCURRENT_JOBS="1")
    counter = CommandCounter(bench.redis_server.port, runner.pid)
    try:
        time.sleep(SETTLE_S)
        counter.counting.set()
        for _ in range(jobs):
            job_id = bench.world.add_job()
            bench.wait_final(job_id)
        time.sleep(0.2)  # the ack and the next read
    finally:
        commands = counter.close()
        bench.stop_runner(runner)
    total = sum(commands.values())
    output = sum(n for name, n in commands.items() if name.endswith("(output)"))
    top = ", ".join(f"{name} {n / jobs:g}" for name, n in commands.most_common(6))
    return (total - output) / jobs, output / jobs, top


def run(bench: Bench, quick: bool) -> list[Row]:
    in_flight = QUICK_IN_FLIGHT if quick else IN_FLIGHT
    idle, busy = _rss(bench, 1 if quick else 4, in_flight)
    jobs = 1 if quick else 5
    per_job, output, top = _commands_per_job(bench, jobs)
    return [
        Row("5", "runner RSS idle (children excluded)", f"{idle:.0f} MiB", "", target="≤ 40 MB", met=idle <= 40),
        Row(
            "5",
            f"runner RSS, {in_flight} jobs in flight",
            f"{busy:.0f} MiB",
            "",
            target="≤ 80 MB",
            met=busy <= 80 if in_flight == IN_FLIGHT else None,
        ),
        Row(
            "5",
            f"Redis commands per job, output pushes excluded ({jobs} jobs; idle reads and heartbeats included)",
            f"{per_job:.1f} (+{output:.1f} output)",
            f"top: {top}",
            target="≤ 12",
            met=per_job <= 12,
        ),
    ]
