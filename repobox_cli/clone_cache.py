"""The clone cache: one bare mirror per remote URL, so a job fetches only what changed since the
last job on that repository, and fills its own repository from the mirror on this host.

- Layout: CACHE_DIR (0700, the runner's own; by default TEMP_DIR/cache, which every sandbox
  covers with an empty tmpfs, and never an AGENT_SANDBOX_PATHS entry) holds `<key>.git`, the
  mirror, and `<key>.lock`, its lock file, with key = sha256 of the URL (scheme and host lower-cased).
- Authorisation: a job always fetches from the remote through its own token first (the remote
  checks it), into the mirror. Its repository is then filled from the mirror by one repack of
  what the commit that job's own fetch returned reaches (`Git.copy_from_mirror`, borrowing the
  mirror's objects for that one command): the objects the remote would have sent that token,
  never other objects the mirror holds (fetched by other users' tokens).
- Early copy: while the fetch asks the remote, the mirror's last commit of the branch is copied
  into a staging directory of the job's own (`EarlyCopy`); it becomes the job's repository only
  if the fetch returns that same commit, else it is removed unread.
- Self-contained: the job's repository has its own pack, no `objects/info/alternates` into here.
- Maintenance, off the jobs' path: after a job's copy, a mirror with no reachability bitmap yet,
  or MAINTAIN_AFTER_PACKS packs its multi-pack index does not cover, is maintained by a thread of
  its own (`Maintenance`): it takes the mirror's lock only if no job holds it, rolls the newer,
  smaller packs into one and writes a multi-pack index with a bitmap over all of them (a copy
  then counts its objects from the bitmap: about half its time on a medium repository). The git
  doing it holds the lock too, so a runner killed meanwhile leaves no job reading a mirror being
  repacked. A failed maintenance leaves the mirror as it is, and is not tried again by this
  process for RETRY_AFTER_FAILURE_S. A job that finds more than MAX_PACKS packs (maintenance
  never got the lock) does the same maintenance itself, under its own lock. Before each copy,
  the index and bitmap files are checked whole (`indexes_intact`): git does not check a bitmap,
  and a damaged one could hand a job objects its commit does not reach.
- Locks: `flock` on `<key>.lock`: exclusive to fetch into, rebuild or evict a mirror; shared while
  a job copies out of it. Waiting polls, so a cancelled job stops waiting, and ends after
  LOCK_WAIT_S (1 s: the job then clones directly, with one plain line, so a burst of jobs on one
  repository never queues behind one mirror). Eviction takes the lock without waiting and skips
  a mirror in use.
- Failures: a failed fetch whose mirror fails `git fsck --connectivity-only`, or a failed copy out
  of it, rebuilds the mirror once; when the cache still fails (or cannot be used at all) the job
  fetches straight from the remote into its own repository after one warning line. The remote's
  own refusals (token, missing repository or branch) are the job's errors, never the cache's.
- Size: after each use, mirrors least recently used (by their lock file's mtime) are removed until
  CACHE_DIR holds at most CACHE_MAX_BYTES; the one just used is kept. CACHE_MAX_BYTES=0: no cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from repobox_cli import workdir
from repobox_cli.background import STOP_WAIT_S, OneAtATime
from repobox_cli.control import JobControl, StopReason
from repobox_cli.errors import BranchMissing, GitError, JobStopped, RemoteRefused, RepoboxError
from repobox_cli.validation import RepoUrl

if TYPE_CHECKING:
    from repobox_cli.git_ops import Fetched, Git
    from repobox_cli.settings import Settings

log = logging.getLogger(__name__)

KEY_HEX_CHARS = 32
MIRROR_SUFFIX = ".git"
REBUILT_SUFFIX = ".new"  # `{key}.git.new`: a mirror being fetched anew, beside the one it replaces
RETIRED_SUFFIX = ".old"  # `{key}.git.old`: the one it replaced, for the moment of the swap
LOCK_SUFFIX = ".lock"
LOCK_POLL_S = 0.05
# A job waits this long for another job's fetch into the same mirror, then clones directly: jobs on
# one repository never queue behind each other (a burst of them runs as fast as without a cache).
LOCK_WAIT_S = 1.0
MAX_PACKS = 32
# Packs the multi-pack index (and its bitmap) does not cover yet, one per fetch that brought
# something new, before the mirror is maintained again.
MAINTAIN_AFTER_PACKS = 4
MAINTENANCE_DIR = "maintenance"  # in CACHE_DIR: the working directory of maintenance's git
# A mirror whose maintenance failed is not maintained again by this process for this long (the
# jobs that read a damaged object rebuild it; one that never gets the lock does it past MAX_PACKS).
RETRY_AFTER_FAILURE_S = 600.0
# Multi-pack indexes and bitmaps as this change writes them: git 2.36 fixed multi-pack bitmaps
# written out of order (2.34, 2.35). Older gits get no maintenance; past MAX_PACKS a job repacks
# everything into one pack with a bitmap, as before.
MIDX_BITMAP_GIT = (2, 36)
CHECKSUM_BYTES = 20  # a mirror is SHA-1 (`git init`'s default): its index files end with one
INDEX_SUFFIXES = frozenset({".idx", ".rev", ".bitmap"})
HASH_CHUNK_BYTES = 1 << 20
MIDX_NAME = "multi-pack-index"
MIDX_MAGIC = b"MIDX"
MIDX_PACK_COUNT = slice(8, 12)  # the header's number of packs (big-endian)
STAGING_NAME = "git-early"  # beside the runner's repository: where an early copy is staged
SHA_HEX_CHARS = (40, 64)  # sha-1, sha-256
CACHED_REFS = "refs/cached/"  # one ref per base branch fetched, named by the branch's hash (no D/F clashes)

Warn = Callable[[str], None]


def mirror_key(url: str) -> str:
    """The mirror's name for a remote URL: one mirror per repository URL, whoever's token fetched."""
    parts = urlsplit(url.rstrip("/"))
    normal = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))
    return hashlib.sha256(normal.encode()).hexdigest()[:KEY_HEX_CHARS]


def cached_ref(branch: str) -> str:
    return CACHED_REFS + hashlib.sha256(branch.encode()).hexdigest()[:KEY_HEX_CHARS]


@dataclass(frozen=True)
class Mirror:
    path: Path
    lock_path: Path


class CacheUnavailable(RepoboxError):
    """Raised when the clone cache cannot be used for a job (the job then clones directly)."""


class CacheBusy(CacheUnavailable):
    """Another job is fetching into the mirror: this one clones directly (nothing is wrong)."""


class CloneCache:
    """The mirrors in one directory, their locks and their eviction."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def mirror(self, url: str) -> Mirror:
        key = mirror_key(url)
        return Mirror(self.root / f"{key}{MIRROR_SUFFIX}", self.root / f"{key}{LOCK_SUFFIX}")

    @contextlib.contextmanager
    def locked(self, mirror: Mirror, control: JobControl, *, shared: bool = False) -> Iterator[int]:
        """Hold the mirror's lock (polling, so a stop ends the wait); its file descriptor, which
        `downgrade` turns into a shared lock. Using a mirror makes it the most recently used."""
        try:
            workdir.ensure_private_dir(self.root)
            fd = _open_lock(mirror)
        except (OSError, workdir.WorkDirError) as exc:
            raise CacheUnavailable(f"cannot open {mirror.lock_path}: {_reason(exc)}") from None
        try:
            mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            deadline = time.monotonic() + LOCK_WAIT_S
            while not _try_flock(fd, mode):
                if time.monotonic() > deadline:
                    raise CacheBusy(
                        f"its mirror of this repository is in use: a fetch or maintenance ({LOCK_WAIT_S:g} s)"
                    )
                control.stopped.wait(LOCK_POLL_S)
                control.check()
            os.utime(fd)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def downgrade(fd: int) -> None:
        """Exclusive to shared: other jobs may copy out of the mirror too. Not atomic: a job may
        fetch into the mirror in between, which only adds objects; one that rebuilt it in between
        makes this job's copy fail, and the job then clones directly."""
        fcntl.flock(fd, fcntl.LOCK_SH)

    @staticmethod
    def upgrade(fd: int) -> bool:
        """Shared to exclusive, only if no other job holds the lock now (two waiting to upgrade
        would wait for each other)."""
        return _try_flock(fd, fcntl.LOCK_EX)

    def evict(self, keep: Mirror) -> list[Path]:
        """Remove least recently used mirrors not in use until the cache fits CACHE_MAX_BYTES;
        the ones removed. Never raises: what cannot be measured or removed is left."""
        try:
            found = [(self._last_used(p), p) for p in self.root.glob(f"*{MIRROR_SUFFIX}") if p != keep.path]
        except OSError as exc:
            log.warning("clone cache: cannot list %s: %s", self.root, _reason(exc))
            return []
        sizes = {path: tree_bytes(path) for _, path in found}
        total = sum(sizes.values()) + tree_bytes(keep.path)
        removed: list[Path] = []
        for _, path in sorted(found):
            if total <= self.max_bytes:
                break
            if self._remove_if_idle(Mirror(path, path.with_suffix(LOCK_SUFFIX))):
                total -= sizes[path]
                removed.append(path)
        return removed

    def _last_used(self, path: Path) -> float:
        try:
            return path.with_suffix(LOCK_SUFFIX).stat().st_mtime
        except OSError:
            return 0.0

    @staticmethod
    def _remove_if_idle(mirror: Mirror) -> bool:
        with locked_if_idle(mirror) as fd:
            if fd is None:
                return False  # in use: a job is fetching into it or copying out of it
            log.info("clone cache: removing the least recently used mirror %s", mirror.path.name)
            return workdir.remove_tree(mirror.path)


