"""`python -I -m repobox_cli.sandbox_launch UID:GID RUNNER_PID N SOURCE... BWRAP_ARGV...`

A root runner's way into the sandbox (see sandbox.py). In a mount namespace of its own it
bind-mounts each SOURCE at STAGE_DIR/<index> on a fresh tmpfs, drops to UID:GID (no
supplementary groups), then execs bwrap, which binds the staged copies: the unprivileged agent
user need not be able to traverse the real paths (a 0700 TEMP_DIR, /root/.pyenv...), and nothing
of the staging is visible outside this process. It execs in place, so bwrap is still the child of
the worker thread that started it (`--die-with-parent` keeps its meaning).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

from repobox_cli import procs
from repobox_cli.sandbox import STAGE_DIR

CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
EXIT_CANNOT_START = 126

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _die_with_runner(runner_pid: int) -> None:
    """SIGKILL when the parent dies (reset by every uid change); exit if it already has."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    if os.getppid() != runner_pid:
        os._exit(EXIT_CANNOT_START)


def stage(sources: list[str]) -> None:
    """Private mount namespace; each source bound at STAGE_DIR/<index> on a fresh tmpfs."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)  # nothing below propagates to the host
    # Opened before the tmpfs covers STAGE_DIR (a source may lie below it), after the unshare
    # (a bind mount's source must belong to this namespace).
    fds = [os.open(source, os.O_PATH | os.O_CLOEXEC) for source in sources]
    _mount("tmpfs", str(STAGE_DIR), "tmpfs", 0, "mode=0755")
    for index, fd in enumerate(fds):
        target = STAGE_DIR / str(index)
        if Path(f"/proc/self/fd/{fd}").is_dir():
            target.mkdir()
        else:
            target.touch()
        _mount(f"/proc/self/fd/{fd}", str(target), None, MS_BIND | MS_REC, None)
        os.close(fd)


def main(argv: list[str]) -> int:
    try:
        ids, runner_pid, count = argv[1], int(argv[2]), int(argv[3])
        uid, gid = (int(part) for part in ids.split(":", 1))
        sources, bwrap_argv = argv[4 : 4 + count], argv[4 + count :]
    except (IndexError, ValueError):
        print(
            "usage: python -m repobox_cli.sandbox_launch UID:GID RUNNER_PID N SOURCE... BWRAP_ARGV...",
            file=sys.stderr,
        )
        return 2
    try:
        _die_with_runner(runner_pid)
        stage(sources)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        _die_with_runner(runner_pid)
        procs.restore_default_signals()
        os.execv(bwrap_argv[0], bwrap_argv)
    except OSError as exc:
        print(f"repobox: cannot start the agent sandbox: {exc}", file=sys.stderr)
    return EXIT_CANNOT_START


if __name__ == "__main__":
    sys.exit(main(sys.argv))
