"""Which session working copies the runner's housekeeping removes, on a real redis-server: an
archived session's copy goes only once its checkpoint ref is gone from the remote, and never
while a step of the session holds its lock."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from repobox_cli import keys
from repobox_cli.session_housekeeping import remove_stale_sessions
from repobox_cli.session_work import SESSIONS_DIR
from tests.support.redis_server import RedisServer

IDLE_TTL_S = 86_400.0


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis_server.client()
    yield c
    c.close()


def archived_copy(client: redis.Redis, temp_dir: Path) -> tuple[str, Path]:
    session_id = str(uuid.uuid4())
    client.hset(keys.work_session(session_id), mapping={"status": "archived", "user_id": "github:12345678"})
    copy = temp_dir / SESSIONS_DIR / session_id
    (copy / "repo").mkdir(parents=True)
    return session_id, copy


def test_an_archived_copy_stays_until_its_checkpoint_is_deleted(client: redis.Redis, tmp_path: Path) -> None:
    session_id, copy = archived_copy(client, tmp_path)
    asked: list[str] = []

    def not_yet(sid: str) -> bool:  # the push was stopped (the runner's stop, the pass's deadline)
        asked.append(sid)
        return False

    assert remove_stale_sessions(client, tmp_path, IDLE_TTL_S, set(), on_archived=not_yet) == []
    assert copy.is_dir() and asked == [session_id]

    assert remove_stale_sessions(client, tmp_path, IDLE_TTL_S, set(), on_archived=lambda sid: True) == [session_id]
    assert not copy.exists()


def test_a_copy_whose_session_lock_is_held_by_a_step_is_left_alone(client: redis.Redis, tmp_path: Path) -> None:
    session_id, copy = archived_copy(client, tmp_path)
    locks = {session_id: threading.Lock()}
    locks[session_id].acquire()  # a step of the session runs

    assert remove_stale_sessions(client, tmp_path, IDLE_TTL_S, set(), lock_of=locks.__getitem__) == []
    assert copy.is_dir()
