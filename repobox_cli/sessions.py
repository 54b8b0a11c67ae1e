"""The work-session model (SESSIONS.md): the session hash and the three streams' messages,
decoded and checked (failing loudly), statuses, and the merge request's title and description."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

from repobox_cli import validation
from repobox_cli.errors import JobDataError
from repobox_cli.jobs import DEFAULT_BRANCH, Job, checked_hash_id

SESSION_OUTPUT_TTL_S = 7 * 24 * 3600  # refreshed on every write
WORK_BRANCH_PREFIX = "repobox/"
SESSION_ID_PREFIX_CHARS = 8
MR_PROMPT_CHARS = 100
GIT_SUFFIX = ".git"


class SessionStatus(StrEnum):
    INITIALIZING = "initializing"
    READY = "ready"
    RUNNING = "running"
    PUSHED = "pushed"
    FAILED = "failed"
    ARCHIVED = "archived"


class Step(StrEnum):
    INIT = "init"
    PROMPT = "prompt"
    PUSH = "push"


@dataclass(frozen=True)
class SessionJob(Job):
    """One session step's subject: a Job (what the engine and the agent need) and its session.
    `branch` is the session's base branch."""

    session_id: str = ""
    step: Step = Step.PROMPT
    title: str = ""  # push only
    description: str = ""  # push only

    @property
    def work_branch(self) -> str:
        return work_branch(self.session_id)


# The web app's live stream ends on these; a runner never acts on such a session again.
ENDED_STATUSES = frozenset({SessionStatus.PUSHED, SessionStatus.FAILED, SessionStatus.ARCHIVED})


def work_branch(session_id: str) -> str:
    """`repobox/` + the first 8 characters of the session id."""
    return WORK_BRANCH_PREFIX + session_id[:SESSION_ID_PREFIX_CHARS]


CHECKPOINT_REF_PREFIX = "refs/repobox/sessions/"


def checkpoint_ref(session_id: str) -> str:
    """Where a session's last commit is kept on the user's remote between prompts: outside
    branches and tags, so nothing on the remote (CI, push webhooks) reacts to it."""
    return CHECKPOINT_REF_PREFIX + session_id


def git_url(web_url: str) -> str:
    """The repository's git URL from its web URL (as the provider's API gives it): trailing `/`
    removed and `.git` appended when absent. Host rules are checked by `validation.repo_url`."""
    parts = urlsplit(web_url.strip())
    path = parts.path.rstrip("/")
    if path and not path.endswith(GIT_SUFFIX):
        path += GIT_SUFFIX
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _require(fields: Mapping[str, str], names: Sequence[str], what: str) -> None:
    missing = [name for name in names if not fields.get(name)]
    if missing:
        raise JobDataError(f"{what} lacks {', '.join(missing)}")


@dataclass(frozen=True)
class Session:
    """A session as stored in `work_session:{sid}`, every field that reaches a path, ref or key checked."""

    id: str
    user_id: str
    provider_id: str
    repo_url: str  # the git URL (normalised from the web URL)
    repo_name: str
    base_branch: str
    status: str

    @property
    def work_branch(self) -> str:
        return work_branch(self.id)

    @classmethod
    def decode(cls, session_id: str, data: Mapping[str, str]) -> Session:
        """Raise JobDataError naming the first unusable field."""
        checked_hash_id("session", session_id, data)
        return cls(
            id=session_id,
            user_id=validation.key_part(data.get("user_id", ""), "user_id"),
            provider_id=validation.key_part(data.get("provider_id", ""), "provider_id"),
            repo_url=git_url(data.get("repo_url", "")),
            repo_name=data.get("repo_name", ""),
            base_branch=validation.branch_name(data.get("base_branch") or DEFAULT_BRANCH),
            status=data.get("status", SessionStatus.INITIALIZING),
        )


@dataclass(frozen=True)
class InitMessage:
    entry_id: str
    session_id: str
    user_id: str

    @classmethod
    def decode(cls, entry_id: str, fields: Mapping[str, str]) -> InitMessage:
        _require(fields, ("session_id", "user_id", "provider_id", "repo_url"), f"init entry {entry_id}")
        return cls(
            entry_id,
            validation.safe_name(fields["session_id"], "session_id"),
            validation.key_part(fields["user_id"], "user_id"),
        )


@dataclass(frozen=True)
class PromptMessage:
    entry_id: str
    session_id: str
    job_id: str
    user_id: str
    prompt: str
    environment: str  # only the first prompt carries one

    @classmethod
    def decode(cls, entry_id: str, fields: Mapping[str, str]) -> PromptMessage:
        _require(fields, ("session_id", "job_id", "user_id"), f"prompt entry {entry_id}")
        return cls(
            entry_id,
            validation.safe_name(fields["session_id"], "session_id"),
            validation.safe_name(fields["job_id"], "job_id"),
            validation.key_part(fields["user_id"], "user_id"),
            validation.prompt_text(fields.get("prompt", "")),
            validation.environment_name(fields.get("environment", "")),
        )


@dataclass(frozen=True)
class PushMessage:
    entry_id: str
    session_id: str
    user_id: str
    title: str  # '' when the web app sent none
    description: str

    @classmethod
    def decode(cls, entry_id: str, fields: Mapping[str, str]) -> PushMessage:
        _require(fields, ("session_id", "user_id"), f"push entry {entry_id}")
        return cls(
            entry_id,
            validation.safe_name(fields["session_id"], "session_id"),
            validation.key_part(fields["user_id"], "user_id"),
            fields.get("title", ""),
            fields.get("description", ""),
        )


def mr_title(push: PushMessage) -> str:
    """The push message's title, else `repobox: Work session <sid8>`."""
    return push.title.strip() or f"repobox: Work session {push.session_id[:SESSION_ID_PREFIX_CHARS]}"


def mr_description(push: PushMessage, prompts: Sequence[str], added: int, removed: int) -> str:
    """The push message's description, else a short Markdown summary of the session."""
    if push.description.strip():
        return push.description
    lines = ["## Repobox work session", "", "### Prompts", ""]
    lines += [f"{n}. {validation.prompt_headline(p, MR_PROMPT_CHARS)}" for n, p in enumerate(prompts, 1)]
    lines += [
        "",
        "### Changes",
        "",
        f"- Lines added: {added}",
        f"- Lines removed: {removed}",
        f"- Net: {added - removed:+d}",
        "",
        f"Session `{push.session_id}`",
    ]
    return "\n".join(lines)
