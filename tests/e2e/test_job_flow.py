"""The whole job flow on a real redis-server and a real HTTPS git remote."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.world import World, wait_for

CHANGE_AGENT = "printf 'added line\\n' >> README.md && sed -i 's/line one/line ONE/' README.md"
OUTPUT_KEYS = {"timestamp", "line", "stream", "source"}


def server_numstat(world: World, base: str, head: str) -> tuple[int, int]:
    out = subprocess.run(
        ["git", "--git-dir", str(world.git.repo_path(world.repo_name)), "diff", "--numstat", base, head],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    added = sum(int(line.split("\t")[0]) for line in out.splitlines())
    removed = sum(int(line.split("\t")[1]) for line in out.splitlines())
    return added, removed


def assert_output_shape(world: World, job_id: str) -> None:
    raw = world.client.lrange(f"job:{job_id}:output", 0, -1)
    assert raw, "job output is empty"
    for item in raw:
        entry = json.loads(item)
        assert set(entry) == OUTPUT_KEYS
        assert isinstance(entry["timestamp"], int) and entry["timestamp"] > 1_600_000_000_000
        assert isinstance(entry["line"], str)
        assert entry["stream"] in ("stdout", "stderr")
        assert entry["source"] in ("runner", "claude")
    assert 0 < world.client.ttl(f"job:{job_id}:output") <= 86400


def test_job_written_like_the_web_app_ends_success_and_pushes_one_commit(world: World) -> None:
    base = world.git.branches(world.repo_name)["main"]
    job_id = world.add_job(prompt="Make the readme louder, and add a line at the end please")

    result = world.run_burst(AGENT_COMMAND=CHANGE_AGENT)

    assert result.returncode == 0, result.stderr
    job = world.job(job_id)
    assert job["status"] == "success", job
    branch = f"repobox/{job_id[:8]}"
    assert job["branch"] == branch
    head = world.git.branches(world.repo_name)[branch]
    history = world.git.log(world.repo_name, branch)
    assert history[0] == (head, "repobox: Make the readme louder, and add a line at the end")
    assert history[1][0] == base and len(history) == 2
    assert (int(job["lines_added"]), int(job["lines_removed"])) == server_numstat(world, base, head) == (2, 1)
    assert int(job["started_at"]) <= int(job["finished_at"])
    assert_output_shape(world, job_id)
    text = world.output_text(job_id)
    for step in (
        "Cloning ",
        "Receiving objects",
        "Creating branch ",
        "Running prompt: ",
        "Starting agent",
        "Committing changes",
        "Pushing ",
        "Push completed",
    ):
        assert step in text
    commit = subprocess.run(
        [
            "git",
            "--git-dir",
            str(world.git.repo_path(world.repo_name)),
            "log",
            "-1",
            "--format=%an <%ae>|%cn <%ce>",
            head,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert commit == "Repobox <repobox@localhost>|Repobox <repobox@localhost>"


def test_placeholder_agent_writes_the_seed_file(world: World) -> None:
    job_id = world.add_job(prompt="hello placeholder")
    assert world.run_burst().returncode == 0
    content = world.git.show_file(world.repo_name, f"repobox/{job_id[:8]}", ".repobox-test.md")
    assert job_id in content and "hello placeholder" in content
    assert world.job(job_id)["lines_added"] != "0"


def test_missing_base_branch_falls_back_to_the_remote_default(world: World) -> None:
    job_id = world.add_job(branch="does-not-exist")
    assert world.run_burst().returncode == 0
    assert world.job(job_id)["status"] == "success"
    assert "Using the default branch main" in world.output_text(job_id)


def test_agent_without_changes_succeeds_with_nothing_pushed(world: World) -> None:
    job_id = world.add_job()
    assert world.run_burst(AGENT_COMMAND="echo looked around").returncode == 0
    job = world.job(job_id)
    assert job["status"] == "success"
    assert f"repobox/{job_id[:8]}" not in world.git.branches(world.repo_name)
    assert "no changes, nothing committed or pushed" in world.output_text(job_id)
    assert any(o["source"] == "claude" and o["line"] == "looked around" for o in world.output(job_id))


def test_exec_runs_one_job_in_the_foreground(world: World) -> None:
    job_id = world.add_job(enqueue=False)
    result = world.repobox("exec", job_id, AGENT_COMMAND=CHANGE_AGENT)
    assert result.returncode == 0, result.stderr
    assert "pushed repobox/" in result.stdout and "added" not in result.stderr
    assert world.job(job_id)["status"] == "success"
    assert f"repobox/{job_id[:8]}" in world.git.branches(world.repo_name)
    assert_output_shape(world, job_id)


def test_exec_no_push_leaves_the_remote_untouched(world: World) -> None:
    before = world.git.branches(world.repo_name)
    job_id = world.add_job(enqueue=False)
    result = world.repobox("exec", job_id, "--no-push", "--keep-workdir", AGENT_COMMAND=CHANGE_AGENT)
    assert result.returncode == 0, result.stderr
    assert world.git.branches(world.repo_name) == before
    kept = Path(result.stdout.split("work directory kept: ", 1)[1].split()[0])
    assert kept.parent == world.temp_dir / job_id
    assert (kept / "repo" / "README.md").read_text().endswith("added line\n")
    job = world.job(job_id)
    assert job["status"] == "pending", "a debug run must leave the job for a real run"
    assert "started_at" not in job and "finished_at" not in job
    assert re.search(r"^Committed [0-9a-f]{12}: \+2 -1$", world.output_text(job_id), re.M)


def test_exec_unknown_job_is_one_line_and_exit_1(world: World) -> None:
    result = world.repobox("exec", "no-such-job")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_failures_end_failed_with_one_masked_line_and_the_runner_goes_on(world: World) -> None:
    wrong = "ghp_" + "W" * 36
    world.add_provider(world.user("baduser"), token=wrong)
    jobs = {
        "wrong token": world.add_job(user=world.user("baduser")),
        "provider missing": world.add_job(user=world.user("noprov"), provider_record=False),
        "provider not a hash": world.add_job(user=world.user("strprov"), provider_record=False),
        "repository missing": world.add_job(repo_url=f"{world.git.base_url}/nope.git"),
        "agent exit": world.add_job(user=world.user("agentuser"), prompt="fail"),
    }
    world.client.set(f"git_provider:{world.user('strprov')}:{world.provider_id}", "not a hash")
    # A stream entry whose job hash does not exist, and a malformed entry.
    world.client.xadd(
        "jobs:stream",
        {
            "job_id": "ghost-job",
            "user_id": "u",
            "provider_id": "p",
            "repo_url": world.repo_url,
            "prompt": "x",
            "environment": "e",
        },
    )
    malformed_job = world.add_job(enqueue=False)
    world.client.xadd("jobs:stream", {"job_id": malformed_job})
    world.client.xadd("jobs:stream", {"garbage": "yes"})
    after = world.add_job(user=world.user("gooduser"))

    started = time.monotonic()
    result = world.run_burst(AGENT_COMMAND='if [ "$REPOBOX_PROMPT" = fail ]; then exit 3; fi; echo ok > ok.txt')
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60

    def failed(job_id: str) -> str:
        job = world.job(job_id)
        assert job["status"] == "failed", job
        assert "\n" not in job["error_message"] and job["finished_at"]
        assert wrong not in job["error_message"] and world.token not in job["error_message"]
        return job["error_message"]

    assert "401" in failed(jobs["wrong token"])
    wrong_job = world.job(jobs["wrong token"])
    assert int(wrong_job["finished_at"]) - int(wrong_job["started_at"]) < 10_000, "a wrong token must fail fast"
    assert "provider" in failed(jobs["provider missing"]) and "not found" in failed(jobs["provider missing"])
    assert "repository not found" in failed(jobs["repository missing"])
    assert failed(jobs["provider not a hash"]).startswith("git provider record git_provider:")
    assert "internal error" not in failed(jobs["provider not a hash"])
    assert "malformed" in failed(malformed_job)
    assert world.job(after)["status"] == "success"
    assert failed(jobs["agent exit"]) == "agent command exited with status 3"
    logs = result.stderr
    assert "ghost-job" in logs and "missing" in logs
    assert world.client.xpending("jobs:stream", "jobs:stream:runners")["pending"] == 0
    assert wrong not in logs and world.token not in logs


def test_agent_nonzero_exit_fails_the_job(world: World) -> None:
    job_id = world.add_job(prompt="fail")
    result = world.run_burst(AGENT_COMMAND="echo about to fail >&2; exit 3")
    assert result.returncode == 0
    job = world.job(job_id)
    assert job["status"] == "failed" and job["error_message"] == "agent command exited with status 3"
    assert any(
        o["stream"] == "stderr" and o["source"] == "claude" and o["line"] == "about to fail"
        for o in world.output(job_id)
    )
    assert f"repobox/{job_id[:8]}" not in world.git.branches(world.repo_name)


def sleep_processes(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(pid))
    return found


def test_job_timeout_kills_the_whole_tree_and_fails(world: World) -> None:
    job_id = world.add_job()
    started = time.monotonic()
    # A child and a grandchild: the whole tree must go.
    result = world.run_burst(AGENT_COMMAND="sleep 31.5 & sh -c 'sleep 31.5' ; wait", JOB_TIMEOUT="2")
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    job = world.job(job_id)
    assert job["status"] == "failed" and "timed out after 2 s" in job["error_message"]
    assert elapsed < 15
    assert sleep_processes("sleep 31.5") == []


@contextmanager
def silent_https_server() -> Iterator[int]:
    """A port that accepts connections and never answers (not even the TLS handshake): a git
    step against it hangs until the job's control kills it."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in held:
            conn.close()


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        state, ppid = stat[stat.rfind(")") + 2 :].split()[:2]
        if state == "Z" and int(ppid) == pid:
            found.append(int(entry.name))
    return found


