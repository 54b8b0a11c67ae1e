"""`repobox pending`: the rich table for people, `--json` for scripts."""

from __future__ import annotations

import json

from tests.support.world import World

GROUP = "jobs:stream:runners"


def test_pending_table_shows_entries_consumers_and_dead_letters(world: World) -> None:
    job_id = world.add_job(user=world.user("alice"))
    world.client.xgroup_create("jobs:stream", GROUP, id="0")
    world.client.xreadgroup(GROUP, "some-runner", {"jobs:stream": ">"}, count=1)
    world.client.xadd(
        "runner:dead_letters", {"entry_id": "1-0", "job_id": "dead-job", "reason": "poison", "deliveries": "6"}
    )
    result = world.repobox("pending", CLAIM_MIN_IDLE="600", COLUMNS="250")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in (
        "pending entries",
        "consumers",
        "dead letters",
        "some-runner",
        world.user("alice"),
        "pending",
        "dead-job",
        "poison",
        "lag 0",
    ):
        assert needle in out, f"{needle!r} missing from:\n{out}"
    assert job_id[:8] in out


def test_pending_json_on_an_empty_redis(world: World) -> None:
    result = world.repobox("pending", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["group_exists"] is False and report["entries"] == [] and report["dead_letters"] == []


def test_pending_with_a_bad_min_idle_is_one_line(world: World) -> None:
    for value in ("-1", "inf", "nan"):
        result = world.repobox("pending", "--claim", "--min-idle", value)
        assert result.returncode == 2, (value, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
