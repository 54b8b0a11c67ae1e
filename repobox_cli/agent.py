"""The agent step: AGENT_COMMAND in the clone, or the seed's placeholder file.

The agent gets an allow-listed environment (never the token, ENCRYPTION_KEY or REDIS_URL) and
runs in the bubblewrap sandbox (sandbox.py): when its command exits, or the job is stopped, the
sandbox's PID namespace ends and the kernel kills everything in it. With AGENT_SANDBOX=none it
runs under a reaper instead (reaper.py), and what it leaves behind is hunted down here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from repobox_cli import procs, sandbox
from repobox_cli.control import JobControl
from repobox_cli.errors import AgentError, JobStopped
from repobox_cli.jobs import Job
from repobox_cli.sandbox import AgentIds, Bind
from repobox_cli.settings import SandboxMode, Settings
from repobox_cli.workdir import WorkPaths

Emit = Callable[[str, str], None]

PLACEHOLDER_FILE = ".repobox-test.md"
READER_JOIN_S = 5.0
MAX_LINE_CHARS = 16 * 1024
SANDBOX_INFO_S = 10.0  # bwrap reports its child's pid right after creating the namespaces
SANDBOX_GONE_S = 10.0  # a killed namespace is torn down by the kernel, normally in milliseconds


def agent_environment(settings: Settings, job: Job, paths: WorkPaths) -> dict[str, str]:
    """The agent's whole environment: an allow-list, nothing inherited by accident."""
    return {
        "PATH": settings.path_env,
        "HOME": str(paths.home),
        "TMPDIR": str(paths.tmp),
        "LANG": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": settings.git_author_name,
        "GIT_AUTHOR_EMAIL": settings.git_author_email,
        "GIT_COMMITTER_NAME": settings.git_author_name,
        "GIT_COMMITTER_EMAIL": settings.git_author_email,
        **settings.agent_env,
        "REPOBOX_JOB_ID": job.id,
        "REPOBOX_PROMPT": job.prompt,
        "REPOBOX_ENVIRONMENT": job.environment,
        "REPOBOX_REPO_DIR": str(paths.repo),
    }


def write_placeholder(job: Job, paths: WorkPaths, emit: Emit) -> None:
    """The seed's stand-in for an agent: a file naming the job, its prompt and the time."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    target = paths.repo / PLACEHOLDER_FILE
    if target.is_symlink():
        target.unlink()
    target.write_text(f"# Repobox test\n\nJob: {job.id}\n\nPrompt: {job.prompt}\n\nTime: {stamp}\n")
    emit(f"Wrote {PLACEHOLDER_FILE} (placeholder agent)", "stdout")


def _pump(pipe: IO[bytes], stream: str, emit: Emit) -> None:
    for raw in iter(lambda: pipe.readline(MAX_LINE_CHARS), b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        emit(line[:MAX_LINE_CHARS], stream)
    pipe.close()


def _as_user(settings: Settings) -> list[str]:
    user = settings.agent_user
    return ["--as", f"{user.uid}:{user.gid}"] if user else []


def run_agent(
    settings: Settings, job: Job, paths: WorkPaths, control: JobControl, emit: Emit, ids: AgentIds | None = None
) -> None:
    """Run AGENT_COMMAND to completion; AgentError on non-zero exit, JobStopped when stopped.
    `ids`: the uid/gid the sandboxed agent runs as on a root runner (sandbox.agent_ids)."""
    control.check()
    if settings.agent_sandbox is SandboxMode.NONE:
        _run_reaped(settings, job, paths, control, emit)
    else:
        _run_sandboxed(settings, job, paths, control, emit, ids)


def _run_sandboxed(
    settings: Settings, job: Job, paths: WorkPaths, control: JobControl, emit: Emit, ids: AgentIds | None
) -> None:
    binds = [*sandbox.extra_binds(settings), *(Bind(d, d, writable=True) for d in (paths.repo, paths.home, paths.tmp))]
    command = ["/bin/sh", "-c", settings.agent_command]
    with sandbox.lifeline() as keeper_stdin:
        info_read, info_write = os.pipe()
        try:
            try:
                argv = sandbox.launch_argv(settings, binds, paths.repo, command, ids, info_fd=info_write)
                process = _spawn_sandbox(argv, agent_environment(settings, job, paths), keeper_stdin, info_write)
            finally:
                os.close(info_write)
            init = _sandbox_child(info_read, process.pid)
            try:
                # A stop sends SIGTERM: the keeper then kills the sandbox and all below it (a
                # SIGKILL would end the keeper first, and with it what it is there to do). The
                # wait sends SIGKILL only if the keeper is still there after the stop's grace;
                # `_wait_gone` then ends what the keeper could not.
                code = _supervise(process, control, emit, stop_signal=signal.SIGTERM)
                _end_sandbox(init, control, emit)
            finally:
                if init is not None:
                    init.close()
        finally:
            os.close(info_read)
    _raise_for(control, code)


def _end_sandbox(init: SandboxInit | None, control: JobControl, emit: Emit) -> None:
    """`_wait_gone`; for a stopped job, a sandbox that would not end is said, and the stop's reason stands."""
    try:
        _wait_gone(init)
    except AgentError as exc:
        if not control.stopped.is_set():
            raise
        emit(str(exc), "stderr")


