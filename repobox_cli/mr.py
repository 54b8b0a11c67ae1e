"""Opening a pull request (GitHub, GitHub Enterprise) or merge request (GitLab) for a pushed branch.

- GitHub: `POST {api}/repos/{owner}/{repo}/pulls`, `Authorization: Bearer <token>`; `{api}` is
  `https://api.github.com` for github.com (or no url), else `<url>/api/v3`. An existing pull
  request for the branch (422 "A pull request already exists") is looked up and reported.
- GitLab: `POST {url}/api/v4/projects/{url-encoded path}/merge_requests`, `PRIVATE-TOKEN`; an
  existing one (409) is looked up and reported.

The token goes only to the API base derived from the provider's record (redirects are never
followed), with git's CA and proxy settings, and short timeouts. Every failure is one masked
`Failed to create merge request: <reason>` warning, never an exception.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from repobox_cli.git_ops import proxy_from_env
from repobox_cli.redaction import one_line, redact, registered
from repobox_cli.tokens import ProviderType  # the provider hash's `type`, declared once

if TYPE_CHECKING:  # httpx (≈ 15 MiB with its dependencies) is imported when a request is opened
    import httpx

GITHUB_API = "https://api.github.com"
GITHUB_WEB_HOSTS = frozenset({"", "https://github.com", "https://www.github.com"})
GITLAB_DEFAULT_URL = "https://gitlab.com"
GITHUB_API_VERSION = "2022-11-28"
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 15.0
WARNING_PREFIX = "Failed to create merge request: "
MAX_REASON_CHARS = 300
HTTP_CREATED = 201
HTTP_UNPROCESSABLE = 422
HTTP_CONFLICT = 409


@dataclass(frozen=True)
class MergeRequest:
    """What to open: `head` (the work branch) into `base`."""

    title: str
    body: str
    head: str
    base: str


@dataclass(frozen=True)
class MrResult:
    """The request's URL, or a warning (one line, token masked); exactly one is set."""

    url: str = ""
    warning: str = ""


class MrFailed(Exception):
    """Raised inside this module when the API call fails; becomes the warning."""


def github_api_base(provider_url: str) -> str:
    url = provider_url.strip().rstrip("/")
    return GITHUB_API if url.lower() in GITHUB_WEB_HOSTS else f"{url}/api/v3"


def gitlab_api_base(provider_url: str) -> str:
    return f"{(provider_url.strip().rstrip('/') or GITLAB_DEFAULT_URL)}/api/v4"


def project_path(repo_url: str) -> str:
    """`owner/repo` (or `group/sub/proj`) from the repository URL's path."""
    path = urlsplit(repo_url).path.strip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    return path.strip("/")


def ssl_context(git_env: Mapping[str, str]) -> ssl.SSLContext:
    """Verification as git does it: GIT_SSL_CAINFO, else SSL_CERT_FILE, else the system store.
    Host names and certificates are checked as by `ssl.create_default_context`, which would also
    write the session's keys to a file named by SSLKEYLOGFILE (so the token could be read off a
    capture): this context never does."""
    cafile = git_env.get("GIT_SSL_CAINFO") or git_env.get("SSL_CERT_FILE") or None
    capath = git_env.get("GIT_SSL_CAPATH") or git_env.get("SSL_CERT_DIR") or None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile or capath:
        context.load_verify_locations(cafile=cafile, capath=capath)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def proxy_for(url: str, git_env: Mapping[str, str]) -> str | None:
    """The operator's https proxy for `url`, unless NO_PROXY exempts its host."""
    proxy = proxy_from_env(git_env)
    if not proxy:
        return None
    host = (urlsplit(url).hostname or "").lower()
    exempt = (git_env.get("NO_PROXY") or git_env.get("no_proxy") or "").lower()
    for entry in (e.strip().lstrip(".") for e in exempt.split(",")):
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    return proxy


