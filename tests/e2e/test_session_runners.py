"""No lost session work with several runners (issue 10): prompts reach the runner holding the
working copy; when it is killed, another runner rebuilds from the checkpoint ref on the user's
remote (never a branch or tag, gone after the push); a restart keeps working copies, and idle or
archived ones are removed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from tests.support.api_standin import ApiStandIn, Reply
from tests.support.reliability_helpers import log_messages, processes_with, wait_ready, wait_status
from tests.support.webapp_sessions import (
    create_session,
    lines,
    push,
    send_prompt,
    session,
    wait_job,
    wait_session,
)
from tests.support.world import REPO_FILES, RunnerProcess, World, wait_for

# Each prompt appends its own line to NOTES.md, so every earlier prompt's change must be present.
NOTE_AGENT = 'echo "$REPOBOX_PROMPT" >> NOTES.md; echo "ran on $RUNNER_NAME"'


@pytest.fixture
def repo(world: World) -> tuple[str, str]:
    name = f"acme/{world.repo_name}"
    world.git.create_repo(name, REPO_FILES)
    world.git.api = ApiStandIn()
    world.git.api.answer("POST", f"/api/v3/repos/{name}/pulls", Reply(201, {"html_url": "https://ghe/pr/1"}))
    return name, f"{world.git.base_url}/{name}"


def _runner(world: World, name: str, **env: str) -> RunnerProcess:
    return world.start_runner(
        name=name,
        TEMP_DIR=str(world.tmp / f"work-{name}"),
        AGENT_COMMAND=NOTE_AGENT,
        AGENT_ENV="RUNNER_NAME",
        RUNNER_NAME=name,
        **env,
    )


def _remote_refs(world: World, name: str) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", str(world.git.repo_path(name)), "for-each-ref", "--format=%(refname)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def _owner(world: World, sid: str) -> str:
    return str(world.client.hget(f"runner:session_owner:{sid}", "runner") or "")


def _prompt(world: World, sid: str, text: str) -> dict[str, str]:
    job = wait_job(world, send_prompt(world, sid, text), 40)
    wait_session(world, sid, "ready", 40)
    return job


def test_two_runners_every_prompt_lands_on_the_working_copy(world: World, repo: tuple[str, str]) -> None:
    name, web_url = repo
    _runner(world, "r1")
    _runner(world, "r2")
    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", 15)
    owner = _owner(world, sid)

    for n in range(4):
        job = _prompt(world, sid, f"note {n}")
        assert job["status"] == "success", (job, lines(world, sid))

    text = lines(world, sid)
    assert not [line for line in text if "Rebuilding" in line or "not on this runner" in line]
    assert [line for line in text if line.startswith("ran on ")] == [f"ran on {owner}"] * 4
    push(world, sid)
    wait_session(world, sid, "pushed", 30)
    assert world.git.show_file(name, f"repobox/{sid[:8]}", "NOTES.md") == "".join(f"note {n}\n" for n in range(4))


def test_kill_9_of_the_owner_between_prompts_the_next_runs_elsewhere_from_the_checkpoint(
    world: World, repo: tuple[str, str]
) -> None:
    name, web_url = repo
    first = _runner(world, "r1")
    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", 15)
    assert _prompt(world, sid, "note one")["status"] == "success"
    checkpoint = f"refs/repobox/sessions/{sid}"
    refs = _remote_refs(world, name)
    assert checkpoint in refs
    assert not [r for r in refs if r.startswith(("refs/heads/repobox/", "refs/tags/"))], refs

    _runner(world, "r2")
    first.signal(signal.SIGKILL)
    first.wait()
    wait_for(lambda: not world.client.exists("runner:heartbeat:r1"), 15, "r1's heartbeat to expire")

    job = _prompt(world, sid, "note two")

    assert job["status"] == "success", lines(world, sid)
    text = lines(world, sid)
    assert any(line.startswith("Rebuilding the session's working copy from its checkpoint") for line in text)
    assert text[-1] == "Prompt completed. Session ready for more prompts or push."
    assert "ran on r2" in text
    assert _owner(world, sid) == "r2"
    assert session(world, sid)["total_lines_added"] == "2" and session(world, sid)["job_count"] == "2"
    push(world, sid)
    wait_session(world, sid, "pushed", 30)
    branch = f"repobox/{sid[:8]}"
    assert world.git.show_file(name, branch, "NOTES.md") == "note one\nnote two\n"
    assert [s for _, s in world.git.log(name, branch)] == ["repobox: note two", "repobox: note one", "Initial commit"]
    assert checkpoint not in _remote_refs(world, name)


def test_a_restart_keeps_working_copies_and_removes_idle_and_archived_ones_with_the_archived_checkpoint(
    world: World, repo: tuple[str, str]
) -> None:
    name, web_url = repo
    runner = _runner(world, "r1")
    kept, idle, archived = (create_session(world, web_url, name) for _ in range(3))
    for sid in (kept, idle, archived):
        wait_session(world, sid, "ready", 15)
    assert _prompt(world, kept, "note kept")["status"] == "success"
    assert _prompt(world, archived, "note archived")["status"] == "success"
    sessions_dir = world.tmp / "work-r1" / "sessions"
    assert {p.name for p in sessions_dir.iterdir()} == {kept, idle, archived}
    checkpoints = {f"refs/repobox/sessions/{kept}", f"refs/repobox/sessions/{archived}"}
    assert checkpoints <= set(_remote_refs(world, name))

    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    day_ago = str(int(time.time() * 1000) - 25 * 3600 * 1000)
    world.client.hset(f"work_session:{idle}", "last_activity_at", day_ago)
    world.client.hset(f"work_session:{archived}", "status", "archived")
    _runner(world, "r1")

    wait_for(lambda: {p.name for p in sessions_dir.iterdir()} == {kept}, 15, "idle and archived working copies removed")
    assert _prompt(world, kept, "note again")["status"] == "success"
    assert not [line for line in lines(world, kept) if "Rebuilding" in line]
    assert (sessions_dir / kept / "repo" / "NOTES.md").read_text() == "note kept\nnote again\n"
    refs = set(_remote_refs(world, name))
    assert f"refs/repobox/sessions/{kept}" in refs and f"refs/repobox/sessions/{archived}" not in refs


def _git_stalling_on_checkpoint_deletes(world: World, stall: str) -> str:
    """A PATH whose git hangs (runs `stall`) when asked to delete a session's checkpoint ref, as a
    user's git host that accepts the connection and never answers; any other git call is git's."""
    shim = world.tmp / "stalling-git"
    shim.mkdir()
    script = shim / "git"
    script.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do case "$a" in :refs/repobox/sessions/*) exec {stall};; esac; done\n'
        f'exec {shutil.which("git")} "$@"\n'
    )
    script.chmod(0o755)
    return f"{shim}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def test_a_checkpoint_delete_stalled_by_the_remote_holds_up_no_job_and_is_killed_at_the_stop(
    world: World, repo: tuple[str, str]
) -> None:
    name, web_url = repo
    runner = _runner(world, "r1")
    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", 15)
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    world.client.hset(f"work_session:{sid}", "status", "archived")  # the user deletes it meanwhile
    stall = f"sleep 600.{uuid.uuid4().int % 10**6:06d}"  # a command line no other process has

    runner = _runner(world, "r1", PATH=_git_stalling_on_checkpoint_deletes(world, stall))
    wait_for(lambda: processes_with(stall), 15, "the archived session's checkpoint delete to stall")
    job_id = world.add_job()

    assert wait_status(world, job_id, {"success", "failed"}, 30) == "success", world.output_text(job_id)
    assert world.client.exists("runner:heartbeat:r1")
    assert processes_with(stall), "the stalled delete ended before the stop: the test proved nothing"
    runner.signal(signal.SIGTERM)
    assert runner.wait(30) == 0, runner.log()
    wait_for(lambda: not processes_with(stall), 10, "the stalled delete's git to be killed with the runner")


def test_kill_9_of_the_owner_mid_prompt_the_prompt_reruns_elsewhere_and_the_session_moves_on(
    world: World, repo: tuple[str, str]
) -> None:
    name, web_url = repo
    # On r1, "slow" says it started and hangs; its re-run on r2 finishes at once.
    agent = (
        'if [ "$REPOBOX_PROMPT" = slow ] && [ "$RUNNER_NAME" = r1 ]; then echo started-slow; sleep 60; fi; '
        + NOTE_AGENT
    )
    env = {"CLAIM_MIN_IDLE": "10", "AGENT_COMMAND": agent}
    first = world.start_runner(
        name="r1", TEMP_DIR=str(world.tmp / "work-r1"), AGENT_ENV="RUNNER_NAME", RUNNER_NAME="r1", **env
    )
    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", 15)
    assert _prompt(world, sid, "note one")["status"] == "success"
    world.start_runner(name="r2", TEMP_DIR=str(world.tmp / "work-r2"), AGENT_ENV="RUNNER_NAME", RUNNER_NAME="r2", **env)

    job_id = send_prompt(world, sid, "slow")
    wait_for(lambda: "started-slow" in lines(world, sid), 20, "the first attempt to start")
    first.signal(signal.SIGKILL)
    first.wait()

    job = wait_job(world, job_id, 60)
    after = wait_session(world, sid, "ready", 30)
    assert job["status"] == "success", lines(world, sid)
    assert (after["job_count"], after["last_job_status"]) == ("2", "success")
    assert _owner(world, sid) == "r2"
    text = lines(world, sid)
    assert text.count("Running prompt: slow") == 2 and "ran on r2" in text
    assert (world.tmp / "work-r2" / "sessions" / sid / "repo" / "NOTES.md").read_text() == "note one\nslow\n"


def _slow_job_agent(seconds: int) -> str:
    """Single-shot jobs whose prompt is `slow-job` say so and take `seconds`; prompts note themselves."""
    return f'if [ "$REPOBOX_PROMPT" = slow-job ]; then echo started-slow; sleep {seconds}; fi; ' + NOTE_AGENT


def _named_runner(world: World, name: str, **env: str) -> RunnerProcess:
    return world.start_runner(
        name=name, TEMP_DIR=str(world.tmp / f"work-{name}"), AGENT_ENV="RUNNER_NAME", RUNNER_NAME=name, **env
    )


def test_a_prompt_for_a_session_whose_owner_is_stopping_runs_elsewhere_and_counts_no_delivery(
    world: World, repo: tuple[str, str]
) -> None:
    """The owner's warm stop waits for its long job; it reads nothing more, so nothing is forwarded to it."""
    name, web_url = repo
    env = {"CLAIM_MIN_IDLE": "2", "MAX_DELIVERIES": "1", "AGENT_COMMAND": _slow_job_agent(120)}
    first = _named_runner(world, "r1", **env)
    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", 15)
    job_id = world.add_job(prompt="slow-job")
    wait_for(lambda: "started-slow" in world.output_text(job_id), 20, "r1's long job to start")
    second = _named_runner(world, "r2", **env)
    wait_ready(world, ["r2"])
    first.signal(signal.SIGTERM)
    wait_for(lambda: '"stopping": true' in str(world.client.get("runner:heartbeat:r1")), 10, "r1 to say it stops")

    job = _prompt(world, sid, "note one")

    assert job["status"] == "success", lines(world, sid)
    assert "ran on r2" in lines(world, sid) and _owner(world, sid) == "r2"
    assert not log_messages(second, "forwarded to runner r1"), second.log()
    assert world.client.xlen("runner:dead_letters") == 0
    assert first.process.poll() is None  # still finishing its job: it was alive all along
    first.signal(signal.SIGKILL)


