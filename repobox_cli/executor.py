"""One job's steps, start to end (SPEC §2), for the worker and for `repobox exec` alike."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import redis

from repobox_cli import agent, claude_events, keys, metrics, mr, sandbox, validation, workdir
from repobox_cli.active import ActiveJob, RunOutcome
from repobox_cli.control import HANDED_BACK_ON, JobControl, StopReason
from repobox_cli.crypto import decrypt
from repobox_cli.errors import BranchMissing, DecryptError, JobDataError, JobStopped, ProviderError, RepoboxError
from repobox_cli.git_ops import Git
from repobox_cli.jobs import Job, Status, now_ms
from repobox_cli.leases import FinishOutcome, Leases
from repobox_cli.logs import JobLog
from repobox_cli.output import JobOutput
from repobox_cli.redaction import one_line, registered
from repobox_cli.redis_conn import RedisHealth, retry_until
from repobox_cli.settings import AgentKind, SandboxMode, Settings
from repobox_cli.validation import RepoUrl

log = logging.getLogger(__name__)

UNSANDBOXED_WARNING = (
    "Warning: AGENT_SANDBOX=none: the agent runs without a sandbox and can see "
    "this runner's processes and files (unsafe)"
)


def run_agent_step(
    settings: Settings, job: Job, paths: workdir.WorkPaths, control: JobControl, out: JobOutput, attempt_id: str
) -> None:
    """The configured agent in `paths.repo`, its lines into `out` (Claude's events as chat lines);
    the values of AGENT_ENV's secret-looking variables are masked in everything it prints."""
    emit: agent.Emit = out.agent
    if settings.agent_kind is AgentKind.CLAUDE:
        emit = claude_events.emitter(lambda line: out.write(line.text, line.stream, line.source))
    with ExitStack() as stack:
        for value in agent_secrets(settings):
            stack.enter_context(registered(value))
        agent.run_agent(settings, job, paths, control, emit, sandbox.agent_ids(settings, attempt_id))


def agent_secrets(settings: Settings) -> list[str]:
    """AGENT_ENV values whose names say they are secret (…KEY, …TOKEN, …SECRET, …PASSWORD)."""
    return [
        value
        for name, value in settings.agent_env.items()
        if any(word in name.upper() for word in SECRET_NAME_WORDS) and value
    ]


SECRET_NAME_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


@dataclass(frozen=True)
class ExecOptions:
    push: bool = True
    keep_workdir: bool = False


@dataclass
class _Result:
    fields: dict[str, str | int]
    message: str


class Executor:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        leases: Leases,
        health: RedisHealth,
        hard_stop: threading.Event,
        options: ExecOptions = ExecOptions(),
    ) -> None:
        self.settings = settings
        self.client = client
        self.leases = leases
        self.health = health
        self.hard_stop = hard_stop
        self.options = options

    def _redis(self, call: Callable[[], object], what: str) -> object:
        return retry_until(call, self.health, self.hard_stop, what)

    # ------------------------------------------------------------------------------------
    def execute(self, active: ActiveJob) -> RunOutcome:
        """Run the job; write its final state (guarded by the attempt); never raises."""
        job, out = active.job, active.output
        jlog = JobLog(
            log,
            {
                "job_id": job.id,
                "user_id": job.user_id,
                "runner_id": self.settings.runner_id,
                "attempt": active.attempt.attempt_id,
            },
        )
        jlog.info("job started")
        paths: workdir.WorkPaths | None = None
        try:
            out.runner(
                f"Starting job {job.id} on runner {active.attempt.consumer} (attempt {active.attempt.attempt_id})"
            )
            if active.previous_consumer:
                out.runner(
                    f"Restarting the job in a fresh work directory: taken over from runner {active.previous_consumer}"
                )
            agent_user = self.settings.agent_user
            # Only an unsandboxed agent walks the real path to its clone: the sandbox binds it.
            unsandboxed = self.settings.agent_sandbox is SandboxMode.NONE
            paths = workdir.prepare(
                self.settings.temp_dir,
                job.id,
                active.attempt.attempt_id,
                agent_uid=agent_user.uid if agent_user and unsandboxed else None,
            )
            active.work_dir = str(paths.root)
            result = self._steps(active, paths)
            outcome = self._finish(active, Status.SUCCESS, result.fields, result.message, jlog)
        except JobStopped:
            outcome = self._stopped(active, jlog)
        except RepoboxError as exc:
            reason = one_line(str(exc))
            outcome = self._finish(active, Status.FAILED, {"error_message": reason}, reason, jlog)
        except Exception as exc:  # noqa: BLE001 - boundary: one job's bug must not kill the worker
            reason = one_line(f"internal error: {type(exc).__name__}: {exc}")
            jlog.error("unexpected error in job: %s", reason)
            outcome = self._finish(active, Status.FAILED, {"error_message": reason}, reason, jlog)
        finally:
            if paths is not None and self.settings.cleanup_after_job and not self.options.keep_workdir:
                workdir.remove_attempt(paths)
        return outcome

    def _steps(self, active: ActiveJob, paths: workdir.WorkPaths) -> _Result:
        job, out, control = active.job, active.output, active.control
        repo = self.checked_repo(job)
        work_branch = validation.branch_name(job.work_branch)
        git = Git(self.settings, paths, control, out.git)
        with self.provider_token(job, repo) as token:
            out.runner(f"Cloning {repo.url} at {job.branch}...")
            try:
                fetched = git.clone_branch(repo, token, job.branch, work_branch)
            except BranchMissing:
                default = git.remote_refs(repo, token, []).default_branch
                fetched = git.clone_branch(repo, token, self._base_branch(job, {}, default, out), work_branch)
        base_branch, base_sha = fetched.branch, fetched.base_sha
        out.runner(f"Clone completed: {base_branch} at {base_sha[:12]}")
        git.checkout_for_agent(repo, base_branch, work_branch, own_objects=self.agent_owns_objects(active))
        out.runner(f"Creating branch {work_branch}")
        out.runner(f"Running prompt: {validation.prompt_headline(active.job.prompt)}")
        self.agent_step(active, paths)
        self._ensure_current(active)
        if not workdir.is_real_dir(paths.repo):
            raise JobDataError("the agent replaced the repository directory: refusing to commit")
        git.reset_runner_config()
        out.runner("Committing changes")
        committed = git.commit_worktree(base_sha, validation.commit_subject(job.prompt))
        if committed is None:
            return _Result(
                {"status": Status.SUCCESS, "lines_added": 0, "lines_removed": 0},
                "Job completed successfully: no changes, nothing committed or pushed",
            )
        commit, added, removed = committed.commit, committed.added, committed.removed
        out.runner(f"Committed {commit[:12]}: +{added} -{removed}")
        if not self.options.push:
            return _Result({}, f"Skipping the push (--no-push): committed +{added} -{removed}")
        expected = fetched.work_sha
        if expected:
            out.runner(f"Replacing branch {work_branch} left by an earlier attempt (at {expected[:12]})")
        self._ensure_current(active)
        with self.provider_token(job, repo) as token:
            out.runner(f"Pushing {work_branch} to {repo.url}...")
            git.push(repo, token, commit, work_branch, expected)
        out.runner(f"Push completed: {work_branch}")
        fields: dict[str, str | int] = {
            "status": Status.SUCCESS,
            "branch": work_branch,
            "lines_added": added,
            "lines_removed": removed,
        }
        if self.settings.create_mr:
            fields.update(self._merge_request(job, repo, base_branch, work_branch, added, removed, out))
        return _Result(fields, f"Job completed successfully: pushed {work_branch}")

    def _merge_request(
        self, job: Job, repo: RepoUrl, base_branch: str, work_branch: str, added: int, removed: int, out: JobOutput
    ) -> dict[str, str | int]:
        """CREATE_MR: open the job's merge request; `mr_url` or `mr_warning` (never fails the job)."""
        out.runner("Creating merge request...")
        body = f"{job.prompt}\n\n---\nLines added: {added}, removed: {removed}. Job `{job.id}` by repobox."
        request = mr.MergeRequest(validation.commit_subject(job.prompt), body, work_branch, base_branch)
        with self.provider_token(job, repo) as token:
            record: dict[str, str] = self._redis(  # type: ignore[assignment]
                lambda: self.client.hgetall(keys.git_provider(job.user_id, job.provider_id)), "reading the provider"
            )
            result = mr.open_merge_request(
                record.get("type", ""), record.get("url", ""), repo.url, token, request, self.settings.git_env
            )
        if result.url:
            out.runner(f"Merge request created: {result.url}")
            return {"mr_url": result.url, "mr_warning": ""}
        out.write(f"Warning: {result.warning}", "stderr", "runner")
        return {"mr_url": "", "mr_warning": result.warning}

    def agent_owns_objects(self, active: ActiveJob) -> bool:
        """The sandboxed agent (or another user) cannot see git/: its clone must not borrow from it."""
        ids = sandbox.agent_ids(self.settings, active.attempt.attempt_id)
        return ids is not None or self.settings.agent_sandbox is SandboxMode.BWRAP

    @metrics.timed_step("agent")
    def agent_step(self, active: ActiveJob, paths: workdir.WorkPaths) -> None:
        """The agent in `paths.repo` (a job's clone or a session's working copy), which is first
        handed to the agent's uid when that is not the runner's."""
        out = active.output
        ids = sandbox.agent_ids(self.settings, active.attempt.attempt_id)
        if ids is not None:
            workdir.give_to([paths.repo, paths.home, paths.tmp], ids.uid, ids.gid)
            os.chmod(paths.repo, workdir.PRIVATE_DIR_MODE)
        if not self.settings.agent_command:
            out.runner("Starting the placeholder agent (no AGENT_COMMAND set)")
            agent.write_placeholder(active.job, paths, out.agent)
            return
        if self.settings.agent_sandbox is SandboxMode.NONE:
            out.runner(UNSANDBOXED_WARNING)
        out.runner("Starting agent")
        run_agent_step(self.settings, active.job, paths, active.control, out, active.attempt.attempt_id)
        out.runner("Agent completed")

    # ------------------------------------------------------------------------------------
    def checked_repo(self, job: Job) -> RepoUrl:
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
            out.runner(f"Using the default branch {default}: branch {job.branch} was not found on the remote")
            return default
        raise JobDataError(f"branch {job.branch} not found on the remote, and it has no default branch")

    @contextmanager
    def provider_token(self, job: Job, repo: RepoUrl) -> Iterator[str]:
        """The provider's token, decrypted for the length of the block and masked everywhere."""
        key = self.settings.require_key()
        provider_key = keys.git_provider(job.user_id, job.provider_id)
        try:
            record: dict[str, str] = self._redis(  # type: ignore[assignment]
                lambda: self.client.hgetall(provider_key), "reading the provider"
            )
        except redis.ResponseError as exc:  # WRONGTYPE: not a hash
            raise ProviderError(f"git provider record {provider_key} is unusable: {one_line(str(exc), 120)}") from None
        if not record:
            raise ProviderError(f"git provider {job.provider_id} of user {job.user_id} not found")
        if not validation.same_server(repo, record.get("url", "")):
            raise ProviderError(
                f"repository host {repo.host_port} is not the git provider's host "
                f"({record.get('url') or 'none'}): the token is not sent there"
            )
        if not record.get("token"):
            raise ProviderError(f"git provider {job.provider_id} has no token")
        max_token_bytes = 4 * 1024  # real tokens are a few hundred bytes; git sends it in a header
        too_large = f"the provider's token is larger than {max_token_bytes // 1024} KiB: refused"
        if len(record["token"]) > 2 * max_token_bytes:  # its stored form (base64) is 4/3 as long
            raise ProviderError(too_large)
        try:
            token = decrypt(record["token"], key)
        except DecryptError as exc:
            raise ProviderError(f"cannot decrypt the provider's token: {exc}") from None
        if len(token.encode()) > max_token_bytes:
            raise ProviderError(too_large)
        if not token or any(not 0x21 <= ord(c) <= 0x7E for c in token):
            raise ProviderError("the provider's token is empty or holds whitespace, control or non-ASCII characters")
        with registered(token):
            try:
                yield token
            except RepoboxError:
                raise  # already one safe line
            except Exception as exc:  # noqa: BLE001 - masked here, while the token is still known
                raise RepoboxError(one_line(f"internal error: {type(exc).__name__}: {exc}")) from None
        del token

    def _ensure_current(self, active: ActiveJob) -> None:
        """Stop unless this attempt is still the job's current one, confirmed by the replicas."""
        lease_ms = int(self.settings.claim_min_idle_s * 1000)
        current = self._redis(lambda: self.leases.confirm_current(active.attempt, lease_ms), "checking the job's lease")
        if not current:
            active.control.cancel(StopReason.LEASE_LOST)
        active.control.check()

    # ------------------------------------------------------------------------------------
    def _finish(
        self, active: ActiveJob, status: Status, fields: dict[str, str | int], message: str, jlog: JobLog
    ) -> RunOutcome:
        out = active.output
        if status is Status.FAILED:
            out.error(message)
            fields = {"status": Status.FAILED, **fields}
        else:
            out.runner(message)
        active.finishing.set()
        if not self.options.push:
            out.runner("Leaving the job pending for a real run (--no-push)")
        self._redis(out.drain, "writing the job output")
        if self.options.push:
            result = self._redis(lambda: self.leases.finish(active.attempt, now_ms(), fields), "finishing the job")
        else:
            result = self._redis(lambda: self.leases.return_to_pending(active.attempt), "returning the job")
        active.finished.set()
        elapsed = time.monotonic() - active.started_monotonic
        if result is FinishOutcome.LOST:
            jlog.warning("job finished here but was taken over meanwhile: result discarded")
            self.leases.abandon(active.attempt, hand_back=False)
            return RunOutcome.LOST
        if result is FinishOutcome.CANCELLED:
            jlog.info("job cancelled after %.1f s", elapsed)
            return RunOutcome.CANCELLED
        if result is FinishOutcome.MISSING:
            jlog.warning("the job's hash was deleted while it ran: result discarded")
            return RunOutcome.MISSING
        level = logging.WARNING if status is Status.FAILED else logging.INFO
        jlog.log(level, "job %s in %.1f s: %s", status, elapsed, one_line(message))
        if result is FinishOutcome.PENDING and status is Status.SUCCESS:
            return RunOutcome.PENDING  # --no-push: every step succeeded, the job is given back
        return RunOutcome(status.value)

    def _interrupted(self, active: ActiveJob, jlog: JobLog) -> RunOutcome:
        """Ctrl-C during `exec`: the operator's run ends, the user's job does not — it goes back to
        `pending`, nothing pushed, for a real run."""
        active.finishing.set()
        active.output.runner("Stopping here: interrupted by the operator; the job goes back to pending")
        self._redis(active.output.drain, "writing the job output")
        result = self._redis(lambda: self.leases.return_to_pending(active.attempt), "returning the job")
        active.finished.set()
        jlog.warning("job interrupted by the operator: %s", result)
        if result is FinishOutcome.PENDING:
            return RunOutcome.INTERRUPTED
        return RunOutcome.CANCELLED if result is FinishOutcome.CANCELLED else RunOutcome.LOST

    def _stopped(self, active: ActiveJob, jlog: JobLog) -> RunOutcome:
        reason = active.control.reason
        if reason is StopReason.INTERRUPTED:
            return self._interrupted(active, jlog)
        if reason is StopReason.TIMEOUT:
            msg = active.control.describe()
            return self._finish(active, Status.FAILED, {"error_message": msg}, msg, jlog)
        if reason is StopReason.CANCELLED:
            return self._finish(
                active, Status.CANCELLED, {"status": Status.CANCELLED}, "Job cancelled: stopped, nothing pushed", jlog
            )
        # Lost to another runner, or this runner is stopping: write nothing the next attempt owns.
        active.finished.set()  # no renewal may undo the abandon below
        active.output.runner(f"Stopping here: {active.control.describe()}")
        out_ok = active.output.flush()
        try:
            self.leases.abandon(active.attempt, hand_back=reason in HANDED_BACK_ON)
        except (redis.RedisError, OSError) as exc:
            jlog.warning("could not release the job on stop: %s", exc)
        jlog.warning("job stopped: %s%s", active.control.describe(), "" if out_ok else " (output not flushed)")
        return RunOutcome.LOST if reason is StopReason.LEASE_LOST else RunOutcome.HANDED_BACK
