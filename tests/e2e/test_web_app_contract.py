"""Jobs written with the ids the web app really makes run, and their output reads well in the web
app's terminal and chat views (SPEC §1: stderr is painted red, `source: "runner"` is internal,
step lines start with their verb, error lines with `Error:`)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from tests.support.world import World

RUNNER_STEP_RE = re.compile(r"^[A-Z][a-z]+\b")
GIT_LINE_RE = re.compile(r"^(remote: |To |Done$|[A-Z][a-z]+ objects: |[=*+!-]\s|\s)")
ENV_AGENT = 'printf "env=%s\\n" "$REPOBOX_ENVIRONMENT" && echo changed >> README.md'


def runner_lines(world: World, job_id: str) -> list[dict[str, object]]:
    return [o for o in world.output(job_id) if o["source"] == "runner"]


def test_job_with_github_user_and_uuid_provider_runs_to_success_in_a_burst(world: World) -> None:
    user = world.user("octocat")
    assert re.fullmatch(r"github:\d{8}", user)
    job_id = world.add_job(user=user)
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id) and uuid.UUID(world.provider_id).version == 4

    result = world.run_burst()

    assert result.returncode == 0, result.stderr
    job = world.job(job_id)
    assert job["status"] == "success", job
    assert world.client.zcard(f"runner:slots:{user}") == 0


def test_job_with_google_user_runs_through_exec(world: World) -> None:
    user = world.user("g", auth="google")
    assert re.fullmatch(r"google:\d{21}", user)
    job_id = world.add_job(user=user, enqueue=False)

    result = world.repobox("exec", job_id)

    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success"


@pytest.mark.parametrize(
    "user",
    [
        "google:109876543210987654321",
        "github:12345678:extra",  # a ':' in the middle of the account part
        "gitlab:Jürgen-Müller",  # unicode account names are legal key parts
        "github:" + "9" * 240,  # long, still under the 256-character bound
    ],
)
def test_odd_but_legal_user_ids_run(world: World, user: str) -> None:
    job_id = world.add_job(user=user)

    result = world.run_burst()

    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success", world.job(job_id)


def test_decrypt_reads_a_stored_token_by_web_app_ids(world: World) -> None:
    user = world.user("decrypting")
    world.add_provider(user)

    result = world.repobox("decrypt", "--user", user, "--provider", world.provider_id)

    assert result.returncode == 0, result.stderr
    assert f"ghp_****{world.token[-4:]}" in result.stdout and world.token not in result.stdout + result.stderr


def test_decrypt_refuses_a_hostile_user_id_in_one_line(world: World) -> None:
    result = world.repobox("decrypt", "--user", "github:1\nx", "--provider", world.provider_id)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "--user" in result.stderr and "Traceback" not in result.stderr


def test_pending_shows_web_app_ids_unharmed(world: World) -> None:
    user = world.user("pending")
    job_id = world.add_job(user=user)
    world.client.xgroup_create("jobs:stream", "jobs:stream:runners", id="0", mkstream=True)
    world.client.xreadgroup("jobs:stream:runners", "gone-runner", {"jobs:stream": ">"}, count=1)

    result = world.repobox("pending", "--json")

    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["entries"][0]
    assert (entry["user_id"], entry["job_id"], entry["job_status"]) == (user, job_id, "pending")
    table = world.repobox("pending", COLUMNS="250")
    assert user in table.stdout


def test_successful_job_writes_runner_lines_on_stdout_and_agent_lines_as_claude(world: World) -> None:
    prompt = "Make it better\nsecond line is not shown"
    job_id = world.add_job(prompt=prompt)

    result = world.run_burst(AGENT_COMMAND='echo "agent says hi"; echo "agent warns" >&2; echo x >> README.md')

    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success"
    lines = world.output(job_id)
    ours = runner_lines(world, job_id)
    assert any("Receiving objects" in str(o["line"]) for o in ours), "git progress reached the output"
    assert all(o["stream"] == "stdout" for o in ours), [o for o in ours if o["stream"] != "stdout"]
    agent = [(o["line"], o["stream"]) for o in lines if o["source"] != "runner"]
    # Two pipes read by two threads: their relative order is not defined.
    assert sorted(agent) == [("agent says hi", "stdout"), ("agent warns", "stderr")]
    assert {o["source"] for o in lines} == {"runner", "claude"}
    texts = [str(o["line"]) for o in ours]
    assert "Running prompt: Make it better" in texts
    for verb_line in (
        "Cloning ",
        "Creating branch repobox/",
        "Starting agent",
        "Committing ",
        "Pushing ",
        "Push completed",
    ):
        assert any(t.startswith(verb_line) for t in texts), verb_line
    # git's own lines (progress, the server's `remote:` lines, push porcelain) are git's words.
    steps = [t for t in texts if not GIT_LINE_RE.match(t)]
    assert all(RUNNER_STEP_RE.match(t) for t in steps), [t for t in steps if not RUNNER_STEP_RE.match(t)]


def test_running_prompt_line_is_cut_to_100_characters(world: World) -> None:
    job_id = world.add_job(prompt="x" * 300)

    world.run_burst()

    assert "Running prompt: " + "x" * 100 in [str(o["line"]) for o in runner_lines(world, job_id)]


def test_failed_job_writes_one_error_line_on_stderr(world: World) -> None:
    job_id = world.add_job()

    world.run_burst(AGENT_COMMAND="exit 3")

    job = world.job(job_id)
    assert job["status"] == "failed"
    errors = [o for o in runner_lines(world, job_id) if o["stream"] == "stderr"]
    assert [o["line"] for o in errors] == [f"Error: {job['error_message']}"]
    assert "status 3" in job["error_message"]


def test_refused_job_writes_its_reason_as_an_error_line(world: World) -> None:
    job_id = world.add_job(user="github:1 2", provider_record=False)

    world.run_burst()

    job = world.job(job_id)
    assert job["status"] == "failed" and "user_id" in job["error_message"]
    errors = [str(o["line"]) for o in runner_lines(world, job_id) if o["stream"] == "stderr"]
    assert len(errors) == 1 and errors[0].startswith("Error: ")


def test_job_environment_reaches_the_agent(world: World) -> None:
    job_id = world.add_job(environment="nodejs-full")

    world.run_burst(AGENT_COMMAND=ENV_AGENT)

    assert world.job(job_id)["status"] == "success"
    assert "env=nodejs-full" in [o["line"] for o in world.output(job_id) if o["source"] == "claude"]


def test_hostile_user_id_fails_cleanly_and_writes_nothing_outside_temp_dir(world: World, tmp_path: Path) -> None:
    hostile = "github:../../../" + "A" * 10240
    job_id = world.add_job(user=hostile, provider_record=False)
    temp_dir = world.temp_dir.name
    world.env()  # creates the runner's HOME before the snapshot
    before = sorted(p.name for p in tmp_path.iterdir() if p.name != temp_dir)

    result = world.run_burst()

    assert result.returncode == 0, result.stderr
    job = world.job(job_id)
    assert job["status"] == "failed" and "user_id is too long" in job["error_message"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != temp_dir) == before
    assert "Traceback" not in result.stderr
