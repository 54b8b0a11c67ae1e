"""The one table the suite prints: a row per figure, with its baseline, ratio and target."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One figure. `ratio` is repobox ÷ baseline (NaN: no baseline); `met` is None without a target."""

    item: str
    figure: str
    repobox: str
    baseline: str = ""
    ratio: float = math.nan
    target: str = ""
    met: bool | None = None


def fmt_ms(value_s: float) -> str:
    if math.isnan(value_s):
        return "n/a"
    if value_s < 0.01:  # sub-10 ms figures (pickup, output latency): tenths would hide their differences
        return f"{value_s * 1000:.2f} ms"
    return f"{value_s * 1000:.1f} ms" if value_s < 10 else f"{value_s:.1f} s"


def fmt_rate(value: float, unit: str) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.1f} {unit}"


def fmt_ratio(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.2f} ×"


def render(rows: list[Row]) -> str:
    """A Markdown table (pasted as is into the README)."""
    header = ("#", "figure", "repobox", "baseline (same run)", "ratio", "target", "met")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        cells = (row.item, row.figure, row.repobox, row.baseline, fmt_ratio(row.ratio), row.target, met)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
