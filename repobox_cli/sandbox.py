"""The agent's sandbox: bubblewrap (`bwrap`) in its own user, PID, mount, IPC and UTS namespaces.

What the agent sees: the system read-only (`/usr` and the `/bin`, `/sbin`, `/lib*` links or
directories, a few files of `/etc` that programs need, never `shadow` or anything secret), its
clone read-write at its real path, its own HOME and TMPDIR, a private `/tmp`, its own `/proc` and
`/dev`, and the read-only AGENT_SANDBOX_PATHS. TEMP_DIR is covered by an empty tmpfs, so other
jobs, the runner's bare repository (`git/`) and git's HOME are never visible, even when an
extra path contains TEMP_DIR.

Containment is by construction: bwrap's pid 1 is the namespace's init, so when the agent's
command exits (or bwrap is killed, once the sandbox is set up) the kernel kills everything left in
the namespace. Every
sandbox starts through its keeper (`repobox_cli.sandbox_launch`), a subreaper that is bwrap's
parent: it kills the sandbox and whatever is left below it when the runner dies (its lifeline, a
pipe only the runner holds, ends), when the job is stopped (SIGTERM) and when bwrap exits.

A root runner never lets the agent be root outside the namespace: its keeper bind-mounts the
sources into a private staging tmpfs (the unprivileged user could not traverse, say, a 0700
TEMP_DIR or /root) and then drops to the agent's uid before it starts bwrap. That uid is
AGENT_USER, or one uid per job taken from a range no real user has (`job_uid`): files one job's
agent writes are never another's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from repobox_cli.errors import SandboxUnavailable
from repobox_cli.sandbox_launch import NO_IDS, STAGE_DIR
from repobox_cli.settings import NetworkMode, SandboxMode, Settings

log = logging.getLogger(__name__)

# Per-job uids for a root runner without AGENT_USER: far above real users and the usual
# /etc/subuid ranges (100000-165535 per user), below 2**31 so every tool treats them as positive.
JOB_UID_BASE = 2_000_000_000
JOB_UID_SPAN = 100_000_000
PROBE_TIMEOUT_S = 30.0
HOSTNAME = "repobox-agent"

SYSTEM_DIRS = ("/usr",)
# Symlinks into /usr on merged-/usr systems (Debian, Fedora), directories elsewhere.
SYSTEM_TOP_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What programs need from /etc: name resolution, users and groups, TLS roots, the loader, time.
# Never shadow, gshadow, sudoers, ssh keys or /etc/ssl/private.
ETC_ENTRIES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
)

FIX_HINT = "or set AGENT_SANDBOX=none to run agents unconfined (unsafe)"


@dataclass(frozen=True)
class Bind:
    """A host path shown in the sandbox at `dest`."""

    source: Path
    dest: Path
    writable: bool = False


@dataclass(frozen=True)
class AgentIds:
    uid: int
    gid: int


def job_uid(attempt_id: str) -> int:
    """The uid of one job's agent on a root runner without AGENT_USER (attempt ids are random hex)."""
    return JOB_UID_BASE + int(attempt_id, 16) % JOB_UID_SPAN


def agent_ids(settings: Settings, attempt_id: str) -> AgentIds | None:
    """The uid/gid the agent runs as, when it is not the runner's own; None for the runner's."""
    user = settings.agent_user
    if user is not None:
        return AgentIds(user.uid, user.gid)
    if settings.agent_sandbox is SandboxMode.BWRAP and os.geteuid() == 0:
        uid = job_uid(attempt_id)
        return AgentIds(uid, uid)
    return None


def find_bwrap(settings: Settings) -> str:
    found = shutil.which("bwrap", path=settings.path_env)
    if not found:
        raise SandboxUnavailable(
            f"the agent sandbox needs bubblewrap, and no `bwrap` is on PATH: "
            f"install it (apt-get install bubblewrap), {FIX_HINT}"
        )
    return found


def _system_args() -> list[str]:
    args: list[str] = []
    for top in SYSTEM_DIRS:
        args += ["--ro-bind", top, top]
    for top in SYSTEM_TOP_DIRS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for entry in ETC_ENTRIES:
        args += ["--ro-bind-try", entry, entry]
    return args


def bwrap_argv(
    settings: Settings,
    bwrap: str,
    binds: list[Bind],
    chdir: Path,
    command: list[str],
    *,
    staged: bool,
    info_fd: int | None = None,
) -> list[str]:
    """bwrap's argument list. With `staged`, each bind's source is read from STAGE_DIR/<index>,
    where sandbox_launch mounted it (a root runner's agent user could not reach the original)."""
    args = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        HOSTNAME,
    ]
    if settings.agent_network is NetworkMode.NONE:
        args.append("--unshare-net")
    args += _system_args()
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
    hide_temp_dir = ["--tmpfs", str(settings.temp_dir)] if os.path.lexists(settings.temp_dir) else []
    read_only = sum(not b.writable for b in binds)
    for index, bind in enumerate(ordered(binds)):
        if index == read_only:
            # Everything of TEMP_DIR an extra path may show (other jobs, git/, git-home/) is hidden
            # before the job's own directories are bound back at their real paths.
            args += hide_temp_dir
        source = str(STAGE_DIR / str(index)) if staged else str(bind.source)
        args += ["--bind" if bind.writable else "--ro-bind", source, str(bind.dest)]
    if read_only == len(binds):
        args += hide_temp_dir
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    return [*args, "--chdir", str(chdir), "--", *command]


