"""A real ``redis-server`` process for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 10.0
POLL_INTERVAL_S = 0.02


def find_free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisServer:
    """A real redis-server on a free 127.0.0.1 port, data under `workdir`."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port: int = find_free_port()
        self.url: str = f"redis://127.0.0.1:{self.port}"
        self.log_file: Path = self.workdir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------

    def _command(self) -> list[str]:
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--logfile",
            str(self.log_file),
            "--daemonize",
            "no",
        ]
        if self.appendonly:
            cmd += ["--appendfsync", "always"]
        return cmd

    def start(self) -> None:
        if self.is_running():
            return
        if not _port_is_free(self.port):
            raise RuntimeError(
                f"cannot start redis-server: port {self.port} on 127.0.0.1 is already in use by another process"
            )
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"redis-server exited with code {code} during startup; log:\n{self._log_tail()}")
            if self._ping():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{START_DEADLINE_S}s; log:\n{self._log_tail()}"
                )
            time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        """Graceful shutdown; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                conn = self._probe_client(timeout_s=2.0)
                try:
                    conn.shutdown(nosave=not self.appendonly, save=False)
                finally:
                    conn.close()
            except (redis.RedisError, OSError):
                # SHUTDOWN closes the connection (ConnectionError) on success;
                # on failure fall through to SIGTERM below.
                pass
            try:
                proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_DEADLINE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_DEADLINE_S)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash) and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_DEADLINE_S)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    # -- helpers -----------------------------------------------------------

    def _probe_client(self, *, timeout_s: float) -> redis.Redis:
        # No retries: redis-py's default retry/backoff would turn the expected
        # "connection closed" after SHUTDOWN into seconds of waiting.
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def _ping(self) -> bool:
        conn = self._probe_client(timeout_s=1.0)
        try:
            return bool(conn.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            conn.close()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
