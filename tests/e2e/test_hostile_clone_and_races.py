"""A hostile clone and racing runners: a clone cannot replace the agent's reaper, a
job is never begun beside a live attempt, `pending --claim` spares live runners, and a delivery
that only waited for a slot does not count toward MAX_DELIVERIES."""

from __future__ import annotations

import json
import signal
import subprocess

from tests.support.reliability_helpers import wait_agent_running
from tests.support.world import World, wait_for

GROUP = "jobs:stream:runners"


def test_a_clone_cannot_shadow_the_agents_reaper(world: World) -> None:
    marker = world.tmp / "hijacked"
    evil = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    url = world.git.create_repo(
        f"evil-{world.repo_name}", {"README.md": "x\n", "repobox_cli/__init__.py": evil, "repobox_cli/reaper.py": evil}
    )
    job_id = world.add_job(repo_url=url)
    result = world.run_burst(AGENT_COMMAND="echo the real agent ran > agent.txt")
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "code from the clone ran in place of the reaper"
    assert world.job(job_id)["status"] == "success"
    assert (
        world.git.show_file(f"evil-{world.repo_name}", f"repobox/{job_id[:8]}", "agent.txt") == "the real agent ran\n"
    )


def test_exec_refuses_a_job_running_on_a_live_runner(world: World) -> None:
    job_id = world.add_job()
    runner = world.start_runner(AGENT_COMMAND="sleep 3; echo x > x.txt")
    wait_agent_running(world, job_id)
    result = world.repobox("exec", job_id)
    assert result.returncode == 1
    assert "running on another runner" in result.stderr and "Traceback" not in result.stderr
    runner.signal(signal.SIGTERM)
    assert runner.wait(30) == 0, runner.log()
    job = world.job(job_id)
    assert job["status"] == "success"
    assert world.output_text(job_id).count("Starting job ") == 1


