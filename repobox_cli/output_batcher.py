"""One thread per runner that writes the jobs' output lines in batches: a line waits at most
`BATCH_S` to go out with the lines after it, so a chatty agent or git's progress costs Redis a
few pipelines a second per job instead of one per line, and the thread that read the line (a
job's, or an agent pipe's reader) never waits on Redis for it.

An output with unsent lines is flushed `BATCH_S` after its first one; its own lock keeps its lines
in order, whoever flushes it (this thread, the supervisor after an outage, the job at its end,
which drains its output before it writes its final status). A flush that fails because Redis is
away keeps the lines: the next line, or the supervisor's tick once Redis is back, sends them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from repobox_cli.redaction import one_line

log = logging.getLogger(__name__)

BATCH_S = 0.05  # a line reaches Redis within this (and one round trip): well inside 100 ms
STOP_JOIN_S = 5.0


class Flushable(Protocol):
    def flush(self) -> bool:
        """Send what waits; True when nothing is left waiting."""


class OutputBatcher:
    """Flushes each output `batch_s` after its first unsent line, on a thread of its own."""

    def __init__(self, batch_s: float = BATCH_S) -> None:
        self.batch_s = batch_s
        self._due: dict[Flushable, float] = {}  # output → when it must be flushed (monotonic)
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="output-batcher", daemon=True)
        self._thread.start()

    def due(self, output: Flushable) -> None:
        """`output` has a new unsent line: flush it `batch_s` after its first one (at once, on
        the caller's thread, once the batcher has stopped)."""
        with self._cond:
            if not self._stopped:
                if output not in self._due:
                    self._due[output] = time.monotonic() + self.batch_s
                    self._cond.notify()
                return
        self._flush(output)

    def stop(self, join_s: float = STOP_JOIN_S) -> None:
        """Flush what waits now, then end the thread (waiting for it at most `join_s`)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(join_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                ready = self._take_ready()
                stopped = self._stopped
            for output in ready:
                self._flush(output)
            if stopped:
                return

    def _take_ready(self) -> list[Flushable]:
        """Wait (holding the condition) until some output is due, or the stop; take those due."""
        while True:
            if self._stopped:
                ready, self._due = list(self._due), {}
                return ready
            now = time.monotonic()
            ready = [output for output, at in self._due.items() if at <= now]
            if ready:
                for output in ready:
                    del self._due[output]
                return ready
            self._cond.wait(min(self._due.values()) - now if self._due else None)

    @staticmethod
    def _flush(output: Flushable) -> None:
        try:
            output.flush()  # False: Redis is away; the lines wait for the next flush
        except Exception as exc:  # noqa: BLE001 - boundary: one output's bug must not stop every job's output
            log.error("writing a job's output failed: %s: %s", type(exc).__name__, one_line(str(exc)))
