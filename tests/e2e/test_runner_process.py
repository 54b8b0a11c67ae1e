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
    assert cmdline[1:4] == ["-P", "-m", MODULE]
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


def test_path_options_reach_the_engine(world: World) -> None:
    temp_dir = world.temp_dir / "given-temp"
    runner = world.start_runner("--temp-dir", str(temp_dir), name="paths")
    wait_for(lambda: "started:" in runner.log() or runner.process.poll() is not None, START_DEADLINE_S, "start")
    assert runner.process.poll() is None, runner.log()[-2000:]
    job_id = world.add_job()
    wait_for(lambda: world.job(job_id).get("status") == "success", JOB_DEADLINE_S, "the job to succeed")
    assert (temp_dir / "cache").is_dir()  # CACHE_DIR's default follows the TEMP_DIR given


def test_modules_in_the_directory_run_is_started_from_are_never_imported(world: World, tmp_path: Path) -> None:
    """A `json.py` or `repobox_cli/` where an operator happens to start the runner."""
    script = Path(sys.executable).parent / "repobox"
    assert script.exists(), f"the repobox script is installed beside {sys.executable}"
    here = tmp_path / "shared"
    (here / "repobox_cli").mkdir(parents=True)
    marker = tmp_path / "imported"
    planted = f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n"
    for name in ("json.py", "redis.py", "repobox_cli/__init__.py", "repobox_cli/engine.py"):
        (here / name).write_text(planted)

    done = subprocess.run(
        [str(script), "run", "--burst"], env=world.env(), cwd=here, capture_output=True, text=True, timeout=60
    )

    assert not marker.exists()
    assert done.returncode == 0, done.stderr[-2000:]