def _open_lock(mirror: Mirror) -> int:
    return os.open(mirror.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def locked_if_idle(mirror: Mirror) -> Iterator[int | None]:
    """The mirror's exclusive lock, taken only if nobody holds it now: its descriptor, or None."""
    try:
        fd = _open_lock(mirror)
    except OSError:
        yield None
        return
    try:
        yield fd if _try_flock(fd, fcntl.LOCK_EX) else None
    finally:
        os.close(fd)


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def tree_bytes(path: Path) -> int:
    """Bytes of the files below `path` (0 if it is gone)."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# -- a job's clone through the cache ----------------------------------------------------------
def clone(git: Git, repo: RepoUrl, token: str, branch: str, work_branch: str | None, warn: Warn, note: Warn) -> Fetched:
    """The runner's repository for one job, at `branch` as the remote has it now (and the work
    branch's tip, for the push's lease): through the cache, or directly when the cache fails.
    BranchMissing when the remote has no `branch`; GitError for the remote's other refusals."""
    settings = git.settings
    if settings.cache_max_bytes > 0:
        cache = CloneCache(settings.clone_cache_dir, settings.cache_max_bytes)
        try:
            return _through_cache(git, cache, repo, token, branch, work_branch, warn)
        except CacheBusy as exc:
            note(f"Cloning directly: the clone cache is busy ({exc})")
        except CacheUnavailable as exc:
            warn(f"Warning: the clone cache is not usable ({exc}): cloning directly")
            log.warning("clone cache not usable for %s: %s", repo.url, exc)
    return git.fetch_into_runner_repo(repo, token, branch, work_branch)


