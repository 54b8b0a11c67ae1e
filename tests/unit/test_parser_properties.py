"""Property-based tests: the parsers of everything that comes from Redis, and
decrypt, never fail with anything but the project's own errors on arbitrary input — and what they
accept is safe to use in a path, a ref, a URL given to git, an environment variable."""

from __future__ import annotations

import base64
import subprocess
from pathlib import PurePosixPath

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from repobox_cli import validation
from repobox_cli.crypto import EncryptionKey, decrypt, encrypt, parse_key
from repobox_cli.errors import DecryptError, JobDataError, KeyFormatError, RepoboxError
from repobox_cli.jobs import STREAM_FIELDS, Job, StreamEntry

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = parse_key("3f" * 16 + "a1" * 16)
GIT_DEADLINE_S = 10.0

# Text that looks like the things being parsed, so the interesting branches are reached often.
NAME_ALPHABET = st.sampled_from(list("abcXYZ019_.-/\\:@ ~^*?[\n\x00\x7f\u00e9\u202e"))
names = st.one_of(
    st.text(), st.text(NAME_ALPHABET, max_size=40), st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")
)
REF_ALPHABET = st.sampled_from(list("ab09/.-_@{}~^:?*[\\ \t\x01\x7f;$()`lockHEAD\u00e9"))
refs = st.one_of(st.text(), st.text(REF_ALPHABET, max_size=30), st.from_regex(r"\A[a-z]{1,8}(/[a-z]{1,8}){0,3}\Z"))
URL_PIECES = st.sampled_from(
    [
        "https://",
        "http://",
        "ssh://",
        "file://",
        "ext::",
        "git@",
        "-",
        "--upload-pack=",
        "127.0.0.1",
        "host.example",
        ":443",
        ":8443",
        ":99999",
        ":x",
        "/",
        "repo.git",
        "..",
        "@",
        "user:pass@",
        "?",
        "#",
        "%20",
        " ",
        "\n",
        "[",
        "]",
        "::1",
        "\u0456",
        "%",
        "~",
        "",
    ]
)
urls = st.one_of(st.text(), st.lists(URL_PIECES, max_size=8).map("".join))
any_text = st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")))


def _git_accepts_branch(value: str) -> bool:
    result = subprocess.run(
        ["git", "check-ref-format", "--branch", value],
        capture_output=True,
        timeout=GIT_DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )
    return result.returncode == 0


# -- validation ---------------------------------------------------------------------------------
@FAST
@given(names)
@example("..")
@example("-rf")
@example("a" * 129)
def test_safe_name_accepts_only_names_that_stay_in_their_directory(value: str) -> None:
    try:
        accepted = validation.safe_name(value, "job id")
    except JobDataError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert accepted == value
    assert not value.startswith("-") and ".." not in value and "/" not in value and "\x00" not in value
    assert all(c.isascii() and c.isprintable() for c in value)
    base = PurePosixPath("/work")
    assert (base / value).parent == base and (base / value).name == value


@FAST
@given(refs)
@example("main;rm -rf /")
@example("a..b")
@example("@{-1}")
@example("x.lock")
def test_branch_name_accepts_only_what_git_accepts(value: str) -> None:
    try:
        accepted = validation.branch_name(value)
    except JobDataError as exc:
        assert "\n" not in str(exc)
        return
    assert accepted == value and not value.startswith("-")
    assert "\x00" not in value
    assert _git_accepts_branch(value), f"git check-ref-format --branch refuses {value!r}"
    assert _git_accepts_branch(f"repobox/{value}")


@FAST
@given(urls, st.booleans())
@example("--upload-pack=touch /tmp/x", False)
@example("ext::sh -c touch% /tmp/pwned", False)
@example("ssh://-oProxyCommand=touch /tmp/x/", False)
@example("https://user:pass@host/r.git", False)
@example("https://[::1/r.git", False)
@example("https://host:99999/r.git", False)
def test_repo_url_accepts_only_plain_https_urls(value: str, allow_http: bool) -> None:
    try:
        repo = validation.repo_url(value, allow_http=allow_http)
    except JobDataError as exc:
        assert "\n" not in str(exc)
        return
    assert repo.url == value
    assert repo.scheme == "https" or (allow_http and repo.scheme == "http")
    assert value.lower().startswith(repo.scheme + "://")
    assert not any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value)
    netloc = value.split("://", 1)[1].split("/", 1)[0]
    assert "@" not in netloc and repo.host and not repo.host.startswith("-")
    assert repo.port is None or 0 <= repo.port <= 65535
    assert "?" not in value and "#" not in value
    assert validation.same_server(repo, repo.origin)


@FAST
@given(st.from_regex(r"\Ahttps://[a-z0-9.]{1,12}(:[0-9]{1,5})?/[a-z]{1,5}\.git\Z"), any_text)
def test_same_server_never_raises(url: str, provider_url: str) -> None:
    try:
        repo = validation.repo_url(url)
    except JobDataError:
        return
    assert isinstance(validation.same_server(repo, provider_url), bool)


