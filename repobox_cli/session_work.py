"""A work session's steps (SESSIONS.md): init (clone, base branch, work branch, `ready`), a prompt
(the agent in the session's working copy, one commit per prompt, its own and the session's line
counts) and push (the work branch, then the merge request).

The working copy lives in `TEMP_DIR/sessions/{sid}` (`workdir.WorkPaths` layout: the agent's
`repo/`, the runner's bare `git/`). In the runner's repository `refs/heads/<work branch>` is the
session's last commit and `refs/repobox/base` the base it started from. One session's steps run
one at a time in this process (a lock per session, taken in the order the steps were admitted).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from repobox_cli import keys, mr, sandbox, validation, workdir
from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.control import HANDED_BACK_ON, JobControl, StopReason
from repobox_cli.errors import BranchMissing, JobDataError, JobStopped, RepoboxError
from repobox_cli.executor import Executor
from repobox_cli.git_ops import Git
from repobox_cli.jobs import Status, now_ms
from repobox_cli.leases import Also, FinishOutcome, Leases
from repobox_cli.logs import JobLog
from repobox_cli.output import JobOutput
from repobox_cli.redaction import one_line
from repobox_cli.redis_conn import CONNECTION_ERRORS, RedisHealth, retry_until
from repobox_cli.session_owner import Owner, claim, read_owner, release
from repobox_cli.sessions import (
    PushMessage,
    Session,
    SessionJob,
    SessionStatus,
    Step,
    checkpoint_ref,
    mr_description,
    mr_title,
)
from repobox_cli.settings import Settings
from repobox_cli.validation import RepoUrl

log = logging.getLogger(__name__)

SESSIONS_DIR = workdir.SESSIONS_DIR_NAME
BASE_REF = "refs/repobox/base"
# A pass of session housekeeping, which deletes archived sessions' checkpoints from their remotes, is
# killed after this (the rest waits for the next pass).
CHECKPOINT_DROP_TIMEOUT_S = 60.0


def job_trailer(job_id: str) -> str:
    """The line every prompt's commit carries: a prompt re-run after its commit was checkpointed
    finds it there and does not apply the change twice."""
    return f"Repobox-Job: {job_id}"


def session_paths(temp_dir: Path, session_id: str) -> workdir.WorkPaths:
    """`TEMP_DIR/sessions/{sid}`: the session's working copy, kept across prompts and restarts."""
    return workdir.WorkPaths(temp_dir / SESSIONS_DIR / validation.safe_name(session_id, "session id"))


@dataclass
class _Done:
    """A step's result: the fields for its record/job, the session's fields, and the last line."""

    record: dict[str, str | int]
    session: dict[str, str | int]
    message: str
    remove_working_copy: bool = False


