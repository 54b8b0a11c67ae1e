"""One frozen Settings object built once from the environment and command-line options.

This is the only module that reads os.environ.
"""

from __future__ import annotations

import difflib
import os
import pwd
import re
import socket
import stat
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from repobox_cli.claude_events import CLAUDE_COMMAND
from repobox_cli.crypto import EncryptionKey, parse_key
from repobox_cli.errors import SettingsError
from repobox_cli.output_limits import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_OUTPUT_LINES, OutputLimits
from repobox_cli.workdir import CACHE_DIR_NAME

DEFAULT_REDIS_URL = "redis://localhost:6379"
DEFAULT_TEMP_DIR = "/tmp/repobox"
DEFAULT_CACHE_SUBDIR = CACHE_DIR_NAME
DEFAULT_CACHE_MAX_BYTES = 10 * 1024**3
DEFAULT_AGENT_MAX_PROCESSES = 4096  # a fork bomb stops here, not at the host's pid_max
DEFAULT_BLOCK_MS = 5000  # a stop wakes blocked reads (CLIENT UNBLOCK): long reads cost an idle runner little
DEFAULT_TICK_MS = 250
# A lease renewal period (a third of CLAIM_MIN_IDLE) spans at least this many ticks: a renewal
# due is then never more than half a period late.
TICKS_PER_RENEWAL = 2
DEFAULT_METRICS_HOST = "127.0.0.1"  # the endpoint has no authentication: loopback unless asked
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_AUTHOR_NAME = "Repobox"
DEFAULT_AUTHOR_EMAIL = "repobox@localhost"
MAX_CONCURRENT_JOBS_LIMIT = 256  # threads, and git processes, per runner: beyond this, run more runners
# Never handed to the agent, whatever AGENT_ENV says.
AGENT_ENV_FORBIDDEN = frozenset(
    {
        "ENCRYPTION_KEY",
        "ENCRYPTION_KEY_FILE",
        "REDIS_URL",
        "REDIS_PASSWORD",
        "REDIS_PASSWORD_FILE",
        "REDIS_SENTINEL_PASSWORD",
    }
)
DEFAULT_REDIS_WAIT_TIMEOUT_S = 0.5
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


Parse = Callable[[str, Any], Any]  # (environment variable name, raw value) -> checked value


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


class LogFormat(StrEnum):
    """LOG_FORMAT: how log lines look on stderr."""

    PRETTY = "pretty"
    JSON = "json"


class _Choice:
    """Parses one of a StrEnum's values (any case); its `choices` feed the shell completions."""

    def __init__(self, kind: type[StrEnum]) -> None:
        self.kind = kind
        self.choices = tuple(str(m.value) for m in kind)

    def __call__(self, name: str, raw: Any) -> Any:
        word = str(raw).strip().lower()
        try:
            return self.kind(word)
        except ValueError:
            allowed = " or ".join(repr(c) for c in self.choices)
            raise SettingsError(f"{name} must be {allowed}, got {raw!r}") from None


def _choice(kind: type[StrEnum]) -> Parse:
    return _Choice(kind)


def _sandbox_paths(name: str, raw: Any) -> tuple[Path, ...]:
    """AGENT_SANDBOX_PATHS: existing absolute paths, resolved, shown read-only to the agent
    (checked against TEMP_DIR in `load_settings`)."""
    found: list[Path] = []
    for part in (p.strip() for p in str(raw).replace(",", ":").split(":")):
        if not part:
            continue
        if not part.startswith("/"):
            raise SettingsError(f"{name} entries must be absolute paths, got {part!r}")
        path = Path(os.path.realpath(part))
        if not path.exists():
            raise SettingsError(f"{name} names {part}, which does not exist")
        if path == Path("/") or any(path == f or f in path.parents for f in SANDBOX_PATHS_FORBIDDEN):
            raise SettingsError(f"{name} must not show {part} to the agent")
        if path not in found:
            found.append(path)
    return tuple(found)


def _outside_temp_dir(paths: tuple[Path, ...], temp_dir: Path) -> None:
    for path in paths:
        if path == temp_dir or temp_dir in path.parents:
            raise SettingsError(f"AGENT_SANDBOX_PATHS must not name a path inside TEMP_DIR ({path})")


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
class RedisSettings:
    """How to reach Redis: URL (scheme, user, password, db), TLS files, password, Sentinel.
    Secrets are kept out of `repr`; `redis_conn.open_client` is the only consumer. Its fields are
    settings of the table below (`group="redis"`)."""

    url: str = field(default=DEFAULT_REDIS_URL, repr=False)  # may hold a password
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = ""
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    sentinel_tls: bool = False
    wait_replicas: int = 0  # WAIT for this many replicas after begin and finish
    wait_timeout_s: float = DEFAULT_REDIS_WAIT_TIMEOUT_S

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")


