"""Reliability (SPEC §4): no job lost, none run twice, under crashes, long jobs, pauses,
Redis restarts, floods, poison entries, cancellation and shutdown signals.

Real runner processes (`python -m repobox_cli run`) against a real redis-server and a real
HTTPS git server. Every wait has a deadline; the only sleeps are where the scenario is about
elapsed time (Redis kept down, a runner killed every few seconds).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis

from tests.support.git_server import GitHttpsServer
from tests.support.redis_server import RedisServer
from tests.support.reliability_helpers import (
    DEAD_LETTERS,
    GROUP,
    STREAM,
    JobHistory,
    Sampler,
    all_final,
    attempt_owner,
    log_messages,
    output_lines,
    pending_count,
    processes_with,
    push_requests,
    sleep_until,
    slots_held,
    start_fleet,
    statuses,
    wait_agent_running,
    wait_ready,
    wait_status,
)
from tests.support.tls import TestCA
from tests.support.world import World, wait_for

pytestmark = pytest.mark.timeout(180)

# An agent that takes a while and then changes a file with content unique to its attempt.
SLOW_AGENT = "sleep {s}; date +%s%N > attempt.txt"


def _work_branch(job_id: str) -> str:
    return f"repobox/{job_id[:8]}"


def _no_slots(world: World, user: str) -> bool:
    return slots_held(world.client, user) == 0


def _assert_clean_end(world: World, users: list[str], timeout_s: float = 15.0) -> None:
    """No entry pending, no user slot held (dead runners' leases expire by themselves)."""
    wait_for(lambda: pending_count(world.client) == 0, timeout_s, "no entry pending")
    for user in users:
        wait_for(partial(_no_slots, world, user), timeout_s, f"user {user}'s slots to be free")


# -- 1. kill -9 mid-job ----------------------------------------------------------------------


def test_runner_killed_mid_job_is_taken_over_and_finished_once(world: World) -> None:
    env = {"CLAIM_MIN_IDLE": "1.5", "AGENT_COMMAND": SLOW_AGENT.format(s=3)}
    fleet = start_fleet(world, ["r1", "r2"], **env)
    job_id = world.add_job(user=world.user("alice"))

    with JobHistory(world.redis_server.url, [job_id]) as history:
        owner = wait_agent_running(world, job_id)
        fleet[owner].signal(signal.SIGKILL)
        fleet[owner].wait(10)
        survivor = next(name for name in fleet if name != owner)
        wait_status(world, job_id, {"success", "failed"}, timeout_s=30)

    job = world.job(job_id)
    assert job["status"] == "success", job
    assert attempt_owner(world.client, job_id) is None  # the finished attempt let go of the job
    assert [s for s, _, _ in history.history[job_id] if s == "success"] == ["success"]
    assert history.changes_after_final(job_id) == []
    assert output_lines(world, job_id, f"taken over from runner {owner}")
    assert len(output_lines(world, job_id, f"on runner {survivor} (attempt")) == 1
    assert len(log_messages(fleet[survivor], "job success")) == 1
    assert _work_branch(job_id) in world.git.branches(world.repo_name)
    _assert_clean_end(world, [world.user("alice")])
    assert fleet[survivor].process.poll() is None


# -- 2. a long job on a live runner runs once -------------------------------------------------


def test_job_longer_than_claim_min_idle_runs_once(world: World) -> None:
    env = {"CLAIM_MIN_IDLE": "1.5", "AGENT_COMMAND": SLOW_AGENT.format(s=5)}
    fleet = start_fleet(world, ["r1", "r2"], **env)
    job_id = world.add_job(user=world.user("alice"))

    with JobHistory(world.redis_server.url, [job_id]) as history:
        wait_status(world, job_id, {"success", "failed"}, timeout_s=40)

    assert world.job(job_id)["status"] == "success"
    assert len(history.started_values(job_id)) == 1, history.history[job_id]
    seen = [s for s, _, _ in history.history[job_id]]
    assert seen.count("running") == 1 and seen[-2:] == ["running", "success"], history.history[job_id]
    assert len(output_lines(world, job_id, f"Cloning {world.repo_url} at ")) == 1
    assert len(output_lines(world, job_id, "Starting job ")) == 1
    assert not output_lines(world, job_id, "taken over")
    for runner in fleet.values():
        assert not log_messages(runner, "took over entry"), runner.log()
        # A live runner must not even believe it lost the job (nor say so to the operator).
        assert not log_messages(runner, "lost the job's lease"), runner.log()
    assert push_requests(world) == 1
    _assert_clean_end(world, [world.user("alice")])


# -- 3. a paused runner cannot overwrite the new attempt --------------------------------------


@pytest.mark.parametrize("resume", ["after_new_attempt_finished", "while_new_attempt_runs"])
def test_paused_runner_cannot_overwrite_status_or_push_after_takeover(world: World, resume: str) -> None:
    env = {"CLAIM_MIN_IDLE": "1.5", "AGENT_COMMAND": SLOW_AGENT.format(s=3)}
    fleet = start_fleet(world, ["r1", "r2"], **env)
    job_id = world.add_job(user=world.user("alice"))
    branch = _work_branch(job_id)

    owner = wait_agent_running(world, job_id)
    paused = fleet[owner]
    paused.signal(signal.SIGSTOP)
    try:
        new_owner = wait_for(
            lambda: (o := attempt_owner(world.client, job_id)) not in (None, owner) and o,
            20,
            "another runner to take the job over",
        )
        if resume == "while_new_attempt_runs":
            wait_for(
                lambda: len(output_lines(world, job_id, "Starting agent")) == 2, 20, "the new attempt's agent to start"
            )
            assert world.job(job_id)["status"] == "running"
            paused.signal(signal.SIGCONT)
        wait_status(world, job_id, {"success", "failed"}, timeout_s=30)
    finally:
        paused.signal(signal.SIGCONT)
    after_takeover = world.job(job_id)
    assert after_takeover["status"] == "success", (after_takeover, world.output_text(job_id))
    pushed_sha = world.git.branches(world.repo_name)[branch]
    committed = output_lines(world, job_id, "Committed ")
    assert len(committed) == 1, committed  # only the new attempt got as far as committing
    assert pushed_sha.startswith(committed[0].split()[1].rstrip(":"))
    pushes = push_requests(world)

    # The resumed runner's agent step has ended meanwhile; it must notice it lost the job.
    wait_for(
        lambda: log_messages(paused, "job stopped") or log_messages(paused, "result discarded"),
        20,
        "the resumed runner to give the job up",
    )
    wait_for(lambda: slots_held(world.client, world.user("alice")) == 0, 15, "the resumed runner to free its slot")
    assert world.job(job_id) == after_takeover
    assert world.git.branches(world.repo_name)[branch] == pushed_sha
    assert push_requests(world) == pushes == 1
    assert output_lines(world, job_id, f"taken over from runner {owner}")
    assert new_owner != owner
    assert not log_messages(paused, "job success"), paused.log()
    assert paused.process.poll() is None
    _assert_clean_end(world, [world.user("alice")])


# -- 4. Redis stopped for 5 s and restarted ---------------------------------------------------


@pytest.fixture
def aof_world(tmp_path: Path, git_server: GitHttpsServer, tls: TestCA) -> Iterator[World]:
    """A world on its own redis-server with AOF persistence on, as in production."""
    server = RedisServer(tmp_path / "redis-aof", appendonly=True)
    server.start()
    git_server.redirect_to = None
    w = World(tmp_path, server, git_server, tls)
    try:
        yield w
    finally:
        w.close()
        server.stop()


REDIS_DOWN_S = 5.0


# 10 s: longer than the outage, so no job may be taken over; 3 s: shorter, so live runners'
# jobs are taken over after the restart (fencing must keep that safe), and still all succeed.
@pytest.mark.parametrize("claim_min_idle", ["10", "3"])
def test_redis_restart_mid_run_loses_nothing_and_runners_survive(aof_world: World, claim_min_idle: str) -> None:
    world = aof_world
    env = {"CLAIM_MIN_IDLE": claim_min_idle, "AGENT_COMMAND": SLOW_AGENT.format(s=2), "MAX_JOBS_PER_USER": "10"}
    fleet = start_fleet(world, ["r1", "r2"], **env)
    job_ids = [world.add_job(user=world.user(f"user{i % 2}")) for i in range(6)]
    wait_for(
        lambda: sum(s == "running" for s in statuses(world.client, job_ids).values()) >= 2, 20, "jobs to be running"
    )

    with JobHistory(world.redis_server.url, job_ids) as history:
        world.redis_server.stop()
        sleep_until(time.monotonic() + REDIS_DOWN_S)
        for runner in fleet.values():
            assert runner.process.poll() is None, runner.log()
        world.redis_server.start()
        wait_for(lambda: all_final(world.client, job_ids), 90, "every job to finish after the restart")

    if float(claim_min_idle) > REDIS_DOWN_S + float(claim_min_idle) / 3:
        for job_id in job_ids:
            assert len(output_lines(world, job_id, "Starting job ")) == 1, world.output_text(job_id)
    for job_id in job_ids:
        assert history.changes_after_final(job_id) == [], history.history[job_id]
    assert statuses(world.client, job_ids) == {j: "success" for j in job_ids}
    for job_id in job_ids:
        assert world.job(job_id).get("finished_at"), job_id
        assert output_lines(world, job_id, f"pushed {_work_branch(job_id)}"), world.output_text(job_id)
    _assert_clean_end(world, [world.user("user0"), world.user("user1")])
    for name, runner in fleet.items():
        assert runner.process.poll() is None, f"{name} exited during the outage:\n{runner.log()}"
        assert log_messages(runner, "lost connection to Redis"), runner.log()
        assert log_messages(runner, "connection to Redis is back"), runner.log()
    for runner in fleet.values():
        runner.signal(signal.SIGTERM)
    for name, runner in fleet.items():
        assert runner.wait(30) == 0, f"{name}:\n{runner.log()}"


def test_a_runner_started_as_claims_aged_waits_for_live_runners_to_renew_before_taking_over(world: World) -> None:
    """As after a Redis outage (which ages every claim): a runner that starts then must not take
    over a live runner's job before that runner had the time to renew its claim."""
    env = {"CLAIM_MIN_IDLE": "3", "AGENT_COMMAND": SLOW_AGENT.format(s=8)}
    first = world.start_runner(name="r1", **env)
    wait_ready(world, ["r1"])
    job_id = world.add_job(user=world.user("alice"))
    wait_agent_running(world, job_id)
    first.signal(signal.SIGSTOP)  # r1 cannot renew for a moment, as during the outage
    try:
        (entry,) = world.client.xpending_range(STREAM, GROUP, min="-", max="+", count=10)
        world.client.xclaim(STREAM, GROUP, "r1", 0, [entry["message_id"]], idle=10_000, justid=True)
        second = world.start_runner(name="r2", **env)
        wait_ready(world, ["r2"])
        sleep_until(time.monotonic() + 1.0)  # r2 is up and ticking: without a grace it sweeps now
    finally:
        first.signal(signal.SIGCONT)
    wait_status(world, job_id, "success", 60)
    assert log_messages(second, "took over") == [], second.log()
    assert len(output_lines(world, job_id, "Starting job ")) == 1, world.output_text(job_id)


def test_job_timeout_kills_the_agent_while_redis_is_down(aof_world: World) -> None:
    world = aof_world
    sleep = f"sleep 60.{uuid.uuid4().int % 10**6:06d}"  # a command line no other process has
    runner = world.start_runner(name="r1", JOB_TIMEOUT="4", CLAIM_MIN_IDLE="60", AGENT_COMMAND=sleep)
    wait_ready(world, ["r1"])
    job_id = world.add_job(user=world.user("alice"))
    wait_agent_running(world, job_id)
    wait_for(lambda: processes_with(sleep), 10, "the agent's sleep to run")

    world.redis_server.stop()
    try:
        # Redis stays down all along: nothing but the runner's own clock can end the agent.
        wait_for(lambda: not processes_with(sleep), 4 + 5, "JOB_TIMEOUT to kill the agent while Redis is down")
        assert runner.process.poll() is None, runner.log()
    finally:
        world.redis_server.start()
    wait_status(world, job_id, "failed", 30)
    job = world.job(job_id)
    assert "timed out after 4 s" in job["error_message"], job
    assert _work_branch(job_id) not in world.git.branches(world.repo_name)


# -- 5. a poison entry goes to the dead letters ------------------------------------------------


def test_poison_entry_goes_to_dead_letters_and_pending_shows_it(world: World) -> None:
    client = world.client
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    poison = world.add_job(user=world.user("alice"))
    entry_id = client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=1)[0][1][0][0]
    for _ in range(4):  # without JUSTID every XCLAIM counts as one more delivery
        client.xclaim(STREAM, GROUP, "ghost", 0, [entry_id])
    client.xclaim(STREAM, GROUP, "ghost", 0, [entry_id], idle=3_600_000, justid=True)
    deliveries = client.xpending_range(STREAM, GROUP, min="-", max="+", count=10)[0]["times_delivered"]
    assert deliveries == 5
    healthy = world.add_job(user=world.user("bob"))

    result = world.run_burst(CLAIM_MIN_IDLE="1", MAX_DELIVERIES="3")

    assert result.returncode == 0, result.stderr
    letters = client.xrange(DEAD_LETTERS)
    assert [(f["entry_id"], f["job_id"]) for _, f in letters] == [(entry_id, poison)]
    poisoned = world.job(poison)
    assert poisoned["status"] == "failed"
    assert "MAX_DELIVERIES" in poisoned["error_message"] and poisoned.get("finished_at")
    assert not poisoned.get("started_at")
    assert world.job(healthy)["status"] == "success"
    assert pending_count(client) == 0

    shown = world.repobox("pending", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert [(d["entry_id"], d["job_id"]) for d in report["dead_letters"]] == [(entry_id, poison)]
    assert "MAX_DELIVERIES" in report["dead_letters"][0]["reason"]
    assert all(e["entry_id"] != entry_id for e in report["entries"])


# -- 6. fairness and the per-user limit -------------------------------------------------------


def test_per_user_limit_holds_fleet_wide_and_other_users_are_not_delayed(world: World) -> None:
    limit = 2
    env = {"MAX_JOBS_PER_USER": str(limit), "CLAIM_MIN_IDLE": "5", "AGENT_COMMAND": SLOW_AGENT.format(s=0.5)}
    start_fleet(world, ["r1", "r2", "r3"], **env)
    a_jobs = [str(uuid.uuid4()) for _ in range(20)]
    b_jobs = [str(uuid.uuid4()) for _ in range(2)]

    def probe(client: redis.Redis) -> tuple[int, int]:
        running = statuses(client, a_jobs)
        return slots_held(client, "A"), sum(status == "running" for status in running.values())

    began = time.monotonic()
    with Sampler(world.redis_server.url, probe) as sampler:
        for job_id in a_jobs:
            world.add_job(user=world.user("A"), job_id=job_id)
        queued_ms = {}
        for job_id in b_jobs:
            queued_ms[job_id] = int(time.time() * 1000)
            world.add_job(user=world.user("B"), job_id=job_id)
        wait_for(lambda: all_final(world.client, a_jobs + b_jobs), 60, "all 22 jobs to finish")
    elapsed_s = time.monotonic() - began

    assert statuses(world.client, a_jobs + b_jobs) == {j: "success" for j in a_jobs + b_jobs}
    assert sampler.samples, "the sampler saw nothing"
    assert max(s[0] for s in sampler.samples) <= limit, "A held more slots than its limit"
    assert max(s[1] for s in sampler.samples) <= limit, "A had more jobs running than its limit"
    assert max(s[1] for s in sampler.samples) == limit, "A never used its whole limit"
    for job_id in b_jobs:
        delay_ms = int(world.job(job_id)["started_at"]) - queued_ms[job_id]
        assert delay_ms < 3000, f"B's job started {delay_ms} ms after it was queued"
    a_finished = max(int(world.job(j)["finished_at"]) for j in a_jobs)
    for job_id in b_jobs:  # B did not wait for A's queue to drain
        assert int(world.job(job_id)["finished_at"]) < a_finished
    assert elapsed_s < 60
    _assert_clean_end(world, ["A", "B"])


# -- 7. cancellation and shutdown signals ------------------------------------------------------


def test_job_cancelled_while_queued_is_never_started(world: World) -> None:
    cancelled = world.add_job(user=world.user("alice"))
    world.client.hset(f"job:{cancelled}", "status", "cancelled")
    other = world.add_job(user=world.user("alice"))

    result = world.run_burst()

    assert result.returncode == 0, result.stderr
    job = world.job(cancelled)
    assert job["status"] == "cancelled"
    assert not job.get("started_at")
    assert not output_lines(world, cancelled, "Starting job ")
    assert _work_branch(cancelled) not in world.git.branches(world.repo_name)
    assert world.job(other)["status"] == "success"
    assert pending_count(world.client) == 0  # its entry was acknowledged
    assert slots_held(world.client, world.user("alice")) == 0


def test_entries_taken_over_while_every_worker_is_busy_are_settled_at_once_when_final(world: World) -> None:
    """A dead runner's entries of cancelled jobs, taken over while this runner's only worker is
    busy, are acknowledged at the takeover: not held waiting for a worker to read them."""
    sleep = f"sleep 30.{uuid.uuid4().int % 10**6:06d}"
    runner = world.start_runner(name="r1", MAX_CONCURRENT_JOBS="1", CLAIM_MIN_IDLE="2", AGENT_COMMAND=sleep)
    wait_ready(world, ["r1"])
    busy = world.add_job(user=world.user("alice"))
    wait_agent_running(world, busy)
    cancelled, ghost_entries = [], set()
    for _ in range(3):
        job_id = world.add_job(user=world.user("bob"), enqueue=False)
        world.client.hset(f"job:{job_id}", "status", "cancelled")
        fields = {k: world.job(job_id)[k] for k in ("user_id", "provider_id", "repo_url", "prompt", "environment")}
        world.client.xadd(STREAM, {"job_id": job_id, **fields})
        ghost_entries.add(world.client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=1)[0][1][0][0])
        cancelled.append(job_id)

    wait_for(lambda: pending_count(world.client) == 1, 20, "the ghost's entries to be taken over and acknowledged")
    assert world.job(busy)["status"] == "running", "the ghost's entries waited for the busy worker"
    still = {p["message_id"] for p in world.client.xpending_range(STREAM, GROUP, min="-", max="+", count=10)}
    assert not still & ghost_entries
    assert all(world.job(j)["status"] == "cancelled" and not world.job(j).get("started_at") for j in cancelled)
    world.client.hset(f"job:{busy}", "status", "cancelled")
    _assert_clean_end(world, [world.user("alice"), world.user("bob")])
    runner.stop()


