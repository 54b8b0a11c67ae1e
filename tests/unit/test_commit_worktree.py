"""The agent's clone, and committing the agent's files with real git: the commit, its line counts
(one `diff-tree` against the base), nothing committed when nothing changed, and gitlinks never
committed."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from repobox_cli import workdir
from repobox_cli.control import JobControl
from repobox_cli.git_ops import Git
from repobox_cli.settings import Settings
from repobox_cli.validation import repo_url
from tests.support.git_server import clean_git_env, git_in

GIT_DEADLINE_S = 30.0
JOB_TIMEOUT_S = 60.0
BASE_FILES = {
    "README.md": "hello\nworld\n",
    "src/app.py": "a = 1\nb = 2\nc = 3\n",
    "old.txt": "gone\nsoon\n",
    "vendor/lib/x.c": "int x;\n",
}


def git(git_dir: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    return git_in(git_dir, *args, stdin=stdin, env=env).stdout.strip()


def nested_repository(path: Path) -> None:
    """A repository with one commit at `path`, inside the agent's clone."""
    path.mkdir(exist_ok=True)
    for args in (["init", "-q", str(path)], ["-C", str(path), "commit", "-q", "--allow-empty", "-m", "inner"]):
        subprocess.run(["git", *args], env=clean_git_env(), check=True, timeout=GIT_DEADLINE_S)


@pytest.fixture
def job(tmp_path: Path) -> tuple[Git, str, list[tuple[str, str]]]:
    """A runner's repository whose `main` holds BASE_FILES, and the agent's clone of it."""
    settings = Settings(temp_dir=tmp_path / "temp", path_env=os.environ["PATH"])
    paths = workdir.prepare(settings.temp_dir, str(uuid.uuid4()), uuid.uuid4().hex[:12])
    lines: list[tuple[str, str]] = []
    runner_git = Git(settings, paths, JobControl(JOB_TIMEOUT_S), lambda line, stream: lines.append((line, stream)))
    runner_git.init_bare(paths.git_dir)
    blobs = [
        (path, git(paths.git_dir, "hash-object", "-w", "--stdin", stdin=text)) for path, text in BASE_FILES.items()
    ]
    index = {"GIT_INDEX_FILE": str(paths.root / "base-index")}
    for path, blob in blobs:
        git(paths.git_dir, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=index)
    tree = git(paths.git_dir, "write-tree", env=index)
    base = git(paths.git_dir, "commit-tree", tree, "-m", "base")
    git(paths.git_dir, "update-ref", "refs/heads/main", base)
    runner_git.checkout_for_agent(repo_url("https://git.example.com/acme/app.git"), "main", "repobox/work")
    return runner_git, base, lines


def numstat(git_dir: Path, base: str, commit: str) -> tuple[int, int]:
    added = removed = 0
    for line in git(git_dir, "diff", "--numstat", base, commit).splitlines():
        plus, minus, _ = line.split("\t", 2)
        if plus != "-":
            added, removed = added + int(plus), removed + int(minus)
    return added, removed


def test_the_commit_holds_the_agents_files_and_its_line_counts_are_gits_numstat(
    job: tuple[Git, str, list[tuple[str, str]]],
) -> None:
    runner_git, base, _ = job
    repo = runner_git.paths.repo
    (repo / "README.md").write_text("hello\nthere\nworld\n")
    (repo / "src" / "app.py").write_text("a = 1\n")
    (repo / "old.txt").unlink()
    (repo / "new dir").mkdir()
    (repo / "new dir" / "tab\tname.md").write_text("one\ntwo\n")
    (repo / "logo.bin").write_bytes(b"\x00\x01\x02" * 100)
    (repo / ":lead\tand tab").write_text("x\n")  # a name shaped like diff-tree's own records
    (repo / "vendor" / "lib" / "x.c").chmod(0o755)

    committed = runner_git.commit_worktree(base, "Agent change")

    assert committed is not None
    git_dir = runner_git.paths.git_dir
    assert (committed.added, committed.removed) == numstat(git_dir, base, committed.commit) == (4, 4)
    assert git(git_dir, "rev-parse", f"{committed.commit}^") == base
    listed = set(git(git_dir, "ls-tree", "-r", "--name-only", "-z", committed.commit).split("\0")) - {""}
    assert listed == {"README.md", "src/app.py", "new dir/tab\tname.md", "logo.bin", ":lead\tand tab", "vendor/lib/x.c"}
    assert git(git_dir, "log", "-1", "--format=%s", committed.commit) == "Agent change"


def test_the_agents_clone_is_on_the_work_branch_with_the_real_origin_and_empty_hooks(
    job: tuple[Git, str, list[tuple[str, str]]],
) -> None:
    runner_git, base, _ = job
    dot_git = runner_git.paths.repo / ".git"

    assert git(dot_git, "symbolic-ref", "HEAD") == "refs/heads/repobox/work"
    assert git(dot_git, "rev-parse", "HEAD") == base
    assert git(dot_git, "config", "remote.origin.url") == "https://git.example.com/acme/app.git"
    assert (dot_git / "hooks").is_dir() and not list((dot_git / "hooks").iterdir())  # no sample hooks
    assert (dot_git / "info").is_dir()
    assert (runner_git.paths.repo / "README.md").read_text() == BASE_FILES["README.md"]


