"""One frozen Settings object built once from the environment and command-line options.

This is the only module that reads os.environ.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import stat
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from repobox_cli.claude_events import CLAUDE_COMMAND
from repobox_cli.crypto import EncryptionKey, parse_key
from repobox_cli.errors import SettingsError

DEFAULT_REDIS_URL = "redis://localhost:6379"
DEFAULT_TEMP_DIR = "/tmp/repobox"
DEFAULT_BLOCK_MS = 5000
DEFAULT_TICK_MS = 250
# Never handed to the agent, whatever AGENT_ENV says.
AGENT_ENV_FORBIDDEN = frozenset({"ENCRYPTION_KEY", "ENCRYPTION_KEY_FILE", "REDIS_URL", "REDIS_PASSWORD"})
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


class AgentKind(StrEnum):
    """Which agent runs a prompt (AGENT)."""

    COMMAND = "command"  # AGENT_COMMAND, or the placeholder step when it is empty
    CLAUDE = "claude"  # Claude Code in print mode, its stream-json events shown as chat lines


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
    agent_kind: AgentKind = AgentKind.COMMAND
    agent_env_names: tuple[str, ...] = ()
    agent_user: AgentUser | None = None
    log_format: str = "json"
    git_author_name: str = "Repobox"
    git_author_email: str = "repobox@localhost"
    max_deliveries: int = 5
    shutdown_timeout_s: float = 3600.0
    allowed_git_hosts: tuple[str, ...] = ()
    allow_http: bool = False
    create_mr: bool = False
    session_idle_ttl_s: float = 24 * 3600.0
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


def _agent(raw: str, command: str) -> tuple[AgentKind, str]:
    """AGENT and AGENT_COMMAND: the agent's kind and the shell command that starts it."""
    try:
        kind = AgentKind(raw.strip().lower())
    except ValueError as exc:
        choices = ", ".join(k.value for k in AgentKind)
        raise SettingsError(f"AGENT must be one of {choices}, got {raw!r}") from exc
    if kind is AgentKind.CLAUDE:
        if command:
            raise SettingsError("set AGENT=claude or AGENT_COMMAND, not both")
        return kind, CLAUDE_COMMAND
    return kind, command


# Read from the environment once, then wiped from this process's environment block.
SECRET_ENV_NAMES = ("ENCRYPTION_KEY", "REDIS_URL", "REDIS_PASSWORD")
MAX_KEY_FILE_BYTES = 4096


def _key_text(env: Mapping[str, str]) -> str:
    """ENCRYPTION_KEY, or the contents of ENCRYPTION_KEY_FILE (one of them, not both)."""
    inline = env.get("ENCRYPTION_KEY", "")
    path = env.get("ENCRYPTION_KEY_FILE", "")
    if inline and path:
        raise SettingsError("set ENCRYPTION_KEY or ENCRYPTION_KEY_FILE, not both")
    return _read_key_file(Path(path)) if path else inline


def _read_key_file(path: Path) -> str:
    """The key file's text without its trailing newline; it must be a regular file that only
    its owner (this user or root) can read."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SettingsError(f"ENCRYPTION_KEY_FILE {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SettingsError(f"ENCRYPTION_KEY_FILE {path} is readable by others (mode "
                                f"{stat.S_IMODE(info.st_mode):o}): chmod 600 it")
        if info.st_uid not in (0, os.geteuid()):
            raise SettingsError(f"ENCRYPTION_KEY_FILE {path} must be owned by this user or root")
        raw = path.read_bytes()[: MAX_KEY_FILE_BYTES + 1]
    except OSError as exc:
        raise SettingsError(f"cannot read ENCRYPTION_KEY_FILE {path}: {exc.strerror}") from exc
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise SettingsError(f"ENCRYPTION_KEY_FILE {path} is too large to hold a key")
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"ENCRYPTION_KEY_FILE {path} is not UTF-8 text") from exc


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
    key_text = _key_text(env)
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
    agent_kind, agent_command = _agent(str(src.get("AGENT", "agent", AgentKind.COMMAND)),
                                       str(src.get("AGENT_COMMAND", "agent_command", "")))
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
        temp_dir=Path(str(src.get("TEMP_DIR", "temp_dir", DEFAULT_TEMP_DIR))).absolute(),
        cleanup_after_job=_bool("CLEANUP_AFTER_JOB", src.get("CLEANUP_AFTER_JOB", "cleanup", True)),
        claim_min_idle_s=_seconds(
            "CLAIM_MIN_IDLE", src.get("CLAIM_MIN_IDLE", "claim_min_idle", 300), MIN_CLAIM_IDLE_S
        ),
        agent_command=agent_command,
        agent_kind=agent_kind,
        agent_env_names=agent_env_names,
        agent_user=_agent_user(str(src.get("AGENT_USER", "agent_user", "")).strip()),
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
        create_mr=_bool("CREATE_MR", src.get("CREATE_MR", None, False)),
        session_idle_ttl_s=_seconds("SESSION_IDLE_TTL", src.get("SESSION_IDLE_TTL", None, 24 * 3600)),
        block_ms=_int("REPOBOX_BLOCK_MS", src.get("REPOBOX_BLOCK_MS", None, DEFAULT_BLOCK_MS), 1),
        tick_s=_int("REPOBOX_TICK_MS", src.get("REPOBOX_TICK_MS", None, DEFAULT_TICK_MS), 10)
        / 1000,
        git_env={k: env[k] for k in GIT_PASSTHROUGH_ENV if env.get(k)},
        agent_env={k: env[k] for k in agent_env_names if k in env},
        path_env=env.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
    )
