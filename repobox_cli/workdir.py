"""Work directories: `TEMP_DIR/{jobId}`, mode 0700, never following a symlink an agent planted."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from repobox_cli.errors import RepoboxError

log = logging.getLogger(__name__)

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

    @property
    def no_ca_dir(self) -> Path:
        """An empty directory: git's CA directory when GIT_SSL_CAINFO names the CAs to trust."""
        return self.root / "no-ca"


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
        raise WorkDirError(
            f"{path} must be owned by this user and not writable by others "
            f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})"
        )


def remove_tree(path: Path) -> bool:
    """Remove `path` and everything below it; a symlink is unlinked itself, never its target.

    The walk goes by file descriptor (see `_walk`), so a symlink or directory swapped in while it
    runs cannot send it outside the tree. True when `path` is gone; False when something could
    not be removed: that is logged (one line) and left in place, never raised."""
    try:
        _remove(path)
    except (OSError, WorkDirError) as exc:
        log.warning("cannot remove %s: %s; left in place", path, _reason(exc))
        return False
    return True


def _remove(path: Path) -> None:
    # The parent is the runner's own directory; only the last component can be the agent's.
    try:
        parent_fd = os.open(path.parent, _DIR_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        try:
            top_fd = _open_dir(parent_fd, path.name, make_accessible=True)
        except FileNotFoundError:
            return
        if top_fd is None:
            _Remover().entry(parent_fd, path.name)
            return
        try:
            _Remover().enter(top_fd, path.name, os.fstat(top_fd))
            _walk(top_fd, _Remover())
        finally:
            os.close(top_fd)
        _Remover().leave(parent_fd, path.name)
    finally:
        os.close(parent_fd)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}{f' ({exc.filename})' if exc.filename else ''}"
    return str(exc)


# -- walking by file descriptor ----------------------------------------------------------------
# Every directory is opened relative to its parent's fd with O_NOFOLLOW, changed through that
# fd (fchmod, fchown), listed through it and emptied with unlink/rmdir relative to it: a path is
# never resolved again after a check. No recursion, and at most three directory fds are open
# at a time whatever the depth: descending opens a child and closes the parent; ascending
# opens `..` and checks it is the directory remembered by (st_dev, st_ino).
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_DIR_ERRNOS = frozenset({errno.ENOTDIR, errno.ELOOP})
OWNER_RWX = stat.S_IRWXU

Identity = tuple[int, int]  # (st_dev, st_ino)


class TreeChangedError(WorkDirError):
    """Raised when a directory being walked was moved away while the walk was below it."""


class _Visitor(Protocol):
    make_accessible: bool

    def enter(self, fd: int, name: str, info: os.stat_result) -> None:
        """Directory `name` was opened (`fd`), before its entries are visited."""

    def entry(self, dir_fd: int, name: str) -> bool:
        """A non-directory `name` in `dir_fd`; False if it turned out to be a directory after all."""

    def leave(self, parent_fd: int, name: str) -> None:
        """Every entry of directory `name` (in `parent_fd`) was visited."""


@dataclass
class _Frame:
    name: str  # the directory's name in its parent
    identity: Identity
    subdirs: list[str] | None = None  # directories still to visit; None until listed


def _identity(info: os.stat_result) -> Identity:
    return info.st_dev, info.st_ino


