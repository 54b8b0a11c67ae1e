"""Work-directory walks (removal, hand-over to AGENT_USER) go by file descriptor: no recursion
limit, a bounded number of open fds, and nothing outside the tree is ever touched, even while a
symlink is swapped in under the walk."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from repobox_cli import workdir
from repobox_cli.housekeeping import remove_stale_workdirs
from tests.support.redis_server import RedisServer

DEEP_LEVELS = 1500
MANY_FILES = 100_000
SWAP_ROUNDS = 60
NOBODY = pwd.getpwnam("nobody")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture(autouse=True)
def _no_deep_tree_left(tmp_path: Path) -> Iterator[None]:
    """pytest's own clean-up (shutil.rmtree) dies on a 1,500-deep tree: remove what a test left."""
    yield
    for child in tmp_path.iterdir():
        workdir.remove_tree(child)


def make_deep(top: Path, levels: int = DEEP_LEVELS) -> None:
    """`levels` nested directories (far beyond PATH_MAX), built by fd so no path is ever resolved."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(levels):
        os.mkdir("d", dir_fd=fd)
        os.close(os.open(f"f{level}", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def make_many(top: Path, count: int = MANY_FILES) -> None:
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(count):
            os.close(os.open(str(i), os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)


@pytest.fixture
def decoy(tmp_path: Path) -> Iterator[Path]:
    """A tree outside the work directory, with modes and an owner a walk must never change."""
    root = tmp_path / "decoy"
    (root / "sub").mkdir(parents=True)
    (root / "secret.txt").write_text("keep me\n")
    (root / "sub" / "inner.txt").write_text("me too\n")
    root.chmod(0o755)
    (root / "sub").chmod(0o751)
    (root / "secret.txt").chmod(0o644)
    yield root


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """(mode, uid, gid, content) of every entry below and including `root`, by relative path."""
    found: dict[str, tuple[int, int, int, str]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = os.lstat(path)
        content = path.read_text() if stat.S_ISREG(info.st_mode) else ""
        found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, content)
    return found


def plant_links(tree: Path, decoy: Path) -> None:
    """Symlinks to the decoy everywhere: as directories, as files, dangling, at several depths."""
    for where in (tree, tree / "a", tree / "a" / "b"):
        where.mkdir(parents=True, exist_ok=True)
        (where / "to-dir").symlink_to(decoy)
        (where / "to-file").symlink_to(decoy / "secret.txt")
        (where / "to-sub").symlink_to(decoy / "sub")
        (where / "dangling").symlink_to(decoy / "missing")
        (where / "plain.txt").write_text("agent file\n")


def run_as_nobody(call: Callable[[], bool]) -> bool:
    """`call()` in a forked child that dropped to the user nobody (the interpreter itself is not
    reachable by nobody, so no fresh one is started)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 2
        try:
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            code = 0 if call() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


# -- removal -------------------------------------------------------------------------------------
def test_a_tree_deeper_than_the_recursion_limit_is_removed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_deep(tree)
    assert workdir.remove_tree(tree) is True
    assert not tree.exists()


def test_a_deep_tree_is_removed_with_few_file_descriptors(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_deep(tree)
    # A fresh interpreter limited to 40 open files: a walk keeping one fd per level would fail.
    program = (
        "import resource, sys; from pathlib import Path; from repobox_cli import workdir; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40)); "
        "sys.exit(0 if workdir.remove_tree(Path(sys.argv[1])) else 1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(tree)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not tree.exists()


def test_a_hundred_thousand_files_are_removed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_many(tree)
    assert workdir.remove_tree(tree) is True
    assert not tree.exists()


def test_read_only_and_unlistable_directories_are_removed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "ro" / "none").mkdir(parents=True)
    (tree / "ro" / "none" / "f.txt").write_text("x\n")
    (tree / "ro" / "none").chmod(0)
    (tree / "ro").chmod(0o500)
    tree.chmod(0o500)
    assert workdir.remove_tree(tree) is True
    assert not tree.exists()


def test_unlistable_directories_are_removed_by_a_runner_that_is_not_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user")
    base = Path("/tmp") / f"repobox-unit-{os.getpid()}-{tmp_path.name}"  # noqa: S108 - nobody must reach it
    base.mkdir(mode=0o711)
    try:
        tree = base / "tree"
        (tree / "a" / "b").mkdir(parents=True)
        (tree / "a" / "b" / "f.txt").write_text("x\n")
        for path in (tree, tree / "a", tree / "a" / "b", tree / "a" / "b" / "f.txt"):
            os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
        (tree / "a" / "b").chmod(0)
        (tree / "a").chmod(0o100)
        os.chown(base, NOBODY.pw_uid, NOBODY.pw_gid)
        assert run_as_nobody(lambda: workdir.remove_tree(tree)) is True
        assert not tree.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_symlinks_planted_everywhere_are_unlinked_never_followed(tmp_path: Path, decoy: Path) -> None:
    before = snapshot(decoy)
    tree = tmp_path / "tree"
    plant_links(tree, decoy)
    (tree / "a").chmod(0o500)  # so the walk changes modes: it must change only the tree's
    assert workdir.remove_tree(tree) is True
    assert not tree.exists()
    assert snapshot(decoy) == before


def test_a_symlink_given_as_the_tree_is_unlinked_itself(tmp_path: Path, decoy: Path) -> None:
    before = snapshot(decoy)
    link = tmp_path / "link"
    link.symlink_to(decoy)
    assert workdir.remove_tree(link) is True
    assert not os.path.lexists(link)
    assert snapshot(decoy) == before


def test_a_missing_tree_counts_as_removed(tmp_path: Path) -> None:
    assert workdir.remove_tree(tmp_path / "never-made") is True


def test_what_cannot_be_removed_is_logged_and_left_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    stuck = tree / "sub" / "stuck.txt"
    stuck.write_text("immutable\n")
    (tree / "other.txt").write_text("removable\n")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True, check=False).returncode != 0:
        pytest.skip("this filesystem (or user) cannot set the immutable attribute")
    try:
        with caplog.at_level(logging.WARNING, logger="repobox_cli.workdir"):
            assert workdir.remove_tree(tree) is False
        assert stuck.exists() and not (tree / "other.txt").exists()
        warnings = [r.getMessage() for r in caplog.records if r.name == "repobox_cli.workdir"]
        assert len(warnings) == 1 and "left in place" in warnings[0], warnings
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=False)


