"""A runner's heartbeat `runner:heartbeat:{runner}`: who it is and how loaded, with a short TTL so
a killed runner shows as gone within seconds. Once stopped it stays gone: a beat still in flight
on another thread (a supervisor that outlived its join) takes its own write back."""

from __future__ import annotations

import json
import os
import socket
import threading

import redis

from repobox_cli import keys
from repobox_cli.jobs import now_ms

HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_MS = 8_000  # four missed heartbeats: gone


class Heartbeat:
    def __init__(self, client: redis.Redis, runner_id: str, concurrency: int) -> None:
        self.client = client
        self.runner_id = runner_id
        self.concurrency = concurrency
        self.started_at_ms = now_ms()
        self.host = socket.gethostname()
        self._stopped = threading.Event()
        self._stopping = False  # says so from the stop's first signal: no work is forwarded here then
        # Held from building a beat to its write: a beat the supervisor built before `stopping` must
        # not land after the stopping one (for up to a beat, other runners would forward work here).
        self._write = threading.Lock()

    def beat(self, running: int, waiting: int) -> None:
        with self._write:
            self._beat(running, waiting)

    def _beat(self, running: int, waiting: int) -> None:
        if self._stopped.is_set():
            return
        info = {
            "runner_id": self.runner_id,
            "host": self.host,
            "pid": os.getpid(),
            "started_at": self.started_at_ms,
            "concurrency": self.concurrency,
            "running": running,
            "waiting": waiting,
            "at": now_ms(),
            "stopping": self._stopping,
        }
        self.client.set(keys.heartbeat(self.runner_id), json.dumps(info), px=HEARTBEAT_TTL_MS)
        if self._stopped.is_set():  # `stop` ran while this write was on its way: it may have come after the delete
            self.client.delete(keys.heartbeat(self.runner_id))

    def stopping(self, running: int, waiting: int) -> None:
        """The runner stops: it still beats (its running work is alive) and says it stops."""
        with self._write:
            self._stopping = True
            self._beat(running, waiting)

    def stop(self) -> None:
        self._stopped.set()
        self.client.delete(keys.heartbeat(self.runner_id))
