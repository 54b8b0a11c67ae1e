"""Production Redis: TLS, the minimal ACL user, Sentinel failover (a killed and a paused primary),
and the start-up refusals (cluster mode, a Redis older than the minimum).

Real redis-server / Sentinel processes and real runner processes; every wait has a deadline.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from repobox_cli.redis_conn import MIN_REDIS_VERSION, server_problem
from tests.support.git_server import GitHttpsServer
from tests.support.prod_redis import (
    RUNNER_ACL_RULES,
    RUNNER_USER,
    AclRedisServer,
    ClusterNode,
    OldRedisStandIn,
    SentinelBackedServer,
    SentinelGroup,
    TlsRedisServer,
    UnixRedisServer,
    elapsed_s,
)
from tests.support.redis_server import RedisServer
from tests.support.reliability_helpers import (
    DEAD_LETTERS,
    FINAL,
    GROUP,
    STREAM,
    JobHistory,
    log_messages,
    output_lines,
    pending_count,
    push_requests,
    start_fleet,
    wait_agent_running,
)
from tests.support.tls import TestCA, make_test_ca
from tests.support.webapp_sessions import create_session, push, send_prompt, wait_job, wait_session
from tests.support.world import REPO_FILES, World, wait_for

pytestmark = pytest.mark.timeout(120)

FAIL_FAST_S = 5.0
PAUSE_S = 5  # DEBUG SLEEP: well past the Sentinels' down-after-milliseconds (1 s)
SLOW_AGENT = "sleep {s}; date +%s%N > attempt.txt"
README = Path(__file__).resolve().parents[2] / "README.md"


def _one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls_world(tmp_path: Path, git_server: GitHttpsServer, tls: TestCA) -> Iterator[tuple[World, TlsRedisServer]]:
    git_server.redirect_to = None
    with TlsRedisServer(tmp_path / "redis", tls) as server:
        world = World(tmp_path, server, git_server, tls)
        yield world, server
        world.close()


def test_runner_over_tls_with_a_client_certificate_runs_a_job_and_logs_no_tls_keys(
    tls_world: tuple[World, TlsRedisServer],
) -> None:
    """SSLKEYLOGFILE, which Python's TLS would honour, is not: the keys would open a capture of
    the Redis password and of every job's record."""
    world, server = tls_world
    job_id = world.add_job()
    keylog = world.tmp / "tls-keys.log"

    result = world.run_burst(**server.runner_env(), SSLKEYLOGFILE=str(keylog))

    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success"
    assert f"repobox/{job_id[:8]}" in world.git.branches(world.repo_name)
    assert not keylog.exists() or keylog.read_text() == ""


def test_a_runner_over_a_unix_socket_runs_a_job(tmp_path: Path, git_server: GitHttpsServer, tls: TestCA) -> None:
    git_server.redirect_to = None
    with UnixRedisServer(tmp_path / "redis") as server:
        world = World(tmp_path, server, git_server, tls)
        try:
            job_id = world.add_job()

            result = world.run_burst(REDIS_URL=server.unix_url)

            assert result.returncode == 0, result.stderr
            assert world.job(job_id)["status"] == "success"
            pending = world.repobox("pending", REDIS_URL=server.unix_url)
            assert pending.returncode == 0 and "internal error" not in pending.stderr, pending.stderr
        finally:
            world.close()


def test_tls_with_a_wrong_ca_fails_fast_with_one_line(tls_world: tuple[World, TlsRedisServer], tmp_path: Path) -> None:
    world, server = tls_world
    other = make_test_ca(tmp_path / "other-ca")
    start = time.monotonic()

    result = world.run_burst(**{**server.runner_env(), "REDIS_CA_FILE": str(other.ca_file)})

    assert elapsed_s(start) < FAIL_FAST_S
    line = _one_line_failure(result)
    assert "cannot reach Redis" in line and "certificate" in line.lower()


