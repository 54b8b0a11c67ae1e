"""The agent step: AGENT_COMMAND in the clone, or the seed's placeholder file.

The agent gets an allow-listed environment (never the token, ENCRYPTION_KEY or REDIS_URL), its
own session, and everything it leaves behind is killed when the step ends.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from repobox_cli import procs
from repobox_cli.control import JobControl
from repobox_cli.errors import AgentError, JobStopped
from repobox_cli.jobs import Job
from repobox_cli.settings import Settings
from repobox_cli.workdir import WorkPaths

Emit = Callable[[str, str], None]

PLACEHOLDER_FILE = ".repobox-test.md"
READER_JOIN_S = 5.0
MAX_LINE_CHARS = 16 * 1024


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


def run_agent(settings: Settings, job: Job, paths: WorkPaths, control: JobControl, emit: Emit) -> None:
    """Run AGENT_COMMAND to completion; AgentError on non-zero exit, JobStopped when stopped."""
    control.check()
    with procs.spawning() as spawned:
        try:
            process = subprocess.Popen(
                # -I: the clone is the working directory and must not shadow repobox_cli.
                [sys.executable, "-I", "-m", "repobox_cli.reaper", *_as_user(settings),
                 settings.agent_command],
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
    control.register(process.pid)
    assert process.stdout is not None and process.stderr is not None
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, "stdout", emit), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, "stderr", emit), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        code = process.wait()
    finally:
        control.unregister(process.pid)
        procs.forget(process.pid)
        killed = procs.kill_leftovers(process.pid)
    deadline = time.monotonic() + READER_JOIN_S
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    if killed:
        emit(f"killed {killed} process(es) the agent left running", "stderr")
    if control.stopped.is_set():
        raise JobStopped(control.describe())
    if code != 0:
        raise AgentError(f"agent command exited with status {code}")