def test_nothing_changed_commits_nothing_and_moves_no_ref(job: tuple[Git, str, list[tuple[str, str]]]) -> None:
    runner_git, base, _ = job
    (runner_git.paths.repo / "README.md").write_text("hello\nworld\n")  # rewritten, same content

    assert runner_git.commit_worktree(base, "Nothing", ref="refs/heads/repobox/work") is None
    assert git(runner_git.paths.git_dir, "for-each-ref", "--format=%(refname)", "refs/heads/repobox/") == ""


def test_a_ref_given_points_at_the_commit(job: tuple[Git, str, list[tuple[str, str]]]) -> None:
    runner_git, base, _ = job
    (runner_git.paths.repo / "NEW.md").write_text("new\n")

    committed = runner_git.commit_worktree(base, "Add", ref="refs/heads/repobox/work")

    assert committed is not None
    assert git(runner_git.paths.git_dir, "rev-parse", "refs/heads/repobox/work") == committed.commit


def test_a_gitlink_the_walk_missed_is_put_back_as_the_base_had_that_path(
    job: tuple[Git, str, list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second line of defence: `git add` met nested repositories the walk did not report (one
    made after it); the index's new gitlinks are replaced by what the base had at that path."""
    runner_git, base, lines = job
    repo = runner_git.paths.repo
    for nested in (repo / "fresh", repo / "src" / "inner"):
        nested_repository(nested)
        (nested / "y.c").write_text("int y;\n")
    (repo / "README.md").write_text("hello\nworld\nmore\n")
    monkeypatch.setattr(workdir, "nested_repositories", lambda root: [])

    committed = runner_git.commit_worktree(base, "With nested repositories")

    assert committed is not None
    git_dir = runner_git.paths.git_dir
    entries = git(git_dir, "ls-tree", "-r", "-z", committed.commit).split("\0")
    assert not [entry for entry in entries if entry.startswith("160000")]
    listed = {entry.split("\t", 1)[1] for entry in entries if entry}
    assert listed == {"README.md", "src/app.py", "old.txt", "vendor/lib/x.c"}
    assert (committed.added, committed.removed) == numstat(git_dir, base, committed.commit) == (1, 0)
    assert (
        "Skipped 2 nested repositories (committed as the base branch had them): fresh, src/inner",
        "stdout",
    ) in lines


def test_a_gitmodules_file_saying_ignore_all_does_not_hide_a_new_gitlink(
    job: tuple[Git, str, list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner_git, base, _ = job
    repo = runner_git.paths.repo
    nested_repository(repo / "fresh")
    (repo / ".gitmodules").write_text('[submodule "fresh"]\n\tpath = fresh\n\turl = ./fresh\n\tignore = all\n')
    monkeypatch.setattr(workdir, "nested_repositories", lambda root: [])

    committed = runner_git.commit_worktree(base, "A gitlink hidden by .gitmodules")

    assert committed is not None
    entries = git(runner_git.paths.git_dir, "ls-tree", "-r", "-z", committed.commit).split("\0")
    assert not [entry for entry in entries if entry.startswith("160000")]


def test_line_counts_ignore_the_agents_gitattributes(job: tuple[Git, str, list[tuple[str, str]]]) -> None:
    runner_git, base, _ = job
    repo = runner_git.paths.repo
    (repo / ".gitattributes").write_text("* -diff binary\n")
    (repo / "README.md").write_text("hello\nworld\none\ntwo\n")

    committed = runner_git.commit_worktree(base, "Hide the counts")

    assert committed is not None
    assert (committed.added, committed.removed) == (3, 0)  # two README lines and the attributes line


def test_a_nested_repository_whose_name_is_not_utf8_is_left_out_by_name(
    job: tuple[Git, str, list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner_git, base, lines = job
    repo = runner_git.paths.repo
    name = os.fsdecode(b"bad\xff")
    nested_repository(repo / name)
    (repo / "README.md").write_text("hello\nworld\nmore\n")
    for walk_finds_it in (True, False):
        if not walk_finds_it:
            monkeypatch.setattr(workdir, "nested_repositories", lambda root: [])

        committed = runner_git.commit_worktree(base, "With a nested repository named in Latin-1")

        assert committed is not None
        entries = git(runner_git.paths.git_dir, "ls-tree", "-r", "-z", committed.commit).split("\0")
        assert not [entry for entry in entries if entry.startswith("160000")]
        assert any(line.startswith("Skipped 1 nested repository") for line, _ in lines)
        lines.clear()


def test_resetting_the_runners_repository_removes_what_an_agent_could_plant_there(
    job: tuple[Git, str, list[tuple[str, str]]],
) -> None:
    runner_git, base, _ = job
    git_dir = runner_git.paths.git_dir
    planted = {
        "shallow": f"{base}\n",
        "config.worktree": "[core]\n\tfsmonitor = /bin/false\n",
        "commondir": "/tmp\n",
        "info/grafts": f"{base}\n",
        "hooks/pre-push": "#!/bin/sh\n",
        "objects/info/alternates": "/tmp\n",
        "objects/info/commit-graph": "not a graph",
        "objects/info/commit-graphs/commit-graph-chain": "x\n",
    }
    for name, text in planted.items():
        (git_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (git_dir / name).write_text(text)
    (git_dir / "config").write_text('[core]\n\tbare = true\n[url "https://evil/"]\n\tpushInsteadOf = https://\n')

    runner_git.reset_runner_config()

    assert [name for name in planted if (git_dir / name).exists()] == []
    assert "evil" not in (git_dir / "config").read_text()
    assert git(git_dir, "rev-parse", "refs/heads/main") == base  # the repository still works
