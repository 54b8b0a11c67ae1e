"""The runner keeps its own secrets out of reach (key file, a scrubbed environment block), refuses a
key that is not the web app's, and shows a dead runner as dead within seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.support.reliability_helpers import wait_agent_running, wait_status
from tests.support.world import World, wait_for

OTHER_KEY = "7c" * 32
SLOW_AGENT = "sleep 30"


def _one_line_exit_2(result: subprocess.CompletedProcess[str]) -> str:
    stderr = result.stderr
    assert result.returncode == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr


def test_run_reads_the_key_from_a_private_key_file(world: World) -> None:
    key_file = world.secrets_dir / "key"
    key_file.write_text(world.key + "\n")
    key_file.chmod(0o600)
    job_id = world.add_job()

    result = world.run_burst(ENCRYPTION_KEY="", ENCRYPTION_KEY_FILE=str(key_file))

    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success"


def test_a_key_file_others_can_read_is_refused(world: World) -> None:
    key_file = world.secrets_dir / "key"
    key_file.write_text(world.key)
    key_file.chmod(0o644)

    stderr = _one_line_exit_2(world.run_burst(ENCRYPTION_KEY="", ENCRYPTION_KEY_FILE=str(key_file)))

    assert "chmod 600" in stderr and world.key not in stderr


def test_key_and_key_file_together_are_refused(world: World) -> None:
    key_file = world.secrets_dir / "key"
    key_file.write_text(world.key)
    key_file.chmod(0o600)

    stderr = _one_line_exit_2(world.run_burst(ENCRYPTION_KEY_FILE=str(key_file)))

    assert "not both" in stderr


def test_runner_environment_block_holds_no_key_and_no_redis_url(world: World) -> None:
    job_id = world.add_job()
    redis_url = world.redis_server.url + "/0"
    runner = world.start_runner(AGENT_COMMAND=SLOW_AGENT, REDIS_URL=redis_url)
    wait_agent_running(world, job_id)

    environ = Path(f"/proc/{runner.pid}/environ").read_bytes()

    assert world.key.encode() not in environ
    assert redis_url.encode() not in environ and b"redis://" not in environ
    assert b"ENCRYPTION_KEY=****" in environ  # the variable's name stays; its value is gone


def test_a_key_that_decrypts_no_stored_token_stops_the_runner_at_start(world: World) -> None:
    job_id = world.add_job()

    stderr = _one_line_exit_2(world.run_burst(ENCRYPTION_KEY=OTHER_KEY))

    assert "ENCRYPTION_KEY decrypts none" in stderr
    assert world.job(job_id)["status"] == "pending", "a wrong key must not fail the queue's jobs"


def test_a_runner_starts_with_any_key_when_no_token_is_stored(world: World) -> None:
    result = world.run_burst(ENCRYPTION_KEY=OTHER_KEY)

    assert result.returncode == 0, result.stderr


def test_one_undecryptable_token_among_good_ones_fails_only_its_job(world: World) -> None:
    odd_user = world.user("odd")
    world.add_provider(odd_user)
    world.client.hset(f"git_provider:{odd_user}:{world.provider_id}", "token", "AAAA:BBBB:CCCC")
    bad = world.add_job(user=odd_user)
    good = world.add_job()

    result = world.run_burst()

    assert result.returncode == 0, result.stderr
    assert world.job(good)["status"] == "success"
    assert world.job(bad)["status"] == "failed" and "decrypt" in world.job(bad)["error_message"]


def _consumer(world: World, name: str) -> dict[str, object]:
    result = world.repobox("pending", "--json")
    assert result.returncode == 0, result.stderr
    found = [c for c in json.loads(result.stdout)["consumers"] if c["name"] == name]
    assert found, result.stdout
    return dict(found[0])


def test_pending_shows_a_live_runner_with_host_pid_jobs_and_heartbeat_age(world: World) -> None:
    job_id = world.add_job()
    runner = world.start_runner(AGENT_COMMAND=SLOW_AGENT, name="r-live")
    wait_agent_running(world, job_id)

    info = wait_for(lambda: (c := _consumer(world, "r-live")) and c["running"] == 1 and c, 10, "a heartbeat")

    assert info["alive"] is True and info["pid"] == runner.pid and info["host"]
    assert isinstance(info["heartbeat_age_ms"], int) and 0 <= info["heartbeat_age_ms"] < 5000
    table = world.repobox("pending", COLUMNS="200").stdout
    assert "r-live" in table and str(runner.pid) in table and "1 running" in table


def test_a_killed_runner_shows_as_gone_within_ten_seconds(world: World) -> None:
    job_id = world.add_job()
    runner = world.start_runner(AGENT_COMMAND=SLOW_AGENT, name="r-dead")
    wait_agent_running(world, job_id)

    runner.signal(signal.SIGKILL)

    wait_for(
        lambda: _consumer(world, "r-dead")["alive"] is False, 10, "the dead runner to show as gone", interval_s=0.5
    )


def test_claim_by_runner_name_hands_back_its_entries_at_once(world: World) -> None:
    job_id = world.add_job()
    first = world.start_runner(AGENT_COMMAND=SLOW_AGENT, name="r-first")
    wait_agent_running(world, job_id)
    first.signal(signal.SIGKILL)
    first.wait()

    result = world.repobox("pending", "--claim", "--runner", "r-first", "--json")

    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["claimed"]) == 1
    world.start_runner(AGENT_COMMAND="echo again >> README.md", name="r-second")
    wait_status(world, job_id, "success")


def test_runner_option_without_claim_is_a_usage_error(world: World) -> None:
    _one_line_exit_2(world.repobox("pending", "--runner", "x"))


def test_agent_env_cannot_pass_the_key_file_name(world: World) -> None:
    stderr = _one_line_exit_2(world.run_burst(AGENT_ENV="ENCRYPTION_KEY_FILE"))
    assert "AGENT_ENV" in stderr and os.sep not in stderr.split("AGENT_ENV", 1)[0]