def test_pending_claim_spares_entries_of_live_runners(world: World) -> None:
    job_id = world.add_job()
    runner = world.start_runner(AGENT_COMMAND="sleep 3; echo x > x.txt")
    wait_agent_running(world, job_id)
    result = world.repobox("pending", "--claim", "--min-idle", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["claimed"] == []
    assert [e["job_id"] for e in report["entries"]] == [job_id]
    runner.signal(signal.SIGTERM)
    assert runner.wait(30) == 0
    assert world.output_text(job_id).count("Starting job ") == 1


def test_pending_claim_hands_back_a_dead_runners_entry_at_once(world: World) -> None:
    job_id = world.add_job()
    world.client.xgroup_create("jobs:stream", GROUP, id="0")
    world.client.xreadgroup(GROUP, "dead-runner", {"jobs:stream": ">"}, count=1)
    result = world.repobox("pending", "--claim", "--min-idle", "0", "--json")
    assert json.loads(result.stdout)["claimed"], result.stdout
    # A long CLAIM_MIN_IDLE: only the hand-back makes the entry claimable now.
    assert world.run_burst(CLAIM_MIN_IDLE="600").returncode == 0
    assert world.job(job_id)["status"] == "success"


def test_a_delivery_that_only_waited_is_not_counted(world: World) -> None:
    slow = "sleep 3; echo x > x.txt"
    first = world.add_job(user=world.user("alice"))
    second = world.add_job(user=world.user("alice"))
    env = {"MAX_JOBS_PER_USER": "1", "CLAIM_MIN_IDLE": "1", "AGENT_COMMAND": slow}
    victim = world.start_runner(name="victim", **env)
    wait_agent_running(world, first)
    wait_for(lambda: world.client.exists(f"runner:waiting:{_entry_of(world, second)}"), 10, "the second job to wait")
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    survivor = world.start_runner(name="survivor", **env)
    wait_for(lambda: _deliveries(world).get(first, 0) >= 2, 20, "the survivor to take both entries")
    wait_for(lambda: _owner(world, second) == "survivor", 20, "the survivor to hold the waiting entry")
    deliveries = _deliveries(world)
    assert deliveries[first] == 2  # it ran on the dead runner: that delivery counts
    assert deliveries[second] == 1  # it only waited there: it does not
    wait_for(lambda: world.job(second).get("status") == "success", 40, "both jobs to finish")
    assert world.job(first)["status"] == "success"
    survivor.signal(signal.SIGTERM)
    assert survivor.wait(30) == 0


def _entry_of(world: World, job_id: str) -> str:
    entry_id: str = next(i for i, f in world.client.xrange("jobs:stream") if f["job_id"] == job_id)
    return entry_id


def _pending_rows(world: World) -> list[dict[str, object]]:
    return list(world.client.xpending_range("jobs:stream", GROUP, min="-", max="+", count=100))


def _deliveries(world: World) -> dict[str, int]:
    by_entry = {str(r["message_id"]): int(str(r["times_delivered"])) for r in _pending_rows(world)}
    return {f["job_id"]: by_entry[i] for i, f in world.client.xrange("jobs:stream") if i in by_entry}


def _owner(world: World, job_id: str) -> str | None:
    entry = _entry_of(world, job_id)
    return next((str(r["consumer"]) for r in _pending_rows(world) if r["message_id"] == entry), None)


def test_work_dirs_left_by_a_crash_are_removed_at_the_next_start(world: World) -> None:
    finished = world.add_job(enqueue=False)
    world.client.hset(f"job:{finished}", "status", "success")
    running = world.add_job(enqueue=False)
    world.client.hset(f"job:{running}", "status", "running")
    for job_id in (finished, running, "job-that-is-gone"):
        leftover = world.temp_dir / job_id / "deadbeef0123" / "repo"
        leftover.mkdir(parents=True)
        (leftover / "file.txt").write_text("left by a crash\n")
    world.temp_dir.chmod(0o700)
    # A symlink planted in a leftover is removed, never followed.
    outside = world.tmp / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me\n")
    (world.temp_dir / finished / "deadbeef0123" / "link").symlink_to(outside)
    # Something under TEMP_DIR that repobox did not make is never removed.
    foreign = world.temp_dir / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine\n")

    assert world.run_burst().returncode == 0

    assert not (world.temp_dir / finished).exists()
    assert not (world.temp_dir / "job-that-is-gone").exists()
    assert (world.temp_dir / running).exists(), "a running job's directory (another runner's) was removed"
    assert (outside / "precious.txt").read_text() == "keep me\n"
    assert (foreign / "todo.txt").read_text() == "mine\n"


def test_a_temp_dir_writable_by_others_is_refused(world: World) -> None:
    world.temp_dir.mkdir(mode=0o777)
    world.temp_dir.chmod(0o777)
    result = world.run_burst()
    assert result.returncode == 1
    assert "not writable by others" in result.stderr and "Traceback" not in result.stderr


def test_a_repository_planted_above_the_work_dir_is_never_discovered(world: World) -> None:
    from tests.support.security_helpers import RecordingListener

    world.temp_dir.mkdir(mode=0o700)
    planted = world.temp_dir / ".git"
    subprocess.run(["git", "init", "-q", "--bare", str(planted)], check=True)
    with RecordingListener() as listener:
        config = planted / "config"
        config.write_text(
            config.read_text() + f'[http "{world.git.base_url}/"]\n'
            f"\tproxy = http://127.0.0.1:{listener.port}\n\tsslVerify = false\n"
        )
        job_id = world.add_job()
        assert world.run_burst().returncode == 0
        assert listener.received == [], "git used a proxy from a repository planted in TEMP_DIR"
    assert world.job(job_id)["status"] == "success"


def test_exec_no_push_without_changes_still_leaves_the_job_pending(world: World) -> None:
    job_id = world.add_job(enqueue=False)
    result = world.repobox("exec", job_id, "--no-push", AGENT_COMMAND="true")
    assert result.returncode == 0, result.stderr
    job = world.job(job_id)
    assert job["status"] == "pending" and "started_at" not in job and "finished_at" not in job


def test_hand_back_never_takes_an_entry_another_runner_owns(world: World) -> None:
    from repobox_cli.leases import Leases

    client = world.client
    world.add_job()
    client.xgroup_create("jobs:stream", GROUP, id="0")
    entry_id = client.xreadgroup(GROUP, "old-owner", {"jobs:stream": ">"}, count=1)[0][1][0][0]
    client.xclaim("jobs:stream", GROUP, "new-owner", 0, [entry_id])  # taken over meanwhile
    assert Leases(client).hand_back("old-owner", [entry_id]) == []
    row = client.xpending_range("jobs:stream", GROUP, min="-", max="+", count=1)[0]
    assert row["consumer"] == "new-owner" and int(row["time_since_delivered"]) < 60_000
    assert Leases(client).hand_back("new-owner", [entry_id]) == [entry_id]