def _through_cache(
    git: Git, cache: CloneCache, repo: RepoUrl, token: str, branch: str, work_branch: str | None, warn: Warn
) -> Fetched:
    mirror = cache.mirror(repo.url)
    with cache.locked(mirror, git.control) as fd:
        early = EarlyCopy.start(git, mirror, branch)
        try:
            fetched = _fetch_into_mirror(git, mirror, fd, repo, token, branch, work_branch, warn)
        except BaseException:
            if early is not None:
                early.discard()
            raise
        cache.downgrade(fd)
        try:
            if early is None or not early.adopt(fetched.base_sha):
                git.copy_from_mirror(mirror.path, fetched.base_sha, branch)
        except GitError as exc:
            # The mirror lacks objects its refs reach (a damaged pack fsck's connectivity check
            # does not read): rebuild it now, unless another job is copying out of it.
            if not cache.upgrade(fd):
                raise CacheUnavailable(f"copying from the mirror failed: {exc}") from None
            _warn_damaged(warn, mirror)
            fetched = _rebuild_and_fetch(git, mirror, repo, token, branch, work_branch)
            try:
                git.copy_from_mirror(mirror.path, fetched.base_sha, branch)
            except GitError as again:
                raise CacheUnavailable(f"copying from the rebuilt mirror failed: {again}") from None
    removed = cache.evict(keep=mirror)
    if removed:
        log.info("clone cache: removed %d least recently used mirror(s) to stay under CACHE_MAX_BYTES", len(removed))
    if maintenance_due(mirror):
        background.start(git.settings, cache, mirror)
    return fetched


