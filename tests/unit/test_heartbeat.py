"""The runner's heartbeat key: written with a TTL, and gone for good once the runner stops, even
when a beat from another thread is in flight at that moment."""

from __future__ import annotations

import json
import threading
from typing import Any

import redis

from repobox_cli import keys
from repobox_cli.heartbeat import HEARTBEAT_TTL_MS, Heartbeat
from tests.support.redis_server import RedisServer

RUNNER = "runner-7f3c"
STOP_DEADLINE_S = 5.0


class StopDuringWrite(redis.Redis):  # type: ignore[misc]  # redis-py is untyped here (pyproject)
    """A real client whose next SET is preceded by the runner's stop, as when the supervisor's
    beat has read the stop flag and the main thread then stops the heartbeat before the SET lands."""

    heartbeat: Heartbeat | None = None

    def set(self, *args: Any, **kwargs: Any) -> Any:
        if self.heartbeat is not None:
            heartbeat, self.heartbeat = self.heartbeat, None
            heartbeat.stop()
        return super().set(*args, **kwargs)


def test_a_beat_writes_the_runner_info_with_a_short_ttl(redis_server: RedisServer) -> None:
    client = redis_server.client()
    Heartbeat(client, RUNNER, 4).beat(running=2, waiting=1)

    info = json.loads(client.get(keys.heartbeat(RUNNER)))
    assert (info["runner_id"], info["concurrency"], info["running"], info["waiting"]) == (RUNNER, 4, 2, 1)
    assert 0 < client.pttl(keys.heartbeat(RUNNER)) <= HEARTBEAT_TTL_MS


def test_a_beat_after_stop_writes_nothing(redis_server: RedisServer) -> None:
    client = redis_server.client()
    heartbeat = Heartbeat(client, RUNNER, 4)
    heartbeat.beat(running=0, waiting=0)
    heartbeat.stop()

    heartbeat.beat(running=0, waiting=0)

    assert not client.exists(keys.heartbeat(RUNNER))


def test_a_beat_in_flight_when_the_runner_stops_leaves_no_heartbeat(redis_server: RedisServer) -> None:
    client = StopDuringWrite(port=redis_server.port, decode_responses=True)
    heartbeat = Heartbeat(client, RUNNER, 4)
    client.heartbeat = heartbeat

    heartbeat.beat(running=1, waiting=0)  # stop() runs between the flag check and the SET

    assert client.heartbeat is None, "the stop did not run inside the beat"
    assert not client.exists(keys.heartbeat(RUNNER))


class StoppingDuringBeat(redis.Redis):  # type: ignore[misc]  # redis-py is untyped here (pyproject)
    """A real client on whose next SET (the supervisor's beat, built before the stop) the main
    thread says the runner stops, and is given the time to write that before the SET goes on."""

    heartbeat: Heartbeat | None = None
    other: threading.Thread | None = None

    def set(self, *args: Any, **kwargs: Any) -> Any:
        if self.heartbeat is not None:
            heartbeat, self.heartbeat = self.heartbeat, None
            self.other = threading.Thread(target=heartbeat.stopping, args=(1, 0))
            self.other.start()
            self.other.join(0.3)  # it writes now unless the beat holds the heartbeat's write
        return super().set(*args, **kwargs)


def test_a_beat_built_before_the_stop_never_lands_after_the_stopping_beat(redis_server: RedisServer) -> None:
    client = StoppingDuringBeat.from_url(redis_server.url, decode_responses=True)
    heartbeat = Heartbeat(client, RUNNER, 4)
    client.heartbeat = heartbeat

    heartbeat.beat(1, 0)  # the supervisor's
    assert client.other is not None
    client.other.join(STOP_DEADLINE_S)

    assert json.loads(client.get(keys.heartbeat(RUNNER)))["stopping"] is True
    client.close()
