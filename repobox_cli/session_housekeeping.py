"""Removing session working copies that are no longer needed, one session at a time (never the
whole `TEMP_DIR/sessions`): the session is gone, ended (`pushed`, `failed`, `archived`), idle
longer than SESSION_IDLE_TTL, or its owner record names another working copy (it was rebuilt
elsewhere, so this one is stale)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Set
from pathlib import Path

import redis

from repobox_cli import keys, validation, workdir
from repobox_cli.errors import JobDataError
from repobox_cli.jobs import now_ms
from repobox_cli.session_owner import read_owner
from repobox_cli.session_work import SESSIONS_DIR
from repobox_cli.sessions import ENDED_STATUSES, SessionStatus

log = logging.getLogger(__name__)

ARCHIVED_REASON = "the session is archived"


def remove_stale_sessions(
    client: redis.Redis,
    temp_dir: Path,
    idle_ttl_s: float,
    busy: Set[str],
    on_archived: Callable[[str], bool] | None = None,
    stopped: Callable[[], bool] = lambda: False,
    lock_of: Callable[[str], threading.Lock] | None = None,
) -> list[str]:
    """Remove the stale working copies under `TEMP_DIR/sessions`, except `busy` sessions (a step
    of theirs runs in this process) and those whose lock (`lock_of`, held by their steps) is
    taken; `on_archived` is told of an archived session first (its checkpoint ref goes too; False:
    not done, the copy is kept to try again). Once `stopped()`, the rest wait for a later call.
    The session ids removed."""
    root = temp_dir / SESSIONS_DIR
    if not workdir.is_real_dir(root):
        return []
    removed = []
    for child in sorted(root.iterdir()):
        if stopped():
            break
        try:
            session_id = validation.safe_name(child.name, "session id")
        except JobDataError:
            continue  # not a directory repobox made: never removed
        if session_id in busy or not workdir.is_real_dir(child):
            continue
        lock = lock_of(session_id) if lock_of is not None else threading.Lock()
        if not lock.acquire(blocking=False):
            continue  # a step of the session began meanwhile
        try:
            why = _stale_because(client, session_id, child, idle_ttl_s)
            if why:
                if why == ARCHIVED_REASON and on_archived is not None and not on_archived(session_id):
                    continue  # its checkpoint is still on the remote: kept, to be deleted by a later pass
                workdir.remove_tree(child)
                removed.append(session_id)
                log.info("removed the working copy of session %s: %s", session_id, why)
        finally:
            lock.release()
    return removed


def _stale_because(client: redis.Redis, session_id: str, path: Path, idle_ttl_s: float) -> str:
    status, last_activity = client.hmget(keys.work_session(session_id), ["status", "last_activity_at"])
    if status is None:
        return "the session is gone"
    if status == SessionStatus.ARCHIVED:
        return ARCHIVED_REASON
    if status in ENDED_STATUSES:
        return f"the session is {status}"
    if last_activity and now_ms() - int(last_activity) > idle_ttl_s * 1000:
        return f"idle longer than SESSION_IDLE_TTL ({idle_ttl_s:g} s)"
    owner = read_owner(client, session_id)
    if owner is not None and (owner.dir != str(path) or owner.host != socket.gethostname()):
        return f"runner {owner.runner} holds the current working copy"
    return ""
