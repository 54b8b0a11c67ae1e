"""What the supervisor's watchdog enforces on running jobs without Redis: JOB_TIMEOUT, and a lease
this runner could not renew for CLAIM_MIN_IDLE (after which another runner may take the job over).
Both hold while Redis is unreachable (a real redis-server, stopped) and while the supervisor's own
thread is held up."""

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
from repobox_cli.supervisor import LATE_S, Step, supervise
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
    client: redis.Redis, health: RedisHealth, settings: Settings, active: ActiveJob, *duties: Step
) -> Iterator[threading.Event]:
    """The supervisor loop watching `active`, as `run` wires it, with `duties` after its watch;
    stopped at the end."""
    watch = JobWatch(settings, client, Leases(client), health)
    stop = threading.Event()
    steps: list[Step] = [lambda r: watch.tick([active], r), *duties]
    thread = threading.Thread(
        target=supervise,
        args=(client, health, TICK_S, stop, steps, [lambda late: watch.enforce([active], late)]),
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


@pytest.mark.parametrize("limit", ["JOB_TIMEOUT", "CLAIM_MIN_IDLE"])
def test_a_supervisor_duty_that_never_returns_delays_neither_the_deadline_nor_the_lease(
    redis_server: RedisServer, limit: str
) -> None:
    """As a push to a user's git host that stalls: the supervisor's thread waits in it for ever."""
    client = redis.Redis.from_url(redis_server.url)
    health = RedisHealth()
    released = threading.Event()
    stuck = threading.Event()

    def stalled_duty(_recovered: bool) -> None:
        stuck.set()
        released.wait()

    timeout_s, lease_s = (0.5, 60.0) if limit == "JOB_TIMEOUT" else (600.0, 0.6)
    active = running_job(client, health, timeout_s=timeout_s)
    settings = Settings(job_timeout_s=timeout_s, claim_min_idle_s=lease_s, tick_s=TICK_S)
    try:
        with watched(client, health, settings, active, stalled_duty):
            assert stuck.wait(STOP_DEADLINE_S)
            assert active.control.stopped.wait(STOP_DEADLINE_S), f"{limit} waited for the supervisor's duty"
    finally:
        released.set()
        client.close()
    assert active.control.reason is (StopReason.TIMEOUT if limit == "JOB_TIMEOUT" else StopReason.LEASE_EXPIRED)


def test_after_the_process_was_paused_a_lapsed_lease_is_judged_only_at_the_next_tick(
    redis_away: tuple[redis.Redis, RedisHealth],
) -> None:
    """Woken late, the watchdog leaves the supervisor its tick to renew (or to learn the lease was
    lost); a deadline is enforced at once all the same."""
    client, health = redis_away
    settings = Settings(job_timeout_s=600, claim_min_idle_s=0.3, tick_s=TICK_S)
    watch = JobWatch(settings, client, Leases(client), health)
    lapsed = running_job(client, health, timeout_s=600)
    lapsed.renewed_monotonic -= 10
    overdue = running_job(client, health, timeout_s=0)

    watch.enforce([lapsed, overdue], woke_late=True)
    assert not lapsed.control.stopped.is_set()
    assert overdue.control.reason is StopReason.TIMEOUT

    watch.enforce([lapsed, overdue])
    assert lapsed.control.reason is StopReason.LEASE_EXPIRED


def test_the_watchdog_says_it_woke_late_after_its_thread_was_held_up_but_never_twice_in_a_row(
    redis_server: RedisServer,
) -> None:
    """Late once: a paused process, whose supervisor gets a tick to renew. Late again at once: a
    starved thread, which must still judge leases."""
    client = redis.Redis.from_url(redis_server.url)
    stop = threading.Event()
    calls: list[bool] = []

    def local(woke_late: bool) -> None:
        calls.append(woke_late)
        if len(calls) <= 2:
            time.sleep(LATE_S + 0.3)  # as a paused process: the next wake comes late
        elif len(calls) == 3:
            stop.set()

    thread = threading.Thread(target=supervise, args=(client, RedisHealth(), TICK_S, stop, [], [local]), daemon=True)
    thread.start()
    thread.join(STOP_DEADLINE_S)
    client.close()
    assert calls == [False, True, False]
