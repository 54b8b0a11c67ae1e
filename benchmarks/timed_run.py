"""Time a baseline process to its exit without the stdlib's polling: `subprocess.run(timeout=…)`
waits with sleeps of up to 50 ms, which would add up to 50 ms to every shell baseline measured."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Mapping, Sequence


def run_timed(
    argv: Sequence[str], env: Mapping[str, str], *, input: str | None = None, deadline_s: float = 600
) -> float:
    """Seconds from start to exit of `argv` (stdout and stderr passed through); RuntimeError on a
    non-zero exit, and a kill after `deadline_s`."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv), env=dict(env), stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL, text=True
    )
    watchdog = threading.Timer(deadline_s, process.kill)
    watchdog.start()
    try:
        process.communicate(input)  # no timeout: a blocking waitpid, no polling
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1] if len(argv) > 1 else ''} exited with {process.returncode}")
    return elapsed
