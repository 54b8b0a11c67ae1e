"""Checks for everything from Redis that reaches a path, a ref, a key or a command.

Pure functions: each returns the value it accepts or raises JobDataError with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from repobox_cli.errors import JobDataError

MAX_NAME_CHARS = 128
MAX_KEY_PART_CHARS = 256  # user and provider ids: `google:109876543210987654321` is 28
MAX_URL_CHARS = 2048
MAX_REF_CHARS = 255
MAX_PROMPT_BYTES = 64 * 1024  # one environment string may hold at most 128 KiB on Linux

_SAFE_NAME_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_HOST_RE = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_REF_FORBIDDEN = set(" ~^:?*[\\\x7f")
_URL_PATH_RE = re.compile(r"\A/[A-Za-z0-9._~!$&'()*+,;=:@%/-]+\Z")


def safe_name(value: str, what: str) -> str:
    """An id fit for a file name and a key part: letters, digits, `_ . -`; no `..`, no leading `-`."""
    if not value:
        raise JobDataError(f"{what} is empty")
    if len(value) > MAX_NAME_CHARS:
        raise JobDataError(f"{what} is too long ({len(value)} characters, limit {MAX_NAME_CHARS})")
    if not _SAFE_NAME_RE.match(value) or ".." in value:
        raise JobDataError(f"{what} {value[:40]!r} is not a safe name (letters, digits, '_', '.', '-')")
    return value


def key_part(value: str, what: str) -> str:
    """An id that is only ever part of a Redis key and a log label, never a path (user and
    provider ids: `github:12345678`, uuids): non-empty, at most 256 characters, valid UTF-8, no
    whitespace or control characters. `:` and any other printable character are accepted."""
    if not value:
        raise JobDataError(f"{what} is empty")
    if len(value) > MAX_KEY_PART_CHARS:
        raise JobDataError(f"{what} is too long ({len(value)} characters, limit {MAX_KEY_PART_CHARS})")
    # Redis bytes that are not UTF-8 arrive as U+FFFD (the client decodes with errors="replace").
    if "\ufffd" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise JobDataError(f"{what} is not valid UTF-8")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise JobDataError(f"{what} {value[:40]!r} contains whitespace or control characters")
    return value


def branch_name(value: str) -> str:
    """A branch name valid under `git check-ref-format --branch` rules."""
    reason = _ref_problem(value)
    if reason:
        raise JobDataError(f"branch {value[:60]!r} is not a valid branch name: {reason}")
    return value


def _ref_problem(value: str) -> str | None:  # noqa: C901 - one check per git rule reads best flat
    if not value:
        return "empty"
    if value == "HEAD":
        return "is 'HEAD'"
    if len(value) > MAX_REF_CHARS:
        return "too long"
    if value.startswith("-"):
        return "starts with '-'"
    if value == "@" or "@{" in value:
        return "contains '@{' or is '@'"
    if any(ord(c) < 0x20 or c in _REF_FORBIDDEN for c in value):
        return "contains a space, control character or one of ~^:?*[\\"
    if ".." in value or "//" in value:
        return "contains '..' or '//'"
    if value.startswith("/") or value.endswith("/") or value.endswith("."):
        return "starts or ends with '/' or ends with '.'"
    for component in value.split("/"):
        if component.startswith(".") or component.endswith(".lock"):
            return "a component starts with '.' or ends with '.lock'"
    return None


@dataclass(frozen=True)
class RepoUrl:
    """A checked remote URL: scheme, host, port (None when default) and the URL itself."""

    url: str
    scheme: str
    host: str
    port: int | None

    @property
    def origin(self) -> str:
        """`scheme://host[:port]`, the part credentials are scoped to."""
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{self.host}{port}"

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}" if self.port is not None else self.host


def repo_url(value: str, *, allow_http: bool = False) -> RepoUrl:
    """An `https://host[:port]/path` URL (http only by opt-in) with nothing git could misread."""
    if not value:
        raise JobDataError("repo_url is empty")
    if len(value) > MAX_URL_CHARS:
        raise JobDataError("repo_url is too long")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise JobDataError("repo_url contains whitespace or control characters")
    if value.startswith("-"):
        raise JobDataError("repo_url starts with '-'")
    allowed = ("https", "http") if allow_http else ("https",)
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in allowed:
        shown = scheme or "none (scp-like or local path)"
        raise JobDataError(f"repo_url scheme {shown!r} is not allowed (only {' or '.join(allowed)})")
    return _parse_http_url(value, scheme)


def _parse_http_url(value: str, scheme: str) -> RepoUrl:
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise JobDataError(f"repo_url is not a valid URL: {exc}") from exc
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise JobDataError("repo_url must not carry credentials")
    host = (parts.hostname or "").lower()
    if not host or not _HOST_RE.match(host):
        raise JobDataError("repo_url has no valid host")
    if parts.query or parts.fragment or "?" in value or "#" in value:  # an empty one too: `https://h/x?`
        raise JobDataError("repo_url must not have a query or fragment")
    if not _URL_PATH_RE.match(parts.path) or "/../" in parts.path + "/":
        raise JobDataError("repo_url has no valid repository path")
    return RepoUrl(url=value, scheme=scheme, host=host, port=port)


def same_server(repo: RepoUrl, provider_url: str) -> bool:
    """True when the provider record's URL names the same scheme-independent host and port."""
    try:
        parts = urlsplit(provider_url if "://" in provider_url else f"https://{provider_url}")
        port = parts.port
    except ValueError:
        return False
    default = {"https": 443, "http": 80}
    repo_port = repo.port or default.get(repo.scheme)
    provider_port = port or default.get(parts.scheme.lower())
    return (parts.hostname or "").lower() == repo.host and provider_port == repo_port


def prompt_text(value: str) -> str:
    """A prompt that can travel in an environment variable: no NUL, at most 64 KiB."""
    if "\x00" in value:
        raise JobDataError("prompt contains a NUL character")
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size > MAX_PROMPT_BYTES:
        raise JobDataError(f"prompt is too large ({size} bytes, limit {MAX_PROMPT_BYTES})")
    return value


def commit_subject(prompt: str, limit: int = 50) -> str:
    """`repobox: <prompt cut to `limit` characters>` on one line, control characters as spaces."""
    flat = "".join(" " if (ord(c) < 0x20 or ord(c) == 0x7F) else c for c in prompt)
    flat = " ".join(flat.split())
    return f"repobox: {flat[:limit]}".rstrip()


def prompt_headline(prompt: str, limit: int = 100) -> str:
    """The prompt's first non-empty line, cut to `limit` characters: what `Running prompt:` shows."""
    first = next((line.strip() for line in prompt.splitlines() if line.strip()), "")
    flat = "".join(" " if (ord(c) < 0x20 or ord(c) == 0x7F) else c for c in first)
    return flat[:limit]


MAX_ENVIRONMENT_CHARS = 64


def environment_name(value: str) -> str:
    """The job's `environment` (`default`, `nodejs-full`, `php`, …), passed to the agent as
    REPOBOX_ENVIRONMENT: empty, or at most 64 printable characters without whitespace."""
    if len(value) > MAX_ENVIRONMENT_CHARS:
        raise JobDataError(f"environment is too long ({len(value)} characters, limit {MAX_ENVIRONMENT_CHARS})")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise JobDataError(f"environment {value[:40]!r} contains whitespace or control characters")
    return value
