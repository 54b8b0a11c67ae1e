"""The clone cache with real git against the suite's HTTPS git server: isolation between jobs
and users, concurrent jobs on one repository, damaged mirrors, LRU eviction, maintenance."""

from __future__ import annotations

import dataclasses
import errno
import json
import multiprocessing
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from repobox_cli import clone_cache, workdir
from repobox_cli.control import JobControl
from repobox_cli.errors import BranchMissing, GitError, SettingsError
from repobox_cli.git_ops import Fetched, Git
from repobox_cli.redaction import basic_auth_value
from repobox_cli.settings import RUN, Settings, load_settings
from repobox_cli.validation import RepoUrl, repo_url
from tests.support.git_server import GitHttpsServer
from tests.support.git_server import git_in as git
from tests.support.tls import TestCA
from tests.support.world import wait_for

JOB_TIMEOUT_S = 60.0
GIT_DEADLINE_S = 30.0


@dataclass
class Remote:
    server: GitHttpsServer
    name: str
    repo: RepoUrl
    token: str


@dataclass
class Job:
    git: Git
    lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def git_dir(self) -> Path:
        return self.git.paths.git_dir

    def clone(self, remote: Remote, branch: str = "main", work_branch: str | None = None) -> Fetched:
        """The job's clone, and then the mirror's maintenance if it started any (so that each
        test sees one state of the mirror)."""
        try:
            fetched = self.git.clone_branch(remote.repo, remote.token, branch, work_branch)
        except BaseException:
            clone_cache.background.wait(GIT_DEADLINE_S)
            raise
        assert clone_cache.background.wait(GIT_DEADLINE_S)
        return fetched

    @property
    def warnings(self) -> list[str]:
        return [line for line, _ in self.lines if line.startswith("Warning:")]

    @property
    def notes(self) -> list[str]:
        return [line for line, stream in self.lines if line.startswith("Cloning directly") and stream == "stdout"]


@pytest.fixture(autouse=True)
def maintenance(monkeypatch: pytest.MonkeyPatch) -> Iterator[clone_cache.Maintenance]:
    """This test's own mirror maintenance, stopped at its end."""
    own = clone_cache.Maintenance()
    monkeypatch.setattr(clone_cache, "background", own)
    yield own
    assert own.stop()


@pytest.fixture
def settings(tmp_path: Path, tls: TestCA) -> Settings:
    return Settings(
        temp_dir=tmp_path / "temp",
        git_env={"GIT_SSL_CAINFO": str(tls.ca_file)},
        path_env=os.environ["PATH"],
    )


