"""The demo's worker: `repobox run --burst` as a child process, exactly as an operator runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from repobox_cli.settings import GIT_PASSTHROUGH_ENV, SETTINGS

SHUTDOWN_SIGNAL_GAP_S = 1.0
STOP_DEADLINE_S = 10.0
REAP_DEADLINE_S = 5.0


def runner_env(overrides: dict[str, str], *, keep_redis: bool) -> dict[str, str]:
    """This environment without the host's repobox settings and proxies (the remote is local),
    plus the demo's: a runner configured only by the demo. `keep_redis` keeps REDIS_* (TLS,
    password) for a Redis given with --redis-url."""
    dropped = {s.env for s in SETTINGS} | set(GIT_PASSTHROUGH_ENV) | {"ENCRYPTION_KEY_FILE", "REDIS_PASSWORD_FILE"}
    if keep_redis:
        dropped = {name for name in dropped if not name.startswith("REDIS_")}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(overrides)
    return env


class RunnerProcess:
    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.env = env
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        """Its own session: a Ctrl-C reaches the demo only, which then stops the runner."""
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "repobox_cli", "run", "--burst"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 3) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """Two SIGTERMs, as an operator's second Ctrl-C: the runner kills its job's processes and
        exits at once; SIGKILL to its process group if it still has not."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for _ in range(2):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=SHUTDOWN_SIGNAL_GAP_S)
                return
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=REAP_DEADLINE_S)
