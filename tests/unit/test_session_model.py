"""The work-session model: the web app's hash and stream messages decoded as SESSIONS.md states."""

from __future__ import annotations

import uuid

import pytest

from repobox_cli import keys, sessions
from repobox_cli.errors import JobDataError

SID = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("web", "git"),
    [
        ("https://github.com/acme/widgets", "https://github.com/acme/widgets.git"),
        ("https://github.com/acme/widgets/", "https://github.com/acme/widgets.git"),
        ("https://github.com/acme/widgets.git", "https://github.com/acme/widgets.git"),
        ("https://gitlab.example.org:8443/group/sub/proj", "https://gitlab.example.org:8443/group/sub/proj.git"),
    ],
)
def test_the_web_url_becomes_the_git_url(web: str, git: str) -> None:
    assert sessions.git_url(web) == git


def test_a_session_hash_as_the_web_app_writes_it_decodes() -> None:
    session = sessions.Session.decode(
        SID,
        {
            "id": SID,
            "user_id": "github:12345678",
            "provider_id": str(uuid.uuid4()),
            "repo_url": "https://github.com/acme/widgets",
            "repo_name": "acme/widgets",
            "base_branch": "",
            "work_branch": f"repobox/{SID[:8]}",
            "status": "initializing",
            "total_lines_added": "0",
        },
    )
    assert session.repo_url == "https://github.com/acme/widgets.git"
    assert session.base_branch == "main" and session.work_branch == f"repobox/{SID[:8]}"
    assert session.status == sessions.SessionStatus.INITIALIZING


def test_a_session_hash_with_a_hostile_branch_is_refused() -> None:
    with pytest.raises(JobDataError, match="branch"):
        sessions.Session.decode(
            SID,
            {"user_id": "github:1", "provider_id": "p", "repo_url": "https://h/r", "base_branch": "--upload-pack=x"},
        )


def test_stream_messages_decode_and_name_what_is_missing() -> None:
    job_id = str(uuid.uuid4())
    prompt = sessions.PromptMessage.decode(
        "1-0",
        {"session_id": SID, "job_id": job_id, "user_id": "google:1", "prompt": "Add tests", "environment": "python"},
    )
    assert (prompt.job_id, prompt.environment) == (job_id, "python")
    later = sessions.PromptMessage.decode(
        "2-0", {"session_id": SID, "job_id": job_id, "user_id": "google:1", "prompt": "More"}
    )
    assert later.environment == ""
    with pytest.raises(JobDataError, match="job_id"):
        sessions.PromptMessage.decode("3-0", {"session_id": SID, "user_id": "u"})
    with pytest.raises(JobDataError, match="not a safe name"):
        sessions.InitMessage.decode("4-0", {"session_id": "../x", "user_id": "u", "provider_id": "p", "repo_url": "r"})


def test_merge_request_title_and_description_follow_the_push_message_or_summarise() -> None:
    given = sessions.PushMessage.decode(
        "1-0",
        {
            "session_id": SID,
            "user_id": "u",
            "title": "Changes from session x",
            "description": "Automated changes from 2 prompt(s)",
        },
    )
    assert sessions.mr_title(given) == "Changes from session x"
    assert sessions.mr_description(given, ["a"], 1, 0) == "Automated changes from 2 prompt(s)"
    bare = sessions.PushMessage.decode("2-0", {"session_id": SID, "user_id": "u"})
    assert sessions.mr_title(bare) == f"repobox: Work session {SID[:8]}"
    text = sessions.mr_description(bare, ["Add a README\nwith details", "Fix it"], 12, 5)
    assert "1. Add a README" in text and "2. Fix it" in text and "with details" not in text
    assert "Lines added: 12" in text and "Lines removed: 5" in text and "Net: +7" in text and SID in text


def test_session_keys_are_the_web_apps() -> None:
    assert keys.work_session(SID) == f"work_session:{SID}"
    assert keys.work_session_output(SID) == f"work_session:{SID}:output"
    assert keys.SESSION_GROUPS == (
        ("work_sessions:init:stream", "work_sessions:init:runners"),
        ("work_sessions:jobs:stream", "work_sessions:jobs:runners"),
        ("work_sessions:push:stream", "work_sessions:push:runners"),
    )
