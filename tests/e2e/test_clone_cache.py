"""The clone cache seen from the remote: a job asks for the refs once (no ls-remote before the
clone), a second job on the same repository downloads next to nothing, line counts stay right, and a
branch one user's token cannot see is never served to that user from what another user's job cached."""

from __future__ import annotations

import random
import uuid

from tests.e2e.test_job_flow import CHANGE_AGENT, server_numstat
from tests.support.git_server import RecordedRequest
from tests.support.world import REPO_FILES, World

BIG_FILE_BYTES = 400_000  # random hex: it does not compress, so a full clone's pack is about this large
ADVERTISEMENT = "/info/refs?service=git-upload-pack"


def upload_pack_requests(world: World, name: str) -> list[RecordedRequest]:
    prefix = f"/{name}.git/"
    return [
        r
        for r in list(world.git.requests)
        if r.path.startswith(prefix) and ("git-upload-pack" in r.path or r.path.endswith(ADVERTISEMENT))
    ]


def advertisements(requests: list[RecordedRequest]) -> int:
    return sum(r.method == "GET" and r.path.endswith(ADVERTISEMENT) for r in requests)


def test_a_second_job_on_a_repository_is_served_from_the_cache_after_a_single_ref_advertisement(
    world: World,
) -> None:
    rnd = random.Random(1)
    big = "".join(f"{rnd.getrandbits(256):064x}\n" for _ in range(BIG_FILE_BYTES // 65))
    world.repo_name = f"cached-{uuid.uuid4().hex[:8]}"
    world.repo_url = world.git.create_repo(world.repo_name, {**REPO_FILES, "data.txt": big})
    base = world.git.branches(world.repo_name)["main"]

    world.git.clear_requests()
    first = world.add_job(prompt="First change")
    assert world.run_burst(AGENT_COMMAND=CHANGE_AGENT).returncode == 0
    first_requests = upload_pack_requests(world, world.repo_name)
    world.git.clear_requests()
    second = world.add_job(prompt="Second change")
    assert world.run_burst(AGENT_COMMAND=CHANGE_AGENT).returncode == 0
    second_requests = upload_pack_requests(world, world.repo_name)

    for job_id in (first, second):
        job = world.job(job_id)
        assert job["status"] == "success", world.output_text(job_id)
        head = world.git.branches(world.repo_name)[job["branch"]]
        assert (int(job["lines_added"]), int(job["lines_removed"])) == server_numstat(world, base, head) == (2, 1)
        assert "Warning" not in world.output_text(job_id)
        assert "Looking up branches" not in world.output_text(job_id)
    # One advertisement per job: the clone is the first request, with no ls-remote before it.
    assert advertisements(first_requests) == 1 and advertisements(second_requests) == 1
    first_bytes = sum(r.response_bytes for r in first_requests)
    second_bytes = sum(r.response_bytes for r in second_requests)
    assert first_bytes > BIG_FILE_BYTES // 2
    assert second_bytes < BIG_FILE_BYTES // 20, (first_bytes, second_bytes)
    mirrors = list((world.temp_dir / "cache").glob("*.git"))
    assert len(mirrors) == 1


def test_a_branch_hidden_from_a_users_token_is_not_served_to_that_user_from_the_cache(world: World) -> None:
    world.repo_name = f"hidden-{uuid.uuid4().hex[:8]}"
    world.repo_url = world.git.create_repo(
        world.repo_name, REPO_FILES, extra_branches={"private": {"secret.txt": "only for the first user\n"}}
    )
    private_tip = world.git.branches(world.repo_name)["private"]
    owner_job = world.add_job(branch="private", prompt="Work on the private branch")
    assert world.run_burst(AGENT_COMMAND=CHANGE_AGENT).returncode == 0
    assert world.job(owner_job)["status"] == "success"

    other_token = f"other-{uuid.uuid4().hex}"
    world.git.allow_token(other_token)
    world.git.hide_refs(other_token, "refs/heads/private")
    other_user, other_provider = world.user("other"), str(uuid.uuid4())
    world.add_provider(other_user, other_provider, token=other_token)
    main_tip = world.git.branches(world.repo_name)["main"]
    # The agent looks in its own clone (the base's objects are there, the hidden branch's are
    # not) and for the cache, which its sandbox does not show.
    probe = (
        f"git cat-file -e {main_tip} && echo base-present > probe.txt; "
        f"if git cat-file -e {private_tip} 2>/dev/null; then echo served; else echo absent; fi >> probe.txt; "
        f"if test -e {world.temp_dir / 'cache'}; then echo cache-visible; else echo cache-hidden; fi >> probe.txt"
    )
    other_job = world.add_job(user=other_user, provider=other_provider, branch="private", prompt="Probe")
    assert world.run_burst(AGENT_COMMAND=probe).returncode == 0

    job = world.job(other_job)
    assert job["status"] == "success", world.output_text(other_job)
    assert "Using the default branch main: branch private was not found on the remote" in world.output_text(other_job)
    assert (world.temp_dir / "cache").is_dir()  # there on the host, not in the sandbox
    assert world.git.show_file(world.repo_name, job["branch"], "probe.txt") == "base-present\nabsent\ncache-hidden\n"
    history = world.git.log(world.repo_name, job["branch"])
    assert history[1][0] == main_tip
    assert other_token not in world.output_text(other_job)


def test_the_push_leases_against_the_work_branch_tip_its_clone_fetched(world: World) -> None:
    main_tip = world.git.branches(world.repo_name)["main"]
    bare = world.git.repo_path(world.repo_name)
    left_over = str(uuid.uuid4())
    world.git._bare_git(world.repo_name, ["update-ref", f"refs/heads/repobox/{left_over[:8]}", main_tip])
    world.add_job(job_id=left_over)
    assert world.run_burst(AGENT_COMMAND=CHANGE_AGENT).returncode == 0
    assert world.job(left_over)["status"] == "success", world.output_text(left_over)
    assert f"left by an earlier attempt (at {main_tip[:12]})" in world.output_text(left_over)
    assert world.git.log(world.repo_name, f"repobox/{left_over[:8]}")[1][0] == main_tip

    # Someone else creates the branch while the agent runs: the push must not replace it.
    raced = str(uuid.uuid4())
    branch = f"repobox/{raced[:8]}"
    world.add_job(job_id=raced)
    race = f"git --git-dir={bare} update-ref refs/heads/{branch} {main_tip} && {CHANGE_AGENT}"
    assert world.run_burst(AGENT_COMMAND=race, AGENT_SANDBOX="none").returncode == 0
    job = world.job(raced)
    assert job["status"] == "failed", world.output_text(raced)
    assert "git push failed" in job["error_message"]
    assert world.git.branches(world.repo_name)[branch] == main_tip