CANCEL_DEADLINE_S = 2.0


def test_running_job_cancelled_by_web_app_is_killed_within_two_seconds(world: World) -> None:
    sleep = f"sleep 30.{uuid.uuid4().int % 10**6:06d}"  # a command line no other process has
    runner = world.start_runner(name="r1", AGENT_COMMAND=f"{sleep}; echo late > late.txt")
    wait_ready(world, ["r1"])
    job_id = world.add_job(user=world.user("alice"))
    wait_agent_running(world, job_id)
    wait_for(lambda: processes_with(sleep), 10, "the agent's sleep to run")
    assert world.job(job_id)["status"] == "running"

    world.client.hset(f"job:{job_id}", "status", "cancelled")
    cancelled_at = time.monotonic()
    wait_for(lambda: not processes_with(sleep), CANCEL_DEADLINE_S + 1, "the agent's processes to die")
    killed_after_s = time.monotonic() - cancelled_at
    assert killed_after_s <= CANCEL_DEADLINE_S, f"agent still alive {killed_after_s:.1f} s after cancel"
    wait_for(lambda: world.job(job_id).get("finished_at"), 10, "finished_at to be set")
    wait_for(lambda: log_messages(runner, "job cancelled after"), 10, "the runner to log the cancel")

    job = world.job(job_id)
    assert job["status"] == "cancelled"
    assert _work_branch(job_id) not in world.git.branches(world.repo_name)
    assert push_requests(world) == 0
    assert not output_lines(world, job_id, "Agent completed")
    _assert_clean_end(world, [world.user("alice")])
    assert runner.process.poll() is None


