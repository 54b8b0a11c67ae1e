"""Jobs by hand (`enqueue`, `logs`, `cancel`, `retry`) and the `health` probe, against a real Redis
and the suite's HTTPS git server."""

from __future__ import annotations

import re

from tests.support.reliability_helpers import wait_agent_running, wait_status
from tests.support.world import World, wait_for


def test_enqueue_creates_a_job_as_the_web_app_does_and_it_runs(world: World) -> None:
    user = world.user("operator")
    world.add_provider(user)

    result = world.repobox(
        "enqueue",
        "--user",
        user,
        "--provider",
        world.provider_id,
        "--repo",
        world.repo_url,
        "--prompt",
        "Add a file",
        "--environment",
        "python",
    )

    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", job_id)
    job = world.job(job_id)
    assert (job["user_id"], job["status"], job["environment"], job["branch"]) == (user, "pending", "python", "main")
    assert world.client.zscore(f"jobs:user:{user}", job_id) is not None
    assert world.run_burst().returncode == 0
    assert world.job(job_id)["status"] == "success"


def test_enqueue_refuses_a_hostile_repository_url_in_one_line(world: World) -> None:
    result = world.repobox(
        "enqueue",
        "--user",
        world.default_user,
        "--provider",
        world.provider_id,
        "--repo",
        "ssh://git@127.0.0.1/x.git",
        "--prompt",
        "x",
    )

    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "scheme" in result.stderr
    assert world.client.xlen("jobs:stream") == 0


def test_logs_shows_the_output_and_follow_exits_by_the_final_status(world: World) -> None:
    good = world.add_job()
    bad = world.add_job(user=world.user("failing"))
    world.run_burst(AGENT_COMMAND='[ "$REPOBOX_PROMPT" = fail ] && exit 3; echo done >> README.md')
    world.client.hset(f"job:{bad}", "status", "failed")  # both final: follow returns at once

    shown = world.repobox("logs", good)
    followed_good = world.repobox("logs", "--follow", good)
    followed_bad = world.repobox("logs", "-f", bad)

    assert shown.returncode == 0 and "Push completed" in shown.stdout
    assert followed_good.returncode == 0 and f"job {good}: success" in followed_good.stdout
    assert followed_bad.returncode == 1


def test_logs_follow_tails_a_running_job_until_it_is_final(world: World) -> None:
    job_id = world.add_job()
    world.start_runner(AGENT_COMMAND="sleep 2; echo late-line; echo x >> README.md")
    wait_agent_running(world, job_id)

    result = world.repobox("logs", "--follow", job_id)

    assert result.returncode == 0, result.stderr
    assert "late-line" in result.stdout and result.stdout.rstrip().endswith(f"job {job_id}: success")


def test_logs_paints_error_lines_as_the_web_app_does(world: World) -> None:
    job_id = world.add_job()
    world.run_burst(AGENT_COMMAND="exit 4")

    result = world.repobox("logs", job_id)

    assert "✗ Error: agent command exited with status 4" in result.stdout


def test_cancel_stops_a_running_job_and_leaves_a_final_one(world: World) -> None:
    job_id = world.add_job()
    world.start_runner(AGENT_COMMAND="sleep 60")
    wait_agent_running(world, job_id)

    result = world.repobox("cancel", job_id)

    assert result.returncode == 0 and "cancelled" in result.stdout
    wait_status(world, job_id, "cancelled")
    wait_for(lambda: "finished_at" in world.job(job_id), 10, "the runner to stop the job and stamp it")
    assert "Job cancelled" in world.output_text(job_id)
    again = world.repobox("cancel", job_id)
    assert again.returncode == 0 and world.job(job_id)["status"] == "cancelled"


def test_enqueue_into_a_stream_key_of_another_type_writes_nothing_and_says_so(world: World) -> None:
    world.client.set("jobs:stream", "not a stream")  # a hand-made mistake in Redis
    user = world.user("operator")

    result = world.repobox(
        "enqueue", "--user", user, "--provider", world.provider_id, "--repo", world.repo_url, "--prompt", "x"
    )

    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "jobs:stream in Redis is a string, not a stream: nothing was written" in result.stderr
    assert world.client.keys("job:*") == [] and not world.client.exists(f"jobs:user:{user}")


def test_retry_runs_a_failed_job_again_keeping_its_old_output(world: World) -> None:
    job_id = world.add_job()
    world.run_burst(AGENT_COMMAND="exit 5")
    assert world.job(job_id)["status"] == "failed"

    result = world.repobox("retry", job_id)
    world.run_burst()

    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success" and "error_message" not in world.job(job_id)
    text = world.output_text(job_id)
    assert text.index("status 5") < text.index("Retrying the job") < text.index("Push completed")


def test_retry_runs_a_dead_lettered_job_again(world: World) -> None:
    job_id = world.add_job()
    entry_id = world.client.xrevrange("jobs:stream", count=1)[0][0]
    world.client.xgroup_create("jobs:stream", "jobs:stream:runners", id="0", mkstream=True)
    world.client.xreadgroup("jobs:stream:runners", "gone", {"jobs:stream": ">"}, count=1)
    world.client.xclaim("jobs:stream", "jobs:stream:runners", "gone", 0, [entry_id], retrycount=9, idle=10**9)
    world.run_burst(MAX_DELIVERIES="2", CLAIM_MIN_IDLE="1")
    assert world.job(job_id)["status"] == "failed" and world.client.xlen("runner:dead_letters") == 1

    result = world.repobox("retry", job_id)
    world.run_burst()

    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success"


def test_retry_refuses_a_job_that_is_not_failed_or_cancelled(world: World) -> None:
    job_id = world.add_job(enqueue=False)

    result = world.repobox("retry", job_id)

    assert result.returncode == 1 and "only a failed or cancelled job" in result.stderr


def test_health_answers_each_state_by_exit_code_quickly(world: World) -> None:
    def probe(*args: str, **env: str) -> int:
        return world.repobox("health", *args, **env).returncode

    assert probe() == 3  # no group yet: no runner ever started
    assert probe(REDIS_URL="redis://127.0.0.1:1") == 1
    assert probe(REDIS_URL="nonsense://x") == 2
    world.start_runner(name="probed")
    wait_for(lambda: probe("--runner-id", "probed") == 0, 20, "the runner to be healthy", interval_s=0.2)
    assert probe("--runner-id", "nobody") == 4
    world.client.set("runner:heartbeat:old", '{"at": 1}', ex=60)
    assert probe("--runner-id", "old") == 5
    assert probe() == 0