def test_plain_redis_url_against_the_tls_port_fails_fast_with_one_line(tls_world: tuple[World, TlsRedisServer]) -> None:
    world, server = tls_world
    start = time.monotonic()

    result = world.run_burst(REDIS_URL=server.plain_url)

    assert elapsed_s(start) < FAIL_FAST_S
    assert "cannot reach Redis" in _one_line_failure(result)


def test_tls_files_without_a_rediss_url_are_refused(world: World) -> None:
    result = world.run_burst(REDIS_CA_FILE=str(world.tls.ca_file))
    assert _one_line_failure(result).endswith("need a rediss:// REDIS_URL")
    assert result.returncode == 2


# -- the minimal ACL user ------------------------------------------------------------------------


@pytest.fixture
def acl_world(tmp_path: Path, git_server: GitHttpsServer, tls: TestCA) -> Iterator[tuple[World, AclRedisServer]]:
    git_server.redirect_to = None
    with AclRedisServer(tmp_path / "redis") as server:
        world = World(tmp_path, server, git_server, tls)
        yield world, server
        world.close()


def test_readme_lists_the_acl_rules_the_suite_runs_the_runner_under() -> None:
    assert RUNNER_ACL_RULES in README.read_text()


def test_default_user_is_refused_on_the_acl_server(acl_world: tuple[World, AclRedisServer]) -> None:
    world, server = acl_world
    result = world.run_burst(REDIS_URL=f"redis://127.0.0.1:{server.port}")
    assert "Redis" in _one_line_failure(result)


def test_runner_under_the_minimal_acl_user_runs_a_job_and_its_password_stays_secret(
    acl_world: tuple[World, AclRedisServer],
) -> None:
    world, server = acl_world
    job_id = world.add_job()

    result = world.run_burst(**server.runner_env())

    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success", world.job(job_id)
    assert server.denied() == []
    assert server.runner_password not in result.stdout + result.stderr + world.output_text(job_id)


def test_a_work_session_under_the_minimal_acl_user_inits_prompts_and_pushes(
    acl_world: tuple[World, AclRedisServer],
) -> None:
    world, server = acl_world
    name = f"acme/{world.repo_name}"
    world.git.create_repo(name, REPO_FILES)
    world.start_runner(**server.runner_env())
    sid = create_session(world, f"{world.git.base_url}/{name}", name)
    wait_session(world, sid, "ready", timeout_s=15)

    job = wait_job(world, send_prompt(world, sid, "Add a note"))
    wait_session(world, sid, "ready")
    push(world, sid)
    pushed = wait_session(world, sid, "pushed")

    assert job["status"] == "success" and pushed["mr_warning"]  # no API here: a warning, still pushed
    assert server.denied() == []


def test_takeover_of_a_killed_runner_under_the_minimal_acl_user(acl_world: tuple[World, AclRedisServer]) -> None:
    world, server = acl_world
    env = {**server.runner_env(), "CLAIM_MIN_IDLE": "1.5", "AGENT_COMMAND": SLOW_AGENT.format(s=3)}
    fleet = start_fleet(world, ["r1", "r2"], **env)
    job_id = world.add_job(user=world.user("alice"))

    owner = wait_agent_running(world, job_id)
    fleet[owner].signal(signal.SIGKILL)
    fleet[owner].wait(10)
    wait_for(lambda: world.job(job_id).get("status") in FINAL, 30, "the job to finish after the takeover")

    assert world.job(job_id)["status"] == "success"
    assert output_lines(world, job_id, f"taken over from runner {owner}")
    wait_for(lambda: pending_count(world.client) == 0, 15, "no entry pending")
    assert server.denied() == []