@dataclass(frozen=True)
class Settings:
    """Every setting a command uses, parsed and checked. Field names, defaults, environment
    variables, options and help are declared once, in `SETTINGS` below."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)  # may hold a password
    redis: RedisSettings = field(default_factory=RedisSettings)
    encryption_key: EncryptionKey | None = field(default=None, repr=False)
    runner_id: str = ""
    max_concurrent_jobs: int = 10
    max_jobs_per_user: int = 3
    job_timeout_s: float = 3600.0
    temp_dir: Path = Path(DEFAULT_TEMP_DIR)
    cache_dir: Path | None = None  # None: TEMP_DIR/cache (see `clone_cache_dir`)
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    cleanup_after_job: bool = True
    claim_min_idle_s: float = 300.0
    agent_command: str = ""
    agent_kind: AgentKind = AgentKind.COMMAND
    agent_env_names: tuple[str, ...] = ()
    agent_user: AgentUser | None = None
    agent_sandbox: SandboxMode = SandboxMode.BWRAP
    agent_network: NetworkMode = NetworkMode.HOST
    agent_max_processes: int = DEFAULT_AGENT_MAX_PROCESSES
    agent_sandbox_paths: tuple[Path, ...] = ()
    log_format: LogFormat = LogFormat.JSON
    git_author_name: str = DEFAULT_AUTHOR_NAME
    git_author_email: str = DEFAULT_AUTHOR_EMAIL
    max_deliveries: int = 5
    shutdown_timeout_s: float = 3600.0
    allowed_git_hosts: tuple[str, ...] = ()
    allow_http: bool = False
    max_output_lines: int = DEFAULT_MAX_OUTPUT_LINES
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    create_mr: bool = False
    session_idle_ttl_s: float = 24 * 3600.0
    block_ms: int = DEFAULT_BLOCK_MS
    tick_s: float = DEFAULT_TICK_MS / 1000
    git_env: Mapping[str, str] = field(default_factory=dict)
    agent_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    path_env: str = DEFAULT_PATH
    metrics_port: int | None = None
    metrics_host: str = DEFAULT_METRICS_HOST

    @property
    def lease_renew_s(self) -> float:
        """How often a runner renews its claims: a third of the idle time that allows takeover."""
        return self.claim_min_idle_s / 3

    @property
    def clone_cache_dir(self) -> Path:
        """Where the clone cache keeps its mirrors: CACHE_DIR, by default TEMP_DIR/cache."""
        return self.cache_dir or self.temp_dir / DEFAULT_CACHE_SUBDIR

    @property
    def output_limits(self) -> OutputLimits:
        return OutputLimits(max_lines=self.max_output_lines, max_bytes=self.max_output_bytes)

    def require_key(self) -> EncryptionKey:
        if self.encryption_key is None:
            raise SettingsError("ENCRYPTION_KEY is not set: it is required to run jobs")
        return self.encryption_key


# Beyond these a number is a typo, and past what Redis, its Lua and the OS's clocks take (numbers
# in scripts are doubles: exact up to 2**53; times become milliseconds).
MAX_WHOLE_NUMBER = 2**53
MAX_SECONDS = 10 * 365 * 86_400.0
MAX_WAIT_REPLICAS = 100
MAX_BLOCK_MS = 3_600_000  # an hour: the read's socket timeout follows it


def _int(name: str, raw: Any, minimum: int, maximum: int = MAX_WHOLE_NUMBER) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError as exc:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    if value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, got {value}")
    return value


def _seconds(name: str, raw: Any, minimum: float = 0.0) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not value > 0 or value < minimum or value != value or value == float("inf"):
        raise SettingsError(
            f"{name} must be at least {minimum:g} seconds and finite, got {raw!r}"
            if minimum
            else f"{name} must be more than 0 seconds, got {raw!r}"
        )
    if value > MAX_SECONDS:
        raise SettingsError(f"{name} must be at most {MAX_SECONDS:.0f} seconds (ten years), got {raw!r}")
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


# Read from the environment once, then wiped from this process's environment block.
SECRET_ENV_NAMES = ("ENCRYPTION_KEY", "REDIS_URL", "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD")
MAX_KEY_FILE_BYTES = 4096


def _key_text(env: Mapping[str, str]) -> str:
    """ENCRYPTION_KEY, or the contents of ENCRYPTION_KEY_FILE (one of them, not both)."""
    inline = env.get("ENCRYPTION_KEY", "")
    path = env.get("ENCRYPTION_KEY_FILE", "")
    if inline and path:
        raise SettingsError("set ENCRYPTION_KEY or ENCRYPTION_KEY_FILE, not both")
    return _read_key_file(Path(path)) if path else inline


def _read_key_file(path: Path, name: str = "ENCRYPTION_KEY_FILE") -> str:
    """The secret file's text without its trailing newline; it must be a regular file that only
    its owner (this user or root) can read. `name` is the setting, for messages."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SettingsError(f"{name} {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SettingsError(
                f"{name} {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it"
            )
        if info.st_uid not in (0, os.geteuid()):
            raise SettingsError(f"{name} {path} must be owned by this user or root")
        raw = path.read_bytes()[: MAX_KEY_FILE_BYTES + 1]
    except OSError as exc:
        raise SettingsError(f"cannot read {name} {path}: {exc.strerror}") from exc
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise SettingsError(f"{name} {path} is too large to hold a secret")
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{name} {path} is not UTF-8 text") from exc


def _readable_file(name: str, raw: Any) -> Path | None:
    if not raw:
        return None
    path = Path(str(raw)).absolute()
    if not path.is_file():
        raise SettingsError(f"{name} {path} is not a readable file")
    return path


def _sentinels(name: str, raw: Any) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (IPv6 as `[::1]:26379`)."""
    found = []
    for part in _names(str(raw)):
        host, sep, port = part.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name} must be host:port[,host:port…], got {part!r}")
        found.append((host, int(port)))
    return tuple(found)


def _redis_settings(env: Mapping[str, str], url: str, parsed: dict[str, Any]) -> RedisSettings:
    """The Redis connection settings from the table's `redis` group, checked together."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("REDIS_URL must start with redis://, rediss:// or unix://")
    tls = url.startswith("rediss://")
    if not tls and any(parsed.get(f) for f in ("ca_file", "cert_file", "key_file")):
        raise SettingsError("REDIS_CA_FILE, REDIS_CERT_FILE and REDIS_KEY_FILE need a rediss:// REDIS_URL")
    if bool(parsed.get("cert_file")) != bool(parsed.get("key_file")):
        raise SettingsError("REDIS_CERT_FILE and REDIS_KEY_FILE go together")
    password_file = env.get("REDIS_PASSWORD_FILE", "")
    if password_file and parsed.get("password"):
        raise SettingsError("set REDIS_PASSWORD or REDIS_PASSWORD_FILE, not both")
    if password_file:
        parsed["password"] = _read_key_file(Path(password_file), "REDIS_PASSWORD_FILE")
    if parsed.get("password") and _url_has_password(url):
        raise SettingsError("REDIS_URL holds a password and REDIS_PASSWORD(_FILE) is set: give one")
    if bool(parsed.get("sentinels")) != bool(parsed.get("sentinel_master")):
        raise SettingsError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together")
    parsed.setdefault("sentinel_tls", tls)
    parsed.setdefault("wait_replicas", 1 if parsed.get("sentinels") else 0)
    fields: dict[str, Any] = {k: (v or None) if k in _OPTIONAL_REDIS_TEXT else v for k, v in parsed.items()}
    return RedisSettings(url=url, **fields)


_OPTIONAL_REDIS_TEXT = frozenset({"password", "username", "sentinel_username", "sentinel_password"})


def _url_has_password(url: str) -> bool:
    userinfo = url.partition("://")[2].partition("/")[0].rpartition("@")[0]
    return ":" in userinfo


def default_runner_id() -> str:
    """Unique per process: host name, pid and a short random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# -- the table ------------------------------------------------------------------------------

RUN, EXEC, DECRYPT, PENDING = "run", "exec", "decrypt", "pending"
WORKER = frozenset({RUN, EXEC})
ALL_COMMANDS = frozenset({RUN, EXEC, DECRYPT, PENDING})


@dataclass(frozen=True)
class Setting:
    """One setting, declared once: the Settings field it fills, its environment variable, its
    command-line option (none: environment only), the commands that use it, its default (raw, as
    the environment would hold it; None: computed, see `default_doc`) and its help."""

    field: str
    env: str
    parse: Parse
    default: str | None
    help: str
    option: str = ""  # "--concurrency", or "--cleanup/--no-cleanup" for a flag pair
    option_type: type = str
    commands: frozenset[str] = WORKER
    default_doc: str = ""
    # The commands that take the option (default: every command that reads the setting).
    option_commands: frozenset[str] | None = None
    group: str = ""  # "redis": a field of Settings.redis (RedisSettings), not of Settings
    secret: bool = False  # never shown (`repobox config` masks it)

    @property
    def param(self) -> str:
        """The option's parameter name in the CLI functions and in `load_settings` overrides."""
        return self.option.split("/")[0].lstrip("-").replace("-", "_")

    @property
    def choices(self) -> tuple[str, ...]:
        """The values it takes, when they are a fixed few (completed by the shells)."""
        return self.parse.choices if isinstance(self.parse, _Choice) else ()

    @property
    def shown_default(self) -> str:
        return self.default_doc or (f"`{self.default}`" if self.default else "empty")


def _text(_name: str, raw: Any) -> str:
    return str(raw)


def _ints(minimum: int, maximum: int = MAX_WHOLE_NUMBER) -> Parse:
    return lambda name, raw: _int(name, raw, minimum, maximum)


def _secs(minimum: float = 0.0) -> Parse:
    return lambda name, raw: _seconds(name, raw, minimum)


def _path(name: str, raw: Any) -> Path:
    """Absolute, symbolic links resolved: the sandbox hides and checks the real directories. An
    empty value (an option given as "") is refused: it would name the current directory."""
    if not str(raw).strip():
        raise SettingsError(f"{name} must not be empty")
    return Path(os.path.realpath(str(raw)))


def _work_dir(name: str, raw: Any) -> Path:
    """An absolute directory this user can work in: it exists and is writable, or can be created."""
    path = _path(name, raw)
    problem = dir_problem(path)
    if problem:
        raise SettingsError(f"{name} {path} cannot be used: {problem}")
    return path


def dir_problem(path: Path) -> str | None:
    """Why this user cannot use `path` as a directory to write in (None: it can, or can create it).
    Ownership and mode are checked where it is used (`workdir.ensure_private_dir`)."""
    existing = path
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory" if existing.is_file() else f"{existing} is not a directory"
    # Try it (root passes every permission check, not a read-only or virtual file system).
    try:
        tempfile.TemporaryDirectory(prefix=".repobox-probe-", dir=existing).cleanup()
    except OSError as exc:
        what = "it is not writable" if existing == path else f"it cannot be created in {existing}"
        return f"{what} ({exc.strerror or exc})"
    return None


def _runner_id(name: str, raw: Any) -> str:
    value = str(raw)
    if not _RUNNER_ID_RE.match(value):
        raise SettingsError(f"{name} must be 1 to 128 letters, digits or '_ . : @ -', got {value[:40]!r}")
    return value


def _hosts(name: str, raw: Any) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower() for h in str(raw).split(",") if h.strip())
    bad = [h for h in hosts if not _HOST_PORT_RE.match(h)]
    if bad:
        raise SettingsError(f"{name} holds entries that are not host or host:port: {', '.join(bad)}")
    return hosts


