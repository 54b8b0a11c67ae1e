"""What the supervisor enforces on running jobs without Redis: JOB_TIMEOUT, and a lease this
runner could not renew for CLAIM_MIN_IDLE (after which another runner may take the job over).
Both hold while Redis is unreachable: a real redis-server, stopped."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from repobox_cli.active import ActiveJob
from repobox_cli.control import JobControl, StopReason
from repobox_cli.jobs import Job
from repobox_cli.leases import Attempt, Leases, new_attempt_id
from repobox_cli.output import JobOutput
from repobox_cli.redis_conn import RedisHealth
from repobox_cli.settings import Settings
from repobox_cli.supervisor import supervise
from repobox_cli.watch import JobWatch
from tests.support.redis_server import RedisServer

TICK_S = 0.05
STOP_DEADLINE_S = 5.0


def running_job(
    client: redis.Redis, health: RedisHealth, timeout_s: float, entry_id: str = "1764380000000-0"
) -> ActiveJob:
    """A job as the web app writes it, begun by this runner (as far as the runner knows)."""
    job_id, user_id = str(uuid.uuid4()), "github:12345678"
    record = {
        "id": job_id,
        "user_id": user_id,
        "provider_id": str(uuid.uuid4()),
        "repo_url": "https://gitlab.example.com/team/app.git",
        "branch": "main",
        "prompt": "Add a README",
        "environment": "default",
        "status": "running",
    }
    attempt = Attempt(job_id, user_id, "runner-1", entry_id, new_attempt_id())
    return ActiveJob(Job.decode(job_id, record), attempt, JobControl(timeout_s), JobOutput(client, job_id, health))


@pytest.fixture
def redis_away(redis_server: RedisServer) -> Iterator[tuple[redis.Redis, RedisHealth]]:
    """A client of a Redis that has stopped, and a health that knows it."""
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=0.2, socket_timeout=0.2)
    redis_server.stop()
    health = RedisHealth()
    health.lost(redis.ConnectionError("stopped by the test"))
    yield client, health
    client.close()


@contextmanager
def watched(
    client: redis.Redis, health: RedisHealth, settings: Settings, active: ActiveJob
) -> Iterator[threading.Event]:
    """The supervisor loop watching `active`, as `run` wires it; stopped at the end."""
    watch = JobWatch(settings, client, Leases(client), health)
    stop = threading.Event()
    thread = threading.Thread(
        target=supervise,
        args=(client, health, TICK_S, stop, [lambda r: watch.tick([active], r)], [lambda: watch.enforce([active])]),
        daemon=True,
    )
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(STOP_DEADLINE_S)


def test_a_job_past_its_deadline_is_stopped_while_redis_is_unreachable(
    redis_away: tuple[redis.Redis, RedisHealth],
) -> None:
    client, health = redis_away
    active = running_job(client, health, timeout_s=0.3)
    settings = Settings(job_timeout_s=0.3, claim_min_idle_s=60, tick_s=TICK_S)
    with watched(client, health, settings, active):
        assert active.control.stopped.wait(STOP_DEADLINE_S), "JOB_TIMEOUT did not stop the job while Redis was away"
    assert active.control.reason is StopReason.TIMEOUT


def test_a_job_whose_lease_was_not_renewed_for_claim_min_idle_is_stopped_then_and_not_before(
    redis_away: tuple[redis.Redis, RedisHealth],
) -> None:
    client, health = redis_away
    lease_s = 0.6
    active = running_job(client, health, timeout_s=600)
    settings = Settings(job_timeout_s=600, claim_min_idle_s=lease_s, tick_s=TICK_S)
    with watched(client, health, settings, active):
        assert active.control.stopped.wait(STOP_DEADLINE_S), "a job kept running past its lease with Redis away"
        stopped_after_s = time.monotonic() - active.renewed_monotonic
    assert active.control.reason is StopReason.LEASE_EXPIRED
    assert stopped_after_s >= lease_s, f"stopped {stopped_after_s:.2f} s after its renewal, before its lease ran out"


def test_a_finishing_job_is_left_to_finish_when_its_lease_runs_out(
    redis_away: tuple[redis.Redis, RedisHealth],
) -> None:
    client, health = redis_away
    active = running_job(client, health, timeout_s=0.3)
    active.finishing.set()  # writing its final state, which waits for Redis: the attempt's token guards it
    settings = Settings(job_timeout_s=0.3, claim_min_idle_s=0.3, tick_s=TICK_S)
    with watched(client, health, settings, active):
        assert not active.control.stopped.wait(1.0)
    assert active.control.reason is None


def test_a_job_run_by_exec_without_a_stream_entry_outlives_its_lease_while_redis_is_away(
    redis_away: tuple[redis.Redis, RedisHealth],
) -> None:
    """No sweep can take over what has no entry: it waits for Redis, as before, until its deadline."""
    client, health = redis_away
    active = running_job(client, health, timeout_s=1.5, entry_id="")
    settings = Settings(job_timeout_s=1.5, claim_min_idle_s=0.3, tick_s=TICK_S)
    with watched(client, health, settings, active):
        assert active.control.stopped.wait(STOP_DEADLINE_S)
    assert active.control.reason is StopReason.TIMEOUT
