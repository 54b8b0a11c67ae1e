"""Every git call, through `sh`, in a hardened environment.

- No system or global config, no credential helper, no prompt, no askpass, no hooks, no
  fsmonitor, no redirects, https only (http by opt-in), `file` only for the local checkout.
- The token reaches git only as an `http.<repo url>.extraHeader` in git's environment
  (GIT_CONFIG_COUNT/KEY/VALUE): never in an argument list or a file, and offered to no other URL.
- The runner works in its own bare repository (`git/`); the agent's clone (`repo/`, with its own
  `.git`) is only ever read as a tree of files, so nothing planted in it runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from repobox_cli import clone_cache, metrics, workdir
from repobox_cli.child import Child
from repobox_cli.control import JobControl
from repobox_cli.errors import BranchMissing, GitError, JobStopped, RemoteRefused
from repobox_cli.redaction import basic_auth_value, one_line
from repobox_cli.settings import Settings
from repobox_cli.validation import RepoUrl

Emit = Callable[[str, str], None]  # (line, stream)

STDERR_TAIL_LINES = 20
PROGRESS_INTERVAL_S = 1.0
ZERO_SHA = "0" * 40
GITLINK_MODE = "160000"
MIN_SHA_CHARS = 40  # sha-1; sha-256 names are longer
NESTED_NAMES_SHOWN = 10  # in the one line naming skipped nested repositories

# Settings that make git ignore anything a host, a repository or an agent could plant.
HARDENED_CONFIG: tuple[tuple[str, str], ...] = (
    ("credential.helper", ""),
    ("core.askPass", ""),
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.sshCommand", "false"),
    ("http.followRedirects", "false"),
    ("protocol.allow", "never"),
    ("submodule.recurse", "false"),
    ("push.recurseSubmodules", "no"),
    ("commit.gpgSign", "false"),
    ("push.gpgSign", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),  # no `git maintenance run --auto` after every fetch
    # A commit-graph stores parents as positions: one damaged (nothing here writes one) would
    # change the history a walk sees, and a copy out of the mirror would take another branch's objects.
    ("core.commitGraph", "false"),
    ("http.sslVerify", "true"),
    ("core.attributesFile", "/dev/null"),
    ("core.excludesFile", "/dev/null"),
)


# Writing a checkout's files waits on the disk more than on the CPU: parallel workers write a
# 5,000-file checkout 2-4 times faster even on 2 cores. git uses them only from 100 files up.
CHECKOUT_WORKERS = 8
SPEED_CONFIG: tuple[tuple[str, str], ...] = (("checkout.workers", str(CHECKOUT_WORKERS)),)
GIT_VERSION_RE = re.compile(r"git version (\d+)\.(\d+)")
_VERSIONS: dict[str, tuple[int, int]] = {}  # PATH -> the version of the git found on it
# What a killed `fetch` (index-pack) or `repack` leaves in objects/pack/.
TEMPORARY_PACK_PREFIXES = ("tmp_", ".tmp-")


def parse_version(said: str) -> tuple[int, int] | None:
    """(major, minor) from what `git --version` printed; None if it is not there."""
    found = GIT_VERSION_RE.search(said)
    return (int(found[1]), int(found[2])) if found else None


def proxy_from_env(env: Mapping[str, str]) -> str:
    """The proxy curl would use for https from the operator's environment, or '' for none."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if env.get(name):
            return env[name]
    return ""


_GIT_ERROR_PREFIXES = ("fatal:", "error:", "remote: error:", " ! [")
_PROGRESS_RE = re.compile(r"^(remote: )?[A-Za-z ]+:\s+\d+% ")


