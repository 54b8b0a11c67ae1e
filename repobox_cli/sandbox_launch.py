"""`python -I -m repobox_cli.sandbox_launch UID:GID|- N SOURCE... BWRAP_ARGV...`: a sandbox's keeper.

Every sandbox starts through this process, which the job's worker thread (or the start-up probe)
starts and waits for.
The keeper is a child subreaper and bwrap's parent; its stdin is the read end of a pipe whose
write end only the runner holds (the lifeline), so the kernel closes it however and whenever the
runner dies.
- At end of file on the lifeline, or on SIGTERM (the job is stopped; SIGINT, SIGHUP and SIGQUIT
  alike), it kills bwrap and then everything still below it, pass after pass, and exits. It does
  so too if anything else ends its wait. Only SIGKILL ends the keeper alone: the runner sends
  one only to a keeper still there STOP_GRACE_S after the stop's SIGTERM (control.py), and then
  ends the sandbox's init itself (agent.py, `_wait_gone`).
- When bwrap exits, it kills whatever bwrap left below it and exits with bwrap's status
  (128 + the signal's number when bwrap was killed).
Why bwrap's own `--die-with-parent` is not enough: each of bwrap's two processes ties itself to
its parent only once it runs, and during set-up the namespace's init waits for bwrap's first
process. If that process dies first (its parent died, or it was killed), the init is re-parented
and waits for ever. Here it is re-parented to the keeper, which kills it. bwrap still runs with
`--die-with-parent`, tied to the keeper, so a keeper killed outright still ends a sandbox that
is running; one killed during the set-up may leave the init behind, which the runner then kills
(it knows the init once bwrap's --info-fd has named it, within agent.SANDBOX_INFO_S).

bwrap gets /dev/null for stdin, never the lifeline. The keeper keeps none of the descriptors it
hands to bwrap (its --info-fd, say), so the runner sees their end when bwrap closes them.

As root (UID:GID given), the keeper first enters a mount namespace of its own, bind-mounts each
SOURCE at STAGE_DIR/<index> on a fresh tmpfs, and drops to UID:GID (no supplementary groups):
the unprivileged agent user need not be able to traverse the real paths (a 0700 TEMP_DIR,
/root/.pyenv...), and nothing of the staging is visible outside. With `-` and N = 0 (a runner
that is not root) it stages nothing and keeps its user.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
from pathlib import Path

from repobox_cli import procs

# Where the keeper mounts its staging tmpfs, in its own mount namespace only.
STAGE_DIR = Path("/tmp")
NO_IDS = "-"
CLONE_NEWNS = 0x00020000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
EXIT_CANNOT_START = 126
SIGNAL_EXIT_BASE = 128
READ_CHUNK = 4096

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


def _start(argv: list[str]) -> int:
    """Fork and exec `argv`, tied to this process (SIGKILL when it dies); stdin /dev/null."""
    keeper = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - replaced by exec
        try:
            _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
            if os.getppid() != keeper:
                os._exit(EXIT_CANNOT_START)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            procs.restore_default_signals()
            os.execv(argv[0], argv)
        except OSError as exc:
            print(f"repobox: cannot start the agent sandbox: {exc}", file=sys.stderr)
        finally:
            os._exit(EXIT_CANNOT_START)
    _close_handed_over()
    return pid


def _close_handed_over() -> None:
    """Close every inheritable descriptor above stderr: they were for bwrap (the keeper's own
    are close-on-exec)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            if fd > 2 and os.get_inheritable(fd):
                os.close(fd)


def _lifeline_ended() -> bool:
    """The runner never writes to the lifeline: readable means end of file (the runner is gone)."""
    try:
        return os.read(0, READ_CHUNK) == b""
    except OSError:
        return True


def keep(child: int, wake: int) -> int:
    """Wait until `child` exits, the lifeline ends or a signal arrives on `wake`; kill `child` in
    the two last cases. Its wait status."""
    pidfd = os.pidfd_open(child)
    try:
        while True:
            ready, _, _ = select.select([pidfd, 0, wake], [], [])
            if pidfd in ready:
                break
            if wake in ready or (0 in ready and _lifeline_ended()):
                os.kill(child, signal.SIGKILL)
                break
    finally:
        os.close(pidfd)
    return os.waitpid(child, 0)[1]


# A stop (SIGTERM from the runner), and what a terminal or an operator might send: each ends the
# sandbox the same way, never the keeper alone (its death would leave a sandbox in set-up behind).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def _ignore(signum: int, frame: object) -> None:
    """The stop signals' handler: the wake-up descriptor carries them to `keep`."""


def main(argv: list[str]) -> int:
    try:
        ids, count = argv[1], int(argv[2])
        sources, bwrap_argv = argv[3 : 3 + count], argv[3 + count :]
        if not bwrap_argv or count < 0 or (ids == NO_IDS) != (count == 0):
            raise ValueError(ids)
    except (IndexError, ValueError):
        print("usage: python -m repobox_cli.sandbox_launch UID:GID|- N SOURCE... BWRAP_ARGV...", file=sys.stderr)
        return 2
    # Before anything is started: a stop arriving from now on is seen by `keep`.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _ignore)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if not procs.become_subreaper():
        print("repobox: cannot start the agent sandbox: no child subreaper on this system", file=sys.stderr)
        return EXIT_CANNOT_START
    try:
        if ids != NO_IDS:
            stage(sources)
            procs.switch_user(ids)
        child = _start(bwrap_argv)
    except OSError as exc:
        print(f"repobox: cannot start the agent sandbox: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    try:
        status = keep(child, wake_read)
    except Exception as exc:  # noqa: BLE001 - whatever ended the wait, the sandbox must not outlive it
        os.kill(child, signal.SIGKILL)  # not reaped: `keep` raised before its wait returned
        procs.kill_all_below(os.getpid())
        print(f"repobox: the agent sandbox's keeper failed: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    procs.kill_all_below(os.getpid())
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else SIGNAL_EXIT_BASE - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
