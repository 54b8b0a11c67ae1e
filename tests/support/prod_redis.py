"""Production-shaped Redis for the tests: a TLS-only server, a server whose runner logs in as the
documented minimal ACL user, a primary + replica + three Sentinels, and a RESP stand-in that
claims to be an old Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from tests.support.redis_server import (
    POLL_INTERVAL_S,
    START_DEADLINE_S,
    RedisServer,
    _port_is_free,
    find_free_port,
)
from tests.support.tls import TestCA
from tests.support.world import wait_for

# The ACL rules a runner needs, exactly as the README lists them (a test checks the README holds
# this text). Redis 7 syntax: `%R~` is a read-only key pattern.
RUNNER_ACL_RULES = (
    "on resetkeys resetchannels -@all "
    "+ping +hello +auth +info +select +time +wait +client|id +client|unblock "
    "+evalsha +eval +script|load +script|exists "
    "+xreadgroup +xautoclaim +xclaim +xpending +xack +xadd +xrange +xrevrange +xlen +xtrim "
    "+xinfo|groups +xinfo|consumers +xgroup|create +xgroup|delconsumer "
    "+hget +hgetall +hmget +hset +hdel +hexists +get +set +getdel +del +exists +type "
    "+hsetnx +hincrby +expire +pexpire +rpush +llen +lrange +lset +zadd +zrem +zscore +zcard +zremrangebyscore +scan "
    "~jobs:* ~job:* ~runner:* ~work_session* %R~git_provider:*"
)
RUNNER_USER = "repobox-runner"
ADMIN_USER = "test-admin"
ADMIN_PASSWORD = "admin-" + "pw-for-tests-only"


class TlsRedisServer(RedisServer):
    """redis-server listening on TLS only (`--port 0`), asking clients for a certificate."""

    def __init__(self, workdir: Path, tls: TestCA) -> None:
        super().__init__(workdir)
        self.tls = tls
        self.plain_url = f"redis://127.0.0.1:{self.port}"
        self.url = f"rediss://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        cmd = super()._command()
        at = cmd.index("--port")
        cmd[at : at + 2] = ["--port", "0", "--tls-port", str(self.port)]
        return cmd + [
            "--tls-cert-file",
            str(self.tls.cert_file),
            "--tls-key-file",
            str(self.tls.key_file),
            "--tls-ca-cert-file",
            str(self.tls.ca_file),
            "--tls-auth-clients",
            "yes",
        ]

    def _probe_client(self, *, timeout_s: float) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            ssl=True,
            ssl_ca_certs=str(self.tls.ca_file),
            ssl_certfile=str(self.tls.client_cert_file),
            ssl_keyfile=str(self.tls.client_key_file),
        )

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            ssl=True,
            ssl_ca_certs=str(self.tls.ca_file),
            ssl_certfile=str(self.tls.client_cert_file),
            ssl_keyfile=str(self.tls.client_key_file),
        )

    def runner_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.url,
            "REDIS_CA_FILE": str(self.tls.ca_file),
            "REDIS_CERT_FILE": str(self.tls.client_cert_file),
            "REDIS_KEY_FILE": str(self.tls.client_key_file),
        }


class UnixRedisServer(RedisServer):
    """redis-server also listening on a unix socket, for `unix_url` (in a short directory of its
    own: a socket's path has at most 107 bytes)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.socket_dir = Path(tempfile.mkdtemp(prefix="rb-sock-"))
        self.socket = self.socket_dir / "redis.sock"
        self.unix_url = f"unix://{self.socket}"

    def _command(self) -> list[str]:
        return super()._command() + ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


class AclRedisServer(RedisServer):
    """redis-server whose default user has no rights: the tests act as an admin user, the runner
    logs in as RUNNER_USER under RUNNER_ACL_RULES, with its password in a file."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.runner_password = "runner-" + os.urandom(8).hex()
        self.url = f"redis://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{self.port}"
        self.runner_url = f"redis://{RUNNER_USER}@127.0.0.1:{self.port}"
        # Apart from the test's directory, which the tests' sandboxes show (a runner refuses to
        # show a secret file to its agents).
        self.secrets_dir = Path(tempfile.mkdtemp(prefix="rb-secrets-"))
        self.password_file = self.secrets_dir / "runner-password"

    def _command(self) -> list[str]:
        users = self.workdir / "users.acl"
        users.write_text(
            f"user {ADMIN_USER} on >{ADMIN_PASSWORD} ~* &* +@all\n"
            f"user {RUNNER_USER} {RUNNER_ACL_RULES} >{self.runner_password}\n"
            "user default off resetkeys -@all\n"
        )
        self.password_file.write_text(self.runner_password + "\n")
        self.password_file.chmod(0o600)
        return super()._command() + ["--aclfile", str(users)]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.secrets_dir, ignore_errors=True)

    def _probe_client(self, *, timeout_s: float) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout_s,
            username=ADMIN_USER,
            password=ADMIN_PASSWORD,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def runner_env(self) -> dict[str, str]:
        return {"REDIS_URL": self.runner_url, "REDIS_PASSWORD_FILE": str(self.password_file)}

    def denied(self) -> list[dict[str, object]]:
        """ACL LOG entries: commands or keys the runner user was refused."""
        return [dict(e) for e in self.client().acl_log() if e.get("username") == RUNNER_USER]


# -- Sentinel --------------------------------------------------------------------------------

MASTER_NAME = "repobox-primary"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
SENTINEL_COUNT = 3


class _Process:
    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


class ConfiguredServer(RedisServer):
    """redis-server with extra command-line configuration."""

    def __init__(self, workdir: Path, *extra_args: str) -> None:
        super().__init__(workdir)
        self.extra_args = list(extra_args)

    def _command(self) -> list[str]:
        return super()._command() + self.extra_args


MAX_CLUSTER_PORT = 55535  # a cluster node's bus port is its port + 10000


class ClusterNode(ConfiguredServer):
    """A cluster-mode redis-server: its port must leave room for the cluster bus (port + 10000)."""

    def __init__(self, workdir: Path, *extra_args: str) -> None:
        super().__init__(
            workdir, "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf"), *extra_args
        )
        while self.port > MAX_CLUSTER_PORT or not _port_is_free(self.port + 10000):
            self.port = find_free_port()
        self.url = f"redis://127.0.0.1:{self.port}"


class SentinelGroup:
    """A primary, one replica and three Sentinels watching them, all on 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # DEBUG SLEEP (a pause, as a partition looks to the others) needs the debug command.
        self.primary = ConfiguredServer(workdir / "primary", "--enable-debug-command", "local")
        self.replica = ConfiguredServer(
            workdir / "replica", "--enable-debug-command", "local", "--replicaof", "127.0.0.1", str(self.primary.port)
        )
        self.sentinel_ports = [find_free_port() for _ in range(SENTINEL_COUNT)]
        self._sentinels: list[_Process] = []
        self.servers = {self.primary.port: self.primary, self.replica.port: self.replica}

    @property
    def sentinels_setting(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def runner_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": "redis://sentinel-named-primary",
            "REDIS_SENTINELS": self.sentinels_setting,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        wait_for(
            lambda: self.replica.client().info("replication").get("master_link_status") == "up",
            START_DEADLINE_S,
            "the replica to sync",
        )
        for i, port in enumerate(self.sentinel_ports):
            conf = self.workdir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                f"logfile {self.workdir / f'sentinel-{i}.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self._sentinels.append(_Process(["redis-server", str(conf), "--sentinel"]))
        for port in self.sentinel_ports:
            wait_for(
                partial(self._sentinel_sees_replica, port),
                START_DEADLINE_S,
                f"sentinel {port} to see the primary, its replica and the other sentinels",
            )

    def _sentinel_sees_replica(self, port: int) -> bool:
        try:
            s = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=1)
            master = s.sentinel_master(MASTER_NAME)
            return bool(master["num-slaves"] >= 1 and master["num-other-sentinels"] >= SENTINEL_COUNT - 1)
        except (redis.RedisError, OSError, KeyError):
            return False

    def primary_port(self) -> int:
        """The port the Sentinels name as primary now."""
        sentinel = Sentinel([("127.0.0.1", p) for p in self.sentinel_ports], socket_timeout=1)
        return int(sentinel.discover_master(MASTER_NAME)[1])

    def client(self) -> redis.Redis:
        """A client that follows the Sentinels' primary."""
        sentinel = Sentinel([("127.0.0.1", p) for p in self.sentinel_ports], socket_timeout=1)
        client: redis.Redis = sentinel.master_for(MASTER_NAME, decode_responses=True, socket_timeout=2)
        return client

    def wait_failover(self, old_port: int, timeout_s: float = 30.0) -> int:
        def promoted() -> int | None:
            try:
                port = self.primary_port()
            except (redis.RedisError, OSError):
                return None
            if port == old_port:
                return None
            role = self.servers[port].client().role()
            return port if role[0] == "master" else None

        return int(wait_for(promoted, timeout_s, "the Sentinels to promote the replica", interval_s=0.1))

    def stop(self) -> None:
        for process in self._sentinels:
            process.stop()
        for server in self.servers.values():
            server.kill()

    def __enter__(self) -> SentinelGroup:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SentinelBackedServer:
    """What `World` needs of its Redis (`client()`, `url`), following the Sentinels' primary."""

    def __init__(self, group: SentinelGroup) -> None:
        self.group = group
        self._client = group.client()
        self.url = f"redis://127.0.0.1:{group.primary.port}"  # the first primary, for the record

    def client(self) -> redis.Redis:
        return self._client


# -- an old Redis, as far as a client can tell ------------------------------------------------


class OldRedisStandIn:
    """A tiny RESP server on 127.0.0.1 answering PING and INFO as Redis `version` would (and OK
    to anything else), for testing the start-up version check without an old Redis."""

    def __init__(self, version: str = "6.0.0") -> None:
        self.version = version
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.port = int(self._sock.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _reply(self, words: list[str]) -> bytes:
        command = words[0].upper() if words else ""
        if command == "PING":
            return b"+PONG\r\n"
        if command == "HELLO":  # RESP3, as redis-py 8 asks for
            fields: dict[str, str | int] = {
                "server": "redis",
                "version": self.version,
                "proto": 3,
                "id": 1,
                "mode": "standalone",
                "role": "master",
            }
            body = b"".join(
                b"+%s\r\n" % k.encode() + (b":%d\r\n" % v if isinstance(v, int) else b"+%s\r\n" % v.encode())
                for k, v in fields.items()
            )
            return b"%%%d\r\n%s" % (len(fields), body)
        if command == "INFO":
            info = (
                f"# Server\r\nredis_version:{self.version}\r\nredis_mode:standalone\r\n"
                "# Cluster\r\ncluster_enabled:0\r\n"
            )
            data = info.encode()
            return b"$%d\r\n%s\r\n" % (len(data), data)
        return b"+OK\r\n"

    def _handle(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while True:
                    parsed = _parse_command(buffer)
                    if parsed is None:
                        break
                    words, buffer = parsed
                    conn.sendall(self._reply(words))

    def _serve(self) -> None:
        self._sock.settimeout(POLL_INTERVAL_S * 5)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def __enter__(self) -> OldRedisStandIn:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def _parse_command(buffer: bytes) -> tuple[list[str], bytes] | None:
    """One RESP array of bulk strings from the front of `buffer`, or None if incomplete."""
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None
    head, rest = buffer.split(b"\r\n", 1)
    words = []
    for _ in range(int(head[1:])):
        if b"\r\n" not in rest:
            return None
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line[1:])
        if len(rest) < size + 2:
            return None
        words.append(rest[:size].decode())
        rest = rest[size + 2 :]
    return words, rest


def elapsed_s(start: float) -> float:
    return time.monotonic() - start
