"""Connecting to Redis (URL, TLS, ACL user, Sentinel: `open_client`), checking the server
(`check_server`), confirming writes on a replica (`Durability`), and riding out outages: capped
exponential backoff with jitter."""

from __future__ import annotations

import logging
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from repobox_cli.errors import RedisUnavailable, SettingsError

if TYPE_CHECKING:  # settings imports output, which imports this module
    from repobox_cli.settings import RedisSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
SOCKET_SLACK_S = 10.0  # beyond the longest BLOCK we ask for
MAX_TIMEOUT_S = 86_400.0  # a socket timeout longer than a day is a typo (and past what the OS takes)
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


MIN_REDIS_VERSION = (6, 2, 0)  # XAUTOCLAIM, XPENDING IDLE, XTRIM MINID, GETDEL
CHECK_TIMEOUT_S = 3.0  # the start-up checks: a wrong scheme or a silent host fails fast
SENTINEL_TIMEOUT_S = 3.0
HEALTH_CHECK_INTERVAL_S = 30
DURABLE_ROUNDS = 3  # a begin/finish not confirmed by a replica is re-applied this often
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


class _BoundedHandshake:
    """TCP connect, TLS handshake and AUTH/HELLO within `socket_connect_timeout`: redis-py runs
    the handshake under `socket_timeout`, which is long for XREADGROUP BLOCK (a `rediss://` URL
    against a plain server hung for 30 s). Commands keep the long timeout."""

    socket_timeout: float | None
    socket_connect_timeout: float | None
    _sock: socket.socket | None

    def _connect(self) -> socket.socket:
        long_s = self.socket_timeout
        self.socket_timeout = self.socket_connect_timeout
        try:
            sock: socket.socket = super()._connect()  # type: ignore[misc]
        finally:
            self.socket_timeout = long_s
        sock.settimeout(long_s)
        return sock

    def on_connect_check_health(self, check_health: bool = True) -> None:
        sock = self._sock
        if sock is not None:
            sock.settimeout(self.socket_connect_timeout)
        super().on_connect_check_health(check_health)  # type: ignore[misc]
        if sock is not None:
            sock.settimeout(self.socket_timeout)


class _Connection(_BoundedHandshake, redis.Connection):  # type: ignore[misc]  # redis-py is untyped here (Any)
    pass


class _SSLConnection(_BoundedHandshake, redis.SSLConnection):  # type: ignore[misc]  # as above
    pass


class _SentinelConnection(_BoundedHandshake, SentinelManagedConnection):  # type: ignore[misc]  # as above
    pass


class _SentinelSSLConnection(_BoundedHandshake, SentinelManagedSSLConnection):  # type: ignore[misc]  # as above
    pass


class _FollowingSentinel(Sentinel):  # type: ignore[misc]  # as above
    """Sentinel that logs one line when the primary it is told about changes (a failover)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._primary: tuple[str, int] | None = None

    def discover_master(self, service_name: str) -> tuple[str, int]:
        address: tuple[str, int] = super().discover_master(service_name)
        with self._lock:
            previous, self._primary = self._primary, address
        if previous is not None and previous != address:
            log.warning(
                "following a new Redis primary for %s at %s:%s (was %s:%s)",
                service_name,
                address[0],
                address[1],
                previous[0],
                previous[1],
            )
        return address


def _tls_kwargs(rs: RedisSettings) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if rs.ca_file:
        found["ssl_ca_certs"] = str(rs.ca_file)
    if rs.cert_file and rs.key_file:
        found["ssl_certfile"] = str(rs.cert_file)
        found["ssl_keyfile"] = str(rs.key_file)
    return found


def _url_kwargs(rs: RedisSettings) -> dict[str, Any]:
    """What the URL says (scheme, host, user, password, db, query options), plus the TLS files;
    the URL's own query options win, as in redis-py."""
    try:
        found: dict[str, Any] = parse_url(rs.url)
    except ValueError as exc:
        raise SettingsError(f"REDIS_URL is not a valid Redis URL: {exc}") from exc
    for name in ("socket_timeout", "socket_connect_timeout"):
        value = found.get(name)
        if value is not None and not 0 < value < MAX_TIMEOUT_S:
            raise SettingsError(f"REDIS_URL's {name} must be over 0 and under {MAX_TIMEOUT_S:g} s, got {value}")
    if rs.tls:
        found = {**_tls_kwargs(rs), **found}
    if rs.password:
        found["password"] = rs.password
    if rs.username:
        found["username"] = rs.username
    return found


