"""Work sessions end to end (SESSIONS.md): the dashboard's flow against a real Redis, the suite's
HTTPS git server and a GitHub API stand-in on the same host (GitHub Enterprise shape)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from repobox_cli import keys
from tests.support.api_standin import ApiStandIn, Reply
from tests.support.webapp_sessions import (
    create_session,
    lines,
    output,
    push,
    send_prompt,
    wait_job,
    wait_session,
)
from tests.support.world import REPO_FILES, World, wait_for

# Prompt 1 changes README (+1 -1) and adds NEW.md (+2); prompt 2 deletes src/app.py (-1) and
# appends to NEW.md (+1). Session totals against the base: +4 -2.
SESSION_AGENT = (
    'case "$REPOBOX_PROMPT" in '
    '"Improve the readme"*) sed -i "s/line one/line ONE/" README.md && printf "new\\nfile\\n" > NEW.md ;; '
    '"Remove the app"*) rm src/app.py && echo more >> NEW.md ;; '
    '"Fail"*) echo half-done > HALF.md; echo boom >&2; exit 3 ;; '
    'esac; echo "agent ran: $REPOBOX_PROMPT"'
)


def ready_session(world: World, name: str, web_url: str) -> str:
    """A runner with SESSION_AGENT, and a session on `name` it has made ready."""
    world.start_runner(AGENT_COMMAND=SESSION_AGENT)
    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", timeout_s=15)
    return sid


@pytest.fixture
def github_repo(world: World) -> tuple[str, str, ApiStandIn]:
    """An `acme/<repo>` repository, its web URL (no `.git`), and the API stand-in on its host."""
    name = f"acme/{world.repo_name}"
    world.git.create_repo(name, REPO_FILES)
    api = world.git.api = ApiStandIn()
    return name, f"{world.git.base_url}/{name}", api


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """`wanted` appears in `seen` in this order (other lines, such as git's progress, between)."""
    it = iter(seen)
    return all(any(line == want for line in it) for want in wanted)


def _git_log(world: World, name: str, ref: str) -> list[tuple[str, str]]:
    return world.git.log(name, ref)


def test_the_dashboard_flow_init_two_prompts_push_opens_a_pull_request(
    world: World, github_repo: tuple[str, str, ApiStandIn]
) -> None:
    name, web_url, api = github_repo
    api.answer("POST", f"/api/v3/repos/{name}/pulls", Reply(201, {"html_url": f"https://ghe/{name}/pull/5"}))
    world.start_runner(AGENT_COMMAND=SESSION_AGENT)

    sid = create_session(world, web_url, name)
    ready = wait_session(world, sid, "ready", timeout_s=15)
    assert in_order(
        lines(world, sid),
        [
            "Cloning repository...",
            "Clone completed.",
            f"Creating branch repobox/{sid[:8]}...",
            "Work session ready. You can now submit prompts.",
        ],
    )
    assert int(ready["last_activity_at"]) >= int(ready["created_at"])

    first = send_prompt(world, sid, "Improve the readme\nand add a new file", environment="python")
    job1 = wait_job(world, first)
    after1 = wait_session(world, sid, "ready")
    assert job1["status"] == "success", (job1, lines(world, sid))
    assert (job1["lines_added"], job1["lines_removed"]) == ("3", "1")
    assert (after1["job_count"], after1["last_job_status"], after1["error_message"]) == ("1", "success", "")
    assert (after1["total_lines_added"], after1["total_lines_removed"]) == ("3", "1")

    second = send_prompt(world, sid, "Remove the app and extend the new file")
    job2 = wait_job(world, second)
    after2 = wait_session(world, sid, "ready")
    assert (job2["status"], job2["lines_added"], job2["lines_removed"]) == ("success", "1", "1")
    assert (after2["job_count"], after2["total_lines_added"], after2["total_lines_removed"]) == ("2", "4", "2")
    text = lines(world, sid)
    assert (
        "Running prompt: Improve the readme" in text
        and "Running prompt: Remove the app and extend the new file" in text
    )
    assert text.count("Prompt completed. Session ready for more prompts or push.") == 2
    assert "agent ran: Improve the readme\nand add a new file" not in text and "agent ran: Improve the readme" in text
    assert world.client.llen(f"job:{first}:output") == 0  # session prompts write to the session's output
    assert 0 < world.client.ttl(f"work_session:{sid}:output") <= 604800

    push(world, sid, title=f"Changes from session {sid[:8]}", description="Automated changes from 2 prompt(s)")
    pushed = wait_session(world, sid, "pushed")
    branch = f"repobox/{sid[:8]}"
    history = _git_log(world, name, branch)
    assert [subject for _, subject in history] == [
        "repobox: Remove the app and extend the new file",
        "repobox: Improve the readme and add a new file",
        "Initial commit",
    ]
    assert world.git.show_file(name, branch, "NEW.md") == "new\nfile\nmore\n"
    assert pushed["mr_url"] == f"https://ghe/{name}/pull/5" and pushed["mr_warning"] == ""
    assert int(pushed["pushed_at"]) > 0
    [call] = api.requests
    assert call.body == {
        "title": f"Changes from session {sid[:8]}",
        "body": "Automated changes from 2 prompt(s)",
        "head": branch,
        "base": "main",
    }
    assert call.headers["Authorization"] == f"Bearer {world.token}"
    assert in_order(
        lines(world, sid),
        [
            "Pushing branch to remote...",
            "Push completed.",
            "Creating merge request...",
            f"Merge request created: https://ghe/{name}/pull/5",
        ],
    )
    wait_for(lambda: not (world.temp_dir / "sessions" / sid).exists(), 10, "the pushed session's working copy removed")
    assert all(o["source"] in ("runner", "claude") for o in output(world, sid))


def test_a_failing_api_leaves_a_warning_and_the_session_still_pushed(
    world: World, github_repo: tuple[str, str, ApiStandIn]
) -> None:
    name, web_url, api = github_repo
    api.answer("POST", f"/api/v3/repos/{name}/pulls", Reply(500, {"message": f"boom {world.token}"}))
    world.start_runner()  # the placeholder agent

    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", timeout_s=15)
    wait_job(world, send_prompt(world, sid, "anything"))
    wait_session(world, sid, "ready")
    push(world, sid)
    pushed = wait_session(world, sid, "pushed")

    assert pushed["mr_url"] == ""
    assert pushed["mr_warning"].startswith(
        "Failed to create merge request: GitHub API answered HTTP 500: boom ghp_****"
    )
    assert world.token not in pushed["mr_warning"]
    [call] = api.requests
    assert call.body["title"] == f"repobox: Work session {sid[:8]}"
    assert "1. anything" in call.body["body"] and sid in call.body["body"]
    assert f"repobox/{sid[:8]}" in world.git.branches(name)
    assert any(
        o["line"].startswith("Warning: Failed to create merge request") and o["stream"] == "stderr"
        for o in output(world, sid)
    )


def test_a_failed_prompt_returns_the_session_to_ready_and_leaves_nothing_behind(
    world: World, github_repo: tuple[str, str, ApiStandIn]
) -> None:
    name, web_url, _ = github_repo
    sid = ready_session(world, name, web_url)

    failed = wait_job(world, send_prompt(world, sid, "Fail please"))
    after = wait_session(world, sid, "ready")
    assert failed["status"] == "failed" and "exited with status 3" in failed["error_message"]
    assert after["last_job_status"] == "failed" and "exited with status 3" in after["error_message"]
    assert after["job_count"] == "0"

    ok = wait_job(world, send_prompt(world, sid, "Improve the readme"))
    after = wait_session(world, sid, "ready")
    assert (ok["status"], ok["lines_added"], ok["lines_removed"]) == ("success", "3", "1")
    assert (after["last_job_status"], after["error_message"], after["job_count"]) == ("success", "", "1")
    assert not (world.temp_dir / "sessions" / sid / "repo" / "HALF.md").exists()


class CommandLog:
    """Every command Redis runs (MONITOR, scripts' commands included), in Redis's own order."""

    def __init__(self, world: World) -> None:
        self.commands: list[str] = []
        self._stop = threading.Event()
        self._client = redis.Redis.from_url(world.redis_server.url, decode_responses=True)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "MONITOR did not start"

    def _listen(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            for event in monitor.listen():
                self.commands.append(str(event["command"]))
                if self._stop.is_set():
                    return

    def close(self, world: World) -> list[str]:
        self._stop.set()
        world.client.ping()  # one more command, so the listener sees the stop
        self._thread.join(5)
        return self.commands

    def first(self, *needles: str) -> int:
        return next(i for i, c in enumerate(self.commands) if all(n in c for n in needles))


def test_a_failed_prompts_output_is_all_written_before_its_final_status(
    world: World, github_repo: tuple[str, str, ApiStandIn]
) -> None:
    name, web_url, _ = github_repo
    sid = ready_session(world, name, web_url)
    log = CommandLog(world)

    job_id = send_prompt(world, sid, "Fail please")
    wait_job(world, job_id)
    wait_session(world, sid, "ready")
    log.close(world)

    final = log.first("HSET", f"job:{job_id}", "status", "failed")
    assert log.first("RPUSH", f"work_session:{sid}:output", "boom") < final
    assert log.first("RPUSH", f"work_session:{sid}:output", "Error: agent command exited with status 3") < final


def test_init_falls_back_to_the_default_branch_and_says_so(
    world: World, github_repo: tuple[str, str, ApiStandIn]
) -> None:
    name, web_url, _ = github_repo
    world.start_runner()
    sid = create_session(world, web_url, name, base_branch="no-such-branch")
    ready = wait_session(world, sid, "ready", timeout_s=15)
    assert ready["base_branch"] == "main"
    assert "Using the default branch main: branch no-such-branch was not found on the remote" in lines(world, sid)


def test_init_of_a_repository_on_another_host_fails_the_session(world: World) -> None:
    world.start_runner()
    sid = create_session(world, "https://elsewhere.example/acme/repo", "acme/repo")
    failed = wait_session(world, sid, "failed", timeout_s=15)
    assert "not the git provider's host" in failed["error_message"]


def test_the_runner_creates_the_three_session_groups_at_start(world: World) -> None:
    client = world.client
    assert world.run_burst().returncode == 0
    for stream, group in keys.SESSION_GROUPS:
        assert [g["name"] for g in client.xinfo_groups(stream)] == [group]


def test_prompts_count_against_the_users_job_limit(world: World, github_repo: tuple[str, str, ApiStandIn]) -> None:
    name, web_url, _ = github_repo
    world.start_runner(MAX_JOBS_PER_USER="1", AGENT_COMMAND="sleep 1; echo done >> README.md")
    sid = create_session(world, web_url, name)
    wait_session(world, sid, "ready", timeout_s=15)
    prompt_job = send_prompt(world, sid, "slow prompt")
    single = world.add_job()

    both_running = False
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        statuses = (world.job(prompt_job).get("status"), world.job(single).get("status"))
        both_running = both_running or statuses == ("running", "running")
        if all(s in ("success", "failed") for s in statuses):
            break
        time.sleep(0.02)  # sampling, not synchronising: the loop ends on the final states
    assert statuses == ("success", "success")
    assert not both_running, "a prompt and a job of one user ran at once with MAX_JOBS_PER_USER=1"


def test_a_self_hosted_gitlab_session_push_opens_a_merge_request_with_the_private_token_only(
    world: World, github_repo: tuple[str, str, ApiStandIn]
) -> None:
    name, web_url, api = github_repo
    world.add_provider(kind="gitlab")  # self-hosted: the API lives under the provider's url
    project = name.replace("/", "%2F")
    api.answer(
        "POST", f"/api/v4/projects/{project}/merge_requests", Reply(201, {"web_url": f"https://gl/{name}/-/mr/7"})
    )
    sid = ready_session(world, name, web_url)
    assert wait_job(world, send_prompt(world, sid, "Improve the readme"))["status"] == "success"
    wait_session(world, sid, "ready")

    push(world, sid)
    pushed = wait_session(world, sid, "pushed")

    assert pushed["mr_url"] == f"https://gl/{name}/-/mr/7" and pushed["mr_warning"] == ""
    [call] = api.requests
    assert call.body["source_branch"] == f"repobox/{sid[:8]}" and call.body["target_branch"] == "main"
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert headers["private-token"] == world.token
    others = {k: v for k, v in headers.items() if k != "private-token"}
    assert world.token not in str(others) + str(call.body) + call.path
