"""Who holds a session's working copy: `runner:session_owner:{sid}` (hash: `runner`, `host`,
`dir`, `head`). A prompt or push goes to that runner while it lives; when it is gone, a runner on
the same host with the same directory adopts the copy if its head is the recorded one, and any
other runner rebuilds it from the checkpoint on the user's remote."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import redis

from repobox_cli import keys

OWNER_TTL_S = 30 * 24 * 3600  # as long as the web app keeps the session


@dataclass(frozen=True)
class Owner:
    runner: str
    host: str
    dir: str
    head: str


def read_owner(client: redis.Redis, session_id: str) -> Owner | None:
    data = client.hgetall(keys.session_owner(session_id))
    if not data or not data.get("runner"):
        return None
    return Owner(data["runner"], data.get("host", ""), data.get("dir", ""), data.get("head", ""))


def claim(client: redis.Redis, session_id: str, runner: str, work_dir: str, head: str) -> None:
    """This runner now holds the session's working copy, at `head`."""
    key = keys.session_owner(session_id)
    pipe = client.pipeline(transaction=False)  # no MULTI: the minimal ACL user has none
    pipe.hset(key, mapping={"runner": runner, "host": socket.gethostname(), "dir": work_dir, "head": head})
    pipe.expire(key, OWNER_TTL_S)
    pipe.execute()


def release(client: redis.Redis, session_id: str) -> None:
    client.delete(keys.session_owner(session_id))


def is_alive(client: redis.Redis, runner: str) -> bool:
    return bool(client.exists(keys.heartbeat(runner)))