def open_client(
    rs: RedisSettings, *, block_ms: int = 0, socket_timeout_s: float | None = None, retries: int = 1
) -> redis.Redis:
    """A client (strings decoded) for the URL, or for the Sentinel-named primary; connect and
    TLS handshake bounded by CONNECT_TIMEOUT_S, commands by `socket_timeout_s` (default: long
    enough for an XREADGROUP BLOCK of `block_ms`). Nothing is sent until the first command."""
    url_kwargs = _url_kwargs(rs)
    tls = url_kwargs.pop("connection_class", None) is redis.SSLConnection
    url_timeout = url_kwargs.pop("socket_timeout", None)
    if socket_timeout_s is None:
        socket_timeout_s = block_ms / 1000 + SOCKET_SLACK_S
        if url_timeout is not None:  # the URL's, but never shorter than a read's BLOCK and its slack
            socket_timeout_s = max(url_timeout, socket_timeout_s) if block_ms else url_timeout
    common: dict[str, Any] = {
        "decode_responses": True,
        # Bytes that are not UTF-8 must not crash a runner: they become U+FFFD and the
        # validators refuse what they must.
        "encoding_errors": "replace",
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": socket_timeout_s,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        # One immediate retry heals a pooled connection broken by a Redis restart or a
        # failover; longer outages are ours to ride out (retry_until), not the client's.
        "retry": Retry(NoBackoff(), retries),
        # No CLIENT SETINFO on connect: one command fewer for the ACL user to be allowed.
        "driver_info": None,
    }
    if not rs.sentinels:
        if "path" in url_kwargs:  # unix://: a local socket, nothing to bound
            connection_class: type[redis.connection.AbstractConnection] = redis.UnixDomainSocketConnection
        else:
            connection_class = _SSLConnection if tls else _Connection
        _check_options(connection_class, {**common, **url_kwargs})
        pool = redis.ConnectionPool(connection_class=connection_class, **{**common, **url_kwargs})
        return redis.Redis(connection_pool=pool)
    for ignored in ("host", "port", "path"):
        url_kwargs.pop(ignored, None)  # the sentinels name the primary
    _check_options(_SSLConnection if tls else _Connection, {**common, **url_kwargs})
    sentinel = _FollowingSentinel(list(rs.sentinels), sentinel_kwargs=_sentinel_kwargs(rs))
    client: redis.Redis = sentinel.master_for(
        rs.sentinel_master,
        redis_class=redis.Redis,
        connection_class=_SentinelSSLConnection if tls else _SentinelConnection,
        **common,
        **url_kwargs,
    )
    return client


def _check_options(connection_class: type[redis.connection.AbstractConnection], kwargs: dict[str, Any]) -> None:
    """REDIS_URL's query options, tried on a connection object (nothing is connected): one that
    redis-py does not take is a bad setting, not a failure later."""
    try:
        connection_class(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"REDIS_URL has an option redis-py cannot use: {exc}") from None


def _sentinel_kwargs(rs: RedisSettings) -> dict[str, Any]:
    found: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
    }
    if rs.sentinel_password:
        found["password"] = rs.sentinel_password
    if rs.sentinel_username:
        found["username"] = rs.sentinel_username
    if rs.sentinel_tls:
        found["ssl"] = True
        found.update(_tls_kwargs(rs))
    return found


def describe(rs: RedisSettings) -> str:
    """Where Redis is, for messages: never a password."""
    if rs.sentinels:
        where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in rs.sentinels)
        return f"Sentinel primary {rs.sentinel_master!r} (sentinels {where})"
    return _safe_url(rs.url)


def parse_version(text: str) -> tuple[int, int, int] | None:
    found = _VERSION_RE.match(text.strip())
    if not found:
        return None
    return int(found[1]), int(found[2]), int(found[3] or 0)


