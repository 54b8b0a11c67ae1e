"""Stream hygiene: acknowledged entries are trimmed, nothing pending or undelivered is;
consumers of runners that are gone are removed once they hold nothing."""

from __future__ import annotations

from repobox_cli.leases import Leases
from tests.support.world import World

GROUP = "jobs:stream:runners"


def test_a_runner_trims_the_entries_it_acknowledged(world: World) -> None:
    done = [world.add_job() for _ in range(3)]
    assert world.run_burst().returncode == 0
    assert all(world.job(j)["status"] == "success" for j in done)
    assert world.client.xlen("jobs:stream") == 0


def test_trim_keeps_entries_pending_or_not_yet_delivered(world: World) -> None:
    client = world.client
    client.xgroup_create("jobs:stream", GROUP, id="0", mkstream=True)
    acked = world.add_job(user=world.user("a"))
    pending = world.add_job(user=world.user("b"))
    client.xreadgroup(GROUP, "r1", {"jobs:stream": ">"}, count=2)
    acked_id = next(i for i, f in client.xrange("jobs:stream") if f["job_id"] == acked)
    client.xack("jobs:stream", GROUP, acked_id)
    after_pending = world.add_job(user=world.user("c"))  # acknowledged by nobody, delivered to nobody
    undelivered = world.add_job(user=world.user("d"))

    assert Leases(client).trim() == 1

    remaining = [f["job_id"] for _, f in client.xrange("jobs:stream")]
    assert remaining == [pending, after_pending, undelivered]
    client.xack("jobs:stream", GROUP, *[i for i, _ in client.xrange("jobs:stream", count=1)])
    assert Leases(client).trim() == 1  # now the oldest needed entry is undelivered
    assert [f["job_id"] for _, f in client.xrange("jobs:stream")] == [after_pending, undelivered]


def test_consumers_of_gone_runners_are_removed_once_they_hold_nothing(world: World) -> None:
    client = world.client
    client.xgroup_create("jobs:stream", GROUP, id="0", mkstream=True)
    client.xgroup_createconsumer("jobs:stream", GROUP, "gone-empty")
    world.add_job(user=world.user("held"))
    client.xreadgroup(GROUP, "gone-holding", {"jobs:stream": ">"}, count=1)
    client.xgroup_createconsumer("jobs:stream", GROUP, "alive-empty")
    client.set("runner:heartbeat:alive-empty", "{}", ex=60)

    assert world.run_burst(CLAIM_MIN_IDLE="600", RUNNER_ID="burst-runner").returncode == 0

    names = {c["name"] for c in client.xinfo_consumers("jobs:stream", GROUP)}
    assert "burst-runner" not in names  # its own consumer, left at its clean stop
    assert "gone-empty" not in names
    assert "gone-holding" in names  # still holds an entry: kept until it is taken over
    assert "alive-empty" in names


def test_entries_of_final_jobs_read_in_one_batch_are_acknowledged_and_never_run(world: World) -> None:
    finals = {}
    for status in ("success", "failed", "cancelled", "success", "failed"):
        job_id = world.add_job(enqueue=False)
        world.client.hset(f"job:{job_id}", mapping={"status": status, "finished_at": "1"})
        finals[job_id] = status
    fresh = world.add_job(enqueue=False)
    for job_id in [*finals, fresh]:  # one batch: the runner reads up to MAX_CONCURRENT_JOBS at once
        job = world.job(job_id)
        world.client.xadd(
            "jobs:stream",
            {k: job[k] for k in ("user_id", "provider_id", "repo_url", "prompt", "environment")} | {"job_id": job_id},
        )

    assert world.run_burst(MAX_CONCURRENT_JOBS="8").returncode == 0

    assert {job_id: world.job(job_id)["status"] for job_id in finals} == finals
    assert all(world.job(job_id)["finished_at"] == "1" for job_id in finals)
    assert all(world.output(job_id) == [] for job_id in finals)
    assert world.job(fresh)["status"] == "success"
    assert world.client.xpending("jobs:stream", GROUP)["pending"] == 0
