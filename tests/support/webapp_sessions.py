"""The web app's side of work sessions, written exactly as SESSIONS.md says it writes them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.support.world import World, wait_for

SESSION_ENDED = {"pushed", "failed", "archived"}


def now_ms() -> str:
    return str(int(time.time() * 1000))


def create_session(
    world: World, repo_web_url: str, repo_name: str, *, base_branch: str = "main", user: str | None = None
) -> str:
    """The new-session screen: the hash (30-day TTL), the user's index, the init message."""
    sid = str(uuid.uuid4())
    user = user or world.default_user
    if not world.client.exists(f"git_provider:{user}:{world.provider_id}"):
        world.add_provider(user)
    client = world.client
    key = f"work_session:{sid}"
    client.hset(
        key,
        mapping={
            "id": sid,
            "user_id": user,
            "provider_id": world.provider_id,
            "repo_url": repo_web_url,
            "repo_name": repo_name,
            "base_branch": base_branch,
            "work_branch": f"repobox/{sid[:8]}",
            "status": "initializing",
            "total_lines_added": "0",
            "total_lines_removed": "0",
            "job_count": "0",
            "last_job_status": "",
            "error_message": "",
            "mr_url": "",
            "mr_warning": "",
            "last_activity_at": now_ms(),
            "created_at": now_ms(),
            "pushed_at": "",
        },
    )
    client.expire(key, 30 * 24 * 3600)
    client.zadd(f"work_sessions:user:{user}", {sid: int(now_ms())})
    client.xadd(
        "work_sessions:init:stream",
        {
            "session_id": sid,
            "user_id": user,
            "provider_id": world.provider_id,
            "repo_url": repo_web_url,
            "repo_name": repo_name,
            "base_branch": base_branch,
        },
    )
    return sid


def send_prompt(world: World, sid: str, prompt: str, *, environment: str = "") -> str:
    """Accepted only in `ready`: the job hash, the session's job list, `running`, the message."""
    client = world.client
    session = client.hgetall(f"work_session:{sid}")
    assert session["status"] == "ready", session
    job_id = str(uuid.uuid4())
    client.hset(
        f"job:{job_id}",
        mapping={
            "id": job_id,
            "user_id": session["user_id"],
            "provider_id": session["provider_id"],
            "repo_url": session["repo_url"],
            "repo_name": session["repo_name"],
            "branch": session["work_branch"],
            "prompt": prompt,
            "environment": environment or "default",
            "status": "pending",
            "created_at": now_ms(),
            "session_id": sid,
        },
    )
    client.rpush(f"work_session:{sid}:jobs", job_id)
    client.hset(f"work_session:{sid}", "status", "running")
    fields = {"session_id": sid, "job_id": job_id, "user_id": session["user_id"], "prompt": prompt}
    if environment:
        fields["environment"] = environment
    client.xadd("work_sessions:jobs:stream", fields)
    return job_id


def push(world: World, sid: str, *, title: str = "", description: str = "") -> None:
    session = world.client.hgetall(f"work_session:{sid}")
    assert session["status"] == "ready" and int(session["job_count"]) > 0, session
    fields = {"session_id": sid, "user_id": session["user_id"]}
    if title:
        fields["title"] = title
    if description:
        fields["description"] = description
    world.client.xadd("work_sessions:push:stream", fields)


def session(world: World, sid: str) -> dict[str, str]:
    record: dict[str, str] = world.client.hgetall(f"work_session:{sid}")
    return record


def wait_session(world: World, sid: str, status: str, timeout_s: float = 30.0) -> dict[str, str]:
    found: dict[str, str] = wait_for(
        lambda: (s := session(world, sid)) and s.get("status") == status and s,
        timeout_s,
        f"session {sid[:8]} {status}, now {session(world, sid).get('status')}",
    )
    return found


def wait_job(world: World, job_id: str, timeout_s: float = 30.0) -> dict[str, str]:
    job: dict[str, str] = wait_for(
        lambda: (j := world.job(job_id)).get("status") in ("success", "failed", "cancelled") and j,
        timeout_s,
        f"job {job_id[:8]} final",
    )
    return job


def output(world: World, sid: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in world.client.lrange(f"work_session:{sid}:output", 0, -1)]


def lines(world: World, sid: str) -> list[str]:
    return [str(o["line"]) for o in output(world, sid)]