def test_first_signal_finishes_the_running_job_and_exits_zero(world: World) -> None:
    runner = world.start_runner(name="r1", AGENT_COMMAND=SLOW_AGENT.format(s=2))
    wait_ready(world, ["r1"])
    job_id = world.add_job(user=world.user("alice"))
    wait_agent_running(world, job_id)

    runner.signal(signal.SIGTERM)

    assert runner.wait(30) == 0, runner.log()
    assert world.job(job_id)["status"] == "success"
    assert _work_branch(job_id) in world.git.branches(world.repo_name)
    assert log_messages(runner, "runner r1 stopped"), runner.log()
    _assert_clean_end(world, [world.user("alice")])


SECOND_SIGNAL_EXIT_S = 3.0


def test_second_signal_stops_at_once_and_leaves_the_job_for_takeover(world: World) -> None:
    env = {"CLAIM_MIN_IDLE": "1.5"}
    first = world.start_runner(name="r1", AGENT_COMMAND=SLOW_AGENT.format(s=20), **env)
    wait_ready(world, ["r1"])
    job_id = world.add_job(user=world.user("alice"))
    wait_agent_running(world, job_id)

    first.signal(signal.SIGTERM)
    wait_for(lambda: log_messages(first, "waiting for 1 running job"), 10, "the runner to wait for its job")
    assert first.process.poll() is None
    assert world.job(job_id)["status"] == "running"

    first.signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    code = first.wait(10)
    assert time.monotonic() - signalled_at < SECOND_SIGNAL_EXIT_S
    assert code != 0
    assert world.job(job_id)["status"] == "running"  # nothing final written: left for takeover
    assert pending_count(world.client) == 1

    second = world.start_runner(name="r2", AGENT_COMMAND=SLOW_AGENT.format(s=0), **env)
    wait_status(world, job_id, {"success", "failed"}, timeout_s=30)
    assert world.job(job_id)["status"] == "success", world.output_text(job_id)
    assert output_lines(world, job_id, "taken over from runner r1")
    assert log_messages(second, "job success")
    _assert_clean_end(world, [world.user("alice")])


