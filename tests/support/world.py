"""A whole test world: a real redis-server, a real HTTPS git server, jobs written as the web app
writes them (tokens encrypted by Node's crypto), and runner processes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.support.git_server import GitHttpsServer
from tests.support.node_crypto import node_encrypt
from tests.support.redis_server import RedisServer
from tests.support.tls import TestCA

HEX_KEY = "3f" * 16 + "a1" * 16
TOKEN = "ghp_" + "T0k3nS3cr3tV4lu3xyzABCDEFGH1234567890"
PROCESS_DEADLINE_S = 60.0
REPO_FILES = {"README.md": "# demo\n\nline one\nline two\n", "src/app.py": "print('hello')\n"}


def python_paths() -> list[Path]:
    """The test interpreter's installation and virtual environment, as real paths."""
    return sorted({Path(os.path.realpath(sys.base_prefix)), Path(os.path.realpath(sys.prefix))})


def wait_for(
    predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition", interval_s: float = 0.05
) -> Any:
    """Poll `predicate` until truthy (returning its value) or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


@dataclass
class RunnerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append({"raw": line})
        return records

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout_s: float = PROCESS_DEADLINE_S) -> int:
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@dataclass
class World:
    tmp: Path
    redis_server: RedisServer
    git: GitHttpsServer
    tls: TestCA
    key: str = HEX_KEY
    token: str = TOKEN
    runners: list[RunnerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.temp_dir = self.tmp / "work"
        # What test agents need in their sandbox, read-only: this interpreter (run them with
        # sys.executable) and the test's own directory, where tests write agent scripts (opened
        # for reading: a root runner's agent runs as an unprivileged uid). TEMP_DIR below it stays
        # hidden by the sandbox. test_sandbox.py narrows this to the interpreter.
        self.tmp.chmod(0o755)
        self.sandbox_paths = [*python_paths(), self.tmp]
        # Key and password files go here, not in `tmp`: a runner refuses to show a secret file to
        # its agents.
        self.secrets_dir = Path(tempfile.mkdtemp(prefix="rb-secrets-"))
        self.git.allow_token(self.token)
        self.repo_name = f"demo-{uuid.uuid4().hex[:8]}"
        self.repo_url = self.git.create_repo(self.repo_name, REPO_FILES)
        self._encrypted: dict[str, str] = {}
        self._user_ids: dict[str, str] = {}
        # Ids as the web app writes them: `<auth provider>:<account id>` users, uuid4 providers.
        self.provider_id = str(uuid.uuid4())

    def user(self, nickname: str = "default", auth: str | None = None) -> str:
        """A web-app-shaped user id for `nickname`, stable within this world: a GitHub
        (`github:12345678`) or Google (`google:` + 21 digits) account, alternately unless `auth`
        names one."""
        if nickname not in self._user_ids:
            auth = auth or ("github" if len(self._user_ids) % 2 == 0 else "google")
            rnd = random.Random(f"{self.repo_name}/{nickname}")
            digits = rnd.randrange(10**7, 10**8) if auth == "github" else rnd.randrange(10**20, 10**21)
            self._user_ids[nickname] = f"{auth}:{digits}"
        return self._user_ids[nickname]

    @property
    def default_user(self) -> str:
        return self.user()

    @property
    def client(self) -> redis.Redis:
        return self.redis_server.client()

    def encrypted(self, token: str) -> str:
        if token not in self._encrypted:
            self._encrypted[token] = node_encrypt(token, self.key)
        return self._encrypted[token]

    def add_provider(
        self,
        user: str | None = None,
        provider: str | None = None,
        *,
        token: str | None = None,
        url: str | None = None,
        kind: str = "github",
    ) -> None:
        user = user or self.default_user
        provider = provider or self.provider_id
        self.client.hset(
            f"git_provider:{user}:{provider}",
            mapping={
                "type": kind,
                "url": self.git.base_url if url is None else url,
                "token": self.encrypted(token or self.token),
                "username": "someone",
                "verified": "true",
                "repos_count": "1",
                "created_at": str(int(time.time() * 1000)),
            },
        )

    def add_job(
        self,
        *,
        user: str | None = None,
        provider: str | None = None,
        repo_url: str | None = None,
        branch: str | None = "main",
        prompt: str = "Add a test file",
        job_id: str | None = None,
        enqueue: bool = True,
        provider_record: bool = True,
        **extra: str,
    ) -> str:
        """Write a job exactly as the web app does: hash, user index, stream entry."""
        job_id = job_id or str(uuid.uuid4())
        user = user or self.default_user
        provider = provider or self.provider_id
        if provider_record and not self.client.exists(f"git_provider:{user}:{provider}"):
            self.add_provider(user, provider)
        now = str(int(time.time() * 1000))
        url = self.repo_url if repo_url is None else repo_url
        fields = {
            "id": job_id,
            "user_id": user,
            "provider_id": provider,
            "repo_url": url,
            "repo_name": url.rstrip("/").rsplit("/", 1)[-1],
            "prompt": prompt,
            "environment": "default",
            "status": "pending",
            "created_at": now,
            **extra,
        }
        if branch is not None:
            fields["branch"] = branch
        client = self.client
        client.hset(f"job:{job_id}", mapping=fields)
        client.zadd(f"jobs:user:{user}", {job_id: int(now)})
        if enqueue:
            client.xadd(
                "jobs:stream",
                {
                    "job_id": job_id,
                    "user_id": user,
                    "provider_id": provider,
                    "repo_url": url,
                    "prompt": prompt,
                    "environment": "default",
                },
            )
        return job_id

    def job(self, job_id: str) -> dict[str, str]:
        job: dict[str, str] = self.client.hgetall(f"job:{job_id}")
        return job

    def output(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.client.lrange(f"job:{job_id}:output", 0, -1)]

    def output_text(self, job_id: str) -> str:
        return "\n".join(str(o["line"]) for o in self.output(job_id))

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.tmp / "home"),
            "REDIS_URL": self.redis_server.url,
            "ENCRYPTION_KEY": self.key,
            "TEMP_DIR": str(self.temp_dir),
            "GIT_SSL_CAINFO": str(self.tls.ca_file),
            "LOG_FORMAT": "json",
            "REPOBOX_BLOCK_MS": "100",
            "REPOBOX_TICK_MS": "50",
            "CLAIM_MIN_IDLE": "30",
            "MAX_CONCURRENT_JOBS": "4",
            "AGENT_SANDBOX_PATHS": ":".join(str(p) for p in self.sandbox_paths),
        }
        (self.tmp / "home").mkdir(exist_ok=True)
        env.update(overrides)
        return env

    def repobox(self, *args: str, input: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return self.repobox_within(PROCESS_DEADLINE_S, *args, input=input, **env)

    def repobox_within(
        self, timeout_s: float, *args: str, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """`repobox *args`, failing the test if it has not exited after `timeout_s`."""
        return subprocess.run(
            [sys.executable, "-m", "repobox_cli", *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout_s,
            cwd=self.tmp,
        )

    def run_burst(self, **env: str) -> subprocess.CompletedProcess[str]:
        return self.repobox("run", "--burst", **env)

    def start_runner(self, *args: str, name: str | None = None, **env: str) -> RunnerProcess:
        name = name or f"runner{len(self.runners) + 1}"
        log_path = self.tmp / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "repobox_cli", "run", *args],
                env=self.env(RUNNER_ID=name, **env),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )
        runner = RunnerProcess(process, log_path)
        self.runners.append(runner)
        return runner

    def close(self) -> None:
        shutil.rmtree(self.secrets_dir, ignore_errors=True)
        for runner in self.runners:
            runner.stop()
