"""The runner's git trusts the CAs of one file, GIT_SSL_CAINFO or else the system's bundle: its
CA directory is an empty one of the job's own (libcurl would otherwise also read its built-in
directory, on every connection), kept empty however the agent tampers with it. An operator's CA
directory or OpenSSL file leaves the choice to git."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from repobox_cli import git_ops, workdir
from repobox_cli.control import JobControl
from repobox_cli.git_ops import Git
from repobox_cli.settings import Settings

JOB_TIMEOUT_S = 60.0
CA_FILE = "/etc/repobox/ca.pem"


def job_git(tmp_path: Path, **git_env: str) -> Git:
    settings = Settings(temp_dir=tmp_path / "temp", path_env=os.environ["PATH"], git_env=git_env)
    paths = workdir.prepare(settings.temp_dir, str(uuid.uuid4()), uuid.uuid4().hex[:12])
    return Git(settings, paths, JobControl(JOB_TIMEOUT_S), lambda line, stream: None)


def git_config(env: dict[str, str]) -> dict[str, str]:
    count = int(env["GIT_CONFIG_COUNT"])
    return {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(count)}


def test_with_a_ca_file_git_reads_an_empty_private_ca_directory(tmp_path: Path) -> None:
    git = job_git(tmp_path, GIT_SSL_CAINFO=CA_FILE)

    env = git._env()

    ca_dir = Path(git_config(env)["http.sslCAPath"])
    assert env["GIT_SSL_CAINFO"] == CA_FILE
    assert ca_dir == git.paths.no_ca_dir
    info = os.lstat(ca_dir)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert os.listdir(ca_dir) == []


def test_without_a_ca_file_git_reads_the_systems_bundle_and_an_empty_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_text("")
    monkeypatch.setattr(git_ops, "SYSTEM_CA_BUNDLE", str(bundle))
    git = job_git(tmp_path)

    config = git_config(git._env())

    assert config["http.sslCAInfo"] == str(bundle)
    assert config["http.sslCAPath"] == str(git.paths.no_ca_dir)
    assert os.listdir(git.paths.no_ca_dir) == []


@pytest.mark.parametrize(
    ("git_env", "bundle_exists"),
    [
        pytest.param({"GIT_SSL_CAINFO": CA_FILE, "GIT_SSL_CAPATH": "/etc/ssl/certs"}, True, id="git-ca-directory"),
        pytest.param({"SSL_CERT_DIR": "/etc/ssl/certs"}, True, id="openssl-ca-directory"),
        pytest.param({"SSL_CERT_FILE": CA_FILE}, True, id="openssl-ca-file"),
        pytest.param({}, False, id="no-system-bundle"),
    ],
)
def test_an_operators_ca_directory_or_openssl_file_or_no_bundle_leaves_gits_own_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, git_env: dict[str, str], bundle_exists: bool
) -> None:
    bundle = tmp_path / "ca-certificates.crt"
    if bundle_exists:
        bundle.write_text("")
    monkeypatch.setattr(git_ops, "SYSTEM_CA_BUNDLE", str(bundle))
    git = job_git(tmp_path, **git_env)

    config = git_config(git._env())

    assert "http.sslCAPath" not in config and "http.sslCAInfo" not in config
    assert not git.paths.no_ca_dir.exists()


def test_a_ca_planted_in_the_empty_directory_is_gone_before_the_next_git_step(tmp_path: Path) -> None:
    git = job_git(tmp_path, GIT_SSL_CAINFO=CA_FILE)
    git.init_bare(git.paths.git_dir)
    ca_dir = Path(git_config(git._env())["http.sslCAPath"])
    (ca_dir / "evil.pem").write_text("-----BEGIN CERTIFICATE-----\n")

    git.reset_runner_config()

    assert os.listdir(Path(git_config(git._env())["http.sslCAPath"])) == []


def test_a_symlink_in_place_of_the_empty_directory_is_replaced(tmp_path: Path) -> None:
    git = job_git(tmp_path, GIT_SSL_CAINFO=CA_FILE)
    git.init_bare(git.paths.git_dir)
    planted = tmp_path / "elsewhere"
    planted.mkdir()
    (planted / "evil.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    git.paths.no_ca_dir.rmdir()
    git.paths.no_ca_dir.symlink_to(planted)

    git.reset_runner_config()

    ca_dir = Path(git_config(git._env())["http.sslCAPath"])
    assert not ca_dir.is_symlink() and os.listdir(ca_dir) == []
    assert (planted / "evil.pem").exists()  # never followed


def test_a_ca_left_in_the_directory_by_an_earlier_step_is_gone_at_the_first_git_step(tmp_path: Path) -> None:
    first = job_git(tmp_path, GIT_SSL_CAINFO=CA_FILE)
    ca_dir = Path(git_config(first._env())["http.sslCAPath"])
    (ca_dir / "evil.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    # A session's next step: a new Git on the same directory.
    again = Git(first.settings, first.paths, JobControl(JOB_TIMEOUT_S), lambda line, stream: None)

    assert os.listdir(Path(git_config(again._env())["http.sslCAPath"])) == []