def test_helpers_of_a_git_step_killed_by_the_job_timeout_are_reaped_by_the_runner(world: World) -> None:
    """git's helper (git-remote-https) outlives a killed git by a moment and is re-parented to the
    runner, a subreaper: the runner must collect it, or every stopped step leaves zombies."""
    with silent_https_server() as port:
        url = f"https://127.0.0.1:{port}"
        world.add_provider(url=url)
        job_id = world.add_job(repo_url=f"{url}/team/app.git")
        runner = world.start_runner(JOB_TIMEOUT="2")
        wait_for(lambda: world.job(job_id).get("status") == "failed", 30, "the job to time out")
        assert "timed out after 2 s" in world.job(job_id)["error_message"]
        wait_for(lambda: zombies_of(runner.pid) == [], 15, "the runner to reap what its killed git step left")
        assert runner.process.poll() is None


def test_one_user_never_runs_two_jobs_at_once_across_runners_and_others_still_run(world: World) -> None:
    slow = "sleep 1; echo done > done.txt"
    a_jobs = [world.add_job(user=world.user("alice")) for _ in range(3)]
    b_job = world.add_job(user=world.user("bob"))
    peak = {"alice": 0}
    stop = threading.Event()

    def sample() -> None:
        client = world.client
        while not stop.is_set():
            running = [j for j in a_jobs if client.hget(f"job:{j}", "status") == "running"]
            peak["alice"] = max(peak["alice"], len(running), client.zcard(f"runner:slots:{world.user('alice')}"))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    env = {"MAX_JOBS_PER_USER": "1", "AGENT_COMMAND": slow}
    runners = [world.start_runner("--burst", **env), world.start_runner("--burst", **env)]
    try:
        for runner in runners:
            assert runner.wait(90) == 0, runner.log()
    finally:
        stop.set()
        sampler.join(5)
    assert peak["alice"] == 1
    assert all(world.job(j)["status"] == "success" for j in [*a_jobs, b_job])
    a_finish = sorted(int(world.job(j)["finished_at"]) for j in a_jobs)
    assert int(world.job(b_job)["started_at"]) < a_finish[1], "bob waited behind alice's jobs"
    assert world.client.zcard(f"runner:slots:{world.user('alice')}") == 0


