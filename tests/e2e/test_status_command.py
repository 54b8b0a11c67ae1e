"""`repobox status`: live runners, user slots in use, the stream, dead letters and the jobs
finished in the last hour, as JSON and as tables readable in 80 columns."""

from __future__ import annotations

import json
from typing import Any

from tests.support.reliability_helpers import wait_agent_running, wait_status
from tests.support.world import World, wait_for


def _status(world: World) -> dict[str, Any]:
    result = world.repobox("status", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_status_shows_a_running_job_its_runner_and_its_users_slot(world: World) -> None:
    user = world.user("status-user")
    job_id = world.add_job(user=user)
    runner = world.start_runner(name="status-runner", AGENT_COMMAND="sleep 3; echo x >> README.md")
    wait_agent_running(world, job_id)

    report = wait_for(
        lambda: (r := _status(world)) and r["runners"] and r["runners"][0]["running"] == 1 and r,
        10,
        "the heartbeat to show the running job",
    )

    (info,) = report["runners"]
    assert (info["runner_id"], info["pid"], info["concurrency"], info["waiting"]) == ("status-runner", runner.pid, 4, 0)
    assert info["host"] and 0 <= info["heartbeat_age_ms"] < 5000 and info["started_at"] > 0
    assert report["slots"] == {user: 1}
    assert report["pending"] == 1 and report["stream_length"] == 1 and report["lag"] == 0
    table = world.repobox("status", COLUMNS="80").stdout
    assert "status-runner" in table and user in table and "1 pending" in table
    assert max(len(line) for line in table.splitlines()) <= 80

    wait_status(world, job_id, "success")
    finished = wait_for(lambda: (r := _status(world))["finished_last_hour"] and r, 10, "the finished count")
    assert finished["finished_last_hour"] == {"success": 1} and finished["slots"] == {}


def test_status_on_an_empty_redis_shows_nothing_running(world: World) -> None:
    report = _status(world)

    assert report["runners"] == [] and report["slots"] == {} and report["pending"] == 0
    assert report["dead_letters"] == 0 and report["finished_last_hour"] == {}
    assert world.repobox("status").returncode == 0
