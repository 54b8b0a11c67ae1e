"""Merge requests through a local HTTPS stand-in of the GitHub and GitLab APIs (the suite's CA):
the exact calls, headers and bodies; an existing request reported by URL; every failure one
masked warning; the token sent to the provider's API host only, as the documented header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from repobox_cli import mr
from tests.support.api_standin import ApiServer, ApiStandIn, Reply
from tests.support.tls import TestCA
from tests.support.world import REPO_FILES, World

TOKEN = "glpat-" + "S3cr3tT0k3nV4lu3" * 2
REQUEST = mr.MergeRequest(
    title="Changes from session 1234abcd",
    body="Automated changes from 2 prompt(s)",
    head="repobox/1234abcd",
    base="main",
)


@pytest.fixture
def api(tls: TestCA) -> Iterator[ApiServer]:
    with ApiServer(tls) as server:
        yield server


def _env(tls: TestCA) -> dict[str, str]:
    return {"GIT_SSL_CAINFO": str(tls.ca_file)}


def test_github_enterprise_pull_request_is_opened_with_the_documented_call(api: ApiServer, tls: TestCA) -> None:
    api.api.answer(
        "POST", "/api/v3/repos/acme/widgets/pulls", Reply(201, {"html_url": "https://ghe/acme/widgets/pull/7"})
    )

    result = mr.open_merge_request("github", api.url, f"{api.url}/acme/widgets", TOKEN, REQUEST, _env(tls))

    assert result == mr.MrResult(url="https://ghe/acme/widgets/pull/7")
    [call] = api.api.requests
    assert (call.method, call.path) == ("POST", "/api/v3/repos/acme/widgets/pulls")
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.headers["Accept"] == "application/vnd.github+json"
    assert call.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert call.body == {"title": REQUEST.title, "body": REQUEST.body, "head": "repobox/1234abcd", "base": "main"}


def test_an_existing_github_pull_request_is_reported_by_its_url(api: ApiServer, tls: TestCA) -> None:
    api.api.answer(
        "POST",
        "/api/v3/repos/acme/widgets/pulls",
        Reply(
            422,
            {
                "message": "Validation Failed",
                "errors": [
                    {"resource": "PullRequest", "message": "A pull request already exists for acme:repobox/1234abcd."}
                ],
            },
        ),
    )
    api.api.answer(
        "GET", "/api/v3/repos/acme/widgets/pulls", Reply(200, [{"html_url": "https://ghe/acme/widgets/pull/3"}])
    )

    result = mr.open_merge_request("github", api.url, f"{api.url}/acme/widgets.git", TOKEN, REQUEST, _env(tls))

    assert result == mr.MrResult(url="https://ghe/acme/widgets/pull/3")
    lookup = api.api.requests[1]
    assert lookup.method == "GET"
    assert "head=acme%3Arepobox%2F1234abcd" in lookup.path or "head=acme:repobox/1234abcd" in lookup.path


def test_gitlab_merge_request_uses_the_encoded_project_path_and_private_token(api: ApiServer, tls: TestCA) -> None:
    path = "/api/v4/projects/group%2Fsub%2Fproj/merge_requests"
    api.api.answer("POST", path, Reply(201, {"web_url": "https://gl/group/sub/proj/-/merge_requests/1"}))

    result = mr.open_merge_request("gitlab", api.url, f"{api.url}/group/sub/proj.git/", TOKEN, REQUEST, _env(tls))

    assert result.url == "https://gl/group/sub/proj/-/merge_requests/1"
    [call] = api.api.requests
    assert call.path == path
    assert call.headers["PRIVATE-TOKEN"] == TOKEN and "Authorization" not in call.headers
    assert call.body == {
        "source_branch": "repobox/1234abcd",
        "target_branch": "main",
        "title": REQUEST.title,
        "description": REQUEST.body,
    }


def test_an_existing_gitlab_merge_request_is_reported_by_its_url(api: ApiServer, tls: TestCA) -> None:
    path = "/api/v4/projects/group%2Fproj/merge_requests"
    api.api.answer("POST", path, Reply(409, {"message": ["Another open merge request already exists"]}))
    api.api.answer("GET", path, Reply(200, [{"web_url": "https://gl/group/proj/-/merge_requests/9"}]))

    result = mr.open_merge_request("gitlab", api.url, f"{api.url}/group/proj", TOKEN, REQUEST, _env(tls))

    assert result.url == "https://gl/group/proj/-/merge_requests/9"
    assert "source_branch=repobox%2F1234abcd" in api.api.requests[1].path


def test_an_api_failure_is_one_warning_with_the_token_masked(api: ApiServer, tls: TestCA) -> None:
    api.api.answer("POST", "/api/v3/repos/acme/widgets/pulls", Reply(401, {"message": f"Bad credentials {TOKEN}"}))

    result = mr.open_merge_request("github", api.url, f"{api.url}/acme/widgets", TOKEN, REQUEST, _env(tls))

    assert result.url == ""
    assert result.warning.startswith("Failed to create merge request: GitHub API answered HTTP 401: Bad credentials")
    assert TOKEN not in result.warning and "glpa****" in result.warning


@pytest.mark.parametrize("at", [0, 60, 80])
def test_a_page_that_echoes_the_token_is_masked_before_it_is_cut(api: ApiServer, tls: TestCA, at: int) -> None:
    """A proxy's error page that repeats the request's header, the token anywhere around the cut."""
    page = ("x" * at + f"PRIVATE-TOKEN={TOKEN} " + "y" * 200).encode()
    api.api.answer("POST", "/api/v3/repos/acme/widgets/pulls", Reply(400, page, {"Content-Type": "text/html"}))

    result = mr.open_merge_request("github", api.url, f"{api.url}/acme/widgets", TOKEN, REQUEST, _env(tls))

    assert result.warning.startswith("Failed to create merge request: GitHub API answered HTTP 400: ")
    assert TOKEN[:8] not in result.warning.replace("glpa****", ""), result.warning


def test_a_link_in_the_answer_that_holds_the_token_is_not_kept(api: ApiServer, tls: TestCA) -> None:
    link = f"https://ghe/acme/widgets/pull/7?t={TOKEN}"
    api.api.answer("POST", "/api/v3/repos/acme/widgets/pulls", Reply(201, {"html_url": link}))

    result = mr.open_merge_request("github", api.url, f"{api.url}/acme/widgets", TOKEN, REQUEST, _env(tls))

    assert result.url == "" and TOKEN not in result.warning
    assert result.warning == "Failed to create merge request: the API's answer holds the token; its link is not kept"


def test_a_token_that_is_not_ascii_is_one_warning_not_an_error(api: ApiServer, tls: TestCA) -> None:
    token = TOKEN[:10] + "é" + TOKEN[10:]

    result = mr.open_merge_request("github", api.url, f"{api.url}/acme/widgets", token, REQUEST, _env(tls))

    assert result.url == "" and result.warning.startswith("Failed to create merge request: ")
    assert token not in result.warning and token[:10] not in result.warning


def test_the_api_client_never_writes_tls_keys_to_sslkeylogfile(
    api: ApiServer, tls: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    api.api.answer("POST", "/api/v3/repos/acme/widgets/pulls", Reply(201, {"html_url": "https://ghe/pull/7"}))

    result = mr.open_merge_request("github", api.url, f"{api.url}/acme/widgets", TOKEN, REQUEST, _env(tls))

    assert result.url == "https://ghe/pull/7"
    assert not keylog.exists() or keylog.read_text() == ""


def test_a_redirect_is_not_followed_so_the_token_reaches_no_other_host(api: ApiServer, tls: TestCA) -> None:
    with ApiServer(tls) as elsewhere:
        api.api.answer(
            "POST", "/api/v3/repos/acme/widgets/pulls", Reply(307, headers={"Location": f"{elsewhere.url}/steal"})
        )

        result = mr.open_merge_request("github", api.url, f"{api.url}/acme/widgets", TOKEN, REQUEST, _env(tls))

        assert "redirect" in result.warning and result.url == ""
        assert elsewhere.api.requests == []


def test_an_untrusted_certificate_fails_cleanly(api: ApiServer) -> None:
    result = mr.open_merge_request("github", api.url, f"{api.url}/acme/widgets", TOKEN, REQUEST, {})
    assert result.warning.startswith("Failed to create merge request: ") and api.api.requests == []


@pytest.mark.parametrize(
    ("provider_url", "api_base"),
    [
        ("", "https://api.github.com"),
        ("https://github.com", "https://api.github.com"),
        ("https://github.com/", "https://api.github.com"),
        ("https://ghe.example.com", "https://ghe.example.com/api/v3"),
    ],
)
def test_github_api_base_follows_the_provider_url(provider_url: str, api_base: str) -> None:
    assert mr.github_api_base(provider_url) == api_base


def test_gitlab_api_base_defaults_to_gitlab_com() -> None:
    assert mr.gitlab_api_base("") == "https://gitlab.com/api/v4"
    assert mr.gitlab_api_base("https://git.example.org/") == "https://git.example.org/api/v4"


def test_a_proxy_is_skipped_for_no_proxy_hosts() -> None:
    env = {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "localhost,.corp.example"}
    assert mr.proxy_for("https://api.github.com/x", env) == "http://proxy:3128"
    assert mr.proxy_for("https://git.corp.example/api/v4", env) is None


def test_create_mr_opens_a_pull_request_for_a_single_shot_job(world: World) -> None:
    api = world.git.api = ApiStandIn()
    name = f"acme/{world.repo_name}"
    repo_url = world.git.create_repo(name, REPO_FILES)
    api.answer("POST", f"/api/v3/repos/{name}/pulls", Reply(201, {"html_url": f"https://ghe/{name}/pull/1"}))
    job_id = world.add_job(prompt="Say hello to the world", repo_url=repo_url)

    assert world.run_burst(CREATE_MR="true").returncode == 0

    job = world.job(job_id)
    assert job["status"] == "success", job
    assert job["mr_url"] == f"https://ghe/{name}/pull/1" and job["mr_warning"] == ""
    [call] = api.requests
    assert call.body == {
        "title": "repobox: Say hello to the world",
        "head": f"repobox/{job_id[:8]}",
        "base": "main",
        "body": call.body["body"],
    }
    assert call.headers["Authorization"] == f"Bearer {world.token}"
    assert f"Merge request created: https://ghe/{name}/pull/1" in world.output_text(job_id)


def test_create_mr_failure_is_a_warning_on_a_successful_job(world: World) -> None:
    world.git.api = ApiStandIn()  # answers 404 to everything
    job_id = world.add_job(prompt="Say hello", repo_url=world.git.create_repo(f"acme/{world.repo_name}", REPO_FILES))

    assert world.run_burst(CREATE_MR="true").returncode == 0

    job = world.job(job_id)
    assert job["status"] == "success" and job["mr_url"] == ""
    assert job["mr_warning"] == "Failed to create merge request: GitHub API answered HTTP 404: Not Found"
    assert any(o["line"] == f"Warning: {job['mr_warning']}" and o["stream"] == "stderr" for o in world.output(job_id))


def test_without_create_mr_no_api_call_is_made(world: World) -> None:
    api = world.git.api = ApiStandIn()
    job_id = world.add_job()
    assert world.run_burst().returncode == 0
    assert world.job(job_id)["status"] == "success" and "mr_url" not in world.job(job_id)
    assert api.requests == []
