"""The supervisor loop: every tick, run each step (watching jobs, periodic duties), riding out
Redis outages and never dying. One loop for `run` and `exec` alike."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis

from repobox_cli.redis_conn import CONNECTION_ERRORS, RedisHealth

log = logging.getLogger(__name__)

# A step gets `recovered=True` on the first tick after Redis came back from an outage.
Step = Callable[[bool], None]


class Every:
    """Due every `interval_s` (monotonic); `due` answers and re-arms, `now` makes it due at once."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = 0.0

    def due(self) -> bool:
        at = time.monotonic()
        if at < self._next:
            return False
        self._next = at + self.interval_s
        return True

    def now(self) -> None:
        self._next = 0.0


def supervise(
    client: redis.Redis,
    health: RedisHealth,
    tick_s: float,
    stop: threading.Event,
    steps: Sequence[Step],
    local: Sequence[Callable[[], None]] = (),
) -> None:
    """Tick until `stop`. While Redis is away each tick first pings it; steps raise connection
    errors, which mark it lost (the rest of those steps is skipped). Then the `local` steps, which
    need no Redis (deadlines, lapsed leases), run every tick, Redis or not: after the others, so a
    lease a late tick can still renew is renewed before it is judged."""
    seen = [health.recoveries]

    def redis_steps() -> None:
        if health.is_lost:
            client.ping()
            health.ok()
        recovered = health.recoveries != seen[0]
        seen[0] = health.recoveries
        for step in steps:
            step(recovered)

    while not stop.wait(tick_s):
        for run in (redis_steps, *local):
            _guarded(run, health)


def _guarded(run: Callable[[], None], health: RedisHealth) -> None:
    """One step of a tick: a lost connection marks Redis lost; any other error is logged."""
    try:
        run()
    except CONNECTION_ERRORS as exc:
        health.lost(exc)
    except Exception as exc:  # noqa: BLE001 - boundary: the supervisor must outlive any bug
        log.error("supervisor error: %s: %s", type(exc).__name__, exc)