class EarlyCopy:
    """The job's repository copied from the mirror's last commit of its branch while the fetch
    asks the remote, in a staging directory of the job's own: adopted only when the fetch returns
    that same commit (the remote has then checked this job's token for it), else removed unread.
    A repeat job then costs the larger of the fetch and the copy, not their sum."""

    def __init__(self, git: Git, mirror: Mirror, branch: str, sha: str) -> None:
        self.git = git
        self.sha = sha
        self.staging = git.paths.root / STAGING_NAME
        self._failed = False
        self._thread = threading.Thread(
            target=self._copy, args=(mirror, branch), name=f"{threading.current_thread().name}-copy", daemon=True
        )
        self._thread.start()

    @classmethod
    def start(cls, git: Git, mirror: Mirror, branch: str) -> EarlyCopy | None:
        """None when the mirror has no commit of `branch` yet."""
        sha = _cached_sha(mirror, branch)
        return cls(git, mirror, branch, sha) if sha else None

    def _copy(self, mirror: Mirror, branch: str) -> None:
        try:
            self.git.copy_from_mirror(mirror.path, self.sha, branch, into=self.staging)
        except Exception:  # noqa: BLE001 - a guess that failed: the copy is made again after the fetch
            self._failed = True

    def adopt(self, sha: str) -> bool:
        """Make the staged copy the job's repository if it is of `sha`; whether it was."""
        self._thread.join()
        if self._failed or sha != self.sha:
            self.discard()
            return False
        git_dir = self.git.paths.git_dir
        try:
            if workdir.remove_tree(git_dir):
                os.rename(self.staging, git_dir)
                return True
        except OSError as exc:
            log.warning("clone cache: cannot adopt the early copy: %s", _reason(exc))
        self.discard()
        return False

    def discard(self) -> None:
        self._thread.join()
        workdir.remove_tree(self.staging)


def _cached_sha(mirror: Mirror, branch: str) -> str | None:
    """The mirror's commit of `branch` from its loose ref file (a fetch writes one), or None."""
    try:
        text = (mirror.path / cached_ref(branch)).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) in SHA_HEX_CHARS and all(c in "0123456789abcdef" for c in text) else None


def _fetch_into_mirror(
    git: Git, mirror: Mirror, lock_fd: int, repo: RepoUrl, token: str, branch: str, work_branch: str | None, warn: Warn
) -> Fetched:
    """Fetch into the mirror (made if missing), holding its exclusive lock. A mirror that fails
    its fetch or its maintenance repack for any other reason than the remote's answer is fetched
    anew once, beside it: a damaged object can fail both while the mirror still passes a
    connectivity check (a thin pack's delta against a corrupt blob; a repack reading one of
    another branch), and would fail every later job on the repository. A network failure fails
    the new fetch too, and leaves the mirror as it was (`_rebuild_and_fetch`)."""
    fresh = not workdir.is_real_dir(mirror.path)
    if fresh:
        _rebuild(git, mirror)
    try:
        fetched = git.fetch_heads(mirror.path, repo, token, branch, cached_ref(branch), work_branch)
    except (BranchMissing, RemoteRefused, JobStopped):
        raise  # the remote's answer: the same whatever the mirror holds
    except GitError:
        if fresh:
            raise  # a new mirror holds nothing to blame: the network's or the remote's failure
        if git.is_sound(mirror.path):
            warn("Warning: the clone cache's copy of this repository could not be updated: fetching it anew")
            log.warning("clone cache: fetching into mirror %s failed: fetching it anew", mirror.path.name)
        else:
            _warn_damaged(warn, mirror)
        return _rebuild_and_fetch(git, mirror, repo, token, branch, work_branch)
    try:
        _repack_if_many_packs(git, mirror, lock_fd)
    except GitError as exc:
        log.warning("clone cache: repacking mirror %s failed: %s", mirror.path.name, exc)
        _warn_damaged(warn, mirror)
        return _rebuild_and_fetch(git, mirror, repo, token, branch, work_branch)
    return fetched


def _repack_if_many_packs(git: Git, mirror: Mirror, lock_fd: int) -> None:
    """Each fetch adds a pack, which maintenance rolls together; past MAX_PACKS (maintenance has
    not had the mirror's lock for that long, or git is older than MIDX_BITMAP_GIT) the job does it
    itself (reads slow down with many packs); with an older git, all into one pack."""
    try:
        packs = sum(1 for _ in (mirror.path / "objects" / "pack").glob("pack-*.idx"))
    except OSError:
        return
    if packs > MAX_PACKS:
        git.maintain_mirror(mirror.path, lock_fd=lock_fd, whole=git.version() < MIDX_BITMAP_GIT)