def new_job(settings: Settings) -> Job:
    paths = workdir.prepare(settings.temp_dir, f"job-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:12])
    job = Job(Git(settings, paths, JobControl(JOB_TIMEOUT_S), lambda line, stream: None))
    job.git.emit = lambda line, stream: job.lines.append((line, stream))
    return job


def new_remote(server: GitHttpsServer, **branches: dict[str, str]) -> Remote:
    name = f"cache-{uuid.uuid4().hex[:8]}"
    url = server.create_repo(name, {"README.md": "hello\n"}, extra_branches=branches)
    token = f"tok-{uuid.uuid4().hex}"
    server.allow_token(token)
    return Remote(server, name, repo_url(url), token)


def cache_of(settings: Settings) -> clone_cache.CloneCache:
    return clone_cache.CloneCache(settings.clone_cache_dir, settings.cache_max_bytes)


def mirror_of(settings: Settings, remote: Remote) -> Path:
    return cache_of(settings).mirror(remote.repo.url).path


def assert_self_contained(git_dir: Path, tip: str) -> None:
    """A repository that needs nothing else: no alternates, every object reachable present."""
    assert not (git_dir / "objects" / "info" / "alternates").exists()
    git(git_dir, "fsck", "--full", "--no-dangling")
    assert git(git_dir, "rev-parse", "refs/heads/main").stdout.strip() == tip


def test_a_second_clone_comes_through_the_mirror_and_each_job_repository_is_self_contained(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server)
    first = new_job(settings).clone(remote)
    mirror = mirror_of(settings, remote)
    assert git(mirror, "rev-parse", clone_cache.cached_ref("main")).stdout.strip() == first.base_sha
    second_job = new_job(settings)
    second = second_job.clone(remote)
    assert second == first and second.branch == "main" and second.work_sha is None
    assert_self_contained(second_job.git_dir, second.base_sha)
    assert second_job.warnings == []
    for directory, _, files in os.walk(mirror):  # no credentials kept in the mirror
        for name in files:
            content = Path(directory, name).read_bytes()
            assert remote.token.encode() not in content
            assert basic_auth_value(remote.token).encode() not in content


def test_a_job_repository_holds_only_objects_its_own_fetch_reached_not_other_branches_in_the_mirror(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server, private={"secret.txt": "another user's secret\n"})
    private_tip = new_job(settings).clone(remote, "private").base_sha
    assert git(mirror_of(settings, remote), "cat-file", "-e", private_tip, check=False).returncode == 0
    job = new_job(settings)
    job.clone(remote, "main")
    assert git(job.git_dir, "cat-file", "-e", private_tip, check=False).returncode != 0
    blobs = git(job.git_dir, "cat-file", "--batch-all-objects", "--batch-check").stdout
    secret_blob = git(mirror_of(settings, remote), "rev-parse", f"{private_tip}:secret.txt").stdout.strip()
    assert secret_blob not in blobs


def test_the_work_branch_tip_comes_from_the_same_fetch_and_a_missing_base_branch_is_reported(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server, **{"repobox/job1": {"a.txt": "earlier attempt\n"}})
    tip = git_server.branches(remote.name)["repobox/job1"]
    assert new_job(settings).clone(remote, "main", "repobox/job1").work_sha == tip
    assert new_job(settings).clone(remote, "main", "repobox/job").work_sha is None  # a prefix is not the branch
    with pytest.raises(BranchMissing):
        new_job(settings).clone(remote, "no-such-branch", "repobox/job1")
    mirror = mirror_of(settings, remote)
    assert git(mirror, "for-each-ref", "refs/repobox-work/").stdout == ""


def spy_on_copies(monkeypatch: pytest.MonkeyPatch) -> list[Path | None]:
    """Where each copy out of a mirror went (None: the runner's repository), the copies still real."""
    calls: list[Path | None] = []
    real = Git.copy_from_mirror

    def spy(self: Git, mirror: Path, sha: str, branch: str, *, into: Path | None = None) -> None:
        calls.append(into)
        real(self, mirror, sha, branch, into=into)

    monkeypatch.setattr(Git, "copy_from_mirror", spy)
    return calls


def advance(remote: Remote, branch: str = "main") -> str:
    """A new commit on the remote's `branch` (its tree unchanged); the commit."""
    bare = remote.server.repo_path(remote.name)
    parent = git(bare, "rev-parse", f"refs/heads/{branch}").stdout.strip()
    commit = git(bare, "commit-tree", f"{parent}^{{tree}}", "-p", parent, "-m", "moved on").stdout.strip()
    git(bare, "update-ref", f"refs/heads/{branch}", commit)
    return commit


def test_a_repeat_clone_adopts_the_copy_made_while_the_remote_was_asked(
    settings: Settings, git_server: GitHttpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = new_remote(git_server)
    first = new_job(settings).clone(remote)
    copies = spy_on_copies(monkeypatch)
    job = new_job(settings)
    staging = job.git.paths.root / clone_cache.STAGING_NAME

    assert job.clone(remote) == first

    assert copies == [staging]  # one copy, made early, adopted
    assert_self_contained(job.git_dir, first.base_sha)
    assert not staging.exists()


def test_when_the_branch_moved_on_the_early_copy_is_dropped_and_the_job_gets_the_new_commit(
    settings: Settings, git_server: GitHttpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = new_remote(git_server)
    first = new_job(settings).clone(remote)
    tip = advance(remote)
    copies = spy_on_copies(monkeypatch)
    job = new_job(settings)
    staging = job.git.paths.root / clone_cache.STAGING_NAME

    fetched = job.clone(remote)

    assert fetched.base_sha == tip != first.base_sha
    assert copies == [staging, None]
    assert_self_contained(job.git_dir, tip)
    assert not staging.exists()


def test_an_early_copy_of_a_branch_hidden_from_the_jobs_token_is_never_kept(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server, private={"secret.txt": "another user's secret\n"})
    private_tip = new_job(settings).clone(remote, "private").base_sha
    other = dataclasses.replace(remote, token=f"tok-{uuid.uuid4().hex}")
    git_server.allow_token(other.token)
    git_server.hide_refs(other.token, "refs/heads/private")
    job = new_job(settings)

    with pytest.raises(BranchMissing):
        job.clone(other, "private")

    assert not (job.git.paths.root / clone_cache.STAGING_NAME).exists()
    # No repository the job left anywhere in its directory holds the hidden branch's commit.
    for objects in job.git.paths.root.rglob("objects"):
        assert git(objects.parent, "cat-file", "-e", private_tip, check=False).returncode != 0, objects


def test_two_jobs_cloning_one_repository_at_once_both_get_it_and_the_mirror_stays_sound(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server, feature={"f.txt": "feature\n"})
    jobs = [new_job(settings) for _ in range(4)]
    branches = ["main", "feature", "main", "feature"]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda pair: pair[0].clone(remote, pair[1]), zip(jobs, branches, strict=True)))
    expected = git_server.branches(remote.name)
    for job, branch, result in zip(jobs, branches, results, strict=True):
        assert result.base_sha == expected[branch]
        assert job.warnings == []
        git(job.git_dir, "fsck", "--full", "--no-dangling")
    git(mirror_of(settings, remote), "fsck", "--full", "--no-dangling")


def _clone_in_another_process(temp_dir: str, ca_file: str, url: str, token: str, branch: str) -> tuple[str, bool]:
    """A job's clone in a process of its own, as a second runner on this host would make it."""
    settings = Settings(temp_dir=Path(temp_dir), git_env={"GIT_SSL_CAINFO": ca_file}, path_env=os.environ["PATH"])
    job = new_job(settings)
    fetched = job.git.clone_branch(repo_url(url), token, branch, None)
    assert clone_cache.background.wait(GIT_DEADLINE_S)  # not left to run on after this process
    sound = git(job.git_dir, "fsck", "--full", "--no-dangling", check=False).returncode == 0
    return fetched.base_sha, sound and not job.warnings


def test_two_runner_processes_cloning_one_repository_at_once_share_its_mirror_safely(
    settings: Settings, git_server: GitHttpsServer, tls: TestCA
) -> None:
    remote = new_remote(git_server, feature={"f.txt": "feature\n"})
    branches = ["main", "feature", "feature", "main"]
    args = [(str(settings.temp_dir), str(tls.ca_file), remote.repo.url, remote.token, b) for b in branches]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_clone_in_another_process, *zip(*args, strict=True)))
    expected = git_server.branches(remote.name)
    assert results == [(expected[b], True) for b in branches]
    git(mirror_of(settings, remote), "fsck", "--full", "--no-dangling")


