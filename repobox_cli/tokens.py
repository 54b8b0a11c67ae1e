"""Operator tooling for provider tokens: store one as the web app does (`token set`) and try one
against a repository (`token check`). The plaintext token is held only for the call; it reaches
git only as a URL-scoped header in git's environment (`git_ops`), never an argument or a file."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from repobox_cli import keys, validation, workdir
from repobox_cli.control import JobControl
from repobox_cli.crypto import EncryptionKey, decrypt, encrypt_token, mask_token, token_kind
from repobox_cli.errors import BadInput, DecryptError, GitError, JobDataError, JobStopped
from repobox_cli.git_ops import Git, RemoteRefs
from repobox_cli.redaction import registered
from repobox_cli.settings import Settings

if TYPE_CHECKING:
    import redis

MAX_TOKEN_BYTES = 4 * 1024  # as the runner accepts (executor): git sends it in a header
CHECK_TIMEOUT_S = 60.0


class ProviderType(StrEnum):
    """`type` of a `git_provider:{user}:{provider}` hash, as the web app writes it."""

    GITHUB = "github"
    GITLAB = "gitlab"


@dataclass(frozen=True)
class StoredProvider:
    """What `store` wrote: the hash's key and whether it was new."""

    key: str
    created: bool


@dataclass(frozen=True)
class CheckResult:
    """A token that decrypted (and, with a repository, was accepted there)."""

    masked: str
    kind: str
    repo_url: str = ""
    default_branch: str | None = None


def checked_token(token: str) -> str:
    """The token as the runner will accept it: non-empty, printable ASCII without whitespace (as
    every forge's tokens are; an HTTP header carries it), at most 4 KiB (BadInput otherwise; the
    message never holds the token)."""
    if not token:
        raise BadInput("the token is empty")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in token):
        raise BadInput("the token holds whitespace or control characters")
    if not token.isascii():
        raise BadInput("the token holds characters that are not ASCII")
    if len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
        raise BadInput(f"the token is larger than {MAX_TOKEN_BYTES // 1024} KiB")
    return token


def provider_url(value: str) -> str:
    """The provider's base URL (`https://github.com`, `https://gitlab.example.com`): https (or
    http), a host, no credentials, query or fragment; without a trailing slash."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise BadInput(f"--url is not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadInput("--url must be an https:// URL with a host, e.g. https://github.com")
    if parts.username is not None or "@" in parts.netloc or parts.query or parts.fragment:
        raise BadInput("--url must not carry credentials, a query or a fragment")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise BadInput("--url contains whitespace or control characters")
    return value.rstrip("/")


def _provider_key(user: str, provider: str) -> str:
    try:
        return keys.git_provider(validation.key_part(user, "--user"), validation.key_part(provider, "--provider"))
    except JobDataError as exc:
        raise BadInput(str(exc)) from None


def store(
    client: redis.Redis,
    key: EncryptionKey,
    user: str,
    provider: str,
    kind: ProviderType,
    url: str,
    token: str,
) -> StoredProvider:
    """Write `git_provider:{user}:{provider}` as the web app does: `type`, `url`, the encrypted
    `token`; a new hash also gets `username` (empty), `verified` (false), `repos_count` (0) and
    `created_at` (ms), an existing one keeps those."""
    name = _provider_key(user, provider)
    url = provider_url(url)
    fields = {"type": str(kind), "url": url, "token": encrypt_token(checked_token(token), key.key_bytes)}
    new_fields = {"username": "", "verified": "false", "repos_count": "0", "created_at": str(int(time.time() * 1000))}
    pipe = client.pipeline(transaction=True)
    pipe.exists(name)
    pipe.hset(name, mapping=fields)
    for field, value in new_fields.items():
        pipe.hsetnx(name, field, value)
    existed = pipe.execute()[0]
    return StoredProvider(key=name, created=not existed)


def check(
    client: redis.Redis, settings: Settings, key: EncryptionKey, user: str, provider: str, repo: str | None
) -> CheckResult:
    """Decrypt the stored token and, with `repo`, list the repository's heads with it (git
    ls-remote). BadInput: bad arguments or no such record; DecryptError/GitError: the check failed."""
    name = _provider_key(user, provider)
    record: dict[str, str] = client.hgetall(name)
    if not record:
        raise BadInput(f"no git provider stored at {name}")
    if not record.get("token"):
        raise BadInput(f"{name} has no token")
    repo_url = None
    if repo is not None:
        try:
            repo_url = validation.repo_url(repo, allow_http=settings.allow_http)
        except JobDataError as exc:
            raise BadInput(str(exc).replace("repo_url", "--repo")) from None
        if not validation.same_server(repo_url, record.get("url", "")):
            raise BadInput(
                f"--repo's host {repo_url.host_port} is not the provider's ({record.get('url') or 'none'}): "
                "the token is not sent there"
            )
    try:
        token = decrypt(record["token"], key)
    except DecryptError as exc:
        raise DecryptError(f"cannot decrypt the token at {name}: {exc}") from None
    with registered(token):
        result = CheckResult(masked=mask_token(token), kind=token_kind(token))
        if repo_url is None:
            return result
        refs = _ls_remote(settings, repo_url, token)
    return CheckResult(result.masked, result.kind, repo_url.url, refs.default_branch)


def _ls_remote(settings: Settings, repo: validation.RepoUrl, token: str) -> RemoteRefs:
    """`git ls-remote` in a private scratch directory (git's HOME), through the runner's hardened git."""
    with tempfile.TemporaryDirectory(prefix="repobox-token-check-") as scratch:
        paths = workdir.WorkPaths(Path(scratch) / "check")
        paths.root.mkdir(mode=workdir.PRIVATE_DIR_MODE)
        paths.git_home.mkdir(mode=workdir.PRIVATE_DIR_MODE)
        git = Git(settings, paths, JobControl(CHECK_TIMEOUT_S), lambda _line, _stream: None)
        try:
            return git.remote_refs(repo, token, [])
        except JobStopped as exc:  # the check's own deadline
            raise GitError(f"git ls-remote did not finish: {exc}") from None
