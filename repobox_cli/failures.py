"""How a command ends on an error: one line for stderr and an exit status, never a traceback.
Shared by the CLI and the runner's engine process (which has no Typer or rich)."""

from __future__ import annotations

import sys

from repobox_cli.errors import BadInput, RepoboxError, SettingsError
from repobox_cli.redaction import one_line

DEBUG_ENV = "REPOBOX_DEBUG"


def failure(exc: BaseException) -> tuple[str, int] | None:
    """The line and exit status for an expected error (bad input 2, else 1); None for a bug."""
    if isinstance(exc, (SettingsError, BadInput)):
        return str(exc), 2
    if isinstance(exc, RepoboxError):
        return str(exc), 1
    if "redis" not in sys.modules:
        return None  # not a Redis error: nothing imported the client (`--help` does not pay for it)
    import redis

    from repobox_cli.redis_conn import CONNECTION_ERRORS

    if isinstance(exc, CONNECTION_ERRORS):
        return f"lost connection to Redis: {exc}", 1
    if isinstance(exc, redis.RedisError):
        return f"Redis error: {exc}", 1
    return None


def internal_error_line(exc: BaseException) -> str:
    """A bug, in one line (the traceback only with REPOBOX_DEBUG set)."""
    reason = one_line(f"internal error ({type(exc).__name__}): {exc}")
    return f"{reason}; {DEBUG_ENV}=1 shows the traceback"
