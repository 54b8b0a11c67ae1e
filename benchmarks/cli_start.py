"""Item 8: CLI start, `repobox --version`, `--help` and `pending` on an empty Redis, wall time and
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


TIME_BIN = "/usr/bin/time"  # GNU time: its child's peak RSS (ours would count this process's, forked)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB; 0 without GNU time) of one process run to its end."""
    measure = [TIME_BIN, "-f", "%M"] if os.path.exists(TIME_BIN) else []
    started = time.perf_counter()
    done = subprocess.run([*measure, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]}")
    return elapsed, int(done.stderr.split()[-1]) if measure else 0


def run(bench: Bench, quick: bool) -> list[Row]:
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    env = bench.env()
    commands = {
        "python": [sys.executable, "-c", "pass"],
        "version": [sys.executable, "-m", "repobox_cli", "--version"],
        "help": [sys.executable, "-m", "repobox_cli", "--help"],
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
    for name, target_s in (("version", 0.120), ("help", None), ("pending", None)):
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
