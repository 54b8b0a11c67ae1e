"""What the agent leaves and says cannot be turned against the runner: huge or deep trees
are removed and the next run starts; endless output stays within MAX_OUTPUT_LINES/BYTES while other
users' jobs carry on; nested repositories are not committed; an oversized token fails one job with
one line. Real runner processes, redis-server and HTTPS git."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from repobox_cli import workdir
from tests.support.world import World

BURST_DEADLINE_S = 120.0
DEEP_LEVELS = 1500
MANY_FILES = 100_000
MAX_LINES = 10_000  # the defaults: the test checks what a runner does out of the box
MAX_BYTES = 4 * 1024 * 1024
RUNNER_LINES = 60  # the runner's reserve (50) and a little: its own lines may pass the agent's cap
TRUNCATED = "... output truncated after"

TREE_SCRIPT = r"""
import os, sys
levels, files, tops = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
for top in tops:
    os.mkdir(top)
    os.chdir(top)
    for i in range(files):
        os.close(os.open(f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644))
    for _ in range(levels):
        os.mkdir("d")
        os.chdir("d")
    with open("bottom.txt", "w") as f:
        f.write("at the bottom\n")
    os.chmod(".", 0o500)  # read-only leftovers must go too
print("trees made")
"""
IN_CLONE_AND_TMPDIR = '"$REPOBOX_REPO_DIR/generated" "$TMPDIR/generated"'


def python_agent(tmp: Path, source: str, *args: object) -> str:
    script = tmp / "agent_script.py"
    script.write_text(source)
    return shlex.join([sys.executable, str(script), *map(str, args)])


@pytest.fixture
def cworld(world: World) -> Iterator[World]:
    yield world
    # pytest's own clean-up (shutil.rmtree) dies on a 1,500-deep tree: remove whatever is left.
    workdir.remove_tree(world.temp_dir)


def leftovers(world: World) -> list[str]:
    """What jobs left in TEMP_DIR, but the clone cache (kept across jobs on purpose)."""
    if not world.temp_dir.exists():
        return []
    return sorted(str(p.relative_to(world.temp_dir)) for p in world.temp_dir.iterdir() if p.name != "cache")


def output_items(world: World, job_id: str) -> list[str]:
    items: list[str] = world.client.lrange(f"job:{job_id}:output", 0, -1)
    return items


def assert_next_run_starts_and_runs_a_job(world: World) -> None:
    job_id = world.add_job(user=world.user("next-user"))
    result = world.run_burst()
    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success", world.output_text(job_id)


# -- trees -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_deep_trees_in_the_clone_and_tmpdir_are_removed_and_the_next_run_starts(cworld: World, tmp_path: Path) -> None:
    job_id = cworld.add_job()
    result = cworld.repobox_within(
        BURST_DEADLINE_S,
        "run",
        "--burst",
        AGENT_COMMAND=f"{python_agent(tmp_path, TREE_SCRIPT, DEEP_LEVELS, 10)} {IN_CLONE_AND_TMPDIR}",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    job = cworld.job(job_id)
    assert job["status"] == "success", cworld.output_text(job_id)
    assert "trees made" in cworld.output_text(job_id)
    assert leftovers(cworld) == []
    assert_next_run_starts_and_runs_a_job(cworld)


@pytest.mark.slow
def test_a_hundred_thousand_files_in_the_clone_and_tmpdir_are_removed(cworld: World, tmp_path: Path) -> None:
    job_id = cworld.add_job()
    # The agent fails after making them: the clean-up is what is tested, not committing 100,000 files.
    agent = python_agent(tmp_path, TREE_SCRIPT, 5, MANY_FILES)
    agent = f"{agent} {IN_CLONE_AND_TMPDIR} && exit 3"
    result = cworld.repobox_within(BURST_DEADLINE_S, "run", "--burst", AGENT_COMMAND=agent)
    assert result.returncode == 0, result.stderr
    job = cworld.job(job_id)
    assert job["status"] == "failed" and job["error_message"] == "agent command exited with status 3", job
    assert leftovers(cworld) == []
    assert_next_run_starts_and_runs_a_job(cworld)


def test_the_start_up_sweep_leaves_what_it_cannot_remove_and_the_runner_starts(
    cworld: World,
) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    cworld.temp_dir.mkdir(mode=0o700)
    stuck_job, deep_job = cworld.add_job(enqueue=False), cworld.add_job(enqueue=False)
    for job_id in (stuck_job, deep_job):
        cworld.client.hset(f"job:{job_id}", "status", "failed")
    stuck = cworld.temp_dir / stuck_job / "0123456789ab" / "tmp" / "stuck.txt"
    stuck.parent.mkdir(parents=True)
    stuck.write_text("cannot be removed\n")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True, check=False).returncode != 0:
        pytest.skip("this filesystem (or user) cannot set the immutable attribute")
    try:
        # A leftover deeper than Python's recursion limit: it used to crash every start.
        deep_top = cworld.temp_dir / deep_job / "ba9876543210"
        deep_top.mkdir(parents=True)
        tree_args = [str(DEEP_LEVELS), "3", str(deep_top / "tmp")]
        subprocess.run([sys.executable, "-c", TREE_SCRIPT, *tree_args], check=True, timeout=60)
        job_id = cworld.add_job()
        result = cworld.run_burst()
        assert result.returncode == 0, result.stderr
        assert cworld.job(job_id)["status"] == "success", cworld.output_text(job_id)
        assert stuck.exists(), "an immutable file cannot have been removed"
        assert not (cworld.temp_dir / deep_job).exists()
        assert "left in place" in result.stderr and "Traceback" not in result.stderr
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=False)


# -- output ----------------------------------------------------------------------------------------
def assert_capped(world: World, job_id: str) -> None:
    items = output_items(world, job_id)
    assert len(items) <= MAX_LINES + RUNNER_LINES
    assert sum(len(item.encode()) for item in items) <= MAX_BYTES
    lines = [json.loads(item)["line"] for item in items]
    assert sum(1 for line in lines if line.startswith(TRUNCATED)) == 1, "exactly one truncation line"
    assert all(len(line.encode()) <= 4096 for line in lines)
    assert world.job(job_id)["status"] in ("success", "failed")
    assert lines[-1].startswith(("Error: ", "Job completed successfully")), lines[-3:]


@pytest.mark.parametrize(
    "agent",
    [
        pytest.param(
            f"{sys.executable} -c 'import sys\nfor i in range(300_000): print(\"line\", i)'",
            id="300000-lines",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            f"{sys.executable} -c 'import sys; sys.stdout.write(\"x\" * (8 << 20)); sys.exit(4)'",
            id="8MiB-one-line",
        ),
        pytest.param(
            f"{sys.executable} -c 'import sys\nfor i in range(2_000): print(\"y\" * 5_000)'",
            id="long-lines",
        ),
    ],
)
def test_endless_output_stays_within_the_caps_and_other_jobs_carry_on(cworld: World, agent: str) -> None:
    flood = cworld.add_job(user=cworld.user("talker"), prompt="flood")
    other = cworld.add_job(user=cworld.user("quiet-user"), prompt="be quiet")
    only_for_the_flood = f'if [ "$REPOBOX_PROMPT" = flood ]; then {agent}; else echo quiet > quiet.txt; fi'
    result = cworld.repobox_within(BURST_DEADLINE_S, "run", "--burst", AGENT_COMMAND=only_for_the_flood)
    assert result.returncode == 0, result.stderr
    assert cworld.job(other)["status"] == "success", cworld.output_text(other)[-2000:]
    if agent.endswith("sys.exit(4)'"):
        assert cworld.job(flood)["error_message"] == "agent command exited with status 4"
        items = output_items(cworld, flood)
        assert sum(len(item.encode()) for item in items) <= MAX_BYTES
        assert cworld.job(flood)["status"] == "failed"
        assert any("[cut " in json.loads(item)["line"] for item in items)
    else:
        assert_capped(cworld, flood)


# -- the commit --------------------------------------------------------------------------------
NESTED_AGENT = r"""
set -e
mkdir -p sub planted
printf 'gitdir: %s\n' "$PRIVATE_GIT_DIR" > sub/.git
echo "sub file" > sub/visible.txt
git init -q nested
echo inner > nested/inner.txt
git -C nested add inner.txt
git -C nested -c user.name=x -c user.email=x@x commit -q -m inner
echo "ordinary" > planted/ordinary.txt
"""


def test_nested_repositories_are_not_committed_and_one_line_names_them(cworld: World, tmp_path: Path) -> None:
    private = tmp_path / "private.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(private)], check=True)
    work = tmp_path / "private-work"
    subprocess.run(["git", "clone", "-q", str(private), str(work)], check=True, capture_output=True)
    (work / "secret.txt").write_text("private\n")
    subprocess.run(["git", "-C", str(work), "add", "secret.txt"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(work),
            "-c",
            "user.name=x",
            "-c",
            "user.email=x@x",
            "commit",
            "-q",
            "-m",
            "s",
        ],
        check=True,
    )
    subprocess.run(
        ["git", "-C", str(work), "push", "-q", "origin", "HEAD:refs/heads/main"],
        check=True,
        capture_output=True,
    )
    private_head = subprocess.run(
        ["git", "--git-dir", str(private), "rev-parse", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    job_id = cworld.add_job()
    agent = f"PRIVATE_GIT_DIR={shlex.quote(str(private))} && export PRIVATE_GIT_DIR && {NESTED_AGENT}"
    result = cworld.repobox_within(BURST_DEADLINE_S, "run", "--burst", AGENT_COMMAND=agent)
    assert result.returncode == 0, result.stderr
    assert cworld.job(job_id)["status"] == "success", cworld.output_text(job_id)
    branch = f"repobox/{job_id[:8]}"
    tree = subprocess.run(
        ["git", "--git-dir", str(cworld.git.repo_path(cworld.repo_name)), "ls-tree", "-r", branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "160000" not in tree and private_head not in tree, tree
    assert "planted/ordinary.txt" in tree
    skipped = [line for line in cworld.output_text(job_id).splitlines() if line.startswith("Skipped ")]
    assert skipped == ["Skipped 2 nested repositories (committed as the base branch had them): nested, sub"]


def test_a_gitlink_already_in_the_base_branch_is_kept_unchanged(cworld: World) -> None:
    base = cworld.git.branches(cworld.repo_name)["main"]
    bare = str(cworld.git.repo_path(cworld.repo_name))
    link_sha = "1234567890abcdef1234567890abcdef12345678"
    env = {"GIT_INDEX_FILE": str(cworld.tmp / "gitlink.index"), "PATH": "/usr/bin:/bin"}
    git = ["git", "--git-dir", bare]
    subprocess.run([*git, "read-tree", base], check=True, env=env)
    subprocess.run(
        [*git, "update-index", "--add", "--cacheinfo", f"160000,{link_sha},vendor/lib"],
        check=True,
        env=env,
    )
    tree = subprocess.run([*git, "write-tree"], check=True, env=env, capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(
        [
            *git,
            "-c",
            "user.name=x",
            "-c",
            "user.email=x@x",
            "commit-tree",
            tree,
            "-p",
            base,
            "-m",
            "with a submodule",
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run([*git, "update-ref", "refs/heads/main", commit], check=True)
    job_id = cworld.add_job()
    result = cworld.repobox_within(BURST_DEADLINE_S, "run", "--burst", AGENT_COMMAND="echo more >> README.md")
    assert result.returncode == 0, result.stderr
    assert cworld.job(job_id)["status"] == "success", cworld.output_text(job_id)
    tree_out = subprocess.run(
        [*git, "ls-tree", "-r", f"repobox/{job_id[:8]}"], capture_output=True, text=True, check=True
    ).stdout
    assert f"160000 commit {link_sha}\tvendor/lib" in tree_out
    assert "Skipped " not in cworld.output_text(job_id)


# -- the token ---------------------------------------------------------------------------------
def test_an_oversized_token_fails_the_job_with_one_clear_line(cworld: World) -> None:
    cworld.add_provider(cworld.user("big-token-user"), token="ghp_" + "A" * (128 * 1024))
    job_id = cworld.add_job(user=cworld.user("big-token-user"))
    other = cworld.add_job(user=cworld.user("someone-else"))
    result = cworld.run_burst()
    assert result.returncode == 0, result.stderr
    job = cworld.job(job_id)
    assert job["status"] == "failed"
    assert job["error_message"] == "the provider's token is larger than 4 KiB: refused"
    assert "Traceback" not in result.stderr and "internal error" not in cworld.output_text(job_id)
    assert cworld.job(other)["status"] == "success"