@contextlib.contextmanager
def lifeline() -> Iterator[int]:
    """A keeper's lifeline: the read end of a pipe, for the keeper's stdin. The write end stays in
    this process only (close-on-exec) until the block ends; its end tells the keeper to kill the
    sandbox, and the kernel ends it too when the runner dies."""
    read_end, write_end = os.pipe()
    try:
        yield read_end
    finally:
        os.close(read_end)
        os.close(write_end)


def ordered(binds: list[Bind]) -> list[Bind]:
    """Read-only extras first, then the job's own writable directories: the order of the mounts
    and of the staged sources."""
    return [b for b in binds if not b.writable] + [b for b in binds if b.writable]


def launch_argv(
    settings: Settings,
    binds: list[Bind],
    chdir: Path,
    command: list[str],
    ids: AgentIds | None,
    *,
    info_fd: int | None = None,
) -> list[str]:
    """The whole argument list that starts the sandbox: its keeper, then bwrap's (as root, the
    keeper stages the binds' sources and drops to `ids` first)."""
    bwrap = find_bwrap(settings)
    staged = os.geteuid() == 0
    inner = bwrap_argv(settings, bwrap, binds, chdir, command, staged=staged, info_fd=info_fd)
    if not staged:
        who, sources = NO_IDS, []
    elif ids is None:
        raise SandboxUnavailable("a root runner needs an unprivileged uid for the agent")
    else:
        who, sources = f"{ids.uid}:{ids.gid}:{settings.agent_max_processes}", [str(b.source) for b in ordered(binds)]
    # -I: nothing from the environment or the working directory can replace repobox_cli.
    return [sys.executable, "-I", "-m", "repobox_cli.sandbox_launch", who, str(len(sources)), *sources, *inner]


def extra_binds(settings: Settings) -> list[Bind]:
    return [Bind(p, p) for p in settings.agent_sandbox_paths]


def probe(settings: Settings) -> str:
    """Start a trivial sandbox as the agents' would be started; a one-line description of it.
    SandboxUnavailable, with how to fix it, when it cannot start."""
    find_bwrap(settings)
    ids = agent_ids(settings, "0") if os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory(prefix="repobox-probe-") as tmp:
        clone = Path(tmp)
        if ids is not None:
            os.chown(clone, ids.uid, ids.gid)
        argv = launch_argv(
            settings,
            [*extra_binds(settings), Bind(clone, clone, writable=True)],
            clone,
            ["/bin/sh", "-c", "test -w . && test ! -e /etc/shadow"],
            ids,
        )
        try:
            code, stderr = _run_kept(argv, {"PATH": settings.path_env})
        except OSError as exc:
            raise SandboxUnavailable(f"the agent sandbox cannot start ({exc}): {FIX_HINT}") from None
        if code is None:
            raise SandboxUnavailable(f"the agent sandbox did not start within {PROBE_TIMEOUT_S:g} s: {FIX_HINT}")
    if code != 0:
        reason = (stderr.strip().splitlines() or [f"exit status {code}"])[-1]
        raise SandboxUnavailable(
            f"the agent sandbox cannot start on this host ({reason}): make sure bubblewrap works and "
            f"unprivileged user namespaces are enabled (sysctl kernel.unprivileged_userns_clone=1, "
            f"user.max_user_namespaces > 0), {FIX_HINT}"
        )
    who = f"uid {ids.uid}" if ids else "the runner's user"
    return f"bubblewrap works (agents run as {who}, network {settings.agent_network})"


def _run_kept(argv: list[str], env: dict[str, str]) -> tuple[int | None, str]:
    """Run a keeper to its end: its exit status (None after PROBE_TIMEOUT_S) and its stderr. On
    time-out it gets SIGTERM, on which it ends the sandbox, then itself; SIGKILL only if it has
    not ended PROBE_TIMEOUT_S later (a keeper killed outright may leave a sandbox in set-up)."""
    with lifeline() as stdin:
        process = subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            _, stderr = process.communicate(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.communicate(timeout=PROBE_TIMEOUT_S)  # the keeper ends what it keeps, then itself
            except subprocess.TimeoutExpired:
                process.kill()  # a keeper that cannot act on SIGTERM (stuck staging a hung mount)
                process.wait()  # not its pipe: what the keeper left behind may hold it
            return None, ""
    return process.returncode, stderr


def require(settings: Settings) -> None:
    """Refuse to start when the sandbox cannot work (SandboxUnavailable: one line, exit 2); with
    AGENT_SANDBOX=none, say loudly that agents run unconfined."""
    if settings.agent_sandbox is SandboxMode.NONE:
        log.warning("AGENT_SANDBOX=none: agents run without a sandbox and can see this runner (unsafe)")
        return
    probe(settings)
