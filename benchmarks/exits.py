"""Issue 11's exit bounds: an idle `run` exits within 0.5 s of SIGINT/SIGTERM, and `run --burst`
within 0.5 s of the queue running dry (its last job final → process gone)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from benchmarks.env import READY_DEADLINE_S, Bench, wait_until
from benchmarks.stats import median
from benchmarks.table import Row, fmt_ms

EXIT_DEADLINE_S = 30.0
SETTLE_S = 0.5


def _signal_exit(bench: Bench, signum: signal.Signals) -> float:
    name = f"exit-{signum.name.lower()}"
    runner = bench.start_runner(name=name)
    wait_until(lambda: bench.client.exists(f"runner:heartbeat:{name}"), READY_DEADLINE_S, "the runner to start")
    time.sleep(SETTLE_S)  # idle: every consumer blocked in its read
    started = time.perf_counter()
    runner.signal(signum)
    runner.wait(EXIT_DEADLINE_S)
    return time.perf_counter() - started


def _burst_exit(bench: Bench) -> float:
    job_id = bench.world.add_job(provider_record=False)  # ends right after it starts
    process = subprocess.Popen(
        [sys.executable, "-m", "repobox_cli", "run", "--burst"],
        env=bench.env(RUNNER_ID="exit-burst"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=bench.world.tmp,
    )
    try:
        bench.wait_final(job_id)
        dry = time.perf_counter()
        process.wait(EXIT_DEADLINE_S)
        return time.perf_counter() - dry
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run(bench: Bench, quick: bool) -> list[Row]:
    rounds = 1 if quick else 3
    rows = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        value = median([_signal_exit(bench, signum) for _ in range(rounds)])
        rows.append(
            Row("11", f"idle `run`: {signum.name} → exited", fmt_ms(value), "", target="≤ 500 ms", met=value <= 0.5)
        )
    value = median([_burst_exit(bench) for _ in range(rounds)])
    rows.append(
        Row("11", "`run --burst`: last job final → exited", fmt_ms(value), "", target="≤ 500 ms", met=value <= 0.5)
    )
    return rows
