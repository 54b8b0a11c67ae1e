"""Tools for the security tests: token forms, leak scanners (processes, files, Redis, text),
a token sniffer an agent can daemonize, and a TCP listener that records who connects."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis

SCAN_INTERVAL_S = 0.05
MAX_FILE_BYTES = 8 * 1024 * 1024
GIT_EXE_PREFIXES = ("/usr/lib/git-core/", "/usr/libexec/git-core/")
GIT_EXES = ("/usr/bin/git", "/usr/local/bin/git")


def fresh_token() -> str:
    """A token unique to one test (no other process on the machine can hold it by chance), with
    characters whose URL-encoded form differs from the raw one."""
    return f"ghp_{secrets.token_hex(10)}+/Zq{secrets.token_hex(6)}"


def token_forms(token: str) -> dict[str, bytes]:
    """The three forms SPEC §5 names: raw, URL-encoded, and the base64 of a Basic header."""
    return {
        "raw": token.encode(),
        "url-encoded": quote(token, safe="").encode(),
        "basic-auth-base64": base64.b64encode(f"oauth2:{token}".encode()),
    }


def leaks_in(data: bytes | str, forms: dict[str, bytes]) -> list[str]:
    """Names of the forms found in `data`."""
    blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return [name for name, form in forms.items() if form in blob]


# -- files -------------------------------------------------------------------------------------
def scan_tree(root: Path, forms: dict[str, bytes]) -> list[str]:
    """Every regular file under `root` (symlinks not followed) that holds a token form."""
    found: list[str] = []
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + dirnames:
            path = Path(dirpath, name)
            leaks = leaks_in(str(path), forms)  # a file name is text too
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink():
                    with path.open("rb") as f:
                        leaks += leaks_in(f.read(MAX_FILE_BYTES), forms)
                elif path.is_symlink():
                    leaks += leaks_in(os.readlink(path), forms)
            found += [f"{path}: {leak}" for leak in leaks]
    return found


# -- Redis -------------------------------------------------------------------------------------
def redis_dump(url: str) -> dict[bytes, list[bytes]]:
    """Every key and every value in it (type-aware), as raw bytes."""
    client = redis.Redis.from_url(url)
    try:
        dump: dict[bytes, list[bytes]] = {}
        for key in client.scan_iter(count=500):
            kind = client.type(key)
            values: list[bytes] = []
            if kind == b"string":
                values = [client.get(key) or b""]
            elif kind == b"hash":
                for k, v in client.hgetall(key).items():
                    values += [k, v]
            elif kind == b"list":
                values = list(client.lrange(key, 0, -1))
            elif kind == b"set":
                values = list(client.smembers(key))
            elif kind == b"zset":
                values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"stream":
                for entry_id, fields in client.xrange(key):
                    values.append(entry_id)
                    for k, v in fields.items():
                        values += [k, v]
                with contextlib.suppress(redis.ResponseError):
                    for group in client.xinfo_groups(key):
                        values.append(str(group).encode())
            values.append(kind)
            dump[key] = values
        return dump
    finally:
        client.close()


def scan_redis(url: str, forms: dict[str, bytes]) -> list[str]:
    found = []
    for key, values in redis_dump(url).items():
        for leak in leaks_in(key, forms):
            found.append(f"key {key!r}: {leak}")
        for value in values:
            for leak in leaks_in(value, forms):
                found.append(f"value in {key!r}: {leak}")
    return found


# -- processes ---------------------------------------------------------------------------------
def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def is_git_exe(exe: str) -> bool:
    exe = exe.removesuffix(" (deleted)")
    return exe in GIT_EXES or exe.startswith(GIT_EXE_PREFIXES)


def pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def environ_of(pid: int) -> dict[bytes, bytes] | None:
    raw = _read(f"/proc/{pid}/environ")
    if raw is None:
        return None
    env: dict[bytes, bytes] = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            env[name] = value
    return env


def processes_with_marker(marker: bytes) -> list[int]:
    """Live (non-zombie) processes whose argument list contains `marker`."""
    found = []
    for pid in pids():
        cmdline = _read(f"/proc/{pid}/cmdline")
        if cmdline and marker in cmdline:
            stat = _read(f"/proc/{pid}/stat") or b""
            state = stat[stat.rfind(b")") + 2 :][:1]
            if state not in (b"Z", b"X"):
                found.append(pid)
    return found


@dataclass
class ProcessScanner:
    """Scans, while a job runs: every process's argument list; the environment of every process
    that is not git itself (the agent, what it started, the runner); files under `roots`; Redis.

    git's own processes are allowed to hold the credential in their environment (SPEC §5)."""

    forms: dict[str, bytes]
    job_ids: Iterable[str]
    roots: list[Path] = field(default_factory=list)
    redis_url: str | None = None
    findings: set[str] = field(default_factory=set)
    agent_pids_seen: set[int] = field(default_factory=set)
    git_pids_seen: set[int] = field(default_factory=set)
    passes: int = 0

    def __post_init__(self) -> None:
        self._markers = {f"REPOBOX_JOB_ID={j}".encode() for j in self.job_ids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leak-scanner", daemon=True)

    def __enter__(self) -> ProcessScanner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.scan_once()
            self._stop.wait(SCAN_INTERVAL_S)

    def scan_once(self) -> None:
        me = os.getpid()
        for pid in pids():
            if pid == me:
                continue
            cmdline = _read(f"/proc/{pid}/cmdline")
            if cmdline:
                for leak in leaks_in(cmdline, self.forms):
                    self.findings.add(f"cmdline of pid {pid} ({cmdline[:80]!r}): {leak}")
            exe_before = _exe(pid)
            raw_env = _read(f"/proc/{pid}/environ")
            # Read after environ too: an exec in between shows here. Where it cannot be read, the
            # process ended in between, and the environment read was the one of `exe_before`.
            exe_after = _exe(pid) or exe_before
            if raw_env is None:
                continue
            if is_git_exe(exe_after):
                self.git_pids_seen.add(pid)
                continue
            if any(marker in raw_env.split(b"\0") for marker in self._markers):
                self.agent_pids_seen.add(pid)
            for leak in leaks_in(raw_env, self.forms):
                self.findings.add(f"environ of pid {pid} ({exe_after}, {(cmdline or b'')[:80]!r}): {leak}")
        for root in self.roots:
            self.findings.update(scan_tree(root, self.forms))
        if self.redis_url:
            with contextlib.suppress(redis.RedisError):
                self.findings.update(scan_redis(self.redis_url, self.forms))
        self.passes += 1


# -- an attacker's sniffer ---------------------------------------------------------------------
SNIFFER_SOURCE = r"""
import os, sys, time
loot_path, heartbeat_path, tag = sys.argv[1], sys.argv[2], sys.argv[3]
lifetime_s = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
if os.environ.get("SNIFFER_DAEMONIZE", "1") == "1":
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    fd = os.open(os.devnull, os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(fd, n)
deadline = time.time() + lifetime_s
me = os.getpid()
while time.time() < deadline:
    with open(heartbeat_path, "a") as f:
        f.write(repr(time.time()) + "\n")
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            if b"git" not in cmd:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        with open(loot_path, "ab") as f:
            f.write(b"PID " + entry.encode() + b" " + cmd.replace(b"\0", b" ") + b"\n" + env + b"\n")
    time.sleep(0.05)
"""


def sniffer_script(dir: Path) -> Path:
    path = dir / "sniffer.py"
    path.write_text(SNIFFER_SOURCE)
    return path


# -- a listener that records connections -------------------------------------------------------
class RecordingListener:
    """A TCP listener on 127.0.0.1 that records every connection and the first bytes sent."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RecordingListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                data = b""
                with contextlib.suppress(OSError):
                    data = conn.recv(65536)
                self.received.append(data)


def wait_gone(marker: bytes, timeout_s: float = 5.0) -> list[int]:
    """Wait until no live process carries `marker` in its argv; the survivors (empty when gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = processes_with_marker(marker)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)