def test_redelivered_entry_of_a_finished_job_is_acked_and_not_run_again(world: World) -> None:
    job_id = world.add_job()
    assert world.run_burst().returncode == 0
    first = world.job(job_id)
    assert first["status"] == "success"
    lines = len(world.output(job_id))
    fields = {
        "job_id": job_id,
        "user_id": world.default_user,
        "provider_id": world.provider_id,
        "repo_url": world.repo_url,
        "prompt": "again",
        "environment": "default",
    }
    world.client.xadd("jobs:stream", fields)
    result = world.run_burst()
    assert result.returncode == 0
    assert world.job(job_id) == first
    assert len(world.output(job_id)) == lines
    assert "not run again" in result.stderr
    assert world.client.xpending("jobs:stream", "jobs:stream:runners")["pending"] == 0


def test_sigterm_during_a_job_finishes_it_and_exits_0(world: World) -> None:
    job_id = world.add_job()
    runner = world.start_runner(AGENT_COMMAND="sleep 2; echo x > x.txt")
    wait_for(lambda: world.job(job_id).get("status") == "running", 20, "job running")
    runner.signal(15)
    assert runner.wait(30) == 0, runner.log()
    assert world.job(job_id)["status"] == "success"
    assert "stopped" in runner.log()


def test_works_with_empty_home_and_ignores_host_credential_helpers(world: World, tmp_path: Path) -> None:
    marker = tmp_path / "helper-ran"
    home = tmp_path / "hosthome"
    home.mkdir()
    helper = f"!f() {{ touch {marker}; echo username=oauth2; echo password=stolen; }}; f"
    (home / ".gitconfig").write_text(f"[credential]\n\thelper = {helper}\n[user]\n\tname = Host User\n")
    xdg = tmp_path / "xdg"
    (xdg / "git").mkdir(parents=True)
    (xdg / "git" / "config").write_text(f"[credential]\n\thelper = {helper}\n")
    global_cfg = tmp_path / "global.gitconfig"
    global_cfg.write_text(f"[credential]\n\thelper = {helper}\n")
    job_ok = world.add_job()
    world.add_provider(world.user("baduser"), token="ghp_" + "Z" * 36)
    job_bad = world.add_job(user=world.user("baduser"))

    for env in ({"HOME": ""}, {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg), "GIT_CONFIG_GLOBAL": str(global_cfg)}):
        result = world.run_burst(**env)
        assert result.returncode == 0, result.stderr
        assert world.job(job_ok)["status"] == "success"
        assert world.job(job_bad)["status"] == "failed"
        assert not marker.exists(), "a host credential helper ran"
        for j in (job_ok, job_bad):
            world.client.hset(f"job:{j}", mapping={"status": "pending", "branch": "main"})
        for j in (job_ok, job_bad):
            world.client.xadd(
                "jobs:stream",
                {
                    "job_id": j,
                    "user_id": world.job(j)["user_id"],
                    "provider_id": world.provider_id,
                    "repo_url": world.repo_url,
                    "prompt": "p",
                    "environment": "e",
                },
            )