def _agent_env_names(name: str, raw: Any) -> tuple[str, ...]:
    names = _names(str(raw))
    bad = [n for n in names if not _ENV_NAME_RE.match(n)]
    if bad:
        raise SettingsError(f"{name} holds names that are not variable names: {', '.join(bad)}")
    forbidden = sorted(AGENT_ENV_FORBIDDEN.intersection(names))
    if forbidden:
        raise SettingsError(f"{name} must not pass {', '.join(forbidden)} to the agent")
    return names


MAX_PORT = 65535


def _listen_host(name: str, raw: Any) -> str:
    value = str(raw).strip()
    if not value or any(c.isspace() or c in "/@" for c in value):
        raise SettingsError(f"{name} must be a host name or an IP address, got {str(raw)[:40]!r}")
    return value


def _tick_s(name: str, raw: Any) -> float:
    return _int(name, raw, 10) / 1000


_RUNNER_ID_RE = re.compile(r"\A[A-Za-z0-9_.:@-]{1,128}\Z")
_HOST_PORT_RE = re.compile(r"\A[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?\Z")

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "redis_url",
        "REDIS_URL",
        _text,
        DEFAULT_REDIS_URL,
        "the Redis shared with the web app. `rediss://` for TLS (hostname verified; "
        "`?ssl_check_hostname=false` and the other query options redis-py understands work), "
        "`redis://user:password@host:port/db` for an ACL user",
        "--redis-url",
        commands=ALL_COMMANDS,
    ),
    Setting(
        "username",
        "REDIS_USERNAME",
        _text,
        "",
        "ACL user (or the user in `REDIS_URL`)",
        commands=ALL_COMMANDS,
        group="redis",
    ),
    Setting(
        "password",
        "REDIS_PASSWORD",
        _text,
        "",
        "password of the ACL user (or in `REDIS_URL`); read once, then wiped from the runner's environment",
        commands=ALL_COMMANDS,
        group="redis",
        secret=True,
    ),
    Setting(
        "password",
        "REDIS_PASSWORD_FILE",
        _text,
        None,
        "a file holding the Redis password, checked like `ENCRYPTION_KEY_FILE`; not together with `REDIS_PASSWORD`",
        commands=ALL_COMMANDS,
        group="redis",
        default_doc="none",
    ),
    Setting(
        "ca_file",
        "REDIS_CA_FILE",
        _readable_file,
        "",
        "PEM CA bundle to verify the server (with `rediss://`)",
        commands=ALL_COMMANDS,
        group="redis",
        default_doc="the system's CAs",
    ),
    Setting(
        "cert_file",
        "REDIS_CERT_FILE",
        _readable_file,
        "",
        "client certificate for `rediss://` (with `REDIS_KEY_FILE`), for servers that ask for one (`tls-auth-clients`)",
        commands=ALL_COMMANDS,
        group="redis",
    ),
    Setting(
        "key_file",
        "REDIS_KEY_FILE",
        _readable_file,
        "",
        "client key for `rediss://`",
        commands=ALL_COMMANDS,
        group="redis",
    ),
    Setting(
        "sentinels",
        "REDIS_SENTINELS",
        _sentinels,
        "",
        "`host:port,…` of Sentinels: the runner asks them "
        "for the primary and follows failovers (`REDIS_URL` then gives only scheme, credentials and db)",
        commands=ALL_COMMANDS,
        group="redis",
    ),
    Setting(
        "sentinel_master",
        "REDIS_SENTINEL_MASTER",
        _text,
        "",
        "the primary's name at the Sentinels",
        commands=ALL_COMMANDS,
        group="redis",
    ),
    Setting(
        "sentinel_username",
        "REDIS_SENTINEL_USERNAME",
        _text,
        "",
        "ACL user at the Sentinels",
        commands=ALL_COMMANDS,
        group="redis",
    ),
    Setting(
        "sentinel_password",
        "REDIS_SENTINEL_PASSWORD",
        _text,
        "",
        "password at the Sentinels",
        commands=ALL_COMMANDS,
        group="redis",
        secret=True,
    ),
    Setting(
        "sentinel_tls",
        "REDIS_SENTINEL_TLS",
        _bool,
        None,
        "TLS to the Sentinels",
        commands=ALL_COMMANDS,
        group="redis",
        default_doc="as `REDIS_URL` (`rediss://`: true)",
    ),
    Setting(
        "wait_replicas",
        "REDIS_WAIT_REPLICAS",
        _ints(0, MAX_WAIT_REPLICAS),
        None,
        "after begin and finish, `WAIT` for this many replicas, at most 100 (see Production Redis)",
        commands=frozenset({RUN, EXEC}),
        group="redis",
        default_doc="1 with Sentinels, else 0",
    ),
    Setting(
        "wait_timeout_s",
        "REDIS_WAIT_TIMEOUT",
        _secs(),
        str(DEFAULT_REDIS_WAIT_TIMEOUT_S),
        "seconds each `WAIT` may take (rounded up to whole milliseconds: `WAIT` with 0 would wait for ever)",
        commands=frozenset({RUN, EXEC}),
        group="redis",
    ),
    Setting(
        "encryption_key",
        "ENCRYPTION_KEY",
        _text,
        None,
        "the web app's key: 64 hex, 44 base64 or 32 raw characters, tried in that order "
        "(environment only: argv is visible to every user)",
        commands=frozenset({RUN, EXEC, DECRYPT}),
        default_doc="required to run jobs (or the file below)",
        secret=True,
    ),
    Setting(
        "encryption_key",
        "ENCRYPTION_KEY_FILE",
        _text,
        None,
        "a file holding the key (trailing newline ignored), readable by its owner only (`chmod 600`), "
        "owned by the runner's user or root; not together with `ENCRYPTION_KEY`",
        commands=frozenset({RUN, EXEC, DECRYPT}),
        default_doc="none",
    ),
    Setting(
        "runner_id",
        "RUNNER_ID",
        _runner_id,
        None,
        "the consumer name, unique per process: 1–128 letters, digits, `_ . : @ -`",
        "--runner-id",
        default_doc="`<host>-<pid>-<random>`",
        option_commands=frozenset({RUN}),
    ),
    Setting(
        "max_concurrent_jobs",
        "MAX_CONCURRENT_JOBS",
        _ints(1, MAX_CONCURRENT_JOBS_LIMIT),
        "10",
        f"worker threads (1–{MAX_CONCURRENT_JOBS_LIMIT})",
        "--concurrency",
        int,
        frozenset({RUN}),
    ),
    Setting(
        "max_jobs_per_user",
        "MAX_JOBS_PER_USER",
        _ints(1),
        "3",
        "running jobs per user across the whole fleet",
        "--max-jobs-per-user",
        int,
        option_commands=frozenset({RUN}),
    ),
    Setting(
        "job_timeout_s",
        "JOB_TIMEOUT",
        _secs(),
        "3600",
        "seconds; the job's whole process tree is killed and the job fails",
        "--job-timeout",
        float,
    ),
    Setting(
        "temp_dir",
        "TEMP_DIR",
        _work_dir,
        DEFAULT_TEMP_DIR,
        "work directories `TEMP_DIR/<job id>/<attempt id>`, mode 0700 (symbolic links in the path are resolved)",
        "--temp-dir",
        Path,
    ),
    Setting(
        "cache_dir",
        "CACHE_DIR",
        _path,
        None,
        "the clone cache: one bare mirror per remote URL, the runner's own (never inside a sandbox)",
        "--cache-dir",
        Path,
        default_doc="`TEMP_DIR/cache`",
    ),
    Setting(
        "cache_max_bytes",
        "CACHE_MAX_BYTES",
        _ints(0),
        str(DEFAULT_CACHE_MAX_BYTES),
        "bytes the clone cache may hold; least recently used mirrors are removed past it; 0 turns the cache off",
        "--cache-max-bytes",
        int,
    ),
    Setting(
        "cleanup_after_job",
        "CLEANUP_AFTER_JOB",
        _bool,
        "true",
        "delete the work directory after the job",
        "--cleanup/--no-cleanup",
        bool,
        option_commands=frozenset({RUN}),
    ),
    Setting(
        "claim_min_idle_s",
        "CLAIM_MIN_IDLE",
        _secs(MIN_CLAIM_IDLE_S),
        "300",
        "seconds (at least 1) an entry must be idle (its runner silent) before another runner takes it over",
        "--claim-min-idle",
        float,
        frozenset({RUN, EXEC, PENDING}),
        option_commands=frozenset({RUN}),
    ),
    Setting(
        "agent_command",
        "AGENT_COMMAND",
        _text,
        "",
        'shell command run in the clone (see "The agent step")',
        "--agent-command",
        default_doc="empty: the placeholder step",
        secret=True,  # operators put API keys inline in it
    ),
    Setting(
        "agent_kind",
        "AGENT",
        _choice(AgentKind),
        "command",
        "`command`: `AGENT_COMMAND` (or the placeholder); `claude`: Claude Code in print mode with "
        'stream-json output, its events shown as chat lines (see "The Claude Code agent"); not together '
        "with `AGENT_COMMAND`",
    ),
    Setting(
        "agent_env_names",
        "AGENT_ENV",
        _agent_env_names,
        "",
        "comma-separated names of extra variables passed to the agent (e.g. an API key); "
        "the key's and Redis's secrets (`ENCRYPTION_KEY`, `ENCRYPTION_KEY_FILE`, `REDIS_URL`, "
        "`REDIS_PASSWORD`, `REDIS_PASSWORD_FILE`, `REDIS_SENTINEL_PASSWORD`) are refused",
    ),
    Setting(
        "agent_user",
        "AGENT_USER",
        lambda _n, raw: _agent_user(str(raw).strip()),
        "",
        "run the agent as this OS user (name or uid); needs a root runner. Closes the same-user attacks "
        "described under Security",
        "--agent-user",
        default_doc="empty: the runner's user",
        option_commands=frozenset({RUN}),
    ),
    Setting(
        "agent_sandbox",
        "AGENT_SANDBOX",
        _choice(SandboxMode),
        "bwrap",
        "`bwrap`: every agent in a bubblewrap sandbox (see Security); `none`: no sandbox (unsafe: "
        "a warning at start and in each job's output)",
        "--agent-sandbox",
    ),
    Setting(
        "agent_network",
        "AGENT_NETWORK",
        _choice(NetworkMode),
        "host",
        "the sandboxed agent's network: `host` (shared; agents call AI APIs) or `none`",
        "--agent-network",
    ),
    Setting(
        "agent_max_processes",
        "AGENT_MAX_PROCESSES",
        _ints(0, MAX_WHOLE_NUMBER),
        str(DEFAULT_AGENT_MAX_PROCESSES),
        "processes and threads one job's sandboxed agent may have at once (`RLIMIT_NPROC` of its own uid, "
        "where agents run as their own uid: a root runner); 0 for no limit. Elsewhere the agents count "
        "against the runner's user: bound them with the service's `TasksMax`",
    ),
    Setting(
        "agent_sandbox_paths",
        "AGENT_SANDBOX_PATHS",
        _sandbox_paths,
        "",
        "extra absolute paths shown read-only in the sandbox (`:` or `,` separated), e.g. a toolchain "
        "under /opt; never `/`, `/etc`, `/proc`, `/sys`, `/dev`, anything in TEMP_DIR, CACHE_DIR or a directory "
        "around it, or a secret file (`ENCRYPTION_KEY_FILE`, `REDIS_PASSWORD_FILE`, `REDIS_KEY_FILE`) or a "
        "directory around one",
    ),
    Setting(
        "log_format",
        "LOG_FORMAT",
        _choice(LogFormat),
        None,
        "`pretty` or `json`: log lines on stderr",
        "--log-format",
        default_doc="`pretty` on a terminal, else `json`",
    ),
    Setting(
        "git_author_name",
        "GIT_AUTHOR_NAME",
        lambda n, raw: _identity(n, str(raw)),
        DEFAULT_AUTHOR_NAME,
        "author and committer name of the runner's commits",
    ),
    Setting(
        "git_author_email",
        "GIT_AUTHOR_EMAIL",
        lambda n, raw: _identity(n, str(raw)),
        DEFAULT_AUTHOR_EMAIL,
        "author and committer email of the runner's commits",
    ),
    Setting(
        "max_deliveries",
        "MAX_DELIVERIES",
        _ints(1),
        "5",
        "an entry delivered more often goes to the dead letters",
        "--max-deliveries",
        int,
        frozenset({RUN}),
    ),
    Setting(
        "shutdown_timeout_s",
        "SHUTDOWN_TIMEOUT",
        _secs(),
        None,
        "how long a warm shutdown waits for running jobs",
        "--shutdown-timeout",
        float,
        frozenset({RUN}),
        default_doc="`JOB_TIMEOUT`",
    ),
    Setting(
        "allowed_git_hosts",
        "ALLOWED_GIT_HOSTS",
        _hosts,
        "",
        "comma-separated `host` or `host:port`",
        "--allowed-git-hosts",
        default_doc="empty: any host that matches the provider record",
        option_commands=frozenset({RUN}),
    ),
    Setting(
        "allow_http",
        "ALLOW_HTTP_REMOTES",
        _bool,
        "false",
        "allow plain `http://` remotes (trusted networks only)",
        "--allow-http/--no-allow-http",
        bool,
        option_commands=frozenset({RUN}),
    ),
    Setting(
        "create_mr",
        "CREATE_MR",
        _bool,
        "false",
        "single-shot jobs open a pull/merge request after the push (`mr_url` or `mr_warning` on the job; "
        "see Merge requests)",
    ),
    Setting(
        "session_idle_ttl_s",
        "SESSION_IDLE_TTL",
        _secs(60.0),
        "86400",
        "seconds without activity after which a work session's working copy is removed from this runner "
        "(it is rebuilt from its checkpoint if the session goes on; see Work sessions)",
        commands=frozenset({RUN}),
    ),
    Setting(
        "max_output_lines",
        "MAX_OUTPUT_LINES",
        _ints(OutputLimits.MIN_LINES),
        str(DEFAULT_MAX_OUTPUT_LINES),
        f"most lines of one job's output in Redis (at least {OutputLimits.MIN_LINES}); past it, one line "
        'says how much was dropped (see "Bounded output")',
    ),
    Setting(
        "max_output_bytes",
        "MAX_OUTPUT_BYTES",
        _ints(OutputLimits.MIN_BYTES),
        str(DEFAULT_MAX_OUTPUT_BYTES),
        f"most bytes of one job's output in Redis, as stored (at least {OutputLimits.MIN_BYTES}); lines are "
        "cut at 4 KiB",
    ),
    Setting(
        "metrics_port",
        "METRICS_PORT",
        _ints(1, MAX_PORT),
        None,
        'serve Prometheus metrics at `http://METRICS_HOST:METRICS_PORT/metrics` (see "Metrics")',
        "--metrics-port",
        int,
        frozenset({RUN}),
        default_doc="none: no metrics endpoint",
    ),
    Setting(
        "metrics_host",
        "METRICS_HOST",
        _listen_host,
        DEFAULT_METRICS_HOST,
        "the address the metrics endpoint listens on (`0.0.0.0` for every interface)",
        "--metrics-host",
        str,
        frozenset({RUN}),
    ),
    Setting(
        "block_ms",
        "REPOBOX_BLOCK_MS",
        _ints(1, MAX_BLOCK_MS),
        str(DEFAULT_BLOCK_MS),
        "`XREADGROUP … BLOCK` time in ms, at most 3600000 (prompt and push reads of a runner holding "
        "sessions: at most 400; a stop wakes reads at once)",
        commands=frozenset({RUN, EXEC, PENDING}),
    ),
    Setting(
        "tick_s",
        "REPOBOX_TICK_MS",
        _tick_s,
        str(DEFAULT_TICK_MS),
        "how often (ms, at least 10, at most a sixth of CLAIM_MIN_IDLE: the default is shortened to fit) the "
        "supervisor checks cancels, deadlines and waiting jobs",
    ),
)