def test_a_job_clones_directly_when_another_job_holds_the_mirror_past_the_short_wait(
    settings: Settings, git_server: GitHttpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clone_cache, "LOCK_WAIT_S", 0.3)
    remote = new_remote(git_server)
    new_job(settings).clone(remote)
    cache = cache_of(settings)
    with cache.locked(cache.mirror(remote.repo.url), JobControl(JOB_TIMEOUT_S)):  # a stalled fetch
        job = new_job(settings)
        result = job.clone(remote)
    assert result.base_sha == git_server.branches(remote.name)["main"]
    assert job.warnings == []
    assert job.notes == [
        "Cloning directly: the clone cache is busy "
        "(its mirror of this repository is in use: a fetch or maintenance (0.3 s))"
    ]
    assert_self_contained(job.git_dir, result.base_sha)


def test_a_mirror_with_a_garbage_head_is_rebuilt_and_the_job_clones(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server)
    tip = new_job(settings).clone(remote).base_sha
    mirror = mirror_of(settings, remote)
    (mirror / "HEAD").write_text("garbage\n")
    job = new_job(settings)
    assert job.clone(remote).base_sha == tip
    assert job.warnings == ["Warning: the clone cache's copy of this repository was damaged: rebuilding it"]
    assert_self_contained(job.git_dir, tip)
    git(mirror, "fsck", "--full", "--no-dangling")