def test_a_prompt_forwarded_to_its_owner_while_every_worker_is_busy_waits_there_and_runs_there(
    world: World, repo: tuple[str, str]
) -> None:
    name, web_url = repo
    env = {"CLAIM_MIN_IDLE": "2", "MAX_DELIVERIES": "1", "AGENT_COMMAND": _slow_job_agent(8)}
    _named_runner(world, "r1", MAX_CONCURRENT_JOBS="1", **env)
    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", 15)
    job_id = world.add_job(prompt="slow-job")
    wait_for(lambda: "started-slow" in world.output_text(job_id), 20, "r1's long job to take its only worker")
    second = _named_runner(world, "r2", **env)
    wait_ready(world, ["r2"])

    prompt = _prompt(world, sid, "note one")

    assert prompt["status"] == "success", lines(world, sid)
    assert world.job(job_id)["status"] == "success"
    assert "ran on r1" in lines(world, sid) and _owner(world, sid) == "r1"
    assert log_messages(second, "forwarded to runner r1"), second.log()
    assert world.client.xlen("runner:dead_letters") == 0


def test_a_prompt_rerun_after_its_checkpoint_was_pushed_does_not_apply_its_change_twice(
    world: World, repo: tuple[str, str]
) -> None:
    name, web_url = repo
    held, release = world.tmp / "checkpoint-push-held", world.tmp / "release-checkpoint-push"
    # The remote holds the first checkpoint push of "twice" after updating the ref, so r1 is
    # killed with the prompt committed and checkpointed but not finished.
    hook = world.git.repo_path(name) / "hooks" / "post-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f"if grep -q refs/repobox/sessions/ && [ ! -e {held} ] && [ -e {world.tmp}/arm ]; then\n"
        f"  touch {held}; i=0; while [ ! -e {release} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n"
        "fi\n"
    )
    hook.chmod(0o755)
    env = {"CLAIM_MIN_IDLE": "5"}
    first = _runner(world, "r1", **env)
    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", 15)
    assert _prompt(world, sid, "before")["status"] == "success"
    _runner(world, "r2", **env)
    (world.tmp / "arm").touch()

    job_id = send_prompt(world, sid, "twice")
    wait_for(held.exists, 30, "the checkpoint push of the prompt")
    first.signal(signal.SIGKILL)
    first.wait()
    release.touch()

    job = wait_job(world, job_id, 60)
    wait_session(world, sid, "ready", 30)
    assert job["status"] == "success", lines(world, sid)
    assert (job["lines_added"], job["lines_removed"]) == ("1", "0")
    text = lines(world, sid)
    assert any(line.startswith("This prompt's change is already committed") for line in text), text
    assert text.count("ran on r1") == 2 and "ran on r2" not in text
    assert session(world, sid)["job_count"] == "2"
    push(world, sid)
    wait_session(world, sid, "pushed", 30)
    branch = f"repobox/{sid[:8]}"
    assert world.git.show_file(name, branch, "NOTES.md") == "before\ntwice\n"
    assert [s for _, s in world.git.log(name, branch)] == ["repobox: twice", "repobox: before", "Initial commit"]
