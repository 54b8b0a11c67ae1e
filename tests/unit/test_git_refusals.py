"""Which failed git steps are the remote's refusal (a token, a repository, a redirect): read from
git's own error lines only, never from the progress lines kept beside them in the same tail."""

from __future__ import annotations

import pytest

from repobox_cli.git_ops import _reason, _refusal

PROGRESS = [
    "remote: Enumerating objects: 4013, done.",
    "remote: Total 4013 (delta 301), reused 0 (delta 0), pack-reused 0",
    "Receiving objects: 100% (4013/4013), 401.00 KiB | 3.02 MiB/s, done.",
    "Resolving deltas: 100% (302/302), done.",
    "Writing objects: 100% (3/3), 403 bytes | 403.00 KiB/s, done.",
]


@pytest.mark.parametrize(
    "error",
    [
        "error: RPC failed; curl 18 transfer closed with outstanding read data remaining",
        "fatal: early EOF",
        "fatal: packed object 1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c (stored in objects/pack/x.pack) is corrupt",
        "error: failed to push some refs to 'https://gitlab.example.com/team/app.git'",
    ],
)
def test_a_failure_after_progress_lines_is_not_read_as_the_remote_refusing(error: str) -> None:
    tail = [*PROGRESS, error]
    assert _refusal("clone", tail) is None
    assert _reason("clone", tail) == f"git clone failed: {error}"


@pytest.mark.parametrize(
    ("error", "says"),
    [
        ("fatal: Authentication failed for 'https://gitlab.example.com/team/app.git/'", "HTTP 401"),
        ("fatal: could not read Username for 'https://gitlab.example.com': terminal prompts disabled", "HTTP 401"),
        ("error: RPC failed; HTTP 401 curl 22 The requested URL returned error: 401", "HTTP 401"),
        (
            "fatal: unable to access 'https://gitlab.example.com/team/app.git/': The requested URL returned error: 403",
            "HTTP 403",
        ),
        ("fatal: repository 'https://gitlab.example.com/team/app.git/' not found", "repository not found"),
        (
            "fatal: unable to access 'https://gitlab.example.com/x.git/': The requested URL returned error: 404",
            "not found",
        ),
        (
            "fatal: unable to access 'https://gitlab.example.com/x.git/': The requested URL returned error: 301",
            "redirect",
        ),
    ],
)
def test_git_error_lines_name_the_remote_refusal(error: str, says: str) -> None:
    refusal = _refusal("push", [*PROGRESS, error])
    assert refusal is not None and says in refusal, refusal
