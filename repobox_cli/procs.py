"""Processes the runner starts, and the ones an agent leaves behind.

The runner makes itself a child subreaper, so anything an agent daemonizes (double fork, new
session) is re-parented to the runner instead of init: it can then be found and killed before
the runner's own git steps run with the token.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import select
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
MAX_KILL_PASSES = 50  # each pass kills what it finds; a fork bomb cannot outrun 50 passes of SIGKILL

_spawn_lock = threading.RLock()
_spawned: set[int] = set()


@contextlib.contextmanager
def spawning() -> Iterator[set[int]]:
    """Hold while starting a child and adding its pid: scans never see it half-registered."""
    with _spawn_lock:
        yield _spawned


def forget(pid: int) -> None:
    with _spawn_lock:
        _spawned.discard(pid)


RUNNER_UMASK = 0o077  # everything the runner (and its git) creates is private to its user
AGENT_UMASK = 0o022


def restore_default_signals() -> None:
    """Before exec of an agent: Python starts with SIGPIPE and SIGXFSZ ignored, and an exec keeps
    ignored signals ignored; the agent's programs must get the defaults (`yes | head` ends)."""
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)


def switch_user(spec: str) -> None:
    """Become UID:GID (`spec`), with no supplementary groups: the agent's user. With UID:GID:N (N
    over 0), that user may then have at most N processes and threads (RLIMIT_NPROC: the uid is
    the job's own, so it bounds this job's agent alone)."""
    uid, gid, *limit = (int(part) for part in spec.split(":", 2))
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if limit and limit[0] > 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit[0], limit[0]))


def harden_process() -> None:
    """Process-wide settings for a runner: private files; orphans re-parented to us."""
    os.umask(RUNNER_UMASK)
    become_subreaper()


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str


def _read_stat(pid: int) -> ProcInfo | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces or ')': split after the last ')'.
    rest = text[text.rfind(")") + 2 :].split()
    if len(rest) < 4:
        return None
    return ProcInfo(pid=pid, state=rest[0], ppid=int(rest[1]), pgid=int(rest[2]), sid=int(rest[3]))


def list_processes() -> list[ProcInfo]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _read_stat(int(entry))
            if info is not None:
                found.append(info)
    return found


def descendants(roots: Iterable[int], procs: list[ProcInfo]) -> set[int]:
    """`roots` and every process below them."""
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
    return seen


def _kill(pids: Iterable[int]) -> int:
    count = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            count += 1
    return count


def readable(fd: int, timeout_s: float) -> bool:
    """Whether `fd` (a pipe, a pidfd: readable once its process has exited) is readable within
    `timeout_s`; `poll`, so descriptors past 1023 work too."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout_s * 1000))))


def kill_group(pgid: int, signum: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _kill_below(me: int) -> bool:
    """One pass: kill every process below `me`, then reap what was re-parented to it."""
    found = descendants([me], list_processes()) - {me}
    _kill(found)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    return bool(found)


def kill_all_below(me: int) -> None:
    """For a subreaper with nothing left to wait for (the reaper, the sandbox's keeper): kill
    everything below it, pass after pass until one finds nothing."""
    for _ in range(MAX_KILL_PASSES):
        if not _kill_below(me):
            break


def _leftovers(session_id: int) -> set[int]:
    """Live processes of the agent's session, and every orphan re-parented to the runner: agents
    run under their own reaper (repobox_cli/reaper.py), so an orphan that reaches the runner
    escaped one, whatever REPOBOX_JOB_ID it claims."""
    me = os.getpid()
    with _spawn_lock:  # list and snapshot together: no child is half-registered meanwhile
        procs = [p for p in list_processes() if p.state != "Z" and p.pid != me]
        spawned = set(_spawned)
    roots = {p.pid for p in procs if p.sid == session_id or (p.ppid == me and p.pid not in spawned)}
    return descendants(roots, procs) - {me} - spawned if roots else set()


def kill_leftovers(session_id: int) -> int:
    """Kill everything the agent left running, until a pass finds nothing; returns how many."""
    total = 0
    reap_orphans()
    for _ in range(MAX_KILL_PASSES):
        found = _leftovers(session_id)
        if not found:
            break
        total += _kill(found)
        reap_orphans()
    return total


def reap_orphans() -> None:
    """Collect exit statuses of re-parented children we did not start (they would stay zombies).
    The spawn lock is held throughout: a child started meanwhile (a fast git command may already
    be a zombie) must never be reaped here, or its owner's wait fails."""
    me = os.getpid()
    with _spawn_lock:
        for p in list_processes():
            if p.ppid == me and p.pid not in _spawned:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(p.pid, os.WNOHANG)
