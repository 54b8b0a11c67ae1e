"""Item 3: real jobs on a tiny repository (placeholder agent): one job's wall time, and jobs/s at
MAX_CONCURRENT_JOBS 1, 4, 8, against `shell_job.sh` (clone, branch, commit, push), one at a time
and under `xargs -P`. Rounds alternate which side goes first; the figures are medians of rounds.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from benchmarks.env import Bench
from benchmarks.stats import median, ratio
from benchmarks.table import Row, fmt_ms, fmt_rate
from benchmarks.timed_run import run_timed

SHELL_JOB = Path(__file__).resolve().parent / "shell_job.sh"


@dataclass(frozen=True)
class Sizes:
    single_rounds: int
    concurrencies: tuple[int, ...]
    jobs_per_worker: int
    rounds: int
    fleets: tuple[int, ...]  # numbers of runners, each with FLEET_CONCURRENCY workers
    fleet_concurrency: int


QUICK = Sizes(single_rounds=1, concurrencies=(2,), jobs_per_worker=1, rounds=1, fleets=(2,), fleet_concurrency=1)
FULL = Sizes(
    single_rounds=21, concurrencies=(1, 4, 8), jobs_per_worker=3, rounds=3, fleets=(1, 2, 3), fleet_concurrency=4
)


def _runner_batch(bench: Bench, count: int) -> tuple[float, list[float]]:
    """Enqueue `count` jobs at once; the seconds until all are final, and each one's started →
    finished time from its hash."""
    started = time.perf_counter()
    ids = [bench.world.add_job() for _ in range(count)]
    jobs = [bench.wait_final(job_id) for job_id in ids]
    elapsed = time.perf_counter() - started
    bad = [job for job in jobs if job.get("status") != "success"]
    if bad:
        raise RuntimeError(f"a benchmark job did not succeed: {bad[0].get('error', bad[0])}")
    walls = [(int(job["finished_at"]) - int(job["started_at"])) / 1000 for job in jobs]
    return elapsed, walls


def _shell_batch(bench: Bench, count: int, parallel: int) -> float:
    work = bench.root / "shell"
    work.mkdir(exist_ok=True)
    names = "\n".join(f"bench-{uuid.uuid4().hex[:12]}" for _ in range(count)) + "\n"
    command = [
        "xargs",
        "-P",
        str(parallel),
        "-I{}",
        "sh",
        str(SHELL_JOB),
        bench.world.repo_url,
        f"{work}/{{}}",
        "repobox/{}",
    ]
    return run_timed(command, bench.git_env(), input=names)


def _one_job(bench: Bench, sizes: Sizes, **env: str) -> tuple[float, float]:
    """Medians of one job's started → finished time and of the shell script's, rounds interleaved."""
    runner = bench.start_runner(name=f"jobs-1-{len(bench.world.runners)}", MAX_CONCURRENT_JOBS="1", **env)
    ours: list[float] = []
    shell: list[float] = []
    try:
        _runner_batch(bench, 1)  # the first job also makes the clone cache's mirror
        for round_no in range(sizes.single_rounds):
            if round_no % 2:
                shell.append(_shell_batch(bench, 1, 1))
            ours.extend(_runner_batch(bench, 1)[1])
            if not round_no % 2:
                shell.append(_shell_batch(bench, 1, 1))
    finally:
        bench.stop_runner(runner)
    return median(ours), median(shell)


def run(bench: Bench, sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    users = {"MAX_JOBS_PER_USER": "8"}
    one, one_shell = _one_job(bench, sizes, CACHE_MAX_BYTES="0", **users)
    rows.append(
        Row(
            "3",
            "one job, started → finished (tiny repo, no clone cache)",
            fmt_ms(one),
            fmt_ms(one_shell),
            ratio(one, one_shell),
            "≤ 1.10 ×",
            ratio(one, one_shell) <= 1.10,
        )
    )
    one, one_shell = _one_job(bench, sizes, **users)
    rows.append(
        Row(
            "3",
            "one job, started → finished (tiny repo, clone cache on)",
            fmt_ms(one),
            fmt_ms(one_shell),
            ratio(one, one_shell),
        )
    )
    for concurrency in sizes.concurrencies:
        rows.append(_throughput(bench, sizes, concurrency, users))
    for fleet in sizes.fleets:
        rows.append(_throughput(bench, sizes, sizes.fleet_concurrency, users, runners=fleet))
    return rows


def _throughput(bench: Bench, sizes: Sizes, concurrency: int, users: dict[str, str], runners: int = 0) -> Row:
    """Jobs/s of one runner (`runners` 0) or of a fleet of `runners` runners, each with
    `concurrency` workers, against `xargs -P` with as many workers in all."""
    workers = concurrency * max(1, runners)
    count = workers * sizes.jobs_per_worker
    fleet = [
        bench.start_runner(name=f"jobs-{concurrency}x-{n}", MAX_CONCURRENT_JOBS=str(concurrency), **users)
        for n in range(max(1, runners))
    ]
    ours: list[float] = []
    shell: list[float] = []
    try:
        for round_no in range(sizes.rounds):
            if round_no % 2:
                shell.append(count / _shell_batch(bench, count, workers))
            ours.append(count / _runner_batch(bench, count)[0])
            if not round_no % 2:
                shell.append(count / _shell_batch(bench, count, workers))
    finally:
        for runner in fleet:
            bench.stop_runner(runner)
    rate, shell_rate = median(ours), median(shell)
    if runners:
        return Row(
            "3",
            f"jobs/s, {runners} runner(s) × {concurrency} workers ({count} jobs; shell: xargs -P{workers})",
            fmt_rate(rate, "jobs/s"),
            fmt_rate(shell_rate, "jobs/s"),
            ratio(rate, shell_rate),
        )
    target = "≥ 0.9 ×" if concurrency == 8 else ""
    met = ratio(rate, shell_rate) >= 0.9 if concurrency == 8 else None
    return Row(
        "3",
        f"jobs/s at concurrency {concurrency} ({count} jobs; shell: xargs -P{concurrency})",
        fmt_rate(rate, "jobs/s"),
        fmt_rate(shell_rate, "jobs/s"),
        ratio(rate, shell_rate),
        target,
        met,
    )