class _StderrLines:
    """Splits git's stderr into lines (`\\r` progress too), streams them, keeps a tail for errors."""

    def __init__(self, emit: Emit | None) -> None:
        self.emit = emit
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._partial = ""
        self._last_progress_at = 0.0

    def feed(self, chunk: str) -> None:
        self._partial += chunk
        *lines, self._partial = re.split(r"[\r\n]", self._partial)
        for line in lines:
            self._line(line)

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def _line(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        self.tail.append(line)
        if self.emit is None:
            return
        # Progress counters repeat many times a second: pass one a second and each final "done".
        if _PROGRESS_RE.match(line) and not line.endswith("done."):
            now = time.monotonic()
            if now - self._last_progress_at < PROGRESS_INTERVAL_S:
                return
            self._last_progress_at = now
        # git prints its progress on stderr, but progress is not an error: only git's own
        # error lines go out as stderr (the web app paints stderr red).
        self.emit(line, "stderr" if line.startswith(_GIT_ERROR_PREFIXES) else "stdout")


# An HTTP status as git's own error lines give it: "The requested URL returned error: 403",
# "RPC failed; HTTP 401 curl 22 …".
_HTTP_STATUS_RE = re.compile(r"(?:error:|HTTP) (\d{3})\b")


def _refusal(step: str, tail: Sequence[str]) -> str | None:
    """The remote's refusal, in one line, or None when git failed for another reason. Only git's
    own error lines are read: progress ("401 bytes", "Total 4013") says nothing about the remote."""
    text = "\n".join(line for line in tail if line.startswith(("fatal:", "error:")))
    found = _HTTP_STATUS_RE.search(text)
    status = int(found.group(1)) if found else None
    if "could not read Username" in text or "Authentication failed" in text or status == 401:
        return f"git {step} failed: the server refused the token (HTTP 401): check the provider's token"
    if status == 403:
        return f"git {step} failed: the token may not access this repository (HTTP 403)"
    if re.search(r"repository '.*' not found", text) or status == 404:
        return f"git {step} failed: repository not found"
    if status in (301, 302, 307, 308):
        return f"git {step} failed: the server answered with a redirect, which repobox does not follow"
    return None


def _reason(step: str, tail: Sequence[str]) -> str:
    refusal = _refusal(step, tail)
    if refusal:
        return refusal
    fatal = [line for line in tail if line.startswith(("fatal:", "error:", " ! ["))]
    detail = fatal[-1] if fatal else (tail[-1] if tail else "no output")
    return f"git {step} failed: {detail}"


def _entries(listing: str) -> list[tuple[str, str, str]]:
    """(path, mode, sha) of `ls-files --stage -z` (mode sha stage) or `ls-tree -r -z` (mode type sha)."""
    found = []
    for record in listing.split("\0"):
        meta, tab, path = record.partition("\t")
        fields = meta.split(" ")
        if tab and len(fields) == 3:
            mode, sha = fields[0], fields[1] if len(fields[1]) >= MIN_SHA_CHARS else fields[2]
            found.append((path, mode, sha))
    return found


def _skipped_line(skipped: Sequence[str]) -> str:
    more = len(skipped) - NESTED_NAMES_SHOWN
    names = ", ".join(skipped[:NESTED_NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")
    what = "repository" if len(skipped) == 1 else "repositories"
    return f"Skipped {len(skipped)} nested {what} (committed as the base branch had them): {names}"


@dataclass(frozen=True)
class Fetched:
    """What one fetch of a job's base branch learned: the base commit, and the work branch's tip
    on the remote at that moment (None: no such branch), which the push later leases against."""

    branch: str
    base_sha: str
    work_sha: str | None


@dataclass(frozen=True)
class Committed:
    """The agent's change committed on top of its base, with its line counts."""

    commit: str
    added: int
    removed: int


@dataclass(frozen=True)
class _Changes:
    """What a commit's tree changes against its base: how many paths, the new or changed gitlinks
    among them, and the lines added and removed (binary files count 0)."""

    changed: int
    gitlinks: list[str]
    added: int
    removed: int


def _parse_changes(listing: str) -> _Changes:
    """`diff-tree -z --raw --numstat --no-renames`: first a `:modes shas status` record and its
    path per change, then an `added<TAB>removed<TAB>path` record per change (`-` for binary)."""
    tokens = iter(listing.split("\0"))
    changed = added = removed = 0
    gitlinks: list[str] = []
    for token in tokens:
        if token.startswith(":"):
            path = next(tokens, "")
            if token.split(" ")[1] == GITLINK_MODE:
                gitlinks.append(path)
            changed += 1
            continue
        counts = token.split("\t", 2)
        if len(counts) == 3 and counts[0].isdigit() and counts[1].isdigit():
            added += int(counts[0])
            removed += int(counts[1])
    return _Changes(changed, sorted(gitlinks), added, removed)


def _empty_real_dir(path: Path) -> bool:
    """Whether `path` is a directory (not a symlink to one) with nothing in it."""
    try:
        return workdir.is_real_dir(path) and not os.listdir(path)
    except OSError:
        return False


# The system's CA bundle, as Debian, Ubuntu and Alpine make it (update-ca-certificates writes it
# and /etc/ssl/certs from the same certificates).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
WORK_REFS = "refs/repobox-work/"  # where a fetch puts the work branch's tip(s), read and dropped


@dataclass(frozen=True)
class RemoteRefs:
    default_branch: str | None
    heads: dict[str, str]


class Git:
    """git for one job: its paths, its control (for kills), its output."""

    def __init__(self, settings: Settings, paths: workdir.WorkPaths, control: JobControl, emit: Emit) -> None:
        self.settings = settings
        self.paths = paths
        self.control = control
        self.emit = emit

    # environment ------------------------------------------------------------------------
    def _env(self, config: Sequence[tuple[str, str]] = (), *, protocol: str = "https") -> dict[str, str]:
        s = self.settings
        allowed = "https:http" if (protocol == "https" and s.allow_http) else protocol
        pairs = [*HARDENED_CONFIG, *SPEED_CONFIG, *((f"protocol.{p}.allow", "always") for p in allowed.split(":"))]
        # The operator's proxy (from the environment) or none: never one planted in a config.
        pairs.append(("http.proxy", proxy_from_env(s.git_env)))
        pairs += self._ca_config()
        pairs += list(config)
        env = {
            "PATH": s.path_env,
            "HOME": str(self.paths.git_home),
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_ALLOW_PROTOCOL": allowed,
            "GIT_NO_REPLACE_OBJECTS": "1",
            # Never discover a repository above the attempt's directory (one planted in TEMP_DIR
            # would bring URL-scoped proxy and TLS settings into ls-remote and clone).
            "GIT_CEILING_DIRECTORIES": str(self.paths.root.parent),
            "GIT_AUTHOR_NAME": s.git_author_name,
            "GIT_AUTHOR_EMAIL": s.git_author_email,
            "GIT_COMMITTER_NAME": s.git_author_name,
            "GIT_COMMITTER_EMAIL": s.git_author_email,
            **s.git_env,
            "GIT_CONFIG_COUNT": str(len(pairs)),
        }
        for i, (key, value) in enumerate(pairs):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env

    def _ca_config(self) -> list[tuple[str, str]]:
        """Where git finds the CAs it trusts: one file, read on each HTTPS connection. That file is
        GIT_SSL_CAINFO, or else the system's bundle (SYSTEM_CA_BUNDLE, where it exists); git's CA
        directory is then an empty one. Left to git when the operator names a CA directory
        (GIT_SSL_CAPATH, SSL_CERT_DIR) or an OpenSSL file (SSL_CERT_FILE). Debian's git (libcurl
        with GnuTLS) otherwise also parses every file of /etc/ssl/certs, the bundle's certificates
        again three times over, on each connection: about 20 ms each."""
        env = self.settings.git_env
        if any(env.get(name) for name in ("GIT_SSL_CAPATH", "SSL_CERT_DIR")):
            return []
        if env.get("GIT_SSL_CAINFO"):
            return [("http.sslCAPath", self._empty_ca_dir())]
        if not env.get("SSL_CERT_FILE") and os.path.isfile(SYSTEM_CA_BUNDLE):
            return [("http.sslCAInfo", SYSTEM_CA_BUNDLE), ("http.sslCAPath", self._empty_ca_dir())]
        return []

    def _empty_ca_dir(self) -> str:
        """An empty directory of the job's own (see `_ca_config`), checked before every git step
        (about 10 µs): one with something in it, or a symlink in its place, is made anew."""
        path = self.paths.no_ca_dir
        if not _empty_real_dir(path):
            workdir.remove_tree(path)
        try:
            workdir.ensure_private_dir(path)
        except workdir.WorkDirError as exc:
            raise GitError(f"git could not start: {exc}") from None
        return str(path)

    @staticmethod
    def auth_config(repo: RepoUrl, token: str) -> list[tuple[str, str]]:
        """The Basic auth header, scoped to exactly this repository's URL."""
        scope = repo.url.rstrip("/")
        return [(f"http.{scope}.extraHeader", f"Authorization: Basic {basic_auth_value(token)}")]

    # running ----------------------------------------------------------------------------
    def run(
        self,
        args: Sequence[str],
        *,
        step: str,
        env: dict[str, str],
        cwd: Path | None = None,
        stdin: str | None = None,
        stream: bool = False,
        paths: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> str:
        """Run git; its stdout. GitError (git's reason, redacted) or JobStopped on failure. With
        `paths`, bytes that are not UTF-8 (in file names) come back as surrogate escapes, which
        stdin turns back into the same bytes; otherwise as replacement characters. `pass_fds`:
        this process's descriptors git (and what it starts) holds open too."""
        self.control.check()
        errors = _StderrLines(self.emit if stream else None)
        try:
            child = Child(
                ["git", *args],
                env=env,
                cwd=cwd or self.paths.root,
                stdin=stdin,
                on_stderr=errors.feed,
                stdout_errors="surrogateescape" if paths else "replace",
                pass_fds=pass_fds,
            )
        except OSError as exc:
            raise GitError(f"git {step} failed: git could not start: {exc.strerror or exc}") from None
        self.control.register(child.pid)
        try:
            finished = child.finish()
        finally:
            self.control.unregister(child.pid)
        errors.close()
        if finished.code != 0:
            if self.control.stopped.is_set():
                raise JobStopped(self.control.describe())
            tail = list(errors.tail)
            error = RemoteRefused if _refusal(step, tail) else GitError
            raise error(one_line(_reason(step, tail)))
        self.control.check()
        return finished.stdout

    def _in_runner_repo(
        self,
        args: Sequence[str],
        *,
        step: str,
        stdin: str | None = None,
        work_tree: bool = False,
        index: bool = False,
        paths: bool = False,
    ) -> str:
        """git in the runner's repository; with `work_tree`, over the agent's files and the runner's
        index; with `index` alone, the index without the files (nothing the agent wrote is read)."""
        env = self._env()
        env["GIT_DIR"] = env["GIT_COMMON_DIR"] = str(self.paths.git_dir)
        if work_tree or index:
            env["GIT_INDEX_FILE"] = str(self.paths.index_file)
        if work_tree:
            env["GIT_WORK_TREE"] = str(self.paths.repo)
        return self.run(args, step=step, env=env, stdin=stdin, paths=paths).strip()

    # steps ------------------------------------------------------------------------------
    def remote_refs(self, repo: RepoUrl, token: str, refs: Sequence[str]) -> RemoteRefs:
        """HEAD's target and the named heads on the remote (one request)."""
        out = self.run(
            ["ls-remote", "--symref", "--", repo.url, "HEAD", *(f"refs/heads/{r}" for r in refs)],
            step="ls-remote",
            env=self._env(self.auth_config(repo, token)),
        )
        default: str | None = None
        heads: dict[str, str] = {}
        for line in out.splitlines():
            left, _, name = line.partition("\t")
            if left.startswith("ref: ") and name == "HEAD":
                default = left[len("ref: refs/heads/") :]
            elif name.startswith("refs/heads/"):
                heads[name[len("refs/heads/") :]] = left
        return RemoteRefs(default_branch=default, heads=heads)

    def clone(self, repo: RepoUrl, token: str, branch: str) -> str:
        """Clone `branch` into the runner's bare repository; the base commit's sha."""
        return self.clone_branch(repo, token, branch, None).base_sha

    @metrics.timed_step("clone")
    def clone_branch(self, repo: RepoUrl, token: str, branch: str, work_branch: str | None) -> Fetched:
        """The runner's bare repository at `branch` as the remote has it (through the clone
        cache), and the remote's `work_branch` tip, in one fetch: no ls-remote before it.
        BranchMissing when the remote has no `branch`."""
        return clone_cache.clone(
            self,
            repo,
            token,
            branch,
            work_branch,
            warn=lambda line: self.emit(line, "stderr"),
            note=lambda line: self.emit(line, "stdout"),
        )

    def fetch_into_runner_repo(self, repo: RepoUrl, token: str, branch: str, work_branch: str | None) -> Fetched:
        """Without the cache: a fresh runner's repository, fetched into straight from the remote."""
        self.init_bare(self.paths.git_dir, branch)
        return self.fetch_heads(self.paths.git_dir, repo, token, branch, f"refs/heads/{branch}", work_branch)

    def init_bare(self, git_dir: Path, branch: str = "main") -> None:
        """A new, empty bare repository at `git_dir` (anything there before is removed); no templates."""
        if not workdir.remove_tree(git_dir):
            raise GitError(f"git init failed: cannot remove the old {git_dir.name}/")
        self.run(
            ["init", "--quiet", "--bare", "--template=", f"--initial-branch={branch}", "--", str(git_dir)],
            step="init",
            env=self._env(),
        )

    def init_mirror(self, mirror: Path) -> None:
        """A new clone-cache mirror: jobs copy out of it by commit id (see `copy_from_mirror`)."""
        self.init_bare(mirror)
        self._in(mirror, ["config", "uploadpack.allowAnySHA1InWant", "true"], step="init")

    def fetch_heads(
        self, git_dir: Path, repo: RepoUrl, token: str, branch: str, base_ref: str, work_branch: str | None
    ) -> Fetched:
        """Fetch the remote's `branch` into `git_dir` as `base_ref` and, in the same negotiation,
        its `work_branch` if it exists (a pattern refspec: a missing branch is no error)."""
        self._drop_leftovers(git_dir)
        # This fetch's own place for the work branch: refs a killed job left under WORK_REFS (in
        # a mirror) are never read as this job's, and are dropped with this fetch's below.
        mine = f"{WORK_REFS}{secrets.token_hex(8)}/"
        refspecs = [f"+refs/heads/{branch}:{base_ref}"]
        if work_branch:
            refspecs.append(f"+refs/heads/{work_branch}*:{mine}work*")
        # One pack per fetch, never loose objects (and git's "Receiving objects" progress).
        env = self._env([*self.auth_config(repo, token), ("fetch.unpackLimit", "1")])
        env["GIT_DIR"] = env["GIT_COMMON_DIR"] = str(git_dir)
        try:
            self.run(
                ["fetch", "--progress", "--no-tags", "--no-write-fetch-head", "--", repo.url, *refspecs],
                step="clone",
                env=env,
                stream=True,
            )
        except GitError as exc:
            if f"couldn't find remote ref refs/heads/{branch}" in str(exc):
                raise BranchMissing(f"branch {branch} not found on the remote") from None
            raise
        # The base commit, the work branch's tip and the work refs to drop: one process.
        # A tag object under refs/heads (a hostile remote) is peeled, as `rev-parse ref^{commit}` would.
        fields = "%(objecttype) %(objectname) %(*objecttype) %(*objectname) %(refname)"
        listed = self._in(git_dir, ["for-each-ref", f"--format={fields}", base_ref, WORK_REFS], step="clone")
        found: dict[str, tuple[str, str]] = {}
        for kind, sha, peeled_kind, peeled_sha, ref in (line.split(" ", 4) for line in listed.splitlines()):
            found[ref] = (peeled_kind, peeled_sha) if kind == "tag" else (kind, sha)
        kind, base_sha = found.get(base_ref, ("", ""))
        if kind != "commit":
            raise GitError(f"git fetch left no commit for {branch}")
        self._delete_refs(git_dir, [ref for ref in found if ref.startswith(WORK_REFS)])
        return Fetched(branch, base_sha, found.get(f"{mine}work", ("", ""))[1] or None)

    def copy_from_mirror(self, mirror: Path, sha: str, branch: str, *, into: Path | None = None) -> None:
        """The runner's repository at `sha` as `branch`, with its own pack of exactly the objects
        `sha` reaches, taken from the mirror (never the mirror's files: they also hold other
        users' objects). It borrows the mirror's objects (alternates) for one `pack-objects`,
        which reuses the mirror's packed data without the pack protocol's transfer, re-indexing
        and connectivity walk, and counts the objects from the mirror's reachability bitmap
        where it has one (`maintain_mirror`); then it stops borrowing. `into`: another directory
        than the runner's repository (a staging copy)."""
        if not clone_cache.indexes_intact(mirror):
            raise GitError("git clone failed: the clone cache's index or bitmap files are damaged")
        git_dir = into or self.paths.git_dir
        self.init_bare(git_dir, branch)
        alternates = git_dir / "objects" / "info" / "alternates"
        pack = git_dir / "objects" / "pack" / "pack"
        try:
            alternates.parent.mkdir(mode=workdir.PRIVATE_DIR_MODE, exist_ok=True)
            alternates.write_text(f"{mirror / 'objects'}\n")
            self._in(git_dir, ["update-ref", f"refs/heads/{branch}", sha], step="clone")
            # `repack` would count the objects by walking every commit and tree: it never reads
            # a bitmap when it writes a pack to disk. (The temporary pack is written in the
            # job's own objects/pack/, beside where it ends: no rename across file systems.)
            self._in(
                git_dir,
                ["pack-objects", "--quiet", "--revs", "--use-bitmap-index", "--delta-base-offset", str(pack)],
                step="clone",
                stdin=f"{sha}\n",
            )
        except OSError as exc:
            raise GitError(f"git clone failed: cannot borrow the mirror's objects: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(OSError):
                alternates.unlink()

    def maintain_mirror(self, mirror: Path, *, lock_fd: int | None = None, whole: bool = False) -> None:
        """The mirror's newer, smaller packs rolled into one (pack sizes kept a geometric
        progression: the big old pack is left as it is) and one multi-pack index over all of
        them, with a reachability bitmap (`copy_from_mirror` counts from it); `whole`: every
        pack into one, with a bitmap (for a git older than clone_cache.MIDX_BITMAP_GIT).
        `lock_fd`: the mirror's lock, which git then holds too, until it exits, whatever
        becomes of this process."""
        how = ["-a"] if whole else ["--geometric=2", "--write-midx"]
        self._in(
            mirror,
            ["repack", *how, "-d", "--write-bitmap-index", "--quiet"],
            step="repack",
            pass_fds=() if lock_fd is None else (lock_fd,),
        )

    def version(self) -> tuple[int, int]:
        """git's version (major, minor), asked once per PATH; (0, 0) if it cannot be told."""
        path = self.settings.path_env
        if path not in _VERSIONS:
            try:
                said = self.run(["--version"], step="version", env=self._env())
            except GitError:
                return (0, 0)  # asked again next time (git could not start, say)
            _VERSIONS[path] = parse_version(said) or (0, 0)
        return _VERSIONS[path]

    def is_sound(self, git_dir: Path) -> bool:
        """Whether `git_dir` is a repository whose refs reach only objects it has (blobs unread)."""
        try:
            self._in(git_dir, ["fsck", "--connectivity-only", "--no-dangling", "--no-progress"], step="fsck")
        except GitError:
            return False
        return True

    def _in(
        self, git_dir: Path, args: Sequence[str], *, step: str, stdin: str | None = None, pass_fds: Sequence[int] = ()
    ) -> str:
        env = self._env()
        env["GIT_DIR"] = env["GIT_COMMON_DIR"] = str(git_dir)
        return self.run(args, step=step, env=env, stdin=stdin, pass_fds=pass_fds).strip()

    def _delete_refs(self, git_dir: Path, refs: Sequence[str]) -> None:
        if refs:
            stdin = "".join(f"delete {ref}\n" for ref in refs)
            self._in(git_dir, ["update-ref", "--stdin"], step="clone", stdin=stdin)

    @staticmethod
    def _drop_leftovers(git_dir: Path) -> None:
        """`*.lock` files and temporary packs a killed git left (its caller holds the mirror's
        flock: no git is writing there now)."""
        for directory, _, files in os.walk(git_dir):
            in_packs = directory == os.path.join(git_dir, "objects", "pack")
            for name in files:
                if name.endswith(".lock") or (in_packs and name.startswith(TEMPORARY_PACK_PREFIXES)):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(directory, name))

    def checkout_for_agent(self, repo: RepoUrl, branch: str, work_branch: str, *, own_objects: bool = False) -> None:
        """The agent's clone in `repo/`, on `work_branch`, its origin the real URL (no credentials).
        It borrows the runner's objects (`--shared`) unless `own_objects`: an agent running as
        another user cannot read the runner's repository, so it gets a copy."""
        sharing = "--no-hardlinks" if own_objects else "--shared"
        # No template files (a dozen hook samples) and no reflogs of these steps: each is a file
        # written that nobody reads (on a slow disk, about 1 ms each). The empty hooks/ and info/
        # a clone has are made below, for the agent's tools that write there; the agent's own
        # commands keep reflogs (its repository's config still asks for them).
        quiet = [("core.logAllRefUpdates", "false")]
        self.run(
            [
                "clone",
                "--quiet",
                "--template=",
                sharing,
                "--no-tags",
                "--branch",
                branch,
                "--",
                str(self.paths.git_dir),
                str(self.paths.repo),
            ],
            step="checkout",
            env=self._env(quiet, protocol="file"),
        )
        try:
            for name in ("hooks", "info"):
                (self.paths.repo / ".git" / name).mkdir(exist_ok=True)
        except OSError as exc:
            raise GitError(f"git checkout failed: {exc.strerror or exc}") from None
        env = self._env(quiet)
        env["GIT_DIR"] = str(self.paths.repo / ".git")
        env["GIT_WORK_TREE"] = str(self.paths.repo)
        self.run(["remote", "set-url", "origin", "--", repo.url], step="checkout", env=env)
        self.run(["checkout", "--quiet", "-B", work_branch], step="checkout", env=env, cwd=self.paths.repo)

    def reset_runner_config(self) -> None:
        """Rewrite the runner repository's config and drop its hooks before the post-agent steps."""
        git_dir = self.paths.git_dir
        for directory in (git_dir, git_dir / "objects", git_dir / "refs"):
            if not workdir.is_real_dir(directory):
                raise GitError(
                    "the runner's repository was tampered with (a symlink or file in place "
                    f"of {directory.name}/): refusing to continue"
                )
        # Each of these can make git read another config, run a program, or see other history.
        # remove_tree never follows a symlink: a symlinked info/ or objects/info/ goes itself.
        # (This repository is never shallow, and keeps no commit-graph: a `shallow` file or a
        # commit-graph here was planted, and would change which history a push walks.)
        for name in ("config", "config.worktree", "commondir", "info", "hooks", "shallow"):
            workdir.remove_tree(git_dir / name)
        if not workdir.is_real_dir(git_dir / "objects" / "info"):
            workdir.remove_tree(git_dir / "objects" / "info")
        else:
            for name in ("alternates", "http-alternates", "commit-graph", "commit-graphs"):
                workdir.remove_tree(git_dir / "objects" / "info" / name)
        (git_dir / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
        # git's HOME too: the agent could have reached it (~/.netrc is read by curl).
        workdir.remove_tree(self.paths.git_home)
        self.paths.git_home.mkdir(mode=workdir.PRIVATE_DIR_MODE)

    @metrics.timed_step("commit")
    def commit_worktree(self, base_sha: str, message: str, *, ref: str | None = None) -> Committed | None:
        """Commit the agent's files on top of `base_sha` (and point `ref` at it, when given), with
        its line counts; None if nothing changed."""
        self._in_runner_repo(["read-tree", base_sha], step="commit", work_tree=True)
        nested = self._add_files(self.paths.repo)
        tree = self._in_runner_repo(["write-tree"], step="commit", work_tree=True)
        changes = self._changes(base_sha, tree)
        gitlinks = changes.gitlinks
        if gitlinks:
            # A second line of defence after `_add_files`: a new or changed gitlink is put back
            # as the base tree had that path (a gitlink of the base stays as it was).
            listed = self._in_runner_repo(["ls-tree", "-r", "-z", "--full-tree", base_sha], step="commit", paths=True)
            self._restore_from_base(_entries(listed), gitlinks)
            tree = self._in_runner_repo(["write-tree"], step="commit", work_tree=True)
            changes = self._changes(base_sha, tree)
        skipped = sorted(set(nested) | set(gitlinks))
        if skipped:
            self.emit(_skipped_line(skipped), "stdout")
        if not changes.changed:
            return None
        commit = self._in_runner_repo(
            ["commit-tree", tree, "-p", base_sha, "-F", "-"], step="commit", stdin=message + "\n"
        )
        if ref:
            self._in_runner_repo(["update-ref", ref, commit], step="commit")
        return Committed(commit, changes.added, changes.removed)

    def _changes(self, base_sha: str, tree: str) -> _Changes:
        """What `tree` changes against `base_sha`, in one process: paths, gitlinks and line counts.
        Trees only, in the bare repository: no .gitmodules or attributes file the agent wrote
        hides a gitlink or changes what counts."""
        listing = self._in_runner_repo(
            [
                "diff-tree",
                "-r",
                "-z",
                "--raw",
                "--numstat",
                "--no-renames",
                "--no-ext-diff",
                "--no-textconv",
                "--ignore-submodules=none",
                base_sha,
                tree,
            ],
            step="commit",
            paths=True,
        )
        return _parse_changes(listing)

    def _add_files(self, repo: Path) -> list[str]:
        """`git add --all` of the agent's files, leaving out every nested repository (which git
        would record as a gitlink to that repository's HEAD, or fail on); the ones left out."""
        try:
            nested = workdir.nested_repositories(repo)
        except workdir.WorkDirError as exc:
            raise GitError(f"git commit failed: {exc}") from None
        specs = [".", *(f":(top,exclude,literal){path}" for path in nested)]
        self._in_runner_repo(
            ["add", "--all", "--pathspec-from-file=-", "--pathspec-file-nul"],
            step="commit",
            work_tree=True,
            stdin="".join(f"{spec}\0" for spec in specs),
        )
        return nested

    def _restore_from_base(self, base: list[tuple[str, str, str]], skipped: list[str]) -> None:
        below = tuple(f"{path}/" for path in skipped)
        restored = [(path, mode, sha) for path, mode, sha in base if path in skipped or path.startswith(below)]
        info = [f"0 {ZERO_SHA}\t{path}" for path in skipped]
        info += [f"{mode} {sha}\t{path}" for path, mode, sha in restored]
        self._in_runner_repo(
            ["update-index", "-z", "--index-info"],
            step="commit",
            work_tree=True,
            stdin="".join(f"{line}\0" for line in info),
        )

    def line_counts(self, base_sha: str, commit: str) -> tuple[int, int]:
        """(lines added, lines removed) between base and `commit` (or a tree); binary files count 0.
        In the bare repository: no attributes file of the agent's changes what counts."""
        out = self._in_runner_repo(
            ["diff", "--numstat", "--no-ext-diff", "--no-textconv", "--no-renames", base_sha, commit],
            step="diff",
        )
        added = removed = 0
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                added += int(parts[0])
                removed += int(parts[1])
        return added, removed

    @metrics.timed_step("push")
    def push(self, repo: RepoUrl, token: str, commit: str, work_branch: str, expected: str | None) -> None:
        """Push `commit` to `work_branch` at the job's URL, replacing it only if it still is `expected`."""
        ref = f"refs/heads/{work_branch}"
        self.reset_runner_config()  # again: a concurrent agent may have touched it since the commit
        env = self._env(self.auth_config(repo, token))
        env["GIT_DIR"] = env["GIT_COMMON_DIR"] = str(self.paths.git_dir)
        self.run(
            [
                "push",
                "--progress",
                "--porcelain",
                f"--force-with-lease={ref}:{expected or ''}",
                "--",
                repo.url,
                f"{commit}:{ref}",
            ],
            step="push",
            env=env,
            stream=True,
        )

    # work sessions ----------------------------------------------------------------------
    def resolve(self, ref: str) -> str | None:
        """The commit `ref` names in the runner's repository, or None when it does not exist."""
        try:
            return self._in_runner_repo(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], step="rev-parse")
        except GitError:
            return None

    def set_ref(self, ref: str, commit: str) -> None:
        """Point `ref` (a full ref name) of the runner's repository at `commit`."""
        self._in_runner_repo(["update-ref", ref, commit], step="update-ref")

    def restore_worktree(self, commit: str) -> None:
        """Make the agent's files exactly `commit`'s tree again (after a failed prompt): changed
        files restored, new ones removed; the agent's own `.git` is left alone."""
        self._in_runner_repo(["read-tree", commit], step="restore", work_tree=True)
        self._in_runner_repo(["checkout-index", "--all", "--force"], step="restore", work_tree=True)
        self._in_runner_repo(["clean", "-d", "--force", "-x", "--exclude=/.git"], step="restore", work_tree=True)

    def commit_message(self, commit: str) -> str:
        """The whole message of `commit` in the runner's repository."""
        return self._in_runner_repo(["log", "-1", "--format=%B", commit], step="log")

    def merge_base(self, first: str, second: str) -> str:
        return self._in_runner_repo(["merge-base", first, second], step="merge-base")

    def remote_ref(self, repo: RepoUrl, token: str, ref: str) -> str | None:
        """The commit a full `ref` names on the remote, or None when it does not exist."""
        out = self.run(
            ["ls-remote", "--", repo.url, ref], step="ls-remote", env=self._env(self.auth_config(repo, token))
        )
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            if name == ref:
                return sha
        return None

    def fetch_ref(self, repo: RepoUrl, token: str, ref: str, local_ref: str) -> None:
        """Fetch the remote's `ref` into the runner's repository as `local_ref`."""
        env = self._env(self.auth_config(repo, token))
        env["GIT_DIR"] = env["GIT_COMMON_DIR"] = str(self.paths.git_dir)
        self.run(["fetch", "--quiet", "--no-tags", "--", repo.url, f"+{ref}:{local_ref}"], step="fetch", env=env)

    def push_ref(self, repo: RepoUrl, token: str, commit: str | None, ref: str) -> None:
        """Set the remote's full `ref` to `commit` (forced), or delete it when `commit` is None."""
        self.reset_runner_config()
        env = self._env(self.auth_config(repo, token))
        env["GIT_DIR"] = env["GIT_COMMON_DIR"] = str(self.paths.git_dir)
        refspec = f"+{commit}:{ref}" if commit else f":{ref}"
        self.run(["push", "--porcelain", "--", repo.url, refspec], step="push", env=env)