def _warn_damaged(warn: Warn, mirror: Mirror) -> None:
    warn("Warning: the clone cache's copy of this repository was damaged: rebuilding it")
    log.warning("clone cache: mirror %s is damaged: rebuilding it", mirror.path.name)


def _rebuild_and_fetch(
    git: Git, mirror: Mirror, repo: RepoUrl, token: str, branch: str, work_branch: str | None
) -> Fetched:
    """A new mirror, fetched beside the old one under the same lock and put in its place only once
    its fetch succeeded: a failure (the network's, the remote's) leaves the old one for later jobs."""
    new = mirror.path.with_name(mirror.path.name + REBUILT_SUFFIX)
    retired = mirror.path.with_name(mirror.path.name + RETIRED_SUFFIX)
    _rebuild(git, Mirror(new, mirror.lock_path))  # a leftover of a rebuild that was killed goes first
    try:
        fetched = git.fetch_heads(new, repo, token, branch, cached_ref(branch), work_branch)
    except BaseException:
        workdir.remove_tree(new)
        raise
    if not workdir.remove_tree(retired):
        raise CacheUnavailable(f"cannot remove {retired.name}")
    try:
        if os.path.lexists(mirror.path):
            os.rename(mirror.path, retired)
        os.rename(new, mirror.path)
    except OSError as exc:
        raise CacheUnavailable(f"cannot put the rebuilt mirror in place: {_reason(exc)}") from None
    workdir.remove_tree(retired)
    return fetched


def _rebuild(git: Git, mirror: Mirror) -> None:
    if not workdir.remove_tree(mirror.path):
        raise CacheUnavailable(f"cannot remove what is left at {mirror.path.name} to make a mirror there")
    try:
        git.init_mirror(mirror.path)
    except GitError as exc:
        raise CacheUnavailable(f"cannot make a mirror: {exc}") from None


# -- maintenance ------------------------------------------------------------------------------
def maintenance_due(mirror: Mirror) -> bool:
    """Whether the mirror has packs but no reachability bitmap for its multi-pack index, or
    MAINTAIN_AFTER_PACKS packs that index does not cover."""
    packs_dir = mirror.path / "objects" / "pack"
    try:
        packs = sum(1 for _ in packs_dir.glob("pack-*.idx"))  # a pack without its index is not read
        with open(packs_dir / MIDX_NAME, "rb") as midx:
            header = midx.read(MIDX_PACK_COUNT.stop)
            midx.seek(-CHECKSUM_BYTES, os.SEEK_END)
            checksum = midx.read()
    except FileNotFoundError:
        return packs > 0
    except OSError:
        return False  # a mirror that cannot be read: the next job's fetch or copy finds out
    if not header.startswith(MIDX_MAGIC) or len(header) < MIDX_PACK_COUNT.stop:
        return packs > 0
    covered = int.from_bytes(header[MIDX_PACK_COUNT], "big")
    bitmap = packs_dir / f"{MIDX_NAME}-{checksum.hex()}.bitmap"
    return not bitmap.exists() or packs - covered >= MAINTAIN_AFTER_PACKS


def indexes_intact(mirror: Path) -> bool:
    """Whether the mirror's pack indexes, multi-pack index, reverse indexes and reachability
    bitmaps are whole: each ends with the SHA-1 of what precedes it. git reads them without that
    check, and one damaged bit in a bitmap can make a copy take an object its commit does not
    reach (another user's). About 1 ms for the benchmark's 13,000-object history."""
    try:
        found = list((mirror / "objects" / "pack").iterdir())
    except OSError:
        return False
    return all(_intact(path) for path in found if path.suffix in INDEX_SUFFIXES or path.name == MIDX_NAME)


