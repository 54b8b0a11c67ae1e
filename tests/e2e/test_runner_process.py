"""`repobox run` becomes the runner's engine process: the same pid, with the options it was given,
no option on its command line, and the options' copy in its environment wiped once read."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from repobox_cli.engine import MODULE, OPTIONS_ENV
from tests.support.world import World, wait_for

START_DEADLINE_S = 20.0
JOB_DEADLINE_S = 60.0


def proc_text(pid: int, name: str) -> list[str]:
    return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace").split("\0")


def test_run_becomes_the_engine_in_the_same_process_with_the_options_it_was_given(world: World) -> None:
    runner_id = f"opt-{uuid.uuid4().hex[:8]}"
    runner = world.start_runner("--runner-id", runner_id, "--redis-url", world.redis_server.url, name="env-runner")
    wait_for(lambda: "started:" in runner.log(), START_DEADLINE_S, "the runner to start")

    cmdline = proc_text(runner.pid, "cmdline")
    assert cmdline[1:3] == ["-m", MODULE]
    assert world.redis_server.url not in " ".join(cmdline) and runner_id not in " ".join(cmdline)
    assert world.client.exists(f"runner:heartbeat:{runner_id}")
    job_id = world.add_job()
    job = wait_for(lambda: world.job(job_id).get("status") == "success" and world.job(job_id), JOB_DEADLINE_S, "job")
    assert job["status"] == "success"
    options = [entry for entry in proc_text(runner.pid, "environ") if entry.startswith(f"{OPTIONS_ENV}=")]
    assert len(options) == 1
    value = options[0].split("=", 1)[1]
    assert value and set(value) == {"*"}, "the options' copy in the environment is wiped once read"


def test_the_engine_started_by_hand_refuses_in_one_line(world: World) -> None:
    done = subprocess.run(
        [sys.executable, "-m", MODULE, "--concurrency", "3"],
        env=world.env(),
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_S,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"repobox: {MODULE} is started by `repobox run`, not by hand"]


def test_an_engine_given_options_that_are_not_json_refuses_in_one_line(world: World) -> None:
    done = subprocess.run(
        [sys.executable, "-m", MODULE],
        env=world.env(**{OPTIONS_ENV: "--concurrency=3"}),
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_S,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"repobox: {OPTIONS_ENV} is not what `repobox run` writes: start the runner with `repobox run`"
    ]