@FAST
@given(
    st.one_of(
        st.text(),
        st.builds(lambda n, c: c * n, st.integers(60000, 70000), st.sampled_from(["a", "\u00e9", "\U0001f600"])),
    )
)
def test_prompt_text_accepts_only_what_fits_in_an_environment_variable(value: str) -> None:
    try:
        accepted = validation.prompt_text(value)
    except JobDataError as exc:
        assert "\n" not in str(exc)
        return
    assert accepted == value and "\x00" not in value
    assert len(value.encode("utf-8")) <= validation.MAX_PROMPT_BYTES


@FAST
@given(any_text)
def test_commit_subject_is_always_one_clean_line(prompt: str) -> None:
    subject = validation.commit_subject(prompt)
    assert subject.startswith("repobox:")
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in subject)
    assert len(subject) <= len("repobox: ") + 50
    assert subject == subject.strip()


# -- stream entries and job hashes --------------------------------------------------------------
field_values = st.one_of(names, refs, urls, st.text(max_size=50))
stream_fields = st.one_of(
    st.none(),
    st.dictionaries(st.one_of(st.sampled_from(STREAM_FIELDS), st.text(max_size=10)), field_values, max_size=8),
    st.fixed_dictionaries({f: field_values for f in STREAM_FIELDS}),
)


@FAST
@given(st.text(max_size=30), stream_fields)
def test_stream_entry_decode_raises_only_job_data_errors(entry_id: str, fields: dict[str, str] | None) -> None:
    try:
        entry = StreamEntry.decode(entry_id, fields)
    except JobDataError:
        return
    assert fields is not None and all(f in fields for f in STREAM_FIELDS)
    assert validation.safe_name(entry.job_id, "job_id") == entry.job_id


JOB_FIELDS = ("id", "user_id", "provider_id", "repo_url", "branch", "prompt", "environment", "status")
job_hashes = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(JOB_FIELDS), st.text(max_size=10)), field_values, max_size=10),
    st.fixed_dictionaries({f: field_values for f in JOB_FIELDS}),
)


@FAST
@given(names, job_hashes)
def test_job_decode_raises_only_job_data_errors(job_id: str, data: dict[str, str]) -> None:
    try:
        job = Job.decode(job_id, data)
    except JobDataError:
        return
    assert validation.safe_name(job.id, "id") == job.id  # a job id names a directory
    for value, what in ((job.user_id, "user"), (job.provider_id, "provider")):
        assert validation.key_part(value, what) == value  # only ever part of a key
    assert validation.environment_name(job.environment) == job.environment
    assert validation.branch_name(job.branch) == job.branch
    assert validation.branch_name(job.work_branch) == job.work_branch
    assert validation.prompt_text(job.prompt) == job.prompt


# -- decrypt and keys ---------------------------------------------------------------------------
b64 = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
ciphertexts = st.one_of(
    any_text,
    st.lists(st.one_of(b64, st.text(max_size=20)), min_size=0, max_size=5).map(":".join),
    st.tuples(st.binary(min_size=12, max_size=12), st.binary(min_size=16, max_size=16), st.binary(max_size=64)).map(
        lambda t: ":".join(base64.b64encode(p).decode() for p in t)
    ),
)


@FAST
@given(ciphertexts)
@example("")
@example("::")
@example("a:b:c")
@example("AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==:")
def test_decrypt_raises_only_decrypt_errors(ciphertext: str) -> None:
    try:
        plain = decrypt(ciphertext, KEY)
    except DecryptError as exc:
        assert isinstance(exc, RepoboxError) and "\n" not in str(exc)
        return
    assert isinstance(plain, str)


@FAST
@given(st.text(), st.data())
def test_decrypt_detects_every_tampering(plaintext: str, data: st.DataObject) -> None:
    sealed = encrypt(plaintext, KEY)
    assert decrypt(sealed, KEY) == plaintext
    raw = bytearray(sealed.encode())
    position = data.draw(st.integers(0, len(raw) - 1))
    replacement = data.draw(st.sampled_from(b"AB+/=:x "))
    assume(raw[position] != replacement)
    raw[position] = replacement
    try:
        result = decrypt(raw.decode(), KEY)
    except DecryptError:
        return
    # Only a change base64 ignores (e.g. in padding bits) may still decrypt, and then to the same text.
    assert result == plaintext


@FAST
@given(
    st.one_of(
        st.text(),
        st.text(st.sampled_from("0123456789abcdefABCDEF"), min_size=60, max_size=68),
        st.text(st.sampled_from("ABCxyz019+/="), min_size=40, max_size=48),
    )
)
@example("3f" * 32)
@example("=" * 44)
@example("\u00e9" * 16)
def test_parse_key_raises_only_key_format_errors(text: str) -> None:
    try:
        key = parse_key(text)
    except KeyFormatError as exc:
        assert "\n" not in str(exc)
        assert len(text) < 8 or text not in str(exc)  # the key itself is never echoed
        return
    assert isinstance(key, EncryptionKey) and len(key.key_bytes) == 32
    try:
        decrypt(encrypt("token", key), key)
    except DecryptError as exc:  # pragma: no cover - a parsed key must work
        raise AssertionError(exc) from exc