# Read elsewhere than the settings table: the traceback switch, the engine's options from `run`.
OTHER_ENV_NAMES = ("REPOBOX_DEBUG", "REPOBOX_RUN_OPTIONS", *GIT_PASSTHROUGH_ENV)


def misspelled(env: Mapping[str, str]) -> list[str]:
    """Variables in `env` that are no setting but look like a misspelled one (`AGENT_SANBOX`): one
    line each, naming the setting meant. A name that does not start as a setting does is not
    judged (the environment holds much else)."""
    known = {s.env for s in SETTINGS} | set(SECRET_ENV_NAMES) | set(SECRET_FILE_ENV_NAMES) | set(OTHER_ENV_NAMES)
    prefixes = {name.split("_", 1)[0] + "_" for name in known if "_" in name}
    found = []
    for name in sorted(env):
        if name in known or not name.startswith(tuple(prefixes)):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            found.append(f"{name} is not a setting: did you mean {close[0]}? (it is ignored)")
    return found


def options_for(command: str) -> list[Setting]:
    """The settings `command` takes as command-line options, in table order."""
    return [s for s in SETTINGS if s.option and command in (s.option_commands or s.commands)]


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    command: str = RUN,
    stderr_is_tty: bool | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings for `command` from `env` (default os.environ) and options (by parameter name;
    None means not given). Settings the command does not use are not read, so a bad one cannot
    stop it."""
    env = os.environ if env is None else env
    known = {s.param for s in SETTINGS if s.option}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"load_settings got unknown options: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {"redis": {}}
    for setting in SETTINGS:
        if command not in setting.commands or setting.default is None and setting.env.endswith("_FILE"):
            continue  # a secret file (key, Redis password) is read below, with its variable
        if setting.field == "encryption_key":
            continue
        raw = overrides.get(setting.param) if setting.option else None
        if raw is None:
            raw = env.get(setting.env) or setting.default
        if raw is not None:
            (groups[setting.group] if setting.group else values)[setting.field] = setting.parse(setting.env, raw)
    values["redis"] = _redis_settings(env, values["redis_url"], groups["redis"])
    if command in WORKER | {DECRYPT}:
        key_text = _key_text(env)
        values["encryption_key"] = parse_key(key_text) if key_text else None
    if command in WORKER and "runner_id" not in values:
        values["runner_id"] = default_runner_id()
    if command in WORKER and "log_format" not in values:
        tty = sys.stderr.isatty() if stderr_is_tty is None else stderr_is_tty
        values["log_format"] = LogFormat.PRETTY if tty else LogFormat.JSON
    if command == RUN and "shutdown_timeout_s" not in values:
        values["shutdown_timeout_s"] = values["job_timeout_s"]
    _check_together(values, tick_given=bool(env.get("REPOBOX_TICK_MS")), secret_files=_secret_files(env))
    names = values.get("agent_env_names", ())
    return Settings(
        **values,
        git_env={k: env[k] for k in GIT_PASSTHROUGH_ENV if env.get(k)},
        agent_env={k: env[k] for k in names if k in env},
        path_env=env.get("PATH") or DEFAULT_PATH,
    )


# Files holding secrets the agent must never read (the Redis client certificate's private key too).
SECRET_FILE_ENV_NAMES = ("ENCRYPTION_KEY_FILE", "REDIS_PASSWORD_FILE", "REDIS_KEY_FILE")


def _secret_files(env: Mapping[str, str]) -> tuple[Path, ...]:
    return tuple(Path(os.path.realpath(env[name])) for name in SECRET_FILE_ENV_NAMES if env.get(name))


def _check_together(values: dict[str, Any], *, tick_given: bool, secret_files: tuple[Path, ...] = ()) -> None:
    """The checks that need two settings; AGENT=claude sets the agent's command."""
    if values.get("agent_kind") is AgentKind.CLAUDE:
        if values.get("agent_command"):
            raise SettingsError("set AGENT=claude or AGENT_COMMAND, not both")
        values["agent_command"] = CLAUDE_COMMAND
    _fit_tick(values, tick_given=tick_given)
    if "agent_sandbox_paths" in values:
        _outside_temp_dir(values["agent_sandbox_paths"], values["temp_dir"])
        _cache_not_shared(values["agent_sandbox_paths"], values.get("cache_dir"))
        _no_secret_shown(values["agent_sandbox_paths"], secret_files)


