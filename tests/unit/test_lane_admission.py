"""A lane whose admission Redis cuts short: the entries it was given and had not admitted are
admitted at its next read, from its own pending list, not left for a takeover that counts a
delivery. A real redis-server; the lost connection is raised by the client, once, as a dropped
socket does."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from repobox_cli import keys
from repobox_cli.executor import Executor
from repobox_cli.job_kind import JobKind
from repobox_cli.lanes import Lane
from repobox_cli.leases import Leases
from repobox_cli.logs import JobLog
from repobox_cli.redis_conn import RedisHealth
from repobox_cli.settings import Settings
from repobox_cli.workers import WorkerPool
from tests.support.redis_server import RedisServer

RUNNER = "runner-7f3c"


class DropsOnce(redis.Redis):  # type: ignore[misc]  # redis-py is untyped here (pyproject)
    """A real client whose next script call, once armed, loses its connection before it is sent."""

    armed = False

    def evalsha(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            self.armed = False
            raise redis.ConnectionError("connection dropped by the test")
        return super().evalsha(*args, **kwargs)


@pytest.fixture
def lane(redis_server: RedisServer) -> Iterator[tuple[Lane, DropsOnce]]:
    client = DropsOnce.from_url(redis_server.url, decode_responses=True)
    settings = Settings(runner_id=RUNNER, block_ms=10, tick_s=0.05)
    health, stopping = RedisHealth(), threading.Event()
    leases = Leases(client)
    executor = Executor(settings, client, leases, health, threading.Event())
    pool = WorkerPool(2, lambda active: pytest.fail(f"no job should start: {active.job.id}"))
    kind = JobKind(client, executor, leases, 3, settings.output_limits)
    lane = Lane(settings, client, kind, pool, health, stopping, JobLog(logging.getLogger("test"), {}))
    lane.ensure_group()
    yield lane, client
    pool.shutdown()
    lane.close_reader()
    client.close()


def test_entries_an_admission_cut_short_left_unseen_are_admitted_at_the_next_read(
    lane: tuple[Lane, DropsOnce],
) -> None:
    the_lane, client = lane
    # Entries that name no job: each is refused (acknowledged) by one script call.
    for n in range(2):  # as many as the lane has workers: one read takes both
        client.xadd(keys.JOBS_STREAM, {"user_id": "github:12345678", "note": f"malformed {n}"})
    client.armed = True

    with pytest.raises(redis.ConnectionError):
        the_lane.read_once(None)  # the first refusal's connection drops: the others are not seen
    assert client.xpending(keys.JOBS_STREAM, keys.RUNNERS_GROUP)["pending"] == 2

    assert the_lane.read_once(None) is False  # nothing new to read

    assert client.xpending(keys.JOBS_STREAM, keys.RUNNERS_GROUP)["pending"] == 0


def test_entries_a_read_delivered_but_whose_reply_was_lost_are_admitted_at_the_next_read(
    lane: tuple[Lane, DropsOnce], monkeypatch: pytest.MonkeyPatch
) -> None:
    the_lane, client = lane
    for n in range(2):
        client.xadd(keys.JOBS_STREAM, {"user_id": "github:12345678", "note": f"malformed {n}"})
    connection = the_lane._read_client().connection
    real_read = connection.read_response
    lost: list[Any] = []

    def reply_lost(*args: Any, **kwargs: Any) -> Any:
        reply = real_read(*args, **kwargs)  # Redis delivered the entries; their reply never arrives
        if not lost:
            lost.append(reply)
            raise redis.ConnectionError("connection dropped by the test")
        return reply

    monkeypatch.setattr(connection, "read_response", reply_lost)

    with pytest.raises(redis.ConnectionError):
        the_lane.read_once(None)
    assert client.xpending(keys.JOBS_STREAM, keys.RUNNERS_GROUP)["pending"] == 2

    the_lane.read_once(None)

    assert client.xpending(keys.JOBS_STREAM, keys.RUNNERS_GROUP)["pending"] == 0


class ForwardedJobKind(JobKind):
    receives_forwarded = True  # as a session's prompts and pushes


def test_a_stop_that_cannot_list_the_forwarded_entries_says_so_and_goes_on(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    settings = Settings(runner_id=RUNNER, block_ms=10, tick_s=0.05)
    health, leases = RedisHealth(), Leases(client)
    executor = Executor(settings, client, leases, health, threading.Event())
    kind = ForwardedJobKind(client, executor, leases, 3, settings.output_limits)
    pool = WorkerPool(1, lambda active: pytest.fail("no job should start"))
    lane = Lane(settings, client, kind, pool, health, threading.Event(), JobLog(logging.getLogger("test"), {}))
    try:
        lane.release_held()  # no group (Redis restarted empty, say): XPENDING answers NOGROUP
    finally:
        pool.shutdown()
        client.close()
    assert any("could not list the job entries forwarded here: NOGROUP" in r.getMessage() for r in caplog.records)