def server_problem(server: Mapping[str, Any], cluster: Mapping[str, Any]) -> str | None:
    """Why this server cannot serve runners (from INFO server / INFO cluster), or None."""
    if str(cluster.get("cluster_enabled", "0")) == "1":
        return (
            "is a Redis Cluster node: not supported (the lease scripts span job:, runner: and "
            "jobs:stream keys, which live in different hash slots)"
        )
    raw = str(server.get("redis_version", ""))
    version = parse_version(raw)
    if version is None:
        return f"reports no usable redis_version ({raw!r})"
    if version < MIN_REDIS_VERSION:
        wanted = ".".join(map(str, MIN_REDIS_VERSION))
        return f"runs Redis {raw}; repobox needs {wanted} or later (XAUTOCLAIM, XPENDING IDLE, XTRIM MINID, GETDEL)"
    return None


def connect(rs: RedisSettings, *, block_ms: int = 0, full_check: bool = False) -> redis.Redis:
    """A command's one client, after `check_server` (version and cluster with `full_check`)."""
    check_server(rs, full=full_check)
    return open_client(rs, block_ms=block_ms)


def check_server(rs: RedisSettings, *, full: bool = True) -> None:
    """Reachable (credentials accepted) and, with `full`, a supported version and not a cluster
    node. Fails within a few seconds with one line (RedisUnavailable/SettingsError)."""
    where = describe(rs)
    probe = open_client(rs, socket_timeout_s=CHECK_TIMEOUT_S, retries=0)
    try:
        probe.ping()
        if not full:
            return
        problem = server_problem(probe.info("server"), probe.info("cluster"))
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(f"Redis at {where} refused the credentials") from exc
    except redis.exceptions.NoPermissionError as exc:
        raise RedisUnavailable(f"Redis at {where} denied a start-up check: {exc}") from exc
    except CONNECTION_ERRORS as exc:
        raise RedisUnavailable(f"cannot reach Redis at {where}: {_one_line(exc)}") from exc
    finally:
        probe.close()
    if problem:
        raise SettingsError(f"Redis at {where} {problem}")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MasterNotFoundError):  # its text is the repr of every Sentinel client
        return "no Sentinel answered with that primary's address"
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class Durability:
    """WAIT for `replicas` after the writes that matter (begin, finish), on the connection that
    wrote: a write only the primary holds is lost if it fails over. Not confirmed in time, the
    write (idempotent) is applied again, up to DURABLE_ROUNDS times: after a failover that lands
    it on the new primary. A primary with no replica at all that the Sentinels (if any) still
    name has nothing a failover could lose, so it is not waited on."""

    replicas: int = 0
    timeout_ms: int = 0

    @classmethod
    def of(cls, rs: RedisSettings) -> Durability:
        return cls(rs.wait_replicas, max(1, math.ceil(rs.wait_timeout_s * 1000)))  # WAIT … 0 waits for ever

    def apply(self, client: redis.Redis, write: Callable[[redis.Redis], T], what: str) -> T:
        if self.replicas <= 0:
            return write(client)
        for _ in range(DURABLE_ROUNDS):
            with client.client() as conn:  # one connection: WAIT counts this connection's writes
                result = write(conn)
                if int(conn.wait(self.replicas, self.timeout_ms)) >= self.replicas or _alone(client, conn):
                    return result
            log.warning("%s: not yet confirmed by %d replica(s); applying it again", what, self.replicas)
        log.warning("%s: no replica confirmed it after %d tries; going on", what, DURABLE_ROUNDS)
        return result

    def confirmed(self, client: redis.Redis, write: Callable[[redis.Redis], T]) -> tuple[T, bool]:
        """Apply `write` once; True with it when the replicas acknowledged it (or none are
        expected, or the primary is alone): a stale primary — paused, failed over, not yet told —
        cannot confirm, because its replicas now follow another primary."""
        with client.client() as conn:
            result = write(conn)
            if self.replicas <= 0:
                return result, True
            acked = int(conn.wait(self.replicas, self.timeout_ms)) >= self.replicas
            return result, acked or _alone(client, conn)


def _alone(client: redis.Redis, conn: redis.Redis) -> bool:
    """The primary `conn` talks to has no replica, and no Sentinel names another primary."""
    if int(conn.info("replication").get("connected_slaves", 0)):
        return False
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return True
    used = conn.connection
    named = pool.sentinel_manager.discover_master(pool.service_name)
    return used is not None and (str(used.host), int(used.port)) == (str(named[0]), int(named[1]))


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


def retry_until(call: Callable[[], T], health: RedisHealth, stop: threading.Event, what: str) -> T:
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
