"""`repobox demo`'s entry: run the flow, showing each step as it ends, then the result."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from repobox_cli.demo import render
from repobox_cli.demo.flow import Demo


def demo(console: Console, redis_url: str | None) -> int:
    """0 when the job succeeded, 1 otherwise (KeyboardInterrupt after cleaning up, on Ctrl-C)."""
    console.print(Text("repobox demo: one job through the real worker, against throwaway servers", style="bold"))
    try:
        result = Demo(redis_url, lambda step: console.print(render.step_line(step))).run()
    except KeyboardInterrupt:
        console.print(Text("interrupted: everything the demo started is stopped and its files removed", style="yellow"))
        raise
    render.show(console, result)
    return 0 if result.job.get("status") == "success" else 1
