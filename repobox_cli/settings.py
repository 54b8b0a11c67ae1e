"""One frozen Settings object built once from the environment and command-line options.

This is the only module that reads os.environ.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from repobox_cli.crypto import EncryptionKey, parse_key
from repobox_cli.errors import SettingsError

DEFAULT_REDIS_URL = "redis://localhost:6379"
DEFAULT_TEMP_DIR = "/tmp/repobox"
DEFAULT_BLOCK_MS = 5000
DEFAULT_TICK_MS = 250
# Never handed to the agent, whatever AGENT_ENV says.
AGENT_ENV_FORBIDDEN = frozenset({"ENCRYPTION_KEY", "REDIS_URL"})
MIN_CLAIM_IDLE_S = 1.0  # below this, renewals (every third of it) cannot keep up with a busy Redis
_ENV_NAME_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
# git and curl read these from the environment: CA bundle and proxies for self-hosted servers.
GIT_PASSTHROUGH_ENV = (
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


class SandboxMode(StrEnum):
    """AGENT_SANDBOX: how the agent is contained."""

    BWRAP = "bwrap"  # bubblewrap: own user, PID, mount, IPC, UTS namespaces (repobox_cli/sandbox.py)
    NONE = "none"  # the runner's view of the machine, under a process reaper: unsafe


class NetworkMode(StrEnum):
    """AGENT_NETWORK: the sandboxed agent's network."""

    HOST = "host"
    NONE = "none"


# Never shown to the agent as an extra path: the whole machine, or the kernel's and the host's
# configuration (/etc is shown selectively by the sandbox itself).
SANDBOX_PATHS_FORBIDDEN = (Path("/proc"), Path("/sys"), Path("/dev"), Path("/etc"))


def _choice(name: str, raw: Any, kind: type[StrEnum]) -> Any:
    word = str(raw).strip().lower()
    try:
        return kind(word)
    except ValueError:
        allowed = " or ".join(repr(m.value) for m in kind)
        raise SettingsError(f"{name} must be {allowed}, got {raw!r}") from None


def _sandbox_paths(raw: str, temp_dir: Path) -> tuple[Path, ...]:
    """AGENT_SANDBOX_PATHS: existing absolute paths, resolved, shown read-only to the agent."""
    found: list[Path] = []
    for part in (p.strip() for p in raw.replace(",", ":").split(":")):
        if not part:
            continue
        if not part.startswith("/"):
            raise SettingsError(f"AGENT_SANDBOX_PATHS entries must be absolute paths, got {part!r}")
        path = Path(os.path.realpath(part))
        if not path.exists():
            raise SettingsError(f"AGENT_SANDBOX_PATHS names {part}, which does not exist")
        if path == Path("/") or any(path == f or f in path.parents for f in SANDBOX_PATHS_FORBIDDEN):
            raise SettingsError(f"AGENT_SANDBOX_PATHS must not show {part} to the agent")
        if path == temp_dir or temp_dir in path.parents:
            raise SettingsError(f"AGENT_SANDBOX_PATHS must not name a path inside TEMP_DIR ({part})")
        if path not in found:
            found.append(path)
    return tuple(found)


@dataclass(frozen=True)
class AgentUser:
    """The OS user the agent runs as (AGENT_USER): it cannot read the runner's memory, its git
    directory or its git processes' environment."""

    name: str
    uid: int
    gid: int


def _agent_user(raw: str) -> AgentUser | None:
    if not raw:
        return None
    try:
        entry = pwd.getpwuid(int(raw)) if raw.isdigit() else pwd.getpwnam(raw)
    except (KeyError, ValueError) as exc:
        raise SettingsError(f"AGENT_USER {raw!r} is not a user on this machine") from exc
    if os.geteuid() != 0:
        raise SettingsError("AGENT_USER needs the runner to run as root, to start the agent as that user")
    if entry.pw_uid in (0, os.geteuid()):
        raise SettingsError("AGENT_USER must be another user than the runner's (and not root)")
    return AgentUser(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    encryption_key: EncryptionKey | None = field(default=None, repr=False)
    runner_id: str = ""
    max_concurrent_jobs: int = 10
    max_jobs_per_user: int = 3
    job_timeout_s: float = 3600.0
    temp_dir: Path = Path(DEFAULT_TEMP_DIR)
    cleanup_after_job: bool = True
    claim_min_idle_s: float = 300.0
    agent_command: str = ""
    agent_env_names: tuple[str, ...] = ()
    agent_user: AgentUser | None = None
    agent_sandbox: SandboxMode = SandboxMode.BWRAP
    agent_network: NetworkMode = NetworkMode.HOST
    agent_sandbox_paths: tuple[Path, ...] = ()
    log_format: str = "json"
    git_author_name: str = "Repobox"
    git_author_email: str = "repobox@localhost"
    max_deliveries: int = 5
    shutdown_timeout_s: float = 3600.0
    allowed_git_hosts: tuple[str, ...] = ()
    allow_http: bool = False
    block_ms: int = DEFAULT_BLOCK_MS
    tick_s: float = DEFAULT_TICK_MS / 1000
    git_env: Mapping[str, str] = field(default_factory=dict)
    agent_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    path_env: str = "/usr/local/bin:/usr/bin:/bin"

    @property
    def lease_renew_s(self) -> float:
        """How often a runner renews its claims: a third of the idle time that allows takeover."""
        return self.claim_min_idle_s / 3

    def require_key(self) -> EncryptionKey:
        if self.encryption_key is None:
            raise SettingsError("ENCRYPTION_KEY is not set: it is required to run jobs")
        return self.encryption_key


def _int(name: str, raw: Any, minimum: int) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError as exc:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _seconds(name: str, raw: Any, minimum: float = 0.0) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not value > 0 or value < minimum or value != value or value == float("inf"):
        raise SettingsError(f"{name} must be at least {minimum:g} seconds and finite, got {raw!r}"
                            if minimum else f"{name} must be more than 0 seconds, got {raw!r}")
    return value


def _identity(name: str, value: str) -> str:
    if any(ord(c) < 0x20 or c in "<>" for c in value):
        raise SettingsError(f"{name} must not contain control characters, '<' or '>'")
    return value


def _bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.replace(" ", ",").split(",") if part.strip())