class SessionLocks:
    """One lock per session: its steps never overlap in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, session_id: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(session_id, threading.Lock())


class SessionWork:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        executor: Executor,
        health: RedisHealth,
        hard_stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.client = client
        self.executor = executor
        self.health = health
        self.hard_stop = hard_stop
        self.locks = SessionLocks()
        self.on_claim: Callable[[], None] = lambda: None  # the runner: prompts may now be forwarded here

    def _redis(self, call: Callable[[], object], what: str) -> object:
        return retry_until(call, self.health, self.hard_stop, what)

    def update_session(self, session_id: str, fields: dict[str, str | int]) -> None:
        """Write session fields (with `last_activity_at`), only while the session hash exists."""
        key = keys.work_session(session_id)

        def write() -> None:
            if self.client.exists(key):
                self.client.hset(key, mapping={**fields, "last_activity_at": now_ms()})

        self._redis(write, "updating the session")

    # ------------------------------------------------------------------------------------
    def execute(self, active: ActiveJob) -> RunOutcome:
        """Run one step of a session; write its final state; never raises."""
        job = _session_job(active)
        jlog = JobLog(
            log,
            {
                "job_id": job.id,
                "user_id": job.user_id,
                "runner_id": self.settings.runner_id,
                "session_id": job.session_id,
            },
        )
        paths = session_paths(self.settings.temp_dir, job.session_id)
        active.work_dir = str(paths.root)
        with self.locks.get(job.session_id):
            steps = {Step.INIT: self._init, Step.PROMPT: self._prompt, Step.PUSH: self._push}
            try:
                done = steps[job.step](active, paths)
                return self._finish(active, paths, Status.SUCCESS, done, jlog)
            except JobStopped:
                if active.control.reason in (StopReason.TIMEOUT, StopReason.CANCELLED, StopReason.INTERRUPTED):
                    return self._failed(active, paths, active.control.describe(), jlog)
                return self._abandon(active, jlog)
            except RepoboxError as exc:
                return self._failed(active, paths, one_line(str(exc)), jlog)
            except Exception as exc:  # noqa: BLE001 - boundary: one session's bug must not kill the worker
                reason = one_line(f"internal error: {type(exc).__name__}: {exc}")
                jlog.error("unexpected error in session step: %s", reason)
                return self._failed(active, paths, reason, jlog)

    # -- init ------------------------------------------------------------------------------
    def _init(self, active: ActiveJob, paths: workdir.WorkPaths) -> _Done:
        job, out = active.job, active.output
        repo = self.executor.checked_repo(job)
        work_branch = validation.branch_name(_session_job(active).work_branch)
        self._fresh_working_copy(paths)
        git = Git(self.settings, paths, active.control, out.git)
        out.runner("Cloning repository...")
        with self.executor.provider_token(job, repo) as token:
            base = job.branch
            try:
                base_sha = git.clone(repo, token, base)
            except BranchMissing:  # only then is the remote's default branch looked up
                default = git.remote_refs(repo, token, []).default_branch
                if not default:
                    raise JobDataError(f"branch {base} not found on the remote, and it has no default branch") from None
                base = validation.branch_name(default)
                out.runner(f"Using the default branch {base}: branch {job.branch} was not found on the remote")
                base_sha = git.clone(repo, token, base)
        out.runner("Clone completed.")
        self._ensure_current(active)
        out.runner(f"Creating branch {work_branch}...")
        # A working copy outlives its runner's git dir layout: it never borrows objects from it.
        git.checkout_for_agent(repo, base, work_branch, own_objects=True)
        git.set_ref(BASE_REF, base_sha)
        git.set_ref(f"refs/heads/{work_branch}", base_sha)
        self._give_to_agent(paths)
        self._claim(active, paths, base_sha)
        return _Done(
            {"status": Status.SUCCESS},
            {"status": SessionStatus.READY, "base_branch": base, "work_branch": work_branch, "error_message": ""},
            "Work session ready. You can now submit prompts.",
        )

    def _fresh_working_copy(self, paths: workdir.WorkPaths) -> None:
        workdir.ensure_private_dir(paths.root.parent.parent)
        workdir.ensure_private_dir(paths.root.parent)
        workdir.remove_tree(paths.root)
        os.mkdir(paths.root, workdir.PRIVATE_DIR_MODE)
        for sub in (paths.home, paths.tmp, paths.git_home):
            os.mkdir(sub, workdir.PRIVATE_DIR_MODE)

    def _give_to_agent(self, paths: workdir.WorkPaths) -> None:
        """When the agent runs as another uid, it may pass through to its working copy (each
        prompt's `Executor.agent_step` hands the files to that prompt's uid)."""
        if sandbox.agent_ids(self.settings, "0") is not None:
            for directory in (paths.root.parent.parent, paths.root.parent, paths.root):
                os.chmod(directory, workdir.TRAVERSE_ONLY_MODE)

    def drop_checkpoint(self, session_id: str, control: JobControl) -> bool:
        """An archived session's checkpoint ref is deleted from the user's remote (by the runner
        holding its working copy, before removing it); a failure is logged, never raised. The push
        is registered with `control` (its caller's deadline and stop kill it). False when it is to
        be tried again (stopped, or Redis away): the working copy is kept for a later pass."""
        try:
            data = self.client.hgetall(keys.work_session(session_id))
            if not data:
                return True
            session = Session.decode(session_id, data)
            job = SessionJob(
                id=f"archive-{session_id}",
                user_id=session.user_id,
                provider_id=session.provider_id,
                repo_url=session.repo_url,
                branch=session.base_branch,
                prompt="",
                environment="",
                status=Status.RUNNING,
                session_id=session_id,
            )
            repo = self.executor.checked_repo(job)
            paths = session_paths(self.settings.temp_dir, session_id)
            git = Git(self.settings, paths, control, lambda _line, _stream: None)
            with self.executor.provider_token(job, repo) as token:
                git.push_ref(repo, token, None, checkpoint_ref(session_id))
            log.info("deleted the checkpoint of archived session %s from its remote", session_id)
        except (RepoboxError, redis.RedisError, OSError) as exc:
            again = control.stopped.is_set() or isinstance(exc, CONNECTION_ERRORS)
            later = "; tried again by a later pass" if again else ""
            log.warning(
                "could not delete the checkpoint of archived session %s: %s%s", session_id, one_line(str(exc)), later
            )
            return not again
        return True

    # -- a prompt ----------------------------------------------------------------------------
    def _prompt(self, active: ActiveJob, paths: workdir.WorkPaths) -> _Done:
        job, out = active.job, active.output
        work_branch = validation.branch_name(_session_job(active).work_branch)
        out.runner(f"Running prompt: {validation.prompt_headline(job.prompt)}")
        repo = self.executor.checked_repo(job)
        git = self._open_working_copy(active, paths, repo)
        parent = git.resolve(f"refs/heads/{work_branch}")
        base_sha = git.resolve(BASE_REF)
        if parent is None or base_sha is None:
            raise JobDataError("the session's working copy has no work branch")
        if parent != base_sha and job_trailer(job.id) in git.commit_message(parent).splitlines():
            # An earlier attempt committed and checkpointed this prompt, then stopped before its end.
            out.runner(f"This prompt's change is already committed ({parent[:12]}): not running the agent again")
            return self._prompt_done(git, out, base_sha, git.resolve(f"{parent}^") or base_sha, parent)
        try:
            self.executor.agent_step(active, paths)
            self._ensure_current(active)
            if not workdir.is_real_dir(paths.repo):
                raise JobDataError("the agent replaced the repository directory: refusing to commit")
            git.reset_runner_config()
            message = f"{validation.commit_subject(job.prompt)}\n\n{job_trailer(job.id)}"
            committed = git.commit_worktree(parent, message, ref=f"refs/heads/{work_branch}")
        except BaseException:
            self._restore(git, parent)
            raise
        if committed is None:
            return self._prompt_done(git, out, base_sha, parent, None, (0, 0))
        self._ensure_current(active)
        with self.executor.provider_token(job, repo) as token:
            git.push_ref(repo, token, committed.commit, checkpoint_ref(_session_job(active).session_id))
        self._claim(active, paths, committed.commit)
        return self._prompt_done(git, out, base_sha, parent, committed.commit, (committed.added, committed.removed))

    @staticmethod
    def _prompt_done(
        git: Git, out: JobOutput, base_sha: str, parent: str, commit: str | None, own: tuple[int, int] | None = None
    ) -> _Done:
        """A prompt's result: its own line counts (`parent` → `commit`; `own` when the commit step
        counted them already) and the session's totals."""
        if own is None:
            own = git.line_counts(parent, commit) if commit else (0, 0)
        added, removed = own
        total_added, total_removed = git.line_counts(base_sha, commit or parent)
        out.runner(f"Committed {commit[:12]}: +{added} -{removed}" if commit else "No changes from this prompt")
        return _Done(
            {"status": Status.SUCCESS, "lines_added": added, "lines_removed": removed},
            {
                "status": SessionStatus.READY,
                "last_job_status": Status.SUCCESS,
                "error_message": "",
                "total_lines_added": total_added,
                "total_lines_removed": total_removed,
            },
            "Prompt completed. Session ready for more prompts or push.",
        )

    @staticmethod
    def _restore(git: Git, commit: str) -> None:
        """A failed prompt leaves nothing behind for the next one to commit."""
        try:
            git.reset_runner_config()
            git.restore_worktree(commit)
        except RepoboxError as exc:
            log.warning("could not restore the session's files after a failed prompt: %s", exc)

    # -- the working copy: here, adopted, or rebuilt -------------------------------------------
    def _open_working_copy(self, active: ActiveJob, paths: workdir.WorkPaths, repo: RepoUrl) -> Git:
        """The session's working copy, ready for a step: the one in `paths` when the owner record
        says it is the current one (this runner's, or one kept on this host by a runner that is
        gone), else rebuilt from the checkpoint on the user's remote."""
        job = _session_job(active)
        git = Git(self.settings, paths, active.control, active.output.git)
        owner: Owner | None = self._redis(  # type: ignore[assignment]
            lambda: read_owner(self.client, job.session_id), "reading the session's owner"
        )
        if workdir.is_real_dir(paths.repo) and workdir.is_real_dir(paths.git_dir) and owner is not None:
            head = git.resolve(f"refs/heads/{job.work_branch}")
            if head == owner.head and owner.dir == str(paths.root) and owner.host == socket.gethostname():
                if owner.runner != self.settings.runner_id:
                    active.output.runner(
                        f"Using the session's working copy kept on this host (runner {owner.runner} is gone)"
                    )
                    self._claim(active, paths, head)
                return git
        self._rebuild(active, paths, git, repo)
        return git

    def _rebuild(self, active: ActiveJob, paths: workdir.WorkPaths, git: Git, repo: RepoUrl) -> None:
        job, out = _session_job(active), active.output
        out.runner(
            "Rebuilding the session's working copy from its checkpoint on the remote "
            "(the runner that held it is gone)..."
        )
        self._fresh_working_copy(paths)
        ref = checkpoint_ref(job.session_id)
        with self.executor.provider_token(job, repo) as token:
            base_tip = git.clone(repo, token, job.branch)
            checkpoint = git.remote_ref(repo, token, ref)
            if checkpoint:
                git.fetch_ref(repo, token, ref, f"refs/heads/{job.work_branch}")
        head = checkpoint or base_tip
        base_sha = git.merge_base(base_tip, head) if checkpoint else base_tip
        if not checkpoint:
            git.set_ref(f"refs/heads/{job.work_branch}", head)
        git.set_ref(BASE_REF, base_sha)
        git.checkout_for_agent(repo, job.work_branch, job.work_branch, own_objects=True)
        self._give_to_agent(paths)
        self._claim(active, paths, head)
        out.runner(
            f"Working copy rebuilt at {head[:12]} ({'checkpoint' if checkpoint else 'no checkpoint yet: the base'})."
        )

    def _claim(self, active: ActiveJob, paths: workdir.WorkPaths, head: str) -> None:
        session_id = _session_job(active).session_id
        self._redis(
            lambda: claim(self.client, session_id, self.settings.runner_id, str(paths.root), head),
            "recording the session's owner",
        )
        self.on_claim()

    def holds_any(self) -> bool:
        """Whether this runner keeps any session's working copy (so other runners may forward that
        session's prompts and pushes here)."""
        try:
            with os.scandir(Path(self.settings.temp_dir) / SESSIONS_DIR) as entries:
                return next(entries, None) is not None
        except OSError:
            return False

    @staticmethod
    def _drop_checkpoint(git: Git, repo: RepoUrl, token: str, session_id: str) -> None:
        """The branch is pushed: the checkpoint ref is no longer needed on the remote."""
        try:
            git.push_ref(repo, token, None, checkpoint_ref(session_id))
        except RepoboxError as exc:
            log.warning("could not delete the checkpoint ref of session %s: %s", session_id, exc)

    # -- push --------------------------------------------------------------------------------
    def _push(self, active: ActiveJob, paths: workdir.WorkPaths) -> _Done:
        job, out = active.job, active.output
        work_branch = validation.branch_name(_session_job(active).work_branch)
        repo = self.executor.checked_repo(job)
        git = self._open_working_copy(active, paths, repo)
        head = git.resolve(f"refs/heads/{work_branch}")
        if head is None:
            raise JobDataError("the session's working copy has no work branch")
        self._ensure_current(active)
        out.runner("Pushing branch to remote...")
        with self.executor.provider_token(job, repo) as token:
            expected = git.remote_refs(repo, token, [work_branch]).heads.get(work_branch)
            git.push(repo, token, head, work_branch, expected)
            out.runner("Push completed.")
            out.runner("Creating merge request...")
            result = self._merge_request(active, repo.url, token, work_branch)
            self._drop_checkpoint(git, repo, token, _session_job(active).session_id)
        if result.url:
            out.runner(f"Merge request created: {result.url}")
        else:
            out.write(f"Warning: {result.warning}", "stderr", "runner")
        return _Done(
            {"status": Status.SUCCESS},
            {"status": SessionStatus.PUSHED, "pushed_at": now_ms(), "mr_url": result.url, "mr_warning": result.warning},
            "Work session pushed.",
            remove_working_copy=True,
        )

    def _merge_request(self, active: ActiveJob, repo_url: str, token: str, work_branch: str) -> mr.MrResult:
        job = _session_job(active)
        record = self.client.hgetall(keys.git_provider(job.user_id, job.provider_id))
        session = self.client.hgetall(keys.work_session(job.session_id))
        job_ids = self.client.lrange(keys.work_session_jobs(job.session_id), 0, -1)
        prompts = [p for p in (self.client.hget(keys.job(j), "prompt") for j in job_ids) if p]
        push = PushMessage(active.attempt.entry_id, job.session_id, job.user_id, job.title, job.description)
        request = mr.MergeRequest(
            mr_title(push),
            mr_description(
                push, prompts, int(session.get("total_lines_added") or 0), int(session.get("total_lines_removed") or 0)
            ),
            work_branch,
            session.get("base_branch") or job.branch,
        )
        return mr.open_merge_request(
            record.get("type", ""), record.get("url", ""), repo_url, token, request, self.settings.git_env
        )

    # -- ending a step ---------------------------------------------------------------------
    def _ensure_current(self, active: ActiveJob) -> None:
        leases = self._leases(active)
        lease_ms = int(self.settings.claim_min_idle_s * 1000)
        if not self._redis(lambda: leases.confirm_current(active.attempt, lease_ms), "checking the lease"):
            active.control.cancel(StopReason.LEASE_LOST)
        active.control.check()

    @staticmethod
    def _leases(active: ActiveJob) -> Leases:
        assert active.leases is not None, "session steps always run with their stream's leases"
        return active.leases

    def _failed(self, active: ActiveJob, paths: workdir.WorkPaths, reason: str, jlog: JobLog) -> RunOutcome:
        step = _session_job(active).step
        if step is Step.INIT:
            session: dict[str, str | int] = {"status": SessionStatus.FAILED, "error_message": reason}
        elif step is Step.PROMPT:
            session = {"status": SessionStatus.READY, "last_job_status": Status.FAILED, "error_message": reason}
        else:
            session = {"status": SessionStatus.READY, "mr_warning": f"Push failed: {reason}"}
        done = _Done({"status": Status.FAILED, "error_message": reason}, session, reason)
        return self._finish(active, paths, Status.FAILED, done, jlog)

    def _finish(
        self, active: ActiveJob, paths: workdir.WorkPaths, status: Status, done: _Done, jlog: JobLog
    ) -> RunOutcome:
        """The record/job's final fields (fenced, slot freed, entry acked) and the session's, in
        one step: no end of a runner between them leaves the session `running`, and a retried
        finish counts no prompt twice."""
        out = active.output
        if status is Status.FAILED:
            out.error(done.message)
        active.finishing.set()
        self._redis(out.drain, "writing the session output")  # the step's lines, before its final status
        leases = self._leases(active)
        job = _session_job(active)
        session_id = job.session_id
        counted = "job_count" if job.step is Step.PROMPT and status is Status.SUCCESS else ""
        session = Also(keys.work_session(session_id), {**done.session, "last_activity_at": now_ms()}, counted)
        result = self._redis(
            lambda: leases.finish(active.attempt, now_ms(), done.record, session), "finishing the step"
        )
        active.finished.set()
        if result is FinishOutcome.LOST:
            jlog.warning("session step finished here but was taken over meanwhile: result discarded")
            return RunOutcome.LOST
        if status is Status.SUCCESS:
            out.runner(done.message)
        self._redis(out.drain, "writing the session output")
        if done.remove_working_copy:
            workdir.remove_tree(paths.root)
            self._redis(lambda: release(self.client, session_id), "releasing the session")
        elapsed = time.monotonic() - active.started_monotonic
        jlog.info("session step %s %s in %.1f s", job.step, status, elapsed)
        if result is FinishOutcome.CANCELLED:
            return RunOutcome.CANCELLED
        return RunOutcome(status.value)

    def _abandon(self, active: ActiveJob, jlog: JobLog) -> RunOutcome:
        """Lost to another runner, or stopping: write nothing the next attempt owns."""
        active.finished.set()
        active.output.runner(f"Stopping here: {active.control.describe()}")
        active.output.flush()
        reason = active.control.reason
        try:
            self._leases(active).abandon(active.attempt, hand_back=reason in HANDED_BACK_ON)
        except (redis.RedisError, OSError) as exc:
            jlog.warning("could not release the session step on stop: %s", exc)
        return RunOutcome.LOST if reason is StopReason.LEASE_LOST else RunOutcome.HANDED_BACK


def _session_job(active: ActiveJob) -> SessionJob:
    job = active.job
    assert isinstance(job, SessionJob), "session kinds only admit SessionJobs"
    return job