def test_ctrl_c_during_exec_hands_the_job_back_and_exits_130(world: World) -> None:
    job_id = world.add_job(enqueue=False)
    before = world.git.branches(world.repo_name)
    process = subprocess.Popen(
        [sys.executable, "-m", "repobox_cli", "exec", job_id],
        env=world.env(AGENT_COMMAND="sleep 60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=world.tmp,
    )
    try:
        wait_for(lambda: "Starting agent" in world.output_text(job_id), 30, "the agent to start")
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 130
    job = world.job(job_id)
    assert job["status"] == "pending" and "finished_at" not in job and "error_message" not in job
    assert world.git.branches(world.repo_name) == before
    assert "goes back to pending" in world.output_text(job_id)


def test_an_idle_runner_exits_promptly_on_sigterm_and_burst_exits_promptly_when_dry(world: World) -> None:
    runner = world.start_runner(REPOBOX_BLOCK_MS="")  # the default BLOCK, not the suite's short one
    wait_for(lambda: world.client.info("clients")["blocked_clients"] >= 1, 20, "the runner's blocked read")
    start = time.monotonic()
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    signal_exit_s = time.monotonic() - start
    start = time.monotonic()
    assert world.run_burst(REPOBOX_BLOCK_MS="").returncode == 0
    burst_s = time.monotonic() - start
    # Generous bounds (process start included for burst); the figures belong in a benchmark.
    assert signal_exit_s < 1.0 and burst_s < 5.0, (signal_exit_s, burst_s)


def test_an_entry_naming_another_user_counts_its_job_against_the_job_hashs_user(world: World) -> None:
    """The runner begins a job straight from its stream entry's user_id, but the job hash is the
    truth: an entry that names someone else must not let the job's user past their limit."""
    alice, mallory = world.user("alice"), world.user("mallory")
    job_id = world.add_job(user=alice, enqueue=False)
    fields = {name: world.job(job_id)[name] for name in ("provider_id", "repo_url", "prompt", "environment")}
    far_future_ms = int(time.time() * 1000) + 3_600_000
    world.client.zadd(f"runner:slots:{alice}", {"another-attempt|elsewhere": far_future_ms})  # alice at her limit
    entry_id = world.client.xadd("jobs:stream", {"job_id": job_id, "user_id": mallory, **fields})
    runner = world.start_runner(MAX_JOBS_PER_USER="1")
    try:
        wait_for(lambda: world.client.exists(f"runner:waiting:{entry_id}"), 30, "the job to wait for alice's slot")
        assert world.job(job_id)["status"] == "pending"
        assert world.client.exists(f"runner:slots:{mallory}") == 0

        world.client.zrem(f"runner:slots:{alice}", "another-attempt|elsewhere")
        wait_for(lambda: world.job(job_id)["status"] == "success", 60, "the job to run once alice's slot is free")
    finally:
        runner.stop()
    assert "Traceback" not in runner.log()


def test_a_job_hash_that_cannot_be_used_fails_with_its_reason_and_frees_the_users_slot(world: World) -> None:
    """Read by the begin script after the job became running: it still ends failed, with one clear
    reason in error_message and the output, its slot freed and its entry acknowledged."""
    job_id = world.add_job(branch="main;rm -rf /")
    assert world.run_burst(MAX_JOBS_PER_USER="1").returncode == 0
    job = world.job(job_id)
    assert job["status"] == "failed" and job["error_message"].startswith("job refused: "), job
    assert "branch" in job["error_message"] and job.get("started_at"), "refused once begun"
    assert job["error_message"] in world.output_text(job_id)
    assert world.client.zcard(f"runner:slots:{world.default_user}") == 0
    assert world.client.xpending("jobs:stream", "jobs:stream:runners")["pending"] == 0


def test_a_job_that_cannot_be_used_is_refused_at_once_even_while_its_user_is_at_the_limit(world: World) -> None:
    """Read by the begin script that found the user's slots full: refused then, not held for a slot."""
    far_future_ms = int(time.time() * 1000) + 3_600_000
    world.client.zadd(f"runner:slots:{world.default_user}", {"another-attempt|elsewhere": far_future_ms})
    job_id = world.add_job(branch="../escape")
    runner = world.start_runner(MAX_JOBS_PER_USER="1")
    try:
        wait_for(lambda: world.job(job_id)["status"] == "failed", 30, "the job to be refused")
    finally:
        runner.stop()
    job = world.job(job_id)
    assert job["error_message"].startswith("job refused: ") and "branch" in job["error_message"], job
    assert not job.get("started_at")
    assert world.client.zcard(f"runner:slots:{world.default_user}") == 1  # only the other attempt's
