"""One job's steps, start to end (SPEC §2), for the worker and for `repobox exec` alike."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from repobox_cli import agent, keys, sandbox, validation, workdir
from repobox_cli.control import JobControl, StopReason
from repobox_cli.crypto import decrypt
from repobox_cli.errors import DecryptError, JobDataError, JobStopped, ProviderError, RepoboxError
from repobox_cli.git_ops import Git
from repobox_cli.jobs import Job, Status, now_ms
from repobox_cli.leases import Attempt, Leases
from repobox_cli.logs import JobLog
from repobox_cli.output import JobOutput
from repobox_cli.redaction import one_line, registered
from repobox_cli.redis_conn import RedisHealth, retry_until
from repobox_cli.settings import SandboxMode, Settings
from repobox_cli.validation import RepoUrl

log = logging.getLogger(__name__)

Outcome = str  # a final status, or "lost" / "handed back"
UNSANDBOXED_WARNING = ("Warning: AGENT_SANDBOX=none: the agent runs without a sandbox and can see "
                       "this runner's processes and files (unsafe)")


@dataclass
class ActiveJob:
    """A job this process is running: what the supervisor watches and renews."""

    job: Job
    attempt: Attempt
    control: JobControl
    output: JobOutput
    previous_consumer: str = ""
    started_monotonic: float = field(default_factory=time.monotonic)
    # Set when the job starts writing its final state: no more cancels or timeouts apply.
    finishing: threading.Event = field(default_factory=threading.Event)
    # Set once the final state is written (slot freed, entry acked): no more renewals.
    finished: threading.Event = field(default_factory=threading.Event)
    work_dir: str = ""


@dataclass(frozen=True)
class ExecOptions:
    push: bool = True
    keep_workdir: bool = False


@dataclass
class _Result:
    fields: dict[str, str | int]
    message: str


class Executor:
    def __init__(self, settings: Settings, client: redis.Redis, leases: Leases, health: RedisHealth,
                 hard_stop: threading.Event, options: ExecOptions = ExecOptions()) -> None:
        self.settings = settings
        self.client = client
        self.leases = leases
        self.health = health
        self.hard_stop = hard_stop
        self.options = options

    def _redis(self, call: Callable[[], object], what: str) -> object:
        return retry_until(call, self.health, self.hard_stop, what)

    # ------------------------------------------------------------------------------------
    def execute(self, active: ActiveJob) -> Outcome:
        """Run the job; write its final state (guarded by the attempt); never raises."""
        job, out = active.job, active.output
        jlog = JobLog(log, {"job_id": job.id, "user_id": job.user_id, "runner_id": self.settings.runner_id,
                            "attempt": active.attempt.attempt_id})
        jlog.info("job started")
        paths: workdir.WorkPaths | None = None
        try:
            out.runner(f"job {job.id} started by runner {active.attempt.consumer} (attempt {active.attempt.attempt_id})")
            if active.previous_consumer:
                out.runner(f"taken over from runner {active.previous_consumer}: starting again in a fresh work directory")
            agent_user = self.settings.agent_user
            # Only an unsandboxed agent walks the real path to its clone: the sandbox binds it.
            unsandboxed = self.settings.agent_sandbox is SandboxMode.NONE
            paths = workdir.prepare(self.settings.temp_dir, job.id, active.attempt.attempt_id,
                                    agent_uid=agent_user.uid if agent_user and unsandboxed else None)
            active.work_dir = str(paths.root)
            result = self._steps(active, paths)
            outcome = self._finish(active, Status.SUCCESS, result.fields, result.message, jlog)
        except JobStopped:
            outcome = self._stopped(active, jlog)
        except RepoboxError as exc:
            outcome = self._finish(active, Status.FAILED, {"error_message": one_line(str(exc))}, f"job failed: {one_line(str(exc))}", jlog)
        except Exception as exc:  # noqa: BLE001 - boundary: one job's bug must not kill the worker
            reason = one_line(f"internal error: {type(exc).__name__}: {exc}")
            jlog.error("unexpected error in job: %s", reason)
            outcome = self._finish(active, Status.FAILED, {"error_message": reason}, f"job failed: {reason}", jlog)
        finally:
            if paths is not None and self.settings.cleanup_after_job and not self.options.keep_workdir:
                workdir.remove_attempt(paths)
        return outcome

    def _steps(self, active: ActiveJob, paths: workdir.WorkPaths) -> _Result:
        job, out, control = active.job, active.output, active.control
        repo = self._checked_repo(job)
        work_branch = validation.branch_name(job.work_branch)
        git = Git(self.settings, paths, control, out.git)
        with self._token(job, repo) as token:
            out.runner(f"looking up {repo.url}")
            refs = git.remote_refs(repo, token, [job.branch, work_branch])
            base_branch = self._base_branch(job, refs.heads, refs.default_branch, out)
            out.runner(f"cloning {repo.url} at {base_branch}")
            base_sha = git.clone(repo, token, base_branch)
        out.runner(f"cloned {base_branch} at {base_sha[:12]}")
        ids = sandbox.agent_ids(self.settings, active.attempt.attempt_id)
        # The sandboxed agent (or another user) cannot see git/: its clone never borrows from it.
        own_objects = ids is not None or self.settings.agent_sandbox is SandboxMode.BWRAP
        git.checkout_for_agent(repo, base_branch, work_branch, own_objects=own_objects)
        if ids is not None:
            workdir.give_to([paths.repo, paths.home, paths.tmp], ids.uid, ids.gid)
            os.chmod(paths.repo, workdir.PRIVATE_DIR_MODE)
        out.runner(f"created branch {work_branch}")
        self._agent_step(active, paths)
        self._ensure_current(active)
        if not workdir.is_real_dir(paths.repo):
            raise JobDataError("the agent replaced the repository directory: refusing to commit")
        git.reset_runner_config()
        commit = git.commit_worktree(base_sha, work_branch, validation.commit_subject(job.prompt))
        if commit is None:
            return _Result({"status": Status.SUCCESS, "lines_added": 0, "lines_removed": 0},
                           "no changes: nothing committed, nothing pushed")
        added, removed = git.line_counts(base_sha, commit)
        out.runner(f"committed {commit[:12]}: +{added} -{removed}")
        if not self.options.push:
            return _Result({}, f"--no-push: committed +{added} -{removed}, not pushed")
        expected = refs.heads.get(work_branch)
        if expected:
            out.runner(f"{work_branch} already exists at {expected[:12]} (an earlier attempt): replacing it")
        self._ensure_current(active)
        with self._token(job, repo) as token:
            out.runner(f"pushing {work_branch}")
            git.push(repo, token, commit, work_branch, expected)
        return _Result({"status": Status.SUCCESS, "branch": work_branch, "lines_added": added,
                        "lines_removed": removed}, f"pushed {work_branch}")

    def _agent_step(self, active: ActiveJob, paths: workdir.WorkPaths) -> None:
        out = active.output
        if not self.settings.agent_command:
            agent.write_placeholder(active.job, paths, out.agent)
            return
        if self.settings.agent_sandbox is SandboxMode.NONE:
            out.write(UNSANDBOXED_WARNING)
        out.runner("running the agent")
        agent.run_agent(self.settings, active.job, paths, active.control, out.agent,
                        sandbox.agent_ids(self.settings, active.attempt.attempt_id))
        out.runner("agent finished")

    # ------------------------------------------------------------------------------------
    def _checked_repo(self, job: Job) -> RepoUrl:
        repo = validation.repo_url(job.repo_url, allow_http=self.settings.allow_http)
        allowed = self.settings.allowed_git_hosts
        if allowed and repo.host not in allowed and repo.host_port not in allowed:
            raise JobDataError(f"git host {repo.host_port} is not in ALLOWED_GIT_HOSTS")
        return repo

    @staticmethod
    def _base_branch(job: Job, heads: dict[str, str], default: str | None, out: JobOutput) -> str:
        if job.branch in heads:
            return job.branch
        if default:
            validation.branch_name(default)
            out.runner(f"branch {job.branch} not found on the remote: using its default branch {default}")
            return default
        raise JobDataError(f"branch {job.branch} not found on the remote, and it has no default branch")

    @contextmanager
    def _token(self, job: Job, repo: RepoUrl) -> Iterator[str]:
        """The provider's token, decrypted for the length of the block and masked everywhere."""
        key = self.settings.require_key()
        record: dict[str, str] = self._redis(  # type: ignore[assignment]
            lambda: self.client.hgetall(keys.git_provider(job.user_id, job.provider_id)), "reading the provider")
        if not record:
            raise ProviderError(f"git provider {job.provider_id} of user {job.user_id} not found")
        if not validation.same_server(repo, record.get("url", "")):
            raise ProviderError(f"repository host {repo.host_port} is not the git provider's host "
                                f"({record.get('url') or 'none'}): the token is not sent there")
        if not record.get("token"):
            raise ProviderError(f"git provider {job.provider_id} has no token")
        try:
            token = decrypt(record["token"], key)
        except DecryptError as exc:
            raise ProviderError(f"cannot decrypt the provider's token: {exc}") from None
        if not token or any(ord(c) < 0x21 for c in token):
            raise ProviderError("the provider's token is empty or holds whitespace")
        with registered(token):
            try:
                yield token
            except RepoboxError:
                raise  # already one safe line
            except Exception as exc:  # noqa: BLE001 - masked here, while the token is still known
                raise RepoboxError(one_line(f"internal error: {type(exc).__name__}: {exc}")) from None
        del token

    def _ensure_current(self, active: ActiveJob) -> None:
        current = self._redis(lambda: self.leases.is_current(active.attempt), "checking the job's lease")
        if not current:
            active.control.cancel(StopReason.LEASE_LOST)
        active.control.check()

    # ------------------------------------------------------------------------------------
    def _finish(self, active: ActiveJob, status: Status, fields: dict[str, str | int], message: str,
                jlog: JobLog) -> Outcome:
        out = active.output
        out.runner(message)
        active.finishing.set()
        if status is Status.FAILED:
            fields = {"status": Status.FAILED, **fields}
        finished_at = now_ms()
        if not self.options.push:
            out.runner("--no-push: the job is left pending for a real run")
            finished_at, fields = 0, {}
        self._redis(out.drain, "writing the job output")
        result = self._redis(lambda: self.leases.finish(active.attempt, finished_at, fields), "finishing the job")
        active.finished.set()
        elapsed = time.monotonic() - active.started_monotonic
        if result == "lost":
            jlog.warning("job finished here but was taken over meanwhile: result discarded")
            self.leases.release_slot(active.attempt)
            return "lost"
        if result == "cancelled":
            jlog.info("job cancelled after %.1f s", elapsed)
            return Status.CANCELLED
        if result == "missing":
            jlog.warning("the job's hash was deleted while it ran: result discarded")
            return "missing"
        jlog.info("job %s in %.1f s: %s", status, elapsed, one_line(message))
        return str(status)

    def _stopped(self, active: ActiveJob, jlog: JobLog) -> Outcome:
        reason = active.control.reason
        if reason in (StopReason.TIMEOUT, StopReason.INTERRUPTED):
            msg = active.control.describe()
            return self._finish(active, Status.FAILED, {"error_message": msg}, f"job failed: {msg}", jlog)
        if reason is StopReason.CANCELLED:
            return self._finish(active, Status.CANCELLED, {"status": Status.CANCELLED}, "job cancelled: stopped, nothing pushed", jlog)
        # Lost to another runner, or this runner is stopping: write nothing the next attempt owns.
        active.finished.set()  # no renewal may undo the release and hand-back below
        active.output.runner(f"stopped on this runner: {active.control.describe()}")
        out_ok = active.output.flush()
        try:
            self.leases.release_slot(active.attempt)
            if reason is StopReason.SHUTDOWN and active.attempt.entry_id:
                self.leases.hand_back(active.attempt.consumer, [active.attempt.entry_id])
        except (redis.RedisError, OSError) as exc:
            jlog.warning("could not release the job on stop: %s", exc)
        jlog.warning("job stopped: %s%s", active.control.describe(), "" if out_ok else " (output not flushed)")
        return "lost" if reason is StopReason.LEASE_LOST else "handed back"
