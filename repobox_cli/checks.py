"""Checks of a host's readiness to run jobs, one result each: what `run --check` and
`config --check` print, one line per check. No check raises; none runs a job."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from enum import StrEnum

import redis

from repobox_cli import sandbox
from repobox_cli.errors import RepoboxError, SettingsError
from repobox_cli.git_ops import parse_version
from repobox_cli.keycheck import check_key
from repobox_cli.redis_conn import CONNECTION_ERRORS, check_server, open_client
from repobox_cli.settings import AgentKind, SandboxMode, Settings, dir_problem

GIT_TIMEOUT_S = 10.0
MIN_GIT_VERSION = (2, 31)  # GIT_CONFIG_COUNT/KEY/VALUE: how the token reaches git


class Verdict(StrEnum):
    OK = "ok  "
    FAIL = "FAIL"
    WARN = "warn"


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    what: str
    detail: str

    @property
    def line(self) -> str:
        return f"{self.verdict} {self.what}: {self.detail}"


def key_check(settings: Settings) -> Check:
    key = settings.encryption_key
    if key is None:
        return Check(Verdict.FAIL, "ENCRYPTION_KEY", "not set: required to run jobs")
    return Check(Verdict.OK, "ENCRYPTION_KEY", f"{key.key_format} key")


def redis_check(settings: Settings) -> tuple[Check, redis.Redis | None]:
    """Reachable with these credentials, a supported version, not a cluster node; the client when so."""
    try:
        check_server(settings.redis, full=True)
        client = open_client(settings.redis, block_ms=settings.block_ms)
        version = client.info("server").get("redis_version", "unknown")
    except (RepoboxError, *CONNECTION_ERRORS, redis.RedisError) as exc:
        return Check(Verdict.FAIL, "redis", str(exc)), None
    return Check(Verdict.OK, "redis", f"reachable, version {version}"), client


def stored_tokens_check(settings: Settings, client: redis.Redis) -> Check:
    """The key decrypts the stored provider tokens (a sample, as `run` checks at start)."""
    if settings.encryption_key is None:
        return Check(Verdict.FAIL, "stored tokens", "no ENCRYPTION_KEY to try them with")
    try:
        good = check_key(client, settings.encryption_key)
    except SettingsError as exc:
        return Check(Verdict.FAIL, "stored tokens", str(exc))
    except (*CONNECTION_ERRORS, redis.RedisError) as exc:
        return Check(Verdict.FAIL, "stored tokens", f"cannot read them: {exc}")
    if not good:
        return Check(Verdict.OK, "stored tokens", "none stored yet")
    return Check(Verdict.OK, "stored tokens", f"ENCRYPTION_KEY decrypts the {good} sampled")


def sandbox_check(settings: Settings) -> Check:
    if settings.agent_sandbox is SandboxMode.NONE:
        return Check(
            Verdict.WARN, "sandbox", "AGENT_SANDBOX=none: agents run unconfined and can see this runner (unsafe)"
        )
    try:
        return Check(Verdict.OK, "sandbox", sandbox.probe(settings))
    except SettingsError as exc:
        return Check(Verdict.FAIL, "sandbox", str(exc))


# Words a shell runs without looking in PATH: an AGENT_COMMAND starting with one is not checked.
SHELL_WORDS = frozenset(
    "! . : [ [[ { case cd command echo eval exec export for if printf read set test true false "
    "umask unset until while".split()
)


def agent_check(settings: Settings) -> Check:
    """The program AGENT_COMMAND starts (`claude` for AGENT=claude), found in PATH as the runner
    sees it; a command the shell runs itself, or one that needs a shell to read, is not checked."""
    command = settings.agent_command
    if not command:
        return Check(Verdict.WARN, "agent", "no AGENT_COMMAND: every job pushes a placeholder file")
    program = "claude" if settings.agent_kind is AgentKind.CLAUDE else _first_program(command)
    if program is None or "/" in program or program in SHELL_WORDS:
        # Never the command's text: operators put API keys inline in it (`export KEY=…; claude …`).
        return Check(Verdict.OK, "agent", "a command the shell reads (its program is not checked)")
    if shutil.which(program, path=settings.path_env) is None:
        verdict = Verdict.FAIL if settings.agent_kind is AgentKind.CLAUDE else Verdict.WARN
        return Check(verdict, "agent", f"{program} is not in PATH ({settings.path_env}): every job would fail")
    return Check(Verdict.OK, "agent", f"{program} found in PATH")


def _first_program(command: str) -> str | None:
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for word in words:
        if "=" not in word.split("/")[0]:  # VAR=value before the program
            return word
    return None


def cache_dir_check(settings: Settings) -> Check:
    if settings.cache_max_bytes <= 0:
        return Check(Verdict.OK, "CACHE_DIR", "the clone cache is off (CACHE_MAX_BYTES=0)")
    problem = dir_problem(settings.clone_cache_dir)
    if problem:
        return Check(Verdict.WARN, "CACHE_DIR", f"{settings.clone_cache_dir}: {problem}; jobs would clone uncached")
    return Check(Verdict.OK, "CACHE_DIR", f"{settings.clone_cache_dir} is writable")


def temp_dir_check(settings: Settings) -> Check:
    problem = dir_problem(settings.temp_dir)
    if problem:
        return Check(Verdict.FAIL, "TEMP_DIR", f"{settings.temp_dir}: {problem}")
    return Check(Verdict.OK, "TEMP_DIR", f"{settings.temp_dir} is writable")


def git_check(settings: Settings) -> Check:
    try:
        done = subprocess.run(
            ["git", "--version"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            env={"PATH": settings.path_env, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(Verdict.FAIL, "git", f"cannot run git: {exc}")
    version = parse_version(done.stdout)
    if done.returncode != 0 or version is None:
        return Check(Verdict.FAIL, "git", f"`git --version` failed: {done.stderr.strip() or done.stdout.strip()}")
    text = done.stdout.strip().removeprefix("git version ")
    if version < MIN_GIT_VERSION:
        need = ".".join(map(str, MIN_GIT_VERSION))
        return Check(Verdict.FAIL, "git", f"version {text}: {need} or later is needed")
    return Check(Verdict.OK, "git", f"version {text}")


def run_checks(settings: Settings) -> list[Check]:
    """`run --check`: the key, Redis, the sandbox, the agent's program."""
    redis_result, client = redis_check(settings)
    if client is not None:
        client.close()
    return [key_check(settings), redis_result, sandbox_check(settings), agent_check(settings)]


def host_checks(settings: Settings) -> list[Check]:
    """`config --check`: the key, Redis and its version, the stored tokens, the sandbox, the agent's
    program, TEMP_DIR, CACHE_DIR, git."""
    redis_result, client = redis_check(settings)
    found = [key_check(settings), redis_result]
    if client is not None:
        found.append(stored_tokens_check(settings, client))
        client.close()
    return [
        *found,
        sandbox_check(settings),
        agent_check(settings),
        temp_dir_check(settings),
        cache_dir_check(settings),
        git_check(settings),
    ]
