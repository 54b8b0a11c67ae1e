"""Helpers for the reliability tests: reading the runner's Redis state, sampling it while a
scenario runs, finding processes, and starting fleets of runners."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from tests.support.world import RunnerProcess, World, wait_for

STREAM = "jobs:stream"
GROUP = "jobs:stream:runners"
DEAD_LETTERS = "runner:dead_letters"
FINAL = frozenset({"success", "failed", "cancelled"})
READY_DEADLINE_S = 20.0


# -- Redis state ---------------------------------------------------------------------------


def pending_count(client: redis.Redis) -> int:
    """Entries of the runners' group still pending (delivered, not acknowledged)."""
    try:
        return int(client.xpending(STREAM, GROUP)["pending"])
    except redis.ResponseError:
        return 0  # no stream or group yet: nothing pending


def slots_held(client: redis.Redis, user: str) -> int:
    return int(client.zcard(f"runner:slots:{user}"))


def attempt_owner(client: redis.Redis, job_id: str) -> str | None:
    """The consumer of the job's current, unfinished attempt (`runner:attempt:{job}` =
    `<id>|<consumer>`; a finished one is marked `#finished`)."""
    token = client.get(f"runner:attempt:{job_id}")
    return token.split("|", 1)[1] if token and not token.endswith("#finished") else None


def statuses(client: redis.Redis, job_ids: Iterable[str]) -> dict[str, str | None]:
    ids = list(job_ids)
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(f"job:{job_id}", "status")
    return dict(zip(ids, pipe.execute(), strict=True))


def all_final(client: redis.Redis, job_ids: Iterable[str]) -> bool:
    return all(s in FINAL for s in statuses(client, job_ids).values())


def output_lines(world: World, job_id: str, needle: str) -> list[str]:
    return [str(o["line"]) for o in world.output(job_id) if needle in str(o["line"])]


def wait_status(world: World, job_id: str, wanted: str | set[str], timeout_s: float = 30.0) -> str:
    accepted = {wanted} if isinstance(wanted, str) else wanted
    return str(
        wait_for(
            lambda: (s := world.job(job_id).get("status")) in accepted and s,
            timeout_s,
            f"job {job_id} to become {sorted(accepted)}",
        )
    )


def wait_agent_running(world: World, job_id: str, timeout_s: float = 30.0) -> str:
    """Wait until the job's agent step started; returns the consumer running it."""
    wait_for(lambda: output_lines(world, job_id, "Starting agent"), timeout_s, f"the agent of job {job_id} to start")
    owner = attempt_owner(world.client, job_id)
    assert owner, f"job {job_id} runs the agent but has no current attempt"
    return owner


# -- runners -------------------------------------------------------------------------------


def wait_ready(world: World, names: Iterable[str], timeout_s: float = READY_DEADLINE_S) -> None:
    """Wait until each named runner wrote its heartbeat (it has connected and joined the group)."""
    for name in names:
        wait_for(partial(world.client.exists, f"runner:heartbeat:{name}"), timeout_s, f"runner {name} to start")


def start_fleet(world: World, names: Iterable[str], **env: str) -> dict[str, RunnerProcess]:
    fleet = {name: world.start_runner(name=name, **env) for name in names}
    wait_ready(world, fleet)
    return fleet


def log_messages(runner: RunnerProcess, needle: str) -> list[dict[str, Any]]:
    return [r for r in runner.log_records() if needle in str(r.get("msg", r.get("raw", "")))]


def push_requests(world: World) -> int:
    """How many pushes (receive-pack POSTs) reached the world's repository."""
    return sum(
        1
        for r in world.git.requests
        if r.method == "POST" and r.path.startswith(f"/{world.repo_name}.git/git-receive-pack")
    )


# -- processes -----------------------------------------------------------------------------


def processes_with(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0]
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


# -- sampling while a scenario runs --------------------------------------------------------


class Sampler:
    """Calls `probe(client)` every `interval_s` on its own thread, keeping every result.

    Redis errors (an outage the test caused) are skipped, not recorded."""

    def __init__(self, url: str, probe: Callable[[redis.Redis], Any], interval_s: float = 0.02) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)
        self.probe = probe
        self.interval_s = interval_s
        self.samples: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def _sample(self) -> None:
        try:
            self.samples.append(self.probe(self.client))
        except (redis.RedisError, OSError):
            pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()  # the state the test saw last is in the record too
        self.client.close()


class JobHistory(Sampler):
    """Records, per job, the sequence of distinct (status, started_at, finished_at) it went through."""

    def __init__(self, url: str, job_ids: Iterable[str], interval_s: float = 0.02) -> None:
        self.job_ids = list(job_ids)
        self.history: dict[str, list[tuple[str | None, str | None, str | None]]] = {j: [] for j in self.job_ids}
        super().__init__(url, self._probe, interval_s)

    def _probe(self, client: redis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for job_id in self.job_ids:
            pipe.hmget(f"job:{job_id}", "status", "started_at", "finished_at")
        for job_id, (status, started, finished) in zip(self.job_ids, pipe.execute(), strict=True):
            seen = self.history[job_id]
            state = (status, started, finished)
            if not seen or seen[-1] != state:
                seen.append(state)

    def started_values(self, job_id: str) -> list[str]:
        values: list[str] = []
        for _, started, _ in self.history[job_id]:
            if started and started not in values:
                values.append(started)
        return values

    def changes_after_final(self, job_id: str) -> list[tuple[str | None, str | None, str | None]]:
        """States recorded after the job first reached a final status (should be none)."""
        seen = self.history[job_id]
        for i, (status, _, _) in enumerate(seen):
            if status in FINAL:
                return seen[i + 1 :]
        return []


def sleep_until(deadline: float) -> None:
    """For scenarios that are about elapsed time only (e.g. keeping Redis down)."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