def open_merge_request(
    forge: str, provider_url: str, repo_url: str, token: str, request: MergeRequest, git_env: Mapping[str, str]
) -> MrResult:
    """Open (or find) the merge request; never raises."""
    import httpx

    with registered(token):
        try:
            if forge == ProviderType.GITLAB:
                base = gitlab_api_base(provider_url)
                url = _gitlab(base, repo_url, token, request, git_env)
            elif forge == ProviderType.GITHUB:
                base = github_api_base(provider_url)
                url = _github(base, repo_url, token, request, git_env)
            else:
                raise MrFailed(f"unknown provider type {forge[:20]!r}")
        except MrFailed as exc:
            return MrResult(warning=WARNING_PREFIX + one_line(str(exc), MAX_REASON_CHARS))
        except httpx.TimeoutException:
            return MrResult(warning=WARNING_PREFIX + "the provider's API did not answer in time")
        except httpx.HTTPError as exc:
            return MrResult(warning=WARNING_PREFIX + one_line(f"{type(exc).__name__}: {exc}", MAX_REASON_CHARS))
        except Exception as exc:  # noqa: BLE001 - never raises: the branch is pushed whatever the API does
            return MrResult(warning=WARNING_PREFIX + one_line(f"{type(exc).__name__}: {exc}", MAX_REASON_CHARS))
        if redact(url) != url:  # checked while the token is known: an answer that echoes it is not kept
            return MrResult(warning=WARNING_PREFIX + "the API's answer holds the token; its link is not kept")
        return MrResult(url=url)


def _client(base: str, headers: Mapping[str, str], git_env: Mapping[str, str]) -> httpx.Client:
    import httpx

    return httpx.Client(
        base_url=base,
        headers=dict(headers),
        verify=ssl_context(git_env),
        trust_env=False,
        proxy=proxy_for(base, git_env),
        follow_redirects=False,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
    )


def _github(base: str, repo_url: str, token: str, request: MergeRequest, git_env: Mapping[str, str]) -> str:
    path = project_path(repo_url)
    if path.count("/") != 1:
        raise MrFailed(f"{path!r} is not an owner/repository path")
    owner = path.split("/", 1)[0]
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": GITHUB_API_VERSION,
    }
    with _client(base, headers, git_env) as client:
        reply = client.post(
            f"/repos/{path}/pulls",
            json={"title": request.title, "body": request.body, "head": request.head, "base": request.base},
        )
        if reply.status_code == HTTP_CREATED:
            return _field(reply, "html_url")
        if reply.status_code == HTTP_UNPROCESSABLE and "already exists" in reply.text:
            found = client.get(f"/repos/{path}/pulls", params={"head": f"{owner}:{request.head}", "state": "open"})
            return _first(found, "html_url")
        raise MrFailed(_status_reason("GitHub", reply))


def _gitlab(base: str, repo_url: str, token: str, request: MergeRequest, git_env: Mapping[str, str]) -> str:
    project = quote(project_path(repo_url), safe="")
    with _client(base, {"PRIVATE-TOKEN": token}, git_env) as client:
        reply = client.post(
            f"/projects/{project}/merge_requests",
            json={
                "source_branch": request.head,
                "target_branch": request.base,
                "title": request.title,
                "description": request.body,
            },
        )
        if reply.status_code == HTTP_CREATED:
            return _field(reply, "web_url")
        if reply.status_code == HTTP_CONFLICT:
            found = client.get(
                f"/projects/{project}/merge_requests",
                params={"source_branch": request.head, "target_branch": request.base, "state": "opened"},
            )
            return _first(found, "web_url")
        raise MrFailed(_status_reason("GitLab", reply))


def _json(reply: httpx.Response) -> Any:
    try:
        return reply.json()
    except ValueError as exc:
        raise MrFailed(f"the API answered {reply.status_code} with a body that is not JSON") from exc


def _field(reply: httpx.Response, name: str) -> str:
    value = _json(reply)
    url = value.get(name) if isinstance(value, dict) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise MrFailed(f"the API's answer has no {name}")
    return url


def _first(reply: httpx.Response, name: str) -> str:
    if reply.status_code != HTTPStatus.OK:
        raise MrFailed(f"one exists already, but looking it up answered HTTP {reply.status_code}")
    items = _json(reply)
    if not isinstance(items, list) or not items or not isinstance(items[0], dict):
        raise MrFailed("one exists already, but the lookup found none")
    url = items[0].get(name)
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise MrFailed(f"the lookup's answer has no {name}")
    return url


def _status_reason(api: str, reply: httpx.Response) -> str:
    if reply.is_redirect:
        return f"{api} API answered a redirect (HTTP {reply.status_code}), which is not followed"
    message = ""
    try:
        body = reply.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("error") or "")
            errors = body.get("errors")
            if isinstance(errors, list) and errors:
                first = errors[0]
                detail = first.get("message") if isinstance(first, dict) else first
                message = f"{message} ({detail})" if message else str(detail)
    except ValueError:
        message = one_line(reply.text, 100)  # masked before it is cut: a cut token would not be found
    return f"{api} API answered HTTP {reply.status_code}" + (f": {message}" if message else "")