# -- swaps racing the walk ------------------------------------------------------------------
class Swapper:
    """Swaps `tree/a/b` for a symlink to the decoy and back, as fast as it can, until stopped."""

    def __init__(self, victim: Path, decoy: Path) -> None:
        self.victim = victim
        self.decoy = decoy
        self.stop = threading.Event()
        self.swaps = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        aside = self.victim.with_name("b-aside")
        while not self.stop.is_set():
            try:
                os.rename(self.victim, aside)
                os.symlink(self.decoy, self.victim)
                self.swaps += 1
                os.unlink(self.victim)
                os.rename(aside, self.victim)
            except OSError:
                pass  # the walk removed something the swap needed: try again

    def __enter__(self) -> Swapper:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def build_swap_tree(tree: Path) -> None:
    victim = tree / "a" / "b"
    for i in range(30):
        (victim / f"d{i}").mkdir(parents=True)
        (victim / f"d{i}" / "f.txt").write_text("x\n")
    for path in (tree / "a", victim, *victim.iterdir()):
        path.chmod(0o500)  # the remover must fix modes: it must only ever fix the tree's


def test_remove_tree_racing_a_symlink_swap_touches_nothing_outside(tmp_path: Path, decoy: Path) -> None:
    before = snapshot(decoy)
    swaps = 0
    for round_no in range(SWAP_ROUNDS):
        tree = tmp_path / f"tree{round_no}"
        build_swap_tree(tree)
        with Swapper(tree / "a" / "b", decoy) as swapper:
            workdir.remove_tree(tree)  # may leave something (logged): it must not go outside
        swaps += swapper.swaps
        assert snapshot(decoy) == before, f"round {round_no}: the decoy changed"
        workdir.remove_tree(tree)
        assert not tree.exists()
    assert swaps > 0, "the swapper never ran: the test proved nothing"


@as_root
def test_give_to_racing_a_symlink_swap_touches_nothing_outside(tmp_path: Path, decoy: Path) -> None:
    before = snapshot(decoy)
    swaps = 0
    for round_no in range(SWAP_ROUNDS):
        tree = tmp_path / f"tree{round_no}"
        build_swap_tree(tree)
        with Swapper(tree / "a" / "b", decoy) as swapper:
            try:
                workdir.give_to([tree], NOBODY.pw_uid, NOBODY.pw_gid)
            except workdir.WorkDirError:
                pass  # the walk noticed the swap: refusing is fine, following is not
        swaps += swapper.swaps
        assert snapshot(decoy) == before, f"round {round_no}: the decoy changed"
    assert swaps > 0, "the swapper never ran: the test proved nothing"


@as_root
def test_give_to_hands_over_every_entry_and_never_a_symlink_target(tmp_path: Path, decoy: Path) -> None:
    before = snapshot(decoy)
    tree = tmp_path / "tree"
    plant_links(tree, decoy)
    make_deep(tree / "deep", levels=300)
    workdir.give_to([tree], NOBODY.pw_uid, NOBODY.pw_gid)
    assert snapshot(decoy) == before
    owners = {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in [tree, *tree.rglob("*")]}
    assert owners == {(NOBODY.pw_uid, NOBODY.pw_gid)}


@as_root
def test_give_to_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_deep(tree)
    workdir.give_to([tree], NOBODY.pw_uid, NOBODY.pw_gid)
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEEP_LEVELS):
            assert os.fstat(fd).st_uid == NOBODY.pw_uid
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


@pytest.mark.parametrize("job_id", sorted(workdir.KEPT_NAMES))
def test_a_job_id_naming_a_directory_the_runner_keeps_is_refused_and_that_directory_untouched(
    tmp_path: Path, job_id: str
) -> None:
    kept = tmp_path / job_id
    kept.mkdir(mode=0o700)
    (kept / "mirror").mkdir(mode=0o700)
    with pytest.raises(workdir.WorkDirError, match="keeps in TEMP_DIR"):
        workdir.prepare(tmp_path, job_id, "a1b2c3d4e5f6", agent_uid=os.getuid())
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    assert sorted(p.name for p in kept.iterdir()) == ["mirror"]


def test_the_start_up_sweep_removes_only_job_directories_holding_attempts(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A mis-set TEMP_DIR (the operator's own directories, empty ones too) loses nothing; a
    crashed attempt of a job that is gone is removed."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    temp_dir = tmp_path / "temp"
    crashed = temp_dir / str(uuid.uuid4())
    (crashed / "a1b2c3d4e5f6" / "repo").mkdir(parents=True)
    own = [temp_dir / "logs", temp_dir / "build", temp_dir / str(uuid.uuid4())]
    for directory in own:
        directory.mkdir()
    try:
        remove_stale_workdirs(client, temp_dir)
    finally:
        client.close()
    assert not crashed.exists()
    assert all(directory.is_dir() for directory in own)
