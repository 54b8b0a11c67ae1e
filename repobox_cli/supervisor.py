"""The supervisor loop: every tick, run each step (watching jobs, periodic duties), riding out
Redis outages and never dying; beside it, the watchdog, which enforces what needs no Redis
(deadlines, lapsed leases) on a thread of its own, so that no Redis call or duty can delay it.
One loop for `run` and `exec` alike."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

import redis

from repobox_cli.redis_conn import CONNECTION_ERRORS, RedisHealth

log = logging.getLogger(__name__)

# A step gets `recovered=True` on the first tick after Redis came back from an outage.
Step = Callable[[bool], None]
# A local step gets `woke_late=True` when the watchdog woke this much later than asked: the process
# was paused (SIGSTOP, a frozen VM) or starved, so the supervisor had no chance to renew leases
# either; the step judges leases only once the supervisor had one more tick.
LocalStep = Callable[[bool], None]
LATE_S = 1.0
WATCHDOG_JOIN_S = 5.0


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
    local: Sequence[LocalStep] = (),
) -> None:
    """Tick until `stop`. While Redis is away each tick first pings it; steps raise connection
    errors, which mark it lost (the rest of those steps is skipped). The `local` steps, which need
    no Redis (deadlines, lapsed leases), run every tick on the watchdog thread, whatever the
    supervisor's thread is waiting for."""
    watchdog = threading.Thread(target=_watchdog, args=(tick_s, stop, local, health), name="watchdog", daemon=True)
    if local:
        watchdog.start()
    try:
        _supervise(client, health, tick_s, stop, steps)
    finally:
        if local:
            watchdog.join(WATCHDOG_JOIN_S)


def _supervise(
    client: redis.Redis, health: RedisHealth, tick_s: float, stop: threading.Event, steps: Sequence[Step]
) -> None:
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
        _guarded(redis_steps, health)


def _watchdog(tick_s: float, stop: threading.Event, local: Sequence[LocalStep], health: RedisHealth) -> None:
    due = time.monotonic() + tick_s
    woke_late = False
    while not stop.wait(tick_s):
        now = time.monotonic()
        # One tick of grace, never two in a row: a thread starved so that it always wakes late
        # still judges leases every other tick.
        woke_late = not woke_late and now - due > LATE_S
        due = now + tick_s
        for run in local:
            _guarded(partial(run, woke_late), health)


def _guarded(run: Callable[[], None], health: RedisHealth) -> None:
    """One step of a tick: a lost connection marks Redis lost; any other error is logged."""
    try:
        run()
    except CONNECTION_ERRORS as exc:
        health.lost(exc)
    except Exception as exc:  # noqa: BLE001 - boundary: the supervisor must outlive any bug
        log.error("supervisor error: %s: %s", type(exc).__name__, exc)
