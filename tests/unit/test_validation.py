"""repobox_cli.validation and repobox_cli.redaction on their own (no Redis, no network)."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repobox_cli import redaction, validation
from repobox_cli.errors import JobDataError

GIT_DEADLINE_S = 10.0

# -- safe_name -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a",
        "abc",
        "user_1",
        "_x",
        "a.b-c_d",
        "550e8400-e29b-41d4-a716-446655440000",
        "x" * 128,
        "A9",
    ],
)
def test_safe_name_accepts(value: str) -> None:
    assert validation.safe_name(value, "job id") == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-x",
        "-",
        ".",
        "..",
        "a..b",
        ".hidden",
        "a/b",
        "/abs",
        "a\\b",
        "a b",
        "a\nb",
        "a\x00b",
        "x" * 129,
        "é",
        "a:b",
        "a*",
        "a$b",
        "~user",
    ],
)
def test_safe_name_refuses(value: str) -> None:
    with pytest.raises(JobDataError, match="^job id "):
        validation.safe_name(value, "job id")


# -- branch_name, compared with git itself -------------------------------------------------------

BRANCH_TABLE = [
    "main",
    "master",
    "develop",
    "feature/x",
    "repobox/abcd1234",
    "release-1.2",
    "a.b",
    "a-",
    "a/-b",
    "x/@",
    "a@b",
    "a{b",
    "a}b",
    "!",
    "#",
    "é",
    "refs/heads/x",
    "UPPER/Case",
    "a..b",
    "a//b",
    "-x",
    "-",
    ".a",
    "a.",
    "a/",
    "/a",
    "a/.b",
    "a.lock",
    "a/b.lock/c",
    "a.lock/b",
    "a/..",
    ".",
    "a/./b",
    "a b",
    "a~b",
    "a^b",
    "a:b",
    "a?b",
    "a*b",
    "a[b",
    "a\\b",
    "a@{b",
    "@{-1}",
    "a\tb",
    "a\x7fb",
    "a\x01b",
]


def git_accepts_branch(name: str, cwd: Path) -> bool:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_CEILING_DIRECTORIES": str(cwd.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    result = subprocess.run(
        ["git", "check-ref-format", "--branch", name], cwd=cwd, env=env, capture_output=True, timeout=GIT_DEADLINE_S
    )
    return result.returncode == 0


def ours_accepts_branch(name: str) -> bool:
    try:
        validation.branch_name(name)
    except JobDataError:
        return False
    return True


@pytest.mark.parametrize("name", BRANCH_TABLE)
def test_branch_name_agrees_with_git(name: str, tmp_path: Path) -> None:
    assert ours_accepts_branch(name) == git_accepts_branch(name, tmp_path), (
        f"branch_name({name!r}) disagrees with `git check-ref-format --branch`"
    )


def test_branch_name_refuses_head_like_git(tmp_path: Path) -> None:
    assert not git_accepts_branch("HEAD", tmp_path)
    assert not ours_accepts_branch("HEAD")


def test_branch_name_stricter_than_git_where_git_expands_shorthands() -> None:
    # `git check-ref-format --branch @` expands '@' to HEAD; a branch literally named '@' is invalid.
    assert not ours_accepts_branch("@")


def test_branch_name_has_a_length_limit() -> None:
    assert ours_accepts_branch("b" * validation.MAX_REF_CHARS)
    assert not ours_accepts_branch("b" * (validation.MAX_REF_CHARS + 1))


def test_branch_name_error_names_the_reason() -> None:
    with pytest.raises(JobDataError, match=r"branch 'a\.\.b' is not a valid branch name: .*'\.\.'"):
        validation.branch_name("a..b")
    with pytest.raises(JobDataError, match="starts with '-'"):
        validation.branch_name("--upload-pack=evil")


# -- repo_url ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "origin"),
    [
        ("https://github.com/o/r.git", "github.com", None, "https://github.com"),
        ("https://github.com/o/r", "github.com", None, "https://github.com"),
        (
            "https://GitLab.Example.com:8443/group/sub/r.git",
            "gitlab.example.com",
            8443,
            "https://gitlab.example.com:8443",
        ),
        ("https://127.0.0.1:9999/x/y.git", "127.0.0.1", 9999, "https://127.0.0.1:9999"),
        ("HTTPS://github.com/o/r", "github.com", None, "https://github.com"),
        ("https://github.com/o/r%20x", "github.com", None, "https://github.com"),
    ],
)
def test_repo_url_accepts(url: str, host: str, port: int | None, origin: str) -> None:
    checked = validation.repo_url(url)
    assert (checked.url, checked.host, checked.port, checked.origin) == (url, host, port, origin)
    assert checked.scheme == "https"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("http://github.com/o/r", "scheme 'http' is not allowed"),
        ("git@github.com:o/r.git", "scheme 'none"),
        ("ssh://git@github.com/o/r", "scheme 'ssh'"),
        ("git://github.com/o/r", "scheme 'git'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("/srv/git/repo.git", "scheme 'none"),
        ("ext::sh -c touch% /tmp/pwned", "whitespace"),
        ("ext::sh%20-c%20id", "scheme 'none"),
        ("-uhttps://github.com/o/r", "starts with '-'"),
        ("https://user:pw@github.com/o/r", "credentials"),
        ("https://ghp_token@github.com/o/r", "credentials"),
        ("https://github.com/o/r?x=1", "query or fragment"),
        ("https://github.com/o/r#frag", "query or fragment"),
        ("https://github.com/o/r?", "query or fragment"),
        ("https://github.com/o/r#", "query or fragment"),
        ("https://github.com", "no valid repository path"),
        ("https://github.com/", "no valid repository path"),
        ("https://github.com/../../etc", "no valid repository path"),
        ("https://", "no valid host"),
        ("https://-bad.example.com/o/r", "no valid host"),
        ("https://github.com:99999/o/r", "not a valid URL"),
        ("https://github.com/o/r\n", "control characters"),
        ("https://github.com/o/r\x00", "control characters"),
        ("https://git hub.com/o/r", "whitespace"),
        ("https://" + "a" * 3000 + ".com/o/r", "too long"),
    ],
)
def test_repo_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(JobDataError, match="repo_url") as info:
        validation.repo_url(url)
    assert reason in str(info.value)
    assert "pw" not in str(info.value).replace("repo_url", "")  # no credentials echoed
    assert "ghp_token" not in str(info.value)


def test_repo_url_http_only_by_opt_in() -> None:
    checked = validation.repo_url("http://git.internal:8080/o/r.git", allow_http=True)
    assert (checked.scheme, checked.host, checked.port) == ("http", "git.internal", 8080)
    assert checked.origin == "http://git.internal:8080"
    assert validation.repo_url("https://github.com/o/r", allow_http=True).scheme == "https"
    for url in ("ssh://git@github.com/o/r", "git@github.com:o/r.git", "file:///x/y"):
        with pytest.raises(JobDataError, match=r"only https or http"):
            validation.repo_url(url, allow_http=True)


# -- same_server ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "provider", "same"),
    [
        ("https://git.example.com/o/r", "https://git.example.com", True),
        ("https://git.example.com/o/r", "https://git.example.com/", True),
        ("https://git.example.com/o/r", "https://git.example.com:443", True),
        ("https://git.example.com/o/r", "git.example.com", True),
        ("https://git.example.com/o/r", "https://GIT.Example.com/some/path", True),
        ("https://git.example.com:8443/o/r", "https://git.example.com:8443", True),
        ("https://git.example.com:8443/o/r", "https://git.example.com", False),
        ("https://git.example.com/o/r", "https://git.example.com:8443", False),
        ("https://git.example.com/o/r", "https://other.example.com", False),
        ("https://git.example.com/o/r", "https://git.example.com.evil.com", False),
        ("https://git.example.com/o/r", "https://evil.com/git.example.com", False),
        ("https://git.example.com/o/r", "https://git.example.com:notaport", False),
        ("https://git.example.com/o/r", "", False),
    ],
)
def test_same_server(repo: str, provider: str, same: bool) -> None:
    assert validation.same_server(validation.repo_url(repo), provider) is same


# -- prompt_text and commit_subject --------------------------------------------------------------


def test_prompt_text_accepts_ordinary_prompts() -> None:
    for prompt in ["", "Add a test", "multi\nline\tprompt", "ünïcødé 😀", "x" * validation.MAX_PROMPT_BYTES]:
        assert validation.prompt_text(prompt) == prompt


def test_prompt_text_refuses_nul() -> None:
    with pytest.raises(JobDataError, match="NUL"):
        validation.prompt_text("a\x00b")


def test_prompt_text_limit_counts_bytes() -> None:
    with pytest.raises(JobDataError, match=r"too large \(65537 bytes"):
        validation.prompt_text("x" * (validation.MAX_PROMPT_BYTES + 1))
    with pytest.raises(JobDataError, match="too large"):
        validation.prompt_text("é" * (validation.MAX_PROMPT_BYTES // 2 + 1))  # 2 bytes each


@pytest.mark.parametrize(
    ("prompt", "subject"),
    [
        ("Add a test file", "repobox: Add a test file"),
        ("x" * 50, "repobox: " + "x" * 50),
        ("y" * 51, "repobox: " + "y" * 50),
        ("0123456789" * 10, "repobox: " + ("0123456789" * 5)),
        ("Fix bug\n\nLong description here", "repobox: Fix bug Long description here"),
        ("tab\there\r\nand\x00nul\x1b[31m", "repobox: tab here and nul [31m"),
        ("  padded  ", "repobox: padded"),
        ("word " * 20, "repobox: " + ("word " * 10).rstrip()),
        ("ünïcødé 😀", "repobox: ünïcødé 😀"),
    ],
)
def test_commit_subject(prompt: str, subject: str) -> None:
    assert validation.commit_subject(prompt) == subject


@given(st.text())
def test_commit_subject_is_one_short_line(prompt: str) -> None:
    subject = validation.commit_subject(prompt)
    assert subject.startswith("repobox:")
    assert len(subject) <= len("repobox: ") + 50
    assert len(subject.splitlines()) == 1  # no \n, \r, NEL, U+2028 … survives
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in subject)
    assert subject == subject.strip()


# -- redaction -----------------------------------------------------------------------------------

SECRET = "ghp_S3cr3t+Tok/en=Value_0123456789abcd"


def _forms(token: str) -> dict[str, str]:
    return {
        "raw": token,
        "url-encoded": quote(token, safe=""),
        "form-encoded": quote_plus(token),
        "basic-auth": base64.b64encode(f"oauth2:{token}".encode()).decode(),
        "base64": base64.b64encode(token.encode()).decode(),
    }


@pytest.mark.parametrize("form", list(_forms(SECRET)))
def test_every_form_is_masked_while_registered(form: str) -> None:
    shown = _forms(SECRET)[form]
    line = f"fatal: could not read from https://oauth2:{shown}@git.example.com/o/r: denied"
    with redaction.registered(SECRET):
        redacted = redaction.redact(line)
    assert shown not in redacted
    assert SECRET not in redacted
    assert "fatal: could not read from https://oauth2:" in redacted
    assert "****" in redacted
    assert redaction.redact(line) == line  # not masked once the block is over


def test_raw_token_keeps_its_mask_shape() -> None:
    with redaction.registered(SECRET):
        assert redaction.redact(f"token={SECRET}.") == f"token={SECRET[:4]}****{SECRET[-4:]}."


def test_authorization_header_is_masked() -> None:
    header = f"Authorization: Basic {redaction.basic_auth_value(SECRET)}"
    with redaction.registered(SECRET):
        assert redaction.redact(header) == "Authorization: Basic ****"


def test_registration_is_reference_counted() -> None:
    with redaction.registered(SECRET):
        with redaction.registered(SECRET):
            assert SECRET not in redaction.redact(SECRET)
        assert SECRET not in redaction.redact(SECRET)  # the outer registration still holds
    assert redaction.redact(SECRET) == SECRET


def test_two_tokens_at_once() -> None:
    other = "glpat-AnotherSecretValue99"
    with redaction.registered(SECRET), redaction.registered(other):
        text = redaction.redact(f"{SECRET} and {other}")
    assert SECRET not in text and other not in text
    assert text == f"{SECRET[:4]}****{SECRET[-4:]} and {other[:4]}****{other[-4:]}"


def test_unregistered_even_after_an_exception() -> None:
    with pytest.raises(RuntimeError), redaction.registered(SECRET):
        raise RuntimeError(SECRET)
    assert redaction.redact(SECRET) == SECRET


def test_nothing_registered_leaves_text_alone() -> None:
    assert redaction.redact("ghp_notregistered0123456789") == "ghp_notregistered0123456789"


def test_one_line_redacts_flattens_and_cuts() -> None:
    with redaction.registered(SECRET):
        line = redaction.one_line(f"error:\n  remote said\t{SECRET}\n" + "x" * 1000, limit=80)
    assert "\n" not in line and "\t" not in line
    assert SECRET not in line
    assert len(line) == 80 and line.endswith("…")
    assert line.startswith("error: remote said ghp_****")
