"""`python -m benchmarks [--quick] [--only NAME ...]`: run the suite, print one table."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from benchmarks import cli_start, clone, dispatch, exits, jobs, memory, output_latency, pickup, scale
from benchmarks.env import Bench, bench_world
from benchmarks.table import Row, render

Item = Callable[[Bench, bool], list[Row]]

ITEMS: dict[str, Item] = {
    "pickup": lambda bench, quick: pickup.run(bench, pickup.QUICK if quick else pickup.FULL),
    "dispatch": dispatch.run,
    "jobs": lambda bench, quick: jobs.run(bench, jobs.QUICK if quick else jobs.FULL),
    "memory": memory.run,
    "output": output_latency.run,
    "scale": scale.run,
    "clone": clone.run,
    "cli": cli_start.run,
    "exits": exits.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every item (≈ 30 s)")
    parser.add_argument("--only", action="append", choices=sorted(ITEMS), help="run only this item (repeatable)")
    args = parser.parse_args(argv)
    names = args.only or list(ITEMS)
    rows: list[Row] = []
    failed = 0
    started = time.monotonic()
    with bench_world() as bench:
        for name in names:
            item_started = time.monotonic()
            try:
                rows.extend(ITEMS[name](bench, args.quick))
            except Exception as exc:  # noqa: BLE001 - one broken item must not hide the others' figures
                failed += 1
                traceback.print_exc()
                rows.append(Row("!", f"{name}: failed", f"{type(exc).__name__}: {exc}"[:120]))
            print(f"[{name}: {time.monotonic() - item_started:.1f} s]", file=sys.stderr, flush=True)
    print(render(rows))
    print(f"\n{len(rows)} rows in {time.monotonic() - started:.0f} s ({'quick' if args.quick else 'full'} sizes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