def _fit_tick(values: dict[str, Any], *, tick_given: bool) -> None:
    """Leases are renewed on the tick, every third of CLAIM_MIN_IDLE: the tick must fit
    TICKS_PER_RENEWAL times in that. The default tick is shortened to fit; a tick given is refused."""
    tick_s, claim_s = values.get("tick_s"), values.get("claim_min_idle_s")
    if tick_s is None or claim_s is None:
        return
    longest_s = claim_s / 3 / TICKS_PER_RENEWAL
    if tick_s <= longest_s:
        return
    if not tick_given:
        values["tick_s"] = longest_s
        return
    raise SettingsError(
        f"REPOBOX_TICK_MS={round(tick_s * 1000)} is too long for CLAIM_MIN_IDLE={claim_s:g}: "
        f"leases are renewed every third of CLAIM_MIN_IDLE, on the tick, so the tick may be "
        f"at most {round(longest_s * 1000)} ms"
    )


def _cache_not_shared(paths: tuple[Path, ...], cache_dir: Path | None) -> None:
    """The clone cache holds other users' objects: no sandbox may see it."""
    for path in paths:
        if cache_dir is not None and (path == cache_dir or path in cache_dir.parents or cache_dir in path.parents):
            raise SettingsError(f"AGENT_SANDBOX_PATHS must not name CACHE_DIR or a path around it ({path})")


