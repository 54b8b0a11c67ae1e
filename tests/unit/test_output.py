"""A job's output list is bounded: lines cut at 4 KiB, at most MAX_OUTPUT_LINES/MAX_OUTPUT_BYTES in
Redis, one truncation line with the dropped counts, and the runner's own lines always get in.
Against a real redis-server."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from repobox_cli.errors import SettingsError
from repobox_cli.output import MAX_LINE_BYTES, JobOutput, cut_line
from repobox_cli.output_limits import RUNNER_RESERVE_LINES, OutputLimits
from repobox_cli.redis_conn import RedisHealth
from repobox_cli.settings import load_settings
from tests.support.redis_server import RedisServer

JOB_ID = "0b9d4c1e-7a3f-4e55-9d2a-5f6c7b8a9e01"
KEY = f"job:{JOB_ID}:output"
SMALL = OutputLimits(max_lines=OutputLimits.MIN_LINES, max_bytes=OutputLimits.MIN_BYTES)


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


def stored(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(item) for item in client.lrange(KEY, 0, -1)]


def stored_bytes(client: redis.Redis) -> int:
    return sum(len(item.encode()) for item in client.lrange(KEY, 0, -1))


def truncation_lines(client: redis.Redis) -> list[str]:
    return [o["line"] for o in stored(client) if o["line"].startswith("... output truncated after")]


def test_a_long_line_is_cut_at_4_kib_and_says_so() -> None:
    cut = cut_line("é" * 10_000)
    assert len(cut.encode()) <= MAX_LINE_BYTES
    assert cut.endswith("[cut 20000 bytes to 4096]")
    assert cut_line("short") == "short"


def test_endless_short_lines_stay_within_both_caps_and_the_final_line_gets_in(
    client: redis.Redis,
) -> None:
    out = JobOutput(client, JOB_ID, RedisHealth(), limits=SMALL)
    out.runner("running the agent")
    for i in range(300_000):
        out.agent(f"line {i}", "stdout")
    out.runner("job failed: agent command exited with status 1")
    out.drain()
    lines = stored(client)
    assert len(lines) <= SMALL.max_lines
    assert stored_bytes(client) <= SMALL.max_bytes
    assert lines[-1]["line"] == "job failed: agent command exited with status 1"
    [notice] = truncation_lines(client)
    kept = SMALL.max_lines - RUNNER_RESERVE_LINES
    agent_kept = sum(1 for o in lines if o["source"] == "claude")
    assert f"after {kept} lines: {300_000 - agent_kept} more line(s)" in notice


def test_huge_lines_stop_at_the_byte_cap(client: redis.Redis) -> None:
    out = JobOutput(client, JOB_ID, RedisHealth(), limits=SMALL)
    for _ in range(500):
        out.agent("x" * 16 * 1024, "stderr")
    out.runner("job succeeded")
    out.drain()
    lines = stored(client)
    assert stored_bytes(client) <= SMALL.max_bytes
    assert all(len(o["line"].encode()) <= MAX_LINE_BYTES for o in lines)
    assert len(truncation_lines(client)) == 1
    assert lines[-1]["line"] == "job succeeded"


def test_the_local_echo_is_capped_the_same_way(client: redis.Redis) -> None:
    shown: list[str] = []
    out = JobOutput(client, JOB_ID, RedisHealth(), lambda line, stream, source: shown.append(line), SMALL)
    for i in range(5_000):
        out.agent(f"line {i} " + "y" * 5_000, "stdout")
    out.runner("done")
    assert len(shown) <= SMALL.max_lines
    assert sum(1 for line in shown if line.startswith("... output truncated after")) == 1
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in shown)
    assert shown[-1] == "done"


def test_the_notice_counts_are_updated_in_place_when_the_output_was_already_written(
    client: redis.Redis,
) -> None:
    client.rpush(
        KEY,
        json.dumps({"timestamp": 1, "line": "an earlier attempt", "stream": "stdout", "source": "runner"}),
    )
    out = JobOutput(client, JOB_ID, RedisHealth(), limits=SMALL)
    for i in range(SMALL.max_lines + 10):
        out.agent(f"line {i}", "stdout")
    assert truncation_lines(client) == [truncation_lines(client)[0]]
    assert "1 more line(s)" in truncation_lines(client)[0]
    for i in range(1_000):
        out.agent(f"more {i}", "stdout")
    out.drain()
    [notice] = truncation_lines(client)
    dropped_before = SMALL.max_lines + 10 - (SMALL.max_lines - RUNNER_RESERVE_LINES)
    assert f"{dropped_before + 1_000} more line(s)" in notice
    assert stored(client)[0]["line"] == "an earlier attempt"


def test_output_limits_are_settings_with_minimums() -> None:
    settings = load_settings(env={"MAX_OUTPUT_LINES": "2000", "MAX_OUTPUT_BYTES": "1048576"}, stderr_is_tty=False)
    assert settings.output_limits == OutputLimits(max_lines=2000, max_bytes=1048576)
    assert load_settings(env={}, stderr_is_tty=False).output_limits == OutputLimits(10_000, 4 * 1024 * 1024)
    for name, bad in (
        ("MAX_OUTPUT_LINES", "0"),
        ("MAX_OUTPUT_LINES", "-5"),
        ("MAX_OUTPUT_LINES", "lots"),
        ("MAX_OUTPUT_BYTES", "1024"),
        ("MAX_OUTPUT_BYTES", "4MiB"),
    ):
        with pytest.raises(SettingsError, match=name):
            load_settings(env={name: bad}, stderr_is_tty=False)


def test_lines_whose_push_lost_its_reply_are_written_once_when_retried(client: redis.Redis) -> None:
    out = JobOutput(client, JOB_ID, RedisHealth())
    out.runner("first")
    applied = client.lrange(KEY, -1, -1)[0]
    # As after a push whose reply a Redis restart swallowed: it reached the list, and the writer
    # still holds it, marked uncertain; the next write retries it with a new line.
    out._buffer[:] = [applied]
    out._uncertain = 1
    out.runner("second")
    assert [o["line"] for o in stored(client)] == ["first", "second"]

    # The same when the push had not reached the list: the uncertain line is written.
    lost = json.dumps({"line": "third", "stream": "stdout", "source": "runner", "timestamp": 1})
    out._buffer[:] = [lost]
    out._uncertain = 1
    out.runner("fourth")
    assert [o["line"] for o in stored(client)] == ["first", "second", "third", "fourth"]


class ReplyLostOnce:
    """A client whose pipeline's reply is lost (after Redis applied it) the first time `lose()`
    is true when it executes: what a connection dropped mid-reply does."""

    def __init__(self, client: redis.Redis, lose: Any) -> None:
        self.client = client
        self.lose = lose
        self.lost = False

    def pipeline(self, **kwargs: Any) -> Any:
        pipe = self.client.pipeline(**kwargs)
        execute = pipe.execute

        def execute_and_lose(**options: Any) -> Any:
            replies = execute(**options)
            if not self.lost and self.lose():
                self.lost = True
                raise redis.ConnectionError("the reply was lost")
            return replies

        pipe.execute = execute_and_lose
        return pipe

    def register_script(self, text: str) -> Any:
        return self.client.register_script(text)


def test_a_notice_whose_push_lost_its_reply_is_written_once_and_brought_up_to_date(client: redis.Redis) -> None:
    health = RedisHealth()
    out: JobOutput
    lossy = ReplyLostOnce(client, lambda: out._notice is not None)
    out = JobOutput(lossy, JOB_ID, health, limits=SMALL)
    i = 0
    while not lossy.lost:
        out.agent(f"line {i}", "stdout")
        i += 1
    assert health.is_lost
    out.agent("one more, discarded", "stdout")  # the notice's counts change while its push is uncertain
    health.ok()

    out.runner("Committing changes")
    out.drain()

    lines = [o["line"] for o in stored(client)]
    assert len(truncation_lines(client)) == 1
    assert len(lines) == len(set(lines))
    assert lines[-1] == "Committing changes"
    assert truncation_lines(client)[0] == out._notice_text(out._notice.kept_lines)  # type: ignore[union-attr]
