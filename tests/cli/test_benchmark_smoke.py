"""`python -m benchmarks --quick`: the performance suite still runs end to end and prints its
table with every item's rows (figures are not judged here: benchmarks are not tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
SMOKE_DEADLINE_S = 150.0  # about 50 s alone on 2 cores; the rest is room for a loaded machine
EXPECTED_FIGURES = (
    "pickup p50",
    "the same begin script",
    "pickup p99",
    "first job after",
    "the clock alone",
    "dispatch fast path",
    "one job, started → finished",
    "jobs/s at concurrency",
    "runner(s) ×",
    "runner RSS idle",
    "jobs in flight",
    "Redis commands per job",
    "output line latency",
    "stream history",
    "8 users vs 1 user",
    "medium repo",
    "`repobox --version`",
    "`repobox pending`",
    "SIGINT",
    "SIGTERM",
    "`run --burst`",
)


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_DEADLINE_S + 10)
def test_quick_benchmark_run_prints_a_table_with_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_DEADLINE_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| # | figure | repobox | baseline"), result.stdout
    for figure in EXPECTED_FIGURES:
        assert any(figure in row for row in table), f"no row for {figure!r} in:\n{result.stdout}"
    assert not any("failed" in row.split("|")[2] for row in table[1:]), result.stdout