def default_runner_id() -> str:
    """Unique per process: host name, pid and a short random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class _Source:
    """Looks a setting up: the option when given, else the environment, else the default."""

    def __init__(self, env: Mapping[str, str], options: Mapping[str, Any]) -> None:
        self.env = env
        self.options = options

    def get(self, env_name: str, option: str | None, default: Any) -> Any:
        if option is not None and self.options.get(option) is not None:
            return self.options[option]
        value = self.env.get(env_name)
        return default if value is None or value == "" else value


def load_settings(
    env: Mapping[str, str] | None = None, *, stderr_is_tty: bool | None = None, **options: Any
) -> Settings:
    """Build Settings from `env` (default os.environ) and options (None means not given)."""
    env = os.environ if env is None else env
    src = _Source(env, options)
    key_text = env.get("ENCRYPTION_KEY", "")
    tty = sys.stderr.isatty() if stderr_is_tty is None else stderr_is_tty
    log_format = str(src.get("LOG_FORMAT", "log_format", "pretty" if tty else "json")).lower()
    if log_format not in ("pretty", "json"):
        raise SettingsError(f"LOG_FORMAT must be 'pretty' or 'json', got {log_format!r}")
    job_timeout_s = _seconds("JOB_TIMEOUT", src.get("JOB_TIMEOUT", "job_timeout", 3600))
    agent_env_names = _names(str(src.get("AGENT_ENV", None, "")))
    bad_names = [n for n in agent_env_names if not _ENV_NAME_RE.match(n)]
    if bad_names:
        raise SettingsError(f"AGENT_ENV holds names that are not variable names: {', '.join(bad_names)}")
    forbidden = sorted(AGENT_ENV_FORBIDDEN.intersection(agent_env_names))
    if forbidden:
        raise SettingsError(f"AGENT_ENV must not pass {', '.join(forbidden)} to the agent")
    temp_dir = Path(str(src.get("TEMP_DIR", "temp_dir", DEFAULT_TEMP_DIR))).absolute()
    return Settings(
        redis_url=str(src.get("REDIS_URL", "redis_url", DEFAULT_REDIS_URL)),
        encryption_key=parse_key(key_text) if key_text else None,
        runner_id=str(src.get("RUNNER_ID", "runner_id", "")) or default_runner_id(),
        max_concurrent_jobs=_int(
            "MAX_CONCURRENT_JOBS", src.get("MAX_CONCURRENT_JOBS", "concurrency", 10), 1
        ),
        max_jobs_per_user=_int(
            "MAX_JOBS_PER_USER", src.get("MAX_JOBS_PER_USER", "max_jobs_per_user", 3), 1
        ),
        job_timeout_s=job_timeout_s,
        temp_dir=temp_dir,
        cleanup_after_job=_bool("CLEANUP_AFTER_JOB", src.get("CLEANUP_AFTER_JOB", "cleanup", True)),
        claim_min_idle_s=_seconds(
            "CLAIM_MIN_IDLE", src.get("CLAIM_MIN_IDLE", "claim_min_idle", 300), MIN_CLAIM_IDLE_S
        ),
        agent_command=str(src.get("AGENT_COMMAND", "agent_command", "")),
        agent_env_names=agent_env_names,
        agent_user=_agent_user(str(src.get("AGENT_USER", "agent_user", "")).strip()),
        agent_sandbox=_choice("AGENT_SANDBOX", src.get("AGENT_SANDBOX", "agent_sandbox", "bwrap"), SandboxMode),
        agent_network=_choice("AGENT_NETWORK", src.get("AGENT_NETWORK", "agent_network", "host"), NetworkMode),
        agent_sandbox_paths=_sandbox_paths(str(src.get("AGENT_SANDBOX_PATHS", None, "")), temp_dir),
        log_format=log_format,
        git_author_name=_identity("GIT_AUTHOR_NAME", env.get("GIT_AUTHOR_NAME") or "Repobox"),
        git_author_email=_identity("GIT_AUTHOR_EMAIL", env.get("GIT_AUTHOR_EMAIL") or "repobox@localhost"),
        max_deliveries=_int("MAX_DELIVERIES", src.get("MAX_DELIVERIES", "max_deliveries", 5), 1),
        shutdown_timeout_s=_seconds(
            "SHUTDOWN_TIMEOUT", src.get("SHUTDOWN_TIMEOUT", "shutdown_timeout", job_timeout_s)
        ),
        allowed_git_hosts=tuple(
            h.lower() for h in _names(str(src.get("ALLOWED_GIT_HOSTS", "allowed_git_hosts", "")))
        ),
        allow_http=_bool("ALLOW_HTTP_REMOTES", src.get("ALLOW_HTTP_REMOTES", "allow_http", False)),
        block_ms=_int("REPOBOX_BLOCK_MS", src.get("REPOBOX_BLOCK_MS", None, DEFAULT_BLOCK_MS), 1),
        tick_s=_int("REPOBOX_TICK_MS", src.get("REPOBOX_TICK_MS", None, DEFAULT_TICK_MS), 10)
        / 1000,
        git_env={k: env[k] for k in GIT_PASSTHROUGH_ENV if env.get(k)},
        agent_env={k: env[k] for k in agent_env_names if k in env},
        path_env=env.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
    )