def test_a_runner_whose_acl_refuses_client_id_warns_once_and_still_stops_on_sigterm(
    acl_world: tuple[World, AclRedisServer],
) -> None:
    world, server = acl_world
    server.client().execute_command("ACL", "SETUSER", RUNNER_USER, "-client|id", "-client|unblock")
    runner = world.start_runner(**server.runner_env())
    # its first read asks CLIENT ID; the heartbeat comes before that read, so wait for the warning
    wait_for(lambda: "Redis refused CLIENT ID" in runner.log_path.read_text(), 20, "the runner's first read")
    runner.signal(signal.SIGTERM)

    assert runner.wait() == 0
    log = runner.log_path.read_text()
    assert log.count("Redis refused CLIENT ID") == 1 and "Traceback" not in log
    assert {entry["object"] for entry in server.denied()} == {"client|id"}


def test_dead_letter_under_the_minimal_acl_user(acl_world: tuple[World, AclRedisServer]) -> None:
    world, server = acl_world
    client = world.client
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    poison = world.add_job(user=world.user("alice"))
    entry_id = client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=1)[0][1][0][0]
    for _ in range(4):  # without JUSTID every XCLAIM counts as one more delivery
        client.xclaim(STREAM, GROUP, "ghost", 0, [entry_id])
    client.xclaim(STREAM, GROUP, "ghost", 0, [entry_id], idle=3_600_000, justid=True)

    result = world.run_burst(**server.runner_env(), CLAIM_MIN_IDLE="1", MAX_DELIVERIES="3")

    assert result.returncode == 0, result.stderr
    assert [f["job_id"] for _, f in client.xrange(DEAD_LETTERS)] == [poison]
    assert world.job(poison)["status"] == "failed"
    assert server.denied() == []


# -- Sentinel failover ---------------------------------------------------------------------------


@pytest.fixture
def sentinel_world(tmp_path: Path, git_server: GitHttpsServer, tls: TestCA) -> Iterator[tuple[World, SentinelGroup]]:
    git_server.redirect_to = None
    with SentinelGroup(tmp_path / "redis") as group:
        world = World(tmp_path, cast(RedisServer, SentinelBackedServer(group)), git_server, tls)
        yield world, group
        world.close()


def _history(world: World, group: SentinelGroup, job_ids: list[str]) -> JobHistory:
    history = JobHistory(world.redis_server.url, job_ids)
    history.client.close()
    history.client = group.client()  # follows the failover
    return history


def _failover_scenario(world: World, group: SentinelGroup, fail_primary: Any, *, exact_pushes: bool = True) -> None:
    env = {
        **group.runner_env(),
        "CLAIM_MIN_IDLE": "5",
        "MAX_JOBS_PER_USER": "3",
        "AGENT_COMMAND": SLOW_AGENT.format(s=2),
    }
    fleet = start_fleet(world, ["r1", "r2"], **env)
    users = [world.user("alice"), world.user("bob")]
    jobs = [world.add_job(user=users[i % 2]) for i in range(8)]  # 6 can run at once: 2 queued
    old_port = group.primary.port

    with _history(world, group, jobs) as history:
        wait_agent_running(world, jobs[0])
        fail_primary()
        group.wait_failover(old_port)
        # Jobs whose lease lapsed during the failover (5 s: CLAIM_MIN_IDLE) are stopped by their
        # runner's watchdog and taken over after the post-outage grace: a few rounds of that.
        wait_for(lambda: _all_final(world, jobs), 75, "every job to be final")

    client = world.client
    for job_id in jobs:
        assert world.job(job_id)["status"] == "success", world.job(job_id)
        assert [s for s, _, _ in history.history[job_id] if s in FINAL] == ["success"], history.history[job_id]
        assert history.changes_after_final(job_id) == []
    pushes = push_requests(world)
    if exact_pushes:
        assert pushes == len(jobs)  # none ran twice: a second run would push again
    else:
        # A paused primary wakes up still believing it is the primary for a moment: an attempt
        # whose lease check it answers may push once more (the same branch, force-with-lease) while
        # its job's final status is written exactly once, on the new primary (asserted above).
        # README, "Production Redis": min-replicas-to-write closes that window.
        assert len(jobs) <= pushes <= len(jobs) + 2
    wait_for(lambda: pending_count(client) == 0, 20, "no entry pending")
    wait_for(lambda: all(client.zcard(k) == 0 for k in client.scan_iter("runner:slots:*")), 20, "no slot held")
    for name, runner in fleet.items():
        assert runner.process.poll() is None, f"{name} exited:\n{runner.log()}"
    new_port = group.primary_port()
    assert new_port != old_port
    followed = [log_messages(r, "following a new Redis primary") for r in fleet.values()]
    assert all(any(f":{new_port}" in str(m["msg"]) for m in found) for found in followed), followed
    assert int(client.xlen(STREAM)) >= 0 and client.script_exists(*_script_shas(world)) == [True] * 2