def test_a_mirror_with_a_truncated_pack_is_rebuilt_and_the_job_clones(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server)
    tip = new_job(settings).clone(remote).base_sha
    mirror = mirror_of(settings, remote)
    packs = list((mirror / "objects" / "pack").glob("*.pack"))
    assert packs
    for pack in packs:
        os.truncate(pack, pack.stat().st_size // 2)
    job = new_job(settings)
    assert job.clone(remote).base_sha == tip
    assert job.warnings == ["Warning: the clone cache's copy of this repository was damaged: rebuilding it"]
    assert_self_contained(job.git_dir, tip)
    git(mirror, "fsck", "--full", "--no-dangling")


def test_a_mirror_with_a_corrupt_object_in_its_pack_is_rebuilt_and_the_job_gets_sound_objects(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    """Bytes flipped inside a packed object (the pack's length unchanged): copying out of the
    mirror inflates every object it reuses, fails, and the mirror is rebuilt."""
    remote = new_remote(git_server)
    tip = new_job(settings).clone(remote).base_sha
    mirror = mirror_of(settings, remote)
    for pack in (mirror / "objects" / "pack").glob("*.pack"):
        data = bytearray(pack.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
        pack.chmod(0o600)
        pack.write_bytes(bytes(data))
    job = new_job(settings)
    assert job.clone(remote).base_sha == tip
    assert job.warnings == ["Warning: the clone cache's copy of this repository was damaged: rebuilding it"]
    assert_self_contained(job.git_dir, tip)
    git(mirror, "fsck", "--full", "--no-dangling")


def varied_text(seed: int) -> str:
    """A file large enough to be stored whole in a pack, and changed later as a delta against it."""
    return "".join(f"line {i} {uuid.UUID(int=(seed << 64) + i).hex}\n" for i in range(3000))


def commit_file(remote: Remote, path: str, text: str, branch: str = "main") -> str:
    """A commit on the remote's `branch` whose tree is this one file; its sha."""
    bare = remote.server.repo_path(remote.name)
    parent = git(bare, "rev-parse", f"refs/heads/{branch}").stdout.strip()
    blob = git(bare, "hash-object", "-w", "--stdin", stdin=text).stdout.strip()
    tree = git(bare, "mktree", stdin=f"100644 blob {blob}\t{path}\n").stdout.strip()
    commit = git(bare, "commit-tree", tree, "-p", parent, "-m", f"change {path}").stdout.strip()
    git(bare, "update-ref", f"refs/heads/{branch}", commit)
    return commit


def corrupt_object(mirror: Path, sha: str) -> None:
    """Flip bytes in the middle of one object's packed data: the pack keeps its length and its
    index, so the mirror still passes `fsck --connectivity-only`."""
    for index in (mirror / "objects" / "pack").glob("*.idx"):
        for line in git(mirror, "verify-pack", "-v", str(index)).stdout.splitlines():
            fields = line.split()
            if fields and fields[0] == sha:
                pack = index.with_suffix(".pack")
                data = bytearray(pack.read_bytes())
                middle = int(fields[4]) + int(fields[3]) // 2
                data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
                pack.chmod(0o600)
                pack.write_bytes(bytes(data))
                git(mirror, "fsck", "--connectivity-only", "--no-dangling")
                return
    raise AssertionError(f"{sha} is not packed in {mirror}")


DAMAGED = ["Warning: the clone cache's copy of this repository was damaged: rebuilding it"]
FETCHED_ANEW = ["Warning: the clone cache's copy of this repository could not be updated: fetching it anew"]


def assert_healed(settings: Settings, remote: Remote, mirror: Path, tip: str, warnings: list[str]) -> None:
    """The next job gets `tip` with `warnings`, a sound repository of its own and a sound mirror;
    the job after it comes through that mirror without a word."""
    job = new_job(settings)
    assert job.clone(remote).base_sha == tip
    assert job.warnings == warnings
    assert_self_contained(job.git_dir, tip)
    git(mirror, "fsck", "--full", "--no-dangling")
    again = new_job(settings)
    assert again.clone(remote).base_sha == tip and again.warnings == []


def test_a_mirror_whose_damaged_blob_fails_the_next_fetch_is_rebuilt_and_the_job_gets_the_new_commit(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server)
    text = varied_text(1)
    first = commit_file(remote, "big.txt", text)
    new_job(settings).clone(remote)
    mirror = mirror_of(settings, remote)
    corrupt_object(mirror, git(mirror, "rev-parse", f"{first}:big.txt").stdout.strip())
    # The remote sends the small change as a delta against the blob the mirror has damaged.
    tip = commit_file(remote, "big.txt", text.replace("line 1500 ", "line 1500 changed "))
    assert_healed(settings, remote, mirror, tip, FETCHED_ANEW)


def test_a_fetch_that_fails_for_the_network_leaves_the_mirror_as_it_was(
    tmp_path: Path, settings: Settings, tls: TestCA
) -> None:
    server = GitHttpsServer(tmp_path / "lone-remote", tls)  # its own server: this test stops it
    server.start()
    try:
        remote = new_remote(server)
        tip = new_job(settings).clone(remote).base_sha
    finally:
        server.stop()  # the remote is unreachable now: connections are refused
    mirror = mirror_of(settings, remote)
    job = new_job(settings)
    with pytest.raises(GitError, match="connect"):
        job.clone(remote)
    assert job.warnings == FETCHED_ANEW
    assert git(mirror, "rev-parse", clone_cache.cached_ref("main")).stdout.strip() == tip
    git(mirror, "fsck", "--full", "--no-dangling")
    assert sorted(p.name for p in mirror.parent.iterdir() if p.name.startswith(mirror.name)) == [mirror.name]


def test_a_mirror_whose_maintenance_in_the_jobs_path_fails_is_rebuilt_and_the_job_goes_on(
    settings: Settings, git_server: GitHttpsServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(clone_cache, "MAX_PACKS", 2)
    remote = new_remote(git_server, other={"other.txt": "other\n"})
    new_job(settings).clone(remote)
    other = commit_file(remote, "big.txt", varied_text(2), branch="other")
    new_job(settings).clone(remote, "other")  # another user's job, say: its blob stays in the mirror
    mirror = mirror_of(settings, remote)
    corrupt_object(mirror, git(mirror, "rev-parse", f"{other}:big.txt").stdout.strip())
    tip = commit_file(remote, "new.txt", "new\n")
    # Its fetch adds a third pack, past MAX_PACKS: the job rolls the packs of about its size
    # together, the one with the corrupt blob too.
    assert_healed(settings, remote, mirror, tip, DAMAGED)
    [failed] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("clone cache: repacking")]
    assert "is corrupt" in failed


def test_an_unusable_cache_directory_means_one_warning_and_a_direct_clone(
    tmp_path: Path, settings: Settings, git_server: GitHttpsServer
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    remote = new_remote(git_server)
    job = new_job(dataclasses.replace(settings, cache_dir=blocker))
    result = job.clone(remote)
    assert result.base_sha == git_server.branches(remote.name)["main"]
    assert len(job.warnings) == 1 and job.warnings[0].startswith("Warning: the clone cache is not usable")
    assert_self_contained(job.git_dir, result.base_sha)


def test_cache_max_bytes_zero_clones_directly_without_a_cache(settings: Settings, git_server: GitHttpsServer) -> None:
    remote = new_remote(git_server)
    off = dataclasses.replace(settings, cache_max_bytes=0)
    job = new_job(off)
    job.clone(remote)
    assert_self_contained(job.git_dir, git_server.branches(remote.name)["main"])
    assert not off.clone_cache_dir.exists()


def test_past_cache_max_bytes_the_least_recently_used_mirror_goes_but_never_one_in_use(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    tiny = dataclasses.replace(settings, cache_max_bytes=1)
    first, second, third = (new_remote(git_server) for _ in range(3))
    new_job(tiny).clone(first)
    cache = cache_of(tiny)
    with cache.locked(cache.mirror(first.repo.url), JobControl(JOB_TIMEOUT_S), shared=True):
        new_job(tiny).clone(second)  # over the limit, but the first mirror is in use
        assert mirror_of(tiny, first).is_dir() and mirror_of(tiny, second).is_dir()
    new_job(tiny).clone(third)  # the first and second are idle now: both go, the one just used stays
    assert not mirror_of(tiny, first).exists()
    assert not mirror_of(tiny, second).exists()
    assert mirror_of(tiny, third).is_dir()


def test_eviction_removes_least_recently_used_first(settings: Settings, git_server: GitHttpsServer) -> None:
    remotes = [new_remote(git_server) for _ in range(3)]
    for remote in remotes:
        new_job(settings).clone(remote)
    mirrors = [mirror_of(settings, r) for r in remotes]
    sizes = [clone_cache.tree_bytes(m) for m in mirrors]
    for age, mirror in enumerate(mirrors):  # the first used longest ago
        lock = mirror.with_suffix(clone_cache.LOCK_SUFFIX)
        os.utime(lock, (1_000_000 + age, 1_000_000 + age))
    keep = clone_cache.Mirror(mirrors[2], mirrors[2].with_suffix(clone_cache.LOCK_SUFFIX))
    cache = clone_cache.CloneCache(settings.clone_cache_dir, sizes[1] + sizes[2])
    assert cache.evict(keep) == [mirrors[0]]
    assert mirrors[1].is_dir() and mirrors[2].is_dir()


def test_a_mirror_with_many_packs_is_repacked_into_one(
    settings: Settings, git_server: GitHttpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clone_cache, "MAX_PACKS", 2)
    remote = new_remote(git_server, one={"1.txt": "1\n"}, two={"2.txt": "2\n"}, three={"3.txt": "3\n"})
    mirror = mirror_of(settings, remote)
    counts = []
    for branch in ("main", "one", "two", "three"):
        new_job(settings).clone(remote, branch)
        counts.append(len(list((mirror / "objects" / "pack").glob("*.pack"))))
    assert counts == [1, 2, 1, 2]
    git(mirror, "fsck", "--full", "--no-dangling")
    job = new_job(settings)
    assert job.clone(remote, "one").base_sha == git_server.branches(remote.name)["one"]


def test_the_cache_defaults_to_temp_dir_and_no_sandbox_path_may_expose_it(tmp_path: Path) -> None:
    assert load_settings({"TEMP_DIR": str(tmp_path)}, command=RUN).clone_cache_dir == tmp_path / "cache"
    assert load_settings({"CACHE_MAX_BYTES": "0"}, command=RUN).cache_max_bytes == 0
    shared = tmp_path / "shared"
    shared.mkdir()
    for cache_dir in (shared, shared / "cache"):
        env = {"CACHE_DIR": str(cache_dir), "AGENT_SANDBOX_PATHS": str(shared)}
        with pytest.raises(SettingsError, match="must not name CACHE_DIR"):
            load_settings(env, command=RUN)


# -- maintenance ------------------------------------------------------------------------------
def trace_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_after_a_jobs_clone_the_mirror_gets_a_bitmap_and_later_copies_count_their_objects_from_it(
    tmp_path: Path, settings: Settings, git_server: GitHttpsServer
) -> None:
    trace = tmp_path / "trace2.json"
    traced = dataclasses.replace(settings, git_env={**settings.git_env, "GIT_TRACE2_EVENT": str(trace)})
    remote = new_remote(git_server)
    new_job(traced).clone(remote)
    mirror = mirror_of(traced, remote)
    assert list((mirror / "objects" / "pack").glob("multi-pack-index-*.bitmap"))
    assert not clone_cache.maintenance_due(clone_cache.Mirror(mirror, mirror.with_suffix(clone_cache.LOCK_SUFFIX)))
    tip = advance(remote)  # its fetch brings a pack the bitmap does not cover
    trace.write_text("")
    job = new_job(traced)
    assert job.clone(remote).base_sha == tip
    assert_self_contained(job.git_dir, tip)
    bitmap_sources = [e.get("value") for e in trace_events(trace) if e.get("key") == "source"]
    assert bitmap_sources and set(bitmap_sources) == {"midx"}  # each copy (the early one too) read it


def test_maintenance_never_waits_for_a_job_using_the_mirror_and_a_later_job_starts_it_again(
    settings: Settings,
    git_server: GitHttpsServer,
    maintenance: clone_cache.Maintenance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    maintenance.stop()  # none while the mirror is made
    remote = new_remote(git_server)
    new_job(settings).clone(remote)
    cache = cache_of(settings)
    mirror = cache.mirror(remote.repo.url)
    assert clone_cache.maintenance_due(mirror)
    with cache.locked(mirror, JobControl(JOB_TIMEOUT_S), shared=True):  # a job copying out of it
        outcome = clone_cache.maintain(settings, cache, mirror, JobControl(JOB_TIMEOUT_S))
        assert outcome is clone_cache.Outcome.BUSY and clone_cache.maintenance_due(mirror)
    monkeypatch.setattr(clone_cache, "background", clone_cache.Maintenance())
    new_job(settings).clone(remote)
    assert not clone_cache.maintenance_due(mirror)


def test_a_failed_maintenance_leaves_the_mirror_to_the_job_that_reads_the_damage_and_rebuilds_it(
    settings: Settings,
    git_server: GitHttpsServer,
    maintenance: clone_cache.Maintenance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    maintenance.stop()
    remote = new_remote(git_server)
    new_job(settings).clone(remote)
    big = commit_file(remote, "big.txt", varied_text(3))
    new_job(settings).clone(remote)  # a second pack, as small: maintenance rolls both into one
    cache = cache_of(settings)
    mirror = cache.mirror(remote.repo.url)
    corrupt_object(mirror.path, git(mirror.path, "rev-parse", f"{big}:big.txt").stdout.strip())
    retrying = clone_cache.Maintenance()
    monkeypatch.setattr(clone_cache, "background", retrying)

    assert retrying.start(settings, cache, mirror) and retrying.wait(GIT_DEADLINE_S)

    [failed] = [r.getMessage() for r in caplog.records if "maintaining mirror" in r.getMessage()]
    assert failed.startswith(f"clone cache: maintaining mirror {mirror.path.name} failed: git repack failed: ")
    assert "is corrupt" in failed
    assert clone_cache.maintenance_due(mirror)  # as it was
    assert not retrying.start(settings, cache, mirror)  # not again for RETRY_AFTER_FAILURE_S
    assert_healed(settings, remote, mirror.path, big, DAMAGED)  # the job's copy reads the blob


def test_a_fetch_drops_the_temporary_packs_and_lock_files_a_killed_git_left_in_the_mirror(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server)
    new_job(settings).clone(remote)
    packs = mirror_of(settings, remote) / "objects" / "pack"
    kept = sorted(packs.iterdir())
    left = [packs / ".tmp-4242-pack-0123.pack", packs / "tmp_pack_AbCdEf", packs / "multi-pack-index.lock"]
    for path in left:
        path.write_bytes(b"left by a killed git")
    new_job(settings).clone(remote)
    assert not [path for path in left if path.exists()]
    assert all(path.exists() for path in kept)


def with_git_shim(settings: Settings, bin_dir: Path, first: str) -> Settings:
    """`settings` whose `git` is a script in `bin_dir` that runs the shell line `first`, then the
    real git with the same arguments."""
    bin_dir.mkdir()
    shim = bin_dir / "git"
    shim.write_text(f'#!/bin/sh\n{first}\nexec {shutil.which("git")} "$@"\n')
    shim.chmod(0o755)
    return dataclasses.replace(settings, path_env=f"{bin_dir}:{settings.path_env}")


@dataclass(frozen=True)
class GatedGit:
    """`git` on PATH that, for `repack`, marks `started` and then waits until `release`."""

    settings: Settings
    started: Path
    gate: Path

    def release(self, timeout_s: float = GIT_DEADLINE_S) -> None:
        """Let the waiting `repack` go on (fails after `timeout_s` if none is waiting)."""
        wait_for(self.try_release, timeout_s, "a gated git waiting to be released")

    def try_release(self) -> bool:
        try:
            gate = os.open(self.gate, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return False  # nobody is reading the gate (yet, or any more)
            raise
        with os.fdopen(gate, "w") as writer:
            writer.write("go\n")
        return True


@pytest.fixture
def gated_git(tmp_path: Path, settings: Settings) -> Iterator[GatedGit]:
    """A GatedGit; one still waiting when the test ends is let go (so it holds no mirror lock)."""
    started, gate = tmp_path / "repack-started", tmp_path / "repack-gate"
    os.mkfifo(gate)
    gated = with_git_shim(
        dataclasses.replace(
            settings, git_env={**settings.git_env, "GATED_GIT_STARTED": str(started), "GATED_GIT_GATE": str(gate)}
        ),
        tmp_path / "gated-bin",
        'if [ "$1" = repack ]; then : > "$GATED_GIT_STARTED"; read -r _ < "$GATED_GIT_GATE"; fi',
    )
    gated_git = GatedGit(gated, started, gate)
    yield gated_git
    gated_git.try_release()


def held_by_another(mirror: clone_cache.Mirror) -> bool:
    with clone_cache.locked_if_idle(mirror) as fd:
        return fd is None


def _maintain_then_die(settings: Settings, url: str, started: str) -> None:
    """A runner process killed while its maintenance's git runs."""
    cache = cache_of(settings)
    assert clone_cache.background.start(settings, cache, cache.mirror(url))
    wait_for(Path(started).exists, GIT_DEADLINE_S, "the maintenance's git to start")
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_maintaining_git_keeps_the_mirror_locked_after_its_runner_process_is_killed(
    gated_git: GatedGit, git_server: GitHttpsServer, maintenance: clone_cache.Maintenance
) -> None:
    settings = gated_git.settings
    maintenance.stop()
    remote = new_remote(git_server)
    new_job(settings).clone(remote)
    cache = cache_of(settings)
    mirror = cache.mirror(remote.repo.url)
    runner = multiprocessing.get_context("spawn").Process(
        target=_maintain_then_die, args=(settings, remote.repo.url, str(gated_git.started))
    )
    runner.start()
    runner.join(GIT_DEADLINE_S)
    assert runner.exitcode == -signal.SIGKILL

    assert held_by_another(mirror)  # by the orphaned git: no job reads a mirror being repacked
    gated_git.release()
    wait_for(lambda: not held_by_another(mirror), GIT_DEADLINE_S, "the orphaned git to end")
    assert not clone_cache.maintenance_due(mirror)
    git(mirror.path, "fsck", "--full", "--no-dangling")


def test_a_stopping_runner_kills_its_maintenance_and_frees_the_mirror_at_once(
    gated_git: GatedGit, git_server: GitHttpsServer, maintenance: clone_cache.Maintenance
) -> None:
    settings = gated_git.settings
    remote = new_remote(git_server)
    job = new_job(settings)
    job.git.clone_branch(remote.repo, remote.token, "main", None)  # its maintenance is left running
    wait_for(gated_git.started.exists, GIT_DEADLINE_S, "the maintenance's git to start")
    mirror = cache_of(settings).mirror(remote.repo.url)
    assert held_by_another(mirror)

    assert maintenance.stop(timeout_s=GIT_DEADLINE_S)

    assert not held_by_another(mirror)
    assert not maintenance.start(settings, cache_of(settings), mirror)
    again = new_job(settings)
    assert again.clone(remote).base_sha == git_server.branches(remote.name)["main"]
    assert again.warnings == []


def test_a_damaged_bitmap_is_found_before_a_copy_reads_it_and_the_mirror_is_rebuilt(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server, private={"secret.txt": "another user's secret\n"})
    private_tip = new_job(settings).clone(remote, "private").base_sha  # the bitmap covers it
    mirror = mirror_of(settings, remote)
    [bitmap] = (mirror / "objects" / "pack").glob("multi-pack-index-*.bitmap")
    data = bytearray(bitmap.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit: git would read the bitmap without noticing
    bitmap.write_bytes(bytes(data))
    main_tip = git_server.branches(remote.name)["main"]
    probe = new_job(settings)
    with pytest.raises(GitError, match="the clone cache's index or bitmap files are damaged"):
        probe.git.copy_from_mirror(mirror, main_tip, "main")

    job = new_job(settings)
    tip = job.clone(remote, "main").base_sha

    assert job.warnings == DAMAGED
    assert_self_contained(job.git_dir, tip)
    assert git(job.git_dir, "cat-file", "-e", private_tip, check=False).returncode != 0
    git(mirror, "fsck", "--full", "--no-dangling")


@pytest.fixture
def old_git(tmp_path: Path, settings: Settings) -> Settings:
    """Settings whose git says it is 2.34.1 (multi-pack bitmaps not trusted), and is the real one."""
    return with_git_shim(
        settings, tmp_path / "old-git-bin", 'if [ "$1" = --version ]; then echo "git version 2.34.1"; exit 0; fi'
    )


def test_with_a_git_older_than_2_36_mirrors_get_no_maintenance_and_many_packs_become_one(
    old_git: Settings, git_server: GitHttpsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clone_cache, "MAX_PACKS", 1)
    remote = new_remote(git_server)
    new_job(old_git).clone(remote)
    packs = mirror_of(old_git, remote) / "objects" / "pack"
    assert not (packs / "multi-pack-index").exists()
    cache = cache_of(old_git)
    assert not clone_cache.background.start(old_git, cache, cache.mirror(remote.repo.url))  # git is too old
    tip = advance(remote)
    job = new_job(old_git)
    assert job.clone(remote).base_sha == tip  # its fetch makes two packs: past MAX_PACKS
    assert len(list(packs.glob("pack-*.pack"))) == 1 and len(list(packs.glob("pack-*.bitmap"))) == 1
    assert not (packs / "multi-pack-index").exists()
    assert_self_contained(job.git_dir, tip)
    again = new_job(old_git)
    assert again.clone(remote).base_sha == tip and again.warnings == []


def point_first_parent_at(graph: Path, commit: str, parent: str) -> None:
    """Make `commit`'s first parent `parent` in a commit-graph file, as one damaged bit can: the
    file stores parents as positions in its own list of commits, not as object ids."""
    data = bytearray(graph.read_bytes())
    assert data[:4] == b"CGPH"
    table = {
        bytes(data[8 + 12 * i : 12 + 12 * i]): int.from_bytes(data[12 + 12 * i : 20 + 12 * i], "big")
        for i in range(data[6])
    }
    fanout, oids, commits = table[b"OIDF"], table[b"OIDL"], table[b"CDAT"]
    count = int.from_bytes(data[fanout + 255 * 4 : fanout + 256 * 4], "big")
    listed = [data[oids + 20 * i : oids + 20 * (i + 1)].hex() for i in range(count)]
    entry = commits + 36 * listed.index(commit) + 20  # after the tree's id: parent 1, parent 2, date
    data[entry : entry + 4] = listed.index(parent).to_bytes(4, "big")
    graph.chmod(0o600)
    graph.write_bytes(bytes(data))


def test_a_commit_graph_in_the_mirror_is_never_read_so_a_damaged_one_cannot_widen_a_copy(
    settings: Settings, git_server: GitHttpsServer
) -> None:
    remote = new_remote(git_server, private={"secret.txt": "another user's secret\n"})
    private_tip = new_job(settings).clone(remote, "private").base_sha
    new_job(settings).clone(remote)  # the bitmap covers both branches
    tip = advance(remote)
    new_job(settings).clone(remote)  # the mirror's new commit is not in the bitmap: a copy walks from it
    mirror = mirror_of(settings, remote)
    git(mirror, "commit-graph", "write", "--reachable")
    point_first_parent_at(mirror / "objects" / "info" / "commit-graph", tip, private_tip)

    job = new_job(settings)
    assert job.clone(remote).base_sha == tip

    assert git(job.git_dir, "cat-file", "-e", private_tip, check=False).returncode != 0
    assert_self_contained(job.git_dir, tip)
