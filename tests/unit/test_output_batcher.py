"""The runner writes output lines in batches: in order, in a few pipelines instead of one per line,
on its own thread (a line's writer never waits on Redis), and nothing waiting is lost at the stop.
Against a real redis-server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from repobox_cli.output import JobOutput
from repobox_cli.output_batcher import OutputBatcher
from repobox_cli.redis_conn import RedisHealth
from tests.support.redis_server import RedisServer

JOB_ID = "5d0c6f9e-2b7a-4c1d-8e3f-9a6b2c4d8e10"
KEY = f"job:{JOB_ID}:output"
DEADLINE_S = 10.0
PAUSE_MS = 3000
LINES = 200


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


@pytest.fixture
def batcher() -> Iterator[OutputBatcher]:
    b = OutputBatcher()
    yield b
    b.stop()


def stored_lines(client: redis.Redis) -> list[str]:
    return [json.loads(item)["line"] for item in client.lrange(KEY, 0, -1)]


def wait_for_lines(client: redis.Redis, count: int) -> list[str]:
    deadline = time.monotonic() + DEADLINE_S
    while len(lines := stored_lines(client)) < count:
        assert time.monotonic() < deadline, f"{len(lines)} of {count} lines reached Redis"
        time.sleep(0.005)
    return lines


def rpush_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_rpush")
    return int(stats["calls"]) if stats else 0


def test_lines_go_out_in_order_in_a_few_pipelines_without_a_flush_call(
    client: redis.Redis, batcher: OutputBatcher
) -> None:
    out = JobOutput(client, JOB_ID, RedisHealth(), batcher=batcher)
    before = rpush_calls(client)

    for i in range(LINES):
        out.agent(f"line {i}", "stdout")

    assert wait_for_lines(client, LINES) == [f"line {i}" for i in range(LINES)]
    assert rpush_calls(client) - before < LINES / 10


def test_a_writer_does_not_wait_for_redis(client: redis.Redis, batcher: OutputBatcher) -> None:
    out = JobOutput(client, JOB_ID, RedisHealth(), batcher=batcher)
    out.runner("before the pause")
    wait_for_lines(client, 1)
    client.client_pause(PAUSE_MS, all=False)  # writes wait in Redis for PAUSE_MS
    paused_at = time.monotonic()

    for i in range(10):
        out.agent(f"during the pause {i}", "stdout")

    assert time.monotonic() - paused_at < PAUSE_MS / 1000 / 2
    assert wait_for_lines(client, 11)[1:] == [f"during the pause {i}" for i in range(10)]


def test_stopping_the_batcher_writes_what_waits_and_later_lines_go_out_at_once(client: redis.Redis) -> None:
    slow = OutputBatcher(batch_s=600.0)
    out = JobOutput(client, JOB_ID, RedisHealth(), batcher=slow)
    out.runner("first")
    out.agent("second", "stderr")
    assert stored_lines(client) == []

    slow.stop()

    assert stored_lines(client) == ["first", "second"]
    out.runner("after the stop")
    assert stored_lines(client) == ["first", "second", "after the stop"]


def test_a_job_that_drains_its_output_writes_every_line_before_it_returns(
    client: redis.Redis, batcher: OutputBatcher
) -> None:
    out = JobOutput(client, JOB_ID, RedisHealth(), batcher=batcher)

    def write(n: int) -> None:
        for i in range(50):
            out.agent(f"{n}-{i}", "stdout")

    writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(DEADLINE_S)

    out.runner("Job completed")
    out.drain()

    lines = stored_lines(client)
    assert len(lines) == 151 and lines[-1] == "Job completed"
    for n in range(3):
        assert [line for line in lines if line.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(50)]