# The agent prints a first line, waits for the test's go, prints a last line, waits until the
# runner has read it from the pipe (nothing left in it: FIONREAD on its own end) and says so (a file).
LAST_LINE_SOURCE = """
import fcntl, os, struct, sys, termios, time
print("first-line", flush=True)
while not os.path.exists("go"):
    time.sleep(0.01)
print("last-line-before-the-stop", flush=True)
while struct.unpack("i", fcntl.ioctl(1, termios.FIONREAD, bytes(4)))[0]:
    time.sleep(0.001)
open("printed", "w").close()
time.sleep(20)
"""
LAST_LINE_AGENT = shlex.join([sys.executable, "-c", LAST_LINE_SOURCE])


def test_second_signal_still_writes_the_output_lines_waiting_in_their_batch(world: World) -> None:
    runner = world.start_runner(name="r1", AGENT_COMMAND=LAST_LINE_AGENT)
    wait_ready(world, ["r1"])
    job_id = world.add_job(user=world.user("alice"))
    wait_for(lambda: "first-line" in world.output_text(job_id), 30, "the agent's first line")
    runner.signal(signal.SIGTERM)
    wait_for(lambda: log_messages(runner, "waiting for 1 running job"), 10, "the runner to wait for its job")
    repo = next((world.temp_dir / job_id).glob("*/repo"))

    (repo / "go").touch()
    wait_for(lambda: (repo / "printed").exists(), 10, "the agent's last line", interval_s=0.002)
    runner.signal(signal.SIGTERM)  # within the line's 50 ms batch: only the stop can still send it

    assert runner.wait(10) != 0
    assert "last-line-before-the-stop" in world.output_text(job_id)
    assert world.job(job_id)["status"] == "running"  # left for takeover, as any second signal leaves it