def _no_secret_shown(paths: tuple[Path, ...], secret_files: tuple[Path, ...]) -> None:
    """The key file, the Redis password file and TLS key: no sandbox may see them (an agent runs
    as this user, or as one that may read what it reads)."""
    for path in paths:
        for secret in secret_files:
            if path == secret or path in secret.parents:
                raise SettingsError(
                    f"AGENT_SANDBOX_PATHS must not show the agent a secret file ({path} holds {secret})"
                )


class Source(StrEnum):
    """Where a setting's value came from."""

    OPTION = "option"
    ENV = "env"
    FILE = "file"  # ENCRYPTION_KEY or the Redis password, read from its *_FILE
    DEFAULT = "default"


def setting_sources(env: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, tuple[Source, str | None]]:
    """For every row of `SETTINGS` (by variable name): where its value comes from, as `load_settings`
    decides, and the raw text given (None: the default, or a value computed at load)."""
    env = os.environ if env is None else env
    found: dict[str, tuple[Source, str | None]] = {}
    for s in SETTINGS:
        given = overrides.get(s.param) if s.option else None
        if given is not None:
            found[s.env] = (Source.OPTION, str(given))
        elif env.get(s.env):
            found[s.env] = (Source.ENV, env[s.env])
        else:
            found[s.env] = (Source.DEFAULT, s.default)
    for secret, file in (("ENCRYPTION_KEY", "ENCRYPTION_KEY_FILE"), ("REDIS_PASSWORD", "REDIS_PASSWORD_FILE")):
        if env.get(file):
            found[secret] = (Source.FILE, None)
    return found


def settings_markdown() -> str:
    """The README's settings table, generated from `SETTINGS` (a test keeps the README equal)."""
    rows = ["| env | option | commands | default | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        option = f"`{s.option}`" if s.option else "—"
        takers = s.option_commands or s.commands
        if s.option and takers != s.commands:
            option += f" ({', '.join(sorted(takers))})"
        rows.append(f"| `{s.env}` | {option} | {', '.join(sorted(s.commands))} | {s.shown_default} | {s.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
