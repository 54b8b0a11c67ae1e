"""Item 8: CLI start, `repobox --version` and `repobox pending` on an empty Redis, wall time and
peak RSS, against `python -c pass` (the interpreter's own start), interleaved. Run as
`python -m repobox_cli` (what the `repobox` script does, and what PYTHONPATH can point elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.env import Bench
from benchmarks.stats import median, ratio
from benchmarks.table import Row, fmt_ms

QUICK_ROUNDS, FULL_ROUNDS = 2, 15


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process run to its end (exit code 0 required)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}")
    return elapsed, usage.ru_maxrss


def run(bench: Bench, quick: bool) -> list[Row]:
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    env = bench.env()
    commands = {
        "python": [sys.executable, "-c", "pass"],
        "version": [sys.executable, "-m", "repobox_cli", "--version"],
        "pending": [sys.executable, "-m", "repobox_cli", "pending"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    peaks: dict[str, list[int]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            elapsed, peak_kib = timed(argv, env)
            times[name].append(elapsed)
            peaks[name].append(peak_kib)
    base = median(times["python"])
    rows = []
    for name, target_s in (("version", 0.120), ("pending", None)):
        value = median(times[name])
        mib = median(peaks[name]) / 1024
        rows.append(
            Row(
                "8",
                f"`repobox {' '.join(commands[name][3:])}` start to exit (peak {mib:.0f} MiB)",
                fmt_ms(value),
                f"{fmt_ms(base)} (`python -c pass`)",
                ratio(value, base),
                "≤ 120 ms" if target_s else "",
                value <= target_s if target_s else None,
            )
        )
    return rows