def _open_dir(dir_fd: int, name: str, *, make_accessible: bool) -> int | None:
    """`name` in `dir_fd` opened as a directory, or None when it is not one (a symlink is not)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _NOT_A_DIR_ERRNOS:
            return None
        if exc.errno != errno.EACCES or not make_accessible:
            raise
    # Unreadable (an agent's chmod 000): fix the mode on exactly the inode found, via O_PATH.
    path_fd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    try:
        os.chmod(f"/proc/self/fd/{path_fd}", PRIVATE_DIR_MODE)
        return os.open(".", _DIR_FLAGS, dir_fd=path_fd)
    finally:
        os.close(path_fd)


def _walk(top_fd: int, visitor: _Visitor) -> None:
    """Visit everything below the directory open as `top_fd` (not closed here), depth first,
    without recursion; `visitor.enter` is called for subdirectories only, not for the top."""
    frames = [_Frame("", _identity(os.fstat(top_fd)))]
    fd = os.dup(top_fd)
    try:
        while True:
            frame = frames[-1]
            if frame.subdirs is None:
                frame.subdirs = _list(fd, visitor)
            if frame.subdirs:
                name = frame.subdirs.pop()
                child = _enter(fd, name, visitor)
                if child is not None:
                    os.close(fd)
                    fd = child
                    frames.append(_Frame(name, _identity(os.fstat(fd))))
                continue
            if len(frames) == 1:
                return
            parent = _open_parent(fd, frames[-2].identity)
            os.close(fd)
            fd = parent
            frames.pop()
            visitor.leave(fd, frame.name)
    finally:
        os.close(fd)


def _list(fd: int, visitor: _Visitor) -> list[str]:
    """Visit the non-directories of `fd`; the names of its subdirectories."""
    subdirs: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) or not visitor.entry(fd, entry.name):
                subdirs.append(entry.name)
    return subdirs


def _enter(fd: int, name: str, visitor: _Visitor) -> int | None:
    try:
        child = _open_dir(fd, name, make_accessible=visitor.make_accessible)
    except FileNotFoundError:
        return None
    if child is None:  # swapped for a symlink or a file since it was listed
        visitor.entry(fd, name)
        return None
    try:
        visitor.enter(child, name, os.fstat(child))
    except BaseException:
        os.close(child)
        raise
    return child


def _open_parent(fd: int, expected: Identity) -> int:
    parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
    if _identity(os.fstat(parent)) != expected:
        os.close(parent)
        raise TreeChangedError("a directory was moved out of the tree while it was being walked")
    return parent


class _Remover:
    make_accessible = True

    def enter(self, fd: int, name: str, info: os.stat_result) -> None:
        # An agent may leave read-only directories behind; emptying one needs write access.
        if info.st_mode & OWNER_RWX != OWNER_RWX:
            os.fchmod(fd, PRIVATE_DIR_MODE)

    def entry(self, dir_fd: int, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            return False
        return True

    def leave(self, parent_fd: int, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(name, dir_fd=parent_fd)


@dataclass(frozen=True)
class _Chowner:
    uid: int
    gid: int
    make_accessible = False

    def enter(self, fd: int, name: str, info: os.stat_result) -> None:
        os.fchown(fd, self.uid, self.gid)

    def entry(self, dir_fd: int, name: str) -> bool:
        with contextlib.suppress(FileNotFoundError):
            os.chown(name, self.uid, self.gid, dir_fd=dir_fd, follow_symlinks=False)
        return True

    def leave(self, parent_fd: int, name: str) -> None:
        return None


TRAVERSE_ONLY_MODE = 0o711  # others may pass through to a path they know, never list
CACHE_DIR_NAME = "cache"  # TEMP_DIR/cache: the clone cache's default place
SESSIONS_DIR_NAME = "sessions"  # TEMP_DIR/sessions: the work sessions' working copies
KEPT_NAMES = frozenset({CACHE_DIR_NAME, SESSIONS_DIR_NAME})  # never a job's directory


def prepare(temp_dir: Path, job_id: str, attempt_id: str, *, agent_uid: int | None = None) -> WorkPaths:
    """A fresh `TEMP_DIR/{job_id}/{attempt_id}`: each attempt has its own, so an attempt that was
    superseded (paused, partitioned) never touches the files of the one that replaced it."""
    if job_id in KEPT_NAMES:
        raise WorkDirError(f"job id {job_id!r} names a directory the runner keeps in TEMP_DIR: refused")
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
    """Hand files to the agent's user: every entry below, by file descriptor (see `_walk`),
    never following a symlink. WorkDirError if something cannot be handed over."""
    chowner = _Chowner(uid, gid)
    for top in paths:
        try:
            parent_fd = os.open(top.parent, _DIR_FLAGS & ~os.O_NOFOLLOW)
            try:
                top_fd = _open_dir(parent_fd, top.name, make_accessible=False)
                if top_fd is None:
                    chowner.entry(parent_fd, top.name)
                    continue
                try:
                    chowner.enter(top_fd, top.name, os.fstat(top_fd))
                    _walk(top_fd, chowner)
                finally:
                    os.close(top_fd)
            finally:
                os.close(parent_fd)
        except OSError as exc:
            raise WorkDirError(f"cannot hand {top} to the agent's user: {_reason(exc)}") from exc


def nested_repositories(top: Path) -> list[str]:
    """Directories below `top` (paths relative to it, `/`-separated) holding a `.git` entry of any
    kind: what git would take for another repository. `top`'s own `.git` is not counted. Walked by
    file descriptor, never following a symlink; WorkDirError if the tree cannot be read."""
    finder = _RepositoryFinder()
    try:
        top_fd = os.open(top, _DIR_FLAGS)
        try:
            _walk(top_fd, finder)
        finally:
            os.close(top_fd)
    except OSError as exc:
        raise WorkDirError(f"cannot read {top}: {_reason(exc)}") from exc
    return sorted(finder.found)


class _RepositoryFinder:
    make_accessible = False

    def __init__(self) -> None:
        self.path: list[str] = []  # of the directory being visited, below the top
        self.found: set[str] = set()

    def enter(self, fd: int, name: str, info: os.stat_result) -> None:
        self._seen(name)
        self.path.append(name)

    def entry(self, dir_fd: int, name: str) -> bool:
        self._seen(name)
        return True

    def leave(self, parent_fd: int, name: str) -> None:
        self.path.pop()

    def _seen(self, name: str) -> None:
        if name == ".git" and self.path:
            self.found.add("/".join(self.path))


def remove_attempt(paths: WorkPaths) -> None:
    """Remove the attempt's directory, and the job's directory once no attempt is left in it."""
    remove_tree(paths.root)
    with contextlib.suppress(OSError):
        os.rmdir(paths.root.parent)


ATTEMPT_DIR_RE = re.compile(r"\A[0-9a-f]{12}\Z")
JOB_DIR_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def looks_like_job_dir(path: Path) -> bool:
    """A directory repobox made: a job-id name holding attempt directories and nothing else.
    Anything else under TEMP_DIR (a mis-set TEMP_DIR, say: an empty directory too) is never
    removed by the start-up sweep."""
    if not JOB_DIR_RE.match(path.name) or ".." in path.name or not is_real_dir(path):
        return False
    try:
        names = [entry.name for entry in path.iterdir()]
    except OSError:
        return False
    return bool(names) and all(ATTEMPT_DIR_RE.match(name) for name in names)


def is_real_dir(path: Path) -> bool:
    """True when `path` is a directory and not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