def _all_final(world: World, jobs: list[str]) -> bool:
    try:
        return all(world.job(j).get("status") in FINAL for j in jobs)
    except (redis.RedisError, OSError):
        return False  # the test's own client meets the failover too: ask again


def _script_shas(world: World) -> list[str]:
    """The begin and finish scripts, as the runners registered them (EVALSHA reloaded them on the new primary)."""
    from repobox_cli.leases import Leases

    leases = Leases(world.client)
    return [leases._begin.sha, leases._finish.sha]


@pytest.mark.timeout(150)
def test_primary_killed_mid_run_fails_over_and_every_job_ends_once(sentinel_world: tuple[World, SentinelGroup]) -> None:
    world, group = sentinel_world
    _failover_scenario(world, group, group.primary.kill)


@pytest.mark.timeout(150)
def test_primary_paused_like_a_partition_fails_over_and_every_job_ends_once(
    sentinel_world: tuple[World, SentinelGroup],
) -> None:
    world, group = sentinel_world
    pauses: list[subprocess.Popen[bytes]] = []

    def pause() -> None:  # the primary answers nobody for a while, then wakes up still a primary
        pauses.append(
            subprocess.Popen(
                ["redis-cli", "-p", str(group.primary.port), "DEBUG", "SLEEP", str(PAUSE_S)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    try:
        _failover_scenario(world, group, pause, exact_pushes=False)
    finally:
        for process in pauses:
            process.wait(timeout=PAUSE_S + 10)


# -- start-up refusals ---------------------------------------------------------------------------


def test_cluster_mode_server_is_refused_with_one_line(world: World, tmp_path: Path) -> None:
    with ClusterNode(tmp_path / "cluster") as server:
        result = world.run_burst(REDIS_URL=server.url)
    line = _one_line_failure(result)
    assert "Redis Cluster" in line and "not supported" in line
    assert result.returncode == 2


def test_redis_older_than_the_minimum_is_refused_with_one_line(world: World) -> None:
    with OldRedisStandIn("6.0.0") as old:
        for command in (("run", "--burst"), ("exec", "00000000-0000-4000-8000-000000000000")):
            result = world.repobox(*command, REDIS_URL=old.url)
            line = _one_line_failure(result)
            assert "6.0.0" in line and "6.2.0 or later" in line, line


def test_the_version_check_accepts_the_minimum_and_later() -> None:
    ok = {"cluster_enabled": 0}
    assert MIN_REDIS_VERSION == (6, 2, 0)
    assert server_problem({"redis_version": "6.2.0"}, ok) is None
    assert server_problem({"redis_version": "7.2.4"}, ok) is None  # Valkey reports 7.2.4 here too
    assert server_problem({"redis_version": "6.0.16"}, ok) is not None
    assert server_problem({"redis_version": "garbage"}, ok) is not None


def test_pending_checks_only_that_the_server_is_reachable(world: World) -> None:
    with OldRedisStandIn("6.0.0") as old:
        reachable = world.repobox("decrypt", "--user", "github:1", "--provider", str(old.port), REDIS_URL=old.url)
    start = time.monotonic()
    unreachable = world.repobox("pending", "--json", REDIS_URL="redis://127.0.0.1:1")

    assert "6.2.0" not in reachable.stderr  # no version check: it got as far as reading the token
    assert elapsed_s(start) < FAIL_FAST_S
    assert "cannot reach Redis" in _one_line_failure(unreachable)