def _spawn_sandbox(argv: list[str], env: dict[str, str], stdin: int, info_fd: int) -> subprocess.Popen[bytes]:
    with procs.spawning() as spawned:
        try:
            # The sandbox's keeper (sandbox_launch): it ends the sandbox when the job is stopped
            # and when the runner dies, at whatever point of the sandbox's set-up.
            process = subprocess.Popen(
                argv,
                cwd="/",
                env=env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                pass_fds=(info_fd,),
                umask=procs.AGENT_UMASK,
            )
        except OSError as exc:
            raise AgentError(f"agent sandbox could not start: {exc.strerror}") from exc
        spawned.add(process.pid)
    return process


class SandboxInit:
    """The sandbox's init, pinned by a pidfd as soon as bwrap's --info-fd names it, once it is
    sure to be the sandbox's: in the PID namespace bwrap reports, or (where that cannot be read)
    a child or grandchild of the sandbox's keeper. A pidfd never points at a reused pid."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd

    @classmethod
    def pin(cls, pid: int, pid_namespace: object, keeper: int) -> SandboxInit | None:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None  # gone already
        try:
            if _in_namespace(pid, pid_namespace) or keeper in _ancestors(pid, 2):
                return cls(pid, pidfd)
        except BaseException:
            os.close(pidfd)
            raise
        os.close(pidfd)
        return None

    def close(self) -> None:
        os.close(self.pidfd)


def _in_namespace(pid: int, namespace: object) -> bool:
    try:
        return isinstance(namespace, int) and os.stat(f"/proc/{pid}/ns/pid").st_ino == namespace
    except OSError:
        return False


def _ancestors(pid: int, depth: int) -> list[int]:
    found = []
    for _ in range(depth):
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            break
        pid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        found.append(pid)
    return found


def _sandbox_child(info_read: int, keeper: int) -> SandboxInit | None:
    """The sandbox's init, from bwrap's --info-fd, pinned; None if it never started (or already ended)."""
    data = b""
    deadline = time.monotonic() + SANDBOX_INFO_S
    while time.monotonic() < deadline:
        ready = procs.readable(info_read, deadline - time.monotonic())
        chunk = os.read(info_read, 4096) if ready else b""
        if not chunk:
            break
        data += chunk
        try:
            info = json.loads(data)
        except ValueError:
            continue  # not all of it yet
        pid = info.get("child-pid")
        return SandboxInit.pin(pid, info.get("pid-namespace"), keeper) if isinstance(pid, int) else None
    return None


def _wait_gone(init: SandboxInit | None) -> None:
    """After the keeper has exited: make sure the sandbox's init has exited. The kernel lets it
    exit only once everything else in its PID namespace is gone, so nothing of the agent remains
    when this returns. An init still there (its keeper was killed while bwrap was setting up,
    which leaves the init waiting for ever) is killed here; what was re-parented to the runner
    (a subreaper) when the keeper died is reaped."""
    if init is None:
        return
    try:
        if procs.readable(init.pidfd, 0.0):
            return
        with contextlib.suppress(OSError):  # it has ended meanwhile
            signal.pidfd_send_signal(init.pidfd, signal.SIGKILL)
        if not procs.readable(init.pidfd, SANDBOX_GONE_S):
            raise AgentError(f"the agent's sandbox did not end within {SANDBOX_GONE_S:g} s")
    finally:
        procs.reap_orphans()


def _run_reaped(settings: Settings, job: Job, paths: WorkPaths, control: JobControl, emit: Emit) -> None:
    """AGENT_SANDBOX=none: the agent under repobox_cli.reaper, its leftovers killed afterwards."""
    with procs.spawning() as spawned:
        try:
            process = subprocess.Popen(
                # -I: the clone is the working directory and must not shadow repobox_cli.
                [sys.executable, "-I", "-m", "repobox_cli.reaper", *_as_user(settings), settings.agent_command],
                cwd=paths.repo,
                env=agent_environment(settings, job, paths),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise AgentError(f"agent command could not start: {exc.strerror}") from exc
        spawned.add(process.pid)
    code = _supervise(process, control, emit, reap=True)
    _raise_for(control, code)


def _supervise(
    process: subprocess.Popen[bytes],
    control: JobControl,
    emit: Emit,
    *,
    reap: bool = False,
    stop_signal: int = signal.SIGKILL,
) -> int:
    """Stream the output, wait for the exit status; a stop sends `stop_signal` to the process
    group. With `reap`, also kill whatever the agent left running outside its reaper."""
    control.register(process.pid, stop_signal)
    assert process.stdout is not None and process.stderr is not None
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, "stdout", emit), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, "stderr", emit), daemon=True),
    ]
    for reader in readers:
        reader.start()
    killed = 0
    try:
        code = control.wait(process)
    finally:
        control.unregister(process.pid)
        procs.forget(process.pid)
        if reap:
            killed = procs.kill_leftovers(process.pid)
    deadline = time.monotonic() + READER_JOIN_S
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    if killed:
        emit(f"killed {killed} process(es) the agent left running", "stderr")
    return code


def _raise_for(control: JobControl, code: int) -> None:
    if control.stopped.is_set():
        raise JobStopped(control.describe())
    if code != 0:
        raise AgentError(f"agent command exited with status {code}")
