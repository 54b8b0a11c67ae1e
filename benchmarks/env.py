"""The benchmark's world: its own redis-server and HTTPS git server (the test suite's, from
`tests.support`), web-app-shaped jobs, runner processes, and timing helpers over Redis."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from tests.support.git_server import GitHttpsServer
from tests.support.redis_server import RedisServer
from tests.support.tls import make_test_ca
from tests.support.world import RunnerProcess, World

FINAL = {"success", "failed", "cancelled"}
READY_DEADLINE_S = 30.0
JOB_DEADLINE_S = 120.0
POLL_S = 0.002
# Production defaults, not the test suite's shortened ones: the figures are a real runner's.
RUNNER_ENV = {"REPOBOX_BLOCK_MS": "5000", "REPOBOX_TICK_MS": "250", "CLAIM_MIN_IDLE": "300"}


def wait_until(predicate: Callable[[], Any], deadline_s: float, what: str, poll_s: float = POLL_S) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"benchmark gave up waiting for {what} after {deadline_s} s")
        time.sleep(poll_s)


class KeyspaceClock:
    """When each watched key was first written after it was armed, from keyspace notifications
    (no polling load on Redis; the same clock for repobox and the baselines)."""

    def __init__(self, client: redis.Redis, pattern: str, event: str) -> None:
        client.config_set("notify-keyspace-events", "KA")
        self.event = event
        self._armed: dict[str, float] = {}
        self._seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(**{f"__keyspace@0__:{pattern}": self._on})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.1, daemon=True)

    def _on(self, message: dict[str, Any]) -> None:
        now = time.perf_counter()
        if message["data"] != self.event:
            return
        key = str(message["channel"]).split(":", 1)[1]
        with self._cond:
            if key in self._armed and key not in self._seen:
                self._seen[key] = now
                self._cond.notify_all()

    def arm(self, key: str) -> float:
        """Start the clock for `key`; returns the start time (perf_counter seconds)."""
        started = time.perf_counter()
        with self._cond:
            self._armed[key] = started
        return started

    def wait(self, key: str, deadline_s: float = JOB_DEADLINE_S) -> float:
        """Seconds from `arm(key)` to the key's first `event`."""
        with self._cond:
            if not self._cond.wait_for(lambda: key in self._seen, timeout=deadline_s):
                raise TimeoutError(f"no {self.event} on {key} within {deadline_s} s")
            return self._seen.pop(key) - self._armed.pop(key)

    def close(self) -> None:
        self._thread.stop()
        self._thread.join(timeout=5)
        self._pubsub.close()


class Bench:
    """One redis-server, one HTTPS git server with a tiny repository, and the World helpers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tls = make_test_ca(root / "tls")
        self.git = GitHttpsServer(root / "git", self.tls)
        self.git.start()
        self.redis_server = RedisServer(root / "redis")
        self.redis_server.start()
        (root / "world").mkdir()
        self.world = World(root / "world", self.redis_server, self.git, self.tls)
        self.client = self.redis_server.client()

    @property
    def python_bin(self) -> Path:
        return Path(sys.executable).parent

    def env(self, **overrides: str) -> dict[str, str]:
        # PYTHONPATH passes through: `PYTHONPATH=<another checkout> python -m benchmarks` measures that code.
        passed = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
        return self.world.env(**{**RUNNER_ENV, **passed, **overrides})

    def start_runner(self, *args: str, name: str, **env: str) -> RunnerProcess:
        passed = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
        runner = self.world.start_runner(*args, name=name, **{**RUNNER_ENV, **passed, **env})
        wait_until(lambda: "started:" in runner.log() or runner.process.poll() is not None, READY_DEADLINE_S, name)
        if runner.process.poll() is not None:
            raise RuntimeError(f"runner {name} exited at start:\n{runner.log()[-2000:]}")
        return runner

    def stop_runner(self, runner: RunnerProcess) -> None:
        """SIGKILL: its jobs are all final by now, and a warm stop would only cost time (exits.py
        measures the warm stop)."""
        runner.stop()

    def wait_final(self, job_id: str, deadline_s: float = JOB_DEADLINE_S) -> dict[str, str]:
        def final() -> dict[str, str] | None:
            job = self.client.hgetall(f"job:{job_id}")
            return job if job.get("status") in FINAL else None

        job: dict[str, str] = wait_until(final, deadline_s, f"job {job_id} to end")
        return job

    def git_env(self) -> dict[str, str]:
        """What a shell baseline needs to push to the git server: the CA, and the token as a
        Basic auth header passed through the environment (never on a command line)."""
        basic = base64.b64encode(f"{self.git.username}:{self.world.token}".encode()).decode()
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root / "home"),
            "GIT_SSL_CAINFO": str(self.tls.ca_file),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            "GIT_AUTHOR_NAME": "Repobox",
            "GIT_AUTHOR_EMAIL": "repobox@localhost",
            "GIT_COMMITTER_NAME": "Repobox",
            "GIT_COMMITTER_EMAIL": "repobox@localhost",
        }

    def close(self) -> None:
        self.world.close()
        self.redis_server.stop()
        self.git.stop()


@contextmanager
def bench_world() -> Iterator[Bench]:
    root = Path(tempfile.mkdtemp(prefix="repobox-bench-"))
    root.chmod(0o755)
    (root / "home").mkdir()
    bench = Bench(root)
    try:
        yield bench
    finally:
        bench.close()
        shutil.rmtree(root, ignore_errors=True)


def stream_fields(bench: Bench, job_id: str) -> dict[str, str]:
    job = bench.client.hgetall(f"job:{job_id}")
    names = ("user_id", "provider_id", "repo_url", "prompt", "environment")
    return {"job_id": job_id, **{name: job[name] for name in names}}


class BareLoop:
    """The bare redis-py consumer (`benchmarks.bare_loop`) as a process on its own stream."""

    def __init__(self, bench: Bench, mode: str, stream: str) -> None:
        self.stream = stream
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bare_loop", mode, bench.redis_server.url, stream],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the bare loop did not start")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