def _intact(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            digest = hashlib.sha1(usedforsecurity=False)
            remaining = os.fstat(file.fileno()).st_size - CHECKSUM_BYTES
            while remaining > 0:
                chunk = file.read(min(remaining, HASH_CHUNK_BYTES))
                if not chunk:
                    return False
                digest.update(chunk)
                remaining -= len(chunk)
            return remaining == 0 and file.read() == digest.digest()
    except OSError:
        return False


class Outcome(StrEnum):
    DONE = "done"
    NOT_DUE = "not due"  # maintained meanwhile, or removed
    BUSY = "busy"  # a job holds the lock: a later job starts it again
    STOPPED = "stopped"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"  # git older than MIDX_BITMAP_GIT


class Maintenance:
    """Mirror maintenance in this process: one mirror at a time, on a thread of its own, killed
    after JOB_TIMEOUT (a stalled disk), as a job's git is; `stop` kills it and lets no more start
    (the runner's stop)."""

    def __init__(self) -> None:
        self._task = OneAtATime("mirror-maintenance")
        self._lock = threading.Lock()  # guards what follows
        self._failed_at: dict[Path, float] = {}
        self._unsupported = False

    def start(self, settings: Settings, cache: CloneCache, mirror: Mirror) -> bool:
        """Maintain `mirror` in the background; False when stopped, when git is too old, when a
        maintenance is under way here already (of any mirror), or when this mirror's last one
        failed less than RETRY_AFTER_FAILURE_S ago."""
        with self._lock:
            failed_at = self._failed_at.get(mirror.path)
            if self._unsupported or (failed_at is not None and time.monotonic() - failed_at < RETRY_AFTER_FAILURE_S):
                return False
        return self._task.start(partial(self._run, settings, cache, mirror), settings.job_timeout_s)

    def _run(self, settings: Settings, cache: CloneCache, mirror: Mirror, control: JobControl) -> None:
        outcome = Outcome.FAILED  # also when `maintain` raises (`OneAtATime` logs it)
        try:
            outcome = maintain(settings, cache, mirror, control)
        finally:
            with self._lock:
                if outcome is Outcome.FAILED or (outcome is Outcome.STOPPED and control.reason is StopReason.TIMEOUT):
                    self._failed_at[mirror.path] = time.monotonic()
                self._unsupported = self._unsupported or outcome is Outcome.UNSUPPORTED

    def wait(self, timeout_s: float) -> bool:
        """Wait for the maintenance under way; whether none is left."""
        return self._task.wait(timeout_s)

    def stop(self, timeout_s: float = STOP_WAIT_S) -> bool:
        """Kill the maintenance under way (its git: the mirror's lock goes with it) and start no
        more; whether all of it ended within `timeout_s`."""
        return self._task.stop(timeout_s)


background = Maintenance()


def maintain(settings: Settings, cache: CloneCache, mirror: Mirror, control: JobControl) -> Outcome:
    """Maintain the mirror if it is still due and no job holds its lock. A failure leaves the
    mirror as it is: a job that reads a damaged object in it rebuilds it."""
    with locked_if_idle(mirror) as fd:
        if fd is None:
            return Outcome.BUSY
        if not maintenance_due(mirror):
            return Outcome.NOT_DUE
        git = _maintenance_git(settings, cache, control)
        if git is None:
            return Outcome.FAILED
        started = time.monotonic()
        try:
            version = git.version()
            if version == (0, 0):
                return Outcome.FAILED  # git could not tell its version: tried again later
            if version < MIDX_BITMAP_GIT:
                return Outcome.UNSUPPORTED
            git.maintain_mirror(mirror.path, lock_fd=fd)
        except JobStopped:
            return Outcome.STOPPED  # what git left is dropped by the next fetch
        except GitError as exc:
            log.warning("clone cache: maintaining mirror %s failed: %s", mirror.path.name, exc)
            return Outcome.FAILED
    log.info("clone cache: maintained mirror %s in %.0f ms", mirror.path.name, (time.monotonic() - started) * 1000)
    return Outcome.DONE


def _maintenance_git(settings: Settings, cache: CloneCache, control: JobControl) -> Git | None:
    """git for maintenance: in a directory of the cache's own (its working directory, and git's
    HOME and CA directory, as a job's have), output to the log only. None if that cannot be made."""
    from repobox_cli.git_ops import Git  # git_ops imports this module

    root = cache.root / MAINTENANCE_DIR
    try:
        workdir.ensure_private_dir(root)
    except workdir.WorkDirError as exc:
        log.warning("clone cache: no mirror maintenance: %s", exc)
        return None
    return Git(settings, workdir.WorkPaths(root), control, lambda line, stream: log.debug("maintenance: %s", line))
