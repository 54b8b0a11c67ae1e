"""Work directories: `TEMP_DIR/{jobId}`, mode 0700, never following a symlink an agent planted."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from repobox_cli.errors import RepoboxError

PRIVATE_DIR_MODE = 0o700


class WorkDirError(RepoboxError):
    """Raised when a work directory cannot be made safely."""


@dataclass(frozen=True)
class WorkPaths:
    """The layout of one job's directory."""

    root: Path

    @property
    def repo(self) -> Path:
        """The agent's clone: REPOBOX_REPO_DIR."""
        return self.root / "repo"

    @property
    def git_dir(self) -> Path:
        """The runner's own bare repository: the agent's `.git` is never used by the runner."""
        return self.root / "git"

    @property
    def index_file(self) -> Path:
        return self.root / "runner.index"

    @property
    def home(self) -> Path:
        """The agent's HOME."""
        return self.root / "home"

    @property
    def git_home(self) -> Path:
        """HOME of the runner's git processes: not the agent's, so no planted ~/.netrc is read."""
        return self.root / "git-home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"


def ensure_private_dir(path: Path) -> None:
    """Create `path` 0700 if missing; refuse a symlink or a non-directory in its place."""
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise WorkDirError(f"cannot create {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise WorkDirError(f"{path} is not a directory (a symlink or file is in the way)")
    if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise WorkDirError(f"{path} must be owned by this user and not writable by others "
                           f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})")


def remove_tree(path: Path) -> None:
    """Remove `path` without following symlinks: a symlink itself is unlinked, never its target."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        _make_writable(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _make_writable(root: Path) -> None:
    """An agent may leave read-only directories behind; rmtree needs write access to empty them."""
    for dirpath, dirnames, _ in os.walk(root, followlinks=False):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(full):
                    os.chmod(full, PRIVATE_DIR_MODE)


TRAVERSE_ONLY_MODE = 0o711  # others may pass through to a path they know, never list


def prepare(temp_dir: Path, job_id: str, attempt_id: str, *, agent_uid: int | None = None) -> WorkPaths:
    """A fresh `TEMP_DIR/{job_id}/{attempt_id}`: each attempt has its own, so an attempt that was
    superseded (paused, partitioned) never touches the files of the one that replaced it."""
    ensure_private_dir(temp_dir)
    job_dir = temp_dir / job_id
    ensure_private_dir(job_dir)
    paths = WorkPaths(job_dir / attempt_id)
    remove_tree(paths.root)
    try:
        os.mkdir(paths.root, PRIVATE_DIR_MODE)
        for sub in (paths.home, paths.tmp, paths.git_home):
            os.mkdir(sub, PRIVATE_DIR_MODE)
    except OSError as exc:
        raise WorkDirError(f"cannot create work directory {paths.root}: {exc.strerror}") from exc
    if agent_uid is not None:
        # The agent's user must reach repo/, home/ and tmp/ (its own); nothing else is open to it.
        for directory in (temp_dir, job_dir, paths.root):
            os.chmod(directory, TRAVERSE_ONLY_MODE)
    return paths


def give_to(paths: list[Path], uid: int, gid: int) -> None:
    """Hand files to the agent's user: every entry below, never following a symlink."""
    for top in paths:
        os.lchown(top, uid, gid)
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), uid, gid)


def remove_attempt(paths: WorkPaths) -> None:
    """Remove the attempt's directory, and the job's directory once no attempt is left in it."""
    remove_tree(paths.root)
    with contextlib.suppress(OSError):
        os.rmdir(paths.root.parent)


ATTEMPT_DIR_RE = re.compile(r"\A[0-9a-f]{12}\Z")
JOB_DIR_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def looks_like_job_dir(path: Path) -> bool:
    """A directory repobox made: a job-id name holding only attempt directories. Anything else
    under TEMP_DIR (a mis-set TEMP_DIR, say) is never removed by the start-up sweep."""
    if not JOB_DIR_RE.match(path.name) or ".." in path.name or not is_real_dir(path):
        return False
    try:
        return all(ATTEMPT_DIR_RE.match(entry.name) for entry in path.iterdir())
    except OSError:
        return False


def is_real_dir(path: Path) -> bool:
    """True when `path` is a directory and not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
