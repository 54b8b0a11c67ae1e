"""The demo's steps, each timed: a Redis, a CA and HTTPS git remote, a token stored encrypted and
a job enqueued as the web app does them, the worker run until the job is final, the result read
back. Everything it starts or makes is gone when it returns, raises or is interrupted."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from repobox_cli import admin, keys, sandbox
from repobox_cli.crypto import encrypt, parse_key
from repobox_cli.demo.certs import make_certs
from repobox_cli.demo.git_remote import GitRemote
from repobox_cli.demo.interrupts import Interrupts
from repobox_cli.demo.redis_server import START_TRIES, ServerBinary, ThrowawayRedis, find_server
from repobox_cli.demo.runner_proc import RunnerProcess, runner_env
from repobox_cli.errors import RepoboxError, SettingsError
from repobox_cli.jobs import is_final
from repobox_cli.redis_conn import check_server, open_client
from repobox_cli.settings import PENDING, RUN, load_settings

WORKER_DEADLINE_S = 120.0
REPO_NAME = "hello-repobox"
REPO_FILES = {
    "README.md": "# hello-repobox\n\nA repository made by `repobox demo`.\n",
    "hello.py": 'print("hello from repobox")\n',
}
PROMPT = "Add a note that says the demo ran"


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class DemoResult:
    job_id: str = ""
    job: dict[str, str] = field(default_factory=dict)
    output: list[admin.OutputLine] = field(default_factory=list)
    output_times: list[int] = field(default_factory=list)  # each line's timestamp (ms)
    commit: str = ""  # sha and subject of the pushed branch's head
    files: list[tuple[str, str, str]] = field(default_factory=list)  # added, removed, path
    steps: list[Step] = field(default_factory=list)
    worker_exit: int | None = None


Report = Callable[[Step], None]


class Demo:
    def __init__(self, redis_url: str | None, report: Report) -> None:
        self.redis_url = redis_url
        self.report = report
        self.result = DemoResult()
        self.stack = contextlib.ExitStack()
        self.interrupts = Interrupts()
        self.url = ""
        self.token = secrets.token_urlsafe(24)  # the user's git token: never printed

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time a step; the block may append one detail line to the list it gets."""
        detail: list[str] = []
        started = time.monotonic()
        yield detail
        done = Step(name, time.monotonic() - started, " ".join(detail))
        self.result.steps.append(done)
        self.report(done)

    def run(self) -> DemoResult:
        with self.interrupts:
            try:
                self._run()
            finally:
                with self.interrupts.shielded():
                    self.stack.close()
        return self.result

    def _run(self) -> None:
        with self.interrupts.shielded():
            tmp = Path(tempfile.mkdtemp(prefix="repobox-demo-"))
            self.stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        client = self._redis(tmp)
        remote, repo_url = self._remote(tmp)
        key_text = secrets.token_hex(32)
        user = f"github:{secrets.randbelow(9 * 10**7) + 10**7}"  # ids as the web app makes them
        provider = str(uuid.uuid4())
        if self.redis_url:  # not our Redis: remove what the demo writes there, whatever happens
            self.stack.callback(_forget, client, self.result, user, provider)
        with self.step("store the token encrypted, as the web app does") as detail:
            self._store_provider(client, user, provider, remote.base_url, key_text)
            detail.append(f"git_provider:{user}:{provider}")
        with self.step("enqueue a job, as the web app does") as detail, self.interrupts.shielded():
            job_id = admin.enqueue(client, admin.NewJob(user, provider, repo_url, PROMPT))
            self.result.job_id = job_id
            detail.append(job_id)
        env = self._worker_env(tmp, key_text, remote.certs.ca_file)
        self._worker(tmp, env, client, job_id)
        self._collect(client, remote, job_id)

    def _redis(self, tmp: Path) -> redis.Redis:
        if self.redis_url:
            with self.step("use the Redis given with --redis-url") as detail:
                settings = load_settings(command=PENDING, redis_url=self.redis_url)
                check_server(settings.redis)
                detail.append("(the demo's worker takes any job queued there)")
            self.url = self.redis_url
        else:
            with self.step("start a throwaway Redis") as detail:
                binary = find_server(os.environ.get("PATH", os.defpath))
                server = self._start_redis(binary, tmp)
                self.url = server.url
                settings = load_settings(env={}, command=PENDING, redis_url=server.url)
                check_server(settings.redis)
                detail.append(f"{binary.origin}, at {server.url}")
        client = open_client(settings.redis)
        self.stack.callback(client.close)
        return client

    def _start_redis(self, binary: ServerBinary, tmp: Path) -> ThrowawayRedis:
        for attempt in range(START_TRIES):
            server = ThrowawayRedis(binary, tmp / f"redis{attempt}")
            with self.interrupts.shielded():
                server.spawn()
                self.stack.callback(server.stop)
            if server.wait_ready():
                return server
            server.stop()
        raise RepoboxError(f"the throwaway Redis did not start: {server.log_tail()}")

    def _remote(self, tmp: Path) -> tuple[GitRemote, str]:
        with self.step("make a CA and an HTTPS git remote") as detail:
            certs = make_certs(tmp / "tls")
            remote = GitRemote(tmp / "git", certs, self.token)
            with self.interrupts.shielded():
                remote.start()
                self.stack.callback(remote.stop)
            repo_url = remote.create_repo(REPO_NAME, REPO_FILES)
            detail.append(repo_url)
        return remote, repo_url

    def _store_provider(self, client: redis.Redis, user: str, provider: str, url: str, key_text: str) -> None:
        client.hset(
            keys.git_provider(user, provider),
            mapping={
                "type": "github",
                "url": url,
                "token": encrypt(self.token, parse_key(key_text)),
                "username": "repobox-demo",
                "verified": "true",
                "repos_count": "1",
                "created_at": str(int(time.time() * 1000)),
            },
        )

    def _worker_env(self, tmp: Path, key_text: str, ca_file: Path) -> dict[str, str]:
        env = runner_env(
            {
                "REDIS_URL": self.url,
                "ENCRYPTION_KEY": key_text,
                "TEMP_DIR": str(tmp / "work"),
                "GIT_SSL_CAINFO": str(ca_file),
                "LOG_FORMAT": "json",
                "REPOBOX_BLOCK_MS": "100",
                "REPOBOX_TICK_MS": "50",
                "SHUTDOWN_TIMEOUT": "5",
                "AGENT_SANDBOX": "bwrap",
            },
            keep_redis=bool(self.redis_url),
        )
        with self.step("check the agent sandbox") as detail:
            try:
                detail.append(f"bwrap: {sandbox.probe(load_settings(env=env, command=RUN))}")
            except SettingsError as exc:
                env["AGENT_SANDBOX"] = "none"
                detail.append(
                    f"no working sandbox here ({exc}); the demo's placeholder agent only writes a file, "
                    "so the worker runs with AGENT_SANDBOX=none"
                )
        return env

    def _worker(self, tmp: Path, env: dict[str, str], client: redis.Redis, job_id: str) -> None:
        with self.step("run the worker (repobox run --burst) until the job is final") as detail:
            worker = RunnerProcess(env, tmp / "runner.log")
            with self.interrupts.shielded():
                worker.spawn()
                self.stack.callback(worker.stop)
            try:
                self.result.worker_exit = worker.wait(WORKER_DEADLINE_S)
            except subprocess.TimeoutExpired:
                raise RepoboxError(f"the worker did not finish within {WORKER_DEADLINE_S:.0f} s") from None
            status = admin.job_status(client, job_id)
            if not is_final(status):
                raise RepoboxError(
                    f"the worker exited ({self.result.worker_exit}) with the job {status}: {worker.log_tail()}"
                )
            detail.append(f"exit {self.result.worker_exit}, job {status}")

    def _collect(self, client: redis.Redis, remote: GitRemote, job_id: str) -> None:
        self.result.job = {str(k): str(v) for k, v in client.hgetall(keys.job(job_id)).items()}
        raw = client.lrange(keys.job_output(job_id), 0, -1)
        lines = [_decode(str(line)) for line in raw]
        self.result.output = [line for line, _ in lines]
        self.result.output_times = [at for _, at in lines]
        branch = self.result.job.get("branch", "")
        if self.result.job.get("status") == "success" and branch.startswith("repobox/"):
            self.result.commit = remote.bare_git(REPO_NAME, "log", "-1", "--format=%H %s", branch).strip()
            numstat = remote.bare_git(REPO_NAME, "diff", "--numstat", "main", branch)
            self.result.files = [tuple(line.split("\t", 2)) for line in numstat.splitlines()]  # type: ignore[misc]


def _decode(raw: str) -> tuple[admin.OutputLine, int]:
    """An output line as stored (JSON), and its timestamp in ms (0 if it has none)."""
    try:
        item = json.loads(raw)
        line = admin.OutputLine(str(item["line"]), str(item.get("stream", "stdout")), str(item.get("source", "")))
        return line, int(item.get("timestamp", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        return admin.OutputLine(raw, "stdout", ""), 0


def _forget(client: redis.Redis, result: DemoResult, user: str, provider: str) -> None:
    """On a Redis given with --redis-url: remove what the demo wrote (its job's stream entry is
    acknowledged by its worker, or by the next runner, which finds no job)."""
    names = [keys.git_provider(user, provider)]
    if result.job_id:
        names += [keys.job(result.job_id), keys.job_output(result.job_id)]
    with contextlib.suppress(redis.RedisError, OSError):
        client.delete(*names)
        if result.job_id:
            client.zrem(keys.user_jobs(user), result.job_id)
