"""Connecting to Redis, and riding out outages: capped exponential backoff with jitter."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from repobox_cli.errors import RedisUnavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
SOCKET_SLACK_S = 10.0  # beyond the longest BLOCK we ask for
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0

# The errors that mean "Redis is not there right now", as opposed to a bad command.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,  # the builtin: socket-level resets redis-py may let through
)

T = TypeVar("T")


def connect(url: str, *, block_ms: int = 0) -> redis.Redis:
    """A client for `url` (strings decoded); raises RedisUnavailable with one line."""
    try:
        client: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            # Bytes that are not UTF-8 must not crash a runner: they become U+FFFD and the
            # validators refuse what they must.
            encoding_errors="replace",
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=block_ms / 1000 + SOCKET_SLACK_S,
            health_check_interval=30,
            # One immediate retry heals a pooled connection broken by a Redis restart;
            # longer outages are ours to ride out (retry_until), not the client's.
            retry=Retry(NoBackoff(), 1),
        )
    except ValueError as exc:
        raise RedisUnavailable(f"REDIS_URL is not a valid Redis URL: {exc}") from exc
    return client


def check_reachable(client: redis.Redis, url: str) -> None:
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(f"Redis at {_safe_url(url)} refused the credentials") from exc
    except CONNECTION_ERRORS as exc:
        raise RedisUnavailable(f"cannot reach Redis at {_safe_url(url)}: {exc}") from exc


def _safe_url(url: str) -> str:
    """The URL without a password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://****@{rest.rsplit('@', 1)[1]}"
    return url


class Backoff:
    """Delays of 0.1 s doubling to 5 s, each with ±50% jitter; reset after a success."""

    def __init__(self, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.current_s = first_s

    def next_delay(self) -> float:
        delay = self.current_s * random.uniform(0.5, 1.5)
        self.current_s = min(self.current_s * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.current_s = self.first_s


class RedisHealth:
    """Runner-wide view of the connection: one log line when it is lost, one when it is back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lost = False
        self.recoveries = 0  # how many times the connection came back
        self.back_at = float("-inf")  # time.monotonic() of the last recovery

    def lost(self, exc: BaseException) -> None:
        with self._lock:
            if self._lost:
                return
            self._lost = True
        log.warning("lost connection to Redis: %s; retrying with backoff", exc)

    def ok(self) -> None:
        with self._lock:
            if not self._lost:
                return
            self._lost = False
            self.recoveries += 1
            self.back_at = time.monotonic()
        log.info("connection to Redis is back")

    @property
    def is_lost(self) -> bool:
        return self._lost


def retry_until(
    call: Callable[[], T], health: RedisHealth, stop: threading.Event, what: str
) -> T:
    """Run `call` until it succeeds, backing off on connection errors; raises RedisUnavailable
    only when `stop` is set before it could succeed."""
    backoff = Backoff()
    while True:
        try:
            result = call()
        except CONNECTION_ERRORS as exc:
            health.lost(exc)
            if stop.wait(backoff.next_delay()):
                raise RedisUnavailable(f"gave up {what}: Redis unreachable at stop") from exc
            continue
        health.ok()
        return result