# -- 8. soak ------------------------------------------------------------------------------------

SOAK_JOBS = int(os.environ.get("REPOBOX_SOAK_JOBS", "160"))  # 10-20 s on 2 cores; more with REPOBOX_SOAK_JOBS
SOAK_USERS = 6
SOAK_KILL_EVERY_S = 2.5
SOAK_DEADLINE_S = 200.0


@pytest.mark.slow
@pytest.mark.timeout(260)
def test_soak_with_a_runner_killed_and_restarted_every_few_seconds(world: World) -> None:
    # A runner is killed every 2.5 s by the test, not by its jobs: a job can, by chance, be running
    # on the victim at five kills in a row, which MAX_DELIVERIES=5 would rightly call poison.
    # Raise it so the soak measures loss and duplication, not this chance (poison has its own test).
    env = {"CLAIM_MIN_IDLE": "2", "MAX_JOBS_PER_USER": "4", "MAX_DELIVERIES": "25"}
    users = [world.user(f"soak{u}") for u in range(SOAK_USERS)]
    start_fleet(world, ["steady1", "steady2"], **env)
    victim = world.start_runner(name="victim0", **env)
    job_ids = [
        world.add_job(user=users[i % SOAK_USERS], job_id=f"{i:08x}-{uuid.uuid4().hex[:12]}") for i in range(SOAK_JOBS)
    ]

    began = time.monotonic()
    kills = 0
    with JobHistory(world.redis_server.url, job_ids, interval_s=0.25) as history:
        while not all_final(world.client, job_ids):
            assert time.monotonic() - began < SOAK_DEADLINE_S, (
                f"soak not done after {SOAK_DEADLINE_S} s: "
                f"{sum(s == 'success' for s in statuses(world.client, job_ids).values())} done"
            )
            sleep_until(time.monotonic() + SOAK_KILL_EVERY_S)
            if all_final(world.client, job_ids):
                break
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            victim = world.start_runner(name=f"victim{kills}", **env)

    final = statuses(world.client, job_ids)
    assert kills >= 2, "the soak ended before a runner was killed twice"
    finals_logged: Counter[str] = Counter()
    for runner in world.runners:
        for record in runner.log_records():
            if str(record.get("msg", "")).startswith(("job success", "job failed", "job cancelled")):
                finals_logged[str(record.get("job_id"))] += 1
    assert [j for j, n in finals_logged.items() if n > 1] == [], "a job was finished by two attempts"
    assert [j for j, s in final.items() if s != "success"] == []
    assert world.client.xlen("runner:dead_letters") == 0
    for job_id in job_ids:
        job = world.job(job_id)
        assert job.get("started_at") and job.get("finished_at"), job
        assert history.changes_after_final(job_id) == [], (job_id, history.history[job_id])
    _assert_clean_end(world, users)
