"""SIGINT and SIGTERM for `repobox run`, with nothing done in a signal handler.

The Python-level handlers do nothing; the interpreter's C-level handler writes each signal's
number to a pipe (`signal.set_wakeup_fd`), and a thread of the runner reads it (`wait`). So no
handler ever takes a lock another part of the main thread might hold, and a signal that arrives
before that thread starts waits in the pipe instead of being lost.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """Replaces the default action (KeyboardInterrupt, exit): the wakeup fd carries the signal."""


class StopSignals:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # set_wakeup_fd needs it; the reader blocks

    def install(self) -> None:
        """From the main thread, before the runner starts."""
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            signal.signal(signum, _noted)

    def wait(self) -> signal.Signals:
        """Block until SIGINT or SIGTERM has arrived (one call per signal); which one."""
        wanted = {int(s) for s in STOP_SIGNALS}
        while True:
            data = os.read(self._read, 1)
            if data and data[0] in wanted:
                return signal.Signals(data[0])
