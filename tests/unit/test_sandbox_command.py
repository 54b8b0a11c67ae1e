"""The sandbox's argument list and its settings, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from repobox_cli.errors import SettingsError
from repobox_cli.sandbox import Bind, bwrap_argv, job_uid
from repobox_cli.settings import NetworkMode, SandboxMode, load_settings


def _argv(tmp_path: Path, **env: str) -> list[str]:
    temp_dir = tmp_path / "work"
    temp_dir.mkdir(exist_ok=True)
    settings = load_settings({"TEMP_DIR": str(temp_dir), **env})
    clone = temp_dir / "job" / "attempt" / "repo"
    binds = [Bind(tmp_path / "tools", tmp_path / "tools"), Bind(clone, clone, writable=True)]
    return bwrap_argv(settings, "/usr/bin/bwrap", binds, clone, ["/bin/sh", "-c", "x"], staged=False)


def test_sandbox_hides_temp_dir_before_binding_the_jobs_own_directory(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    hide = argv.index(str(tmp_path / "work"))
    assert argv[hide - 1] == "--tmpfs"
    assert argv.index(str(tmp_path / "tools")) < hide < argv.index("--bind")
    assert argv[argv.index("--bind") + 2] == str(tmp_path / "work" / "job" / "attempt" / "repo")


def test_sandbox_namespaces_and_no_secret_files_of_etc(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    for flag in (
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
    ):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--unshare-net" not in argv
    assert not [a for a in argv if "shadow" in a or a == "/etc" or a.startswith("/etc/ssl/private")]


def test_agent_network_none_unshares_the_network(tmp_path: Path) -> None:
    assert "--unshare-net" in _argv(tmp_path, AGENT_NETWORK="none")


def test_sandbox_settings_default_to_bwrap_and_host_network() -> None:
    settings = load_settings({})
    assert settings.agent_sandbox is SandboxMode.BWRAP and settings.agent_network is NetworkMode.HOST
    assert load_settings({"AGENT_SANDBOX": "NONE"}).agent_sandbox is SandboxMode.NONE


@pytest.mark.parametrize(
    "env, message",
    [
        ({"AGENT_SANDBOX": "docker"}, "AGENT_SANDBOX must be"),
        ({"AGENT_NETWORK": "bridge"}, "AGENT_NETWORK must be"),
        ({"AGENT_SANDBOX_PATHS": "relative/path"}, "absolute"),
        ({"AGENT_SANDBOX_PATHS": "/"}, "must not show"),
        ({"AGENT_SANDBOX_PATHS": "/usr:/etc"}, "must not show /etc"),
        ({"AGENT_SANDBOX_PATHS": "/proc/1"}, "must not show"),
        ({"AGENT_SANDBOX_PATHS": "/no/such/path/here"}, "does not exist"),
    ],
)
def test_bad_sandbox_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env)


def test_sandbox_paths_inside_temp_dir_are_refused(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    with pytest.raises(SettingsError, match="inside TEMP_DIR"):
        load_settings({"TEMP_DIR": str(tmp_path), "AGENT_SANDBOX_PATHS": str(tmp_path / "inside")})


@pytest.mark.parametrize("secret", ["ENCRYPTION_KEY_FILE", "REDIS_PASSWORD_FILE"])
def test_sandbox_paths_that_show_a_secret_file_are_refused(tmp_path: Path, secret: str) -> None:
    shared = tmp_path / "home"
    (shared / "secrets").mkdir(parents=True)
    secret_file = shared / "secrets" / "repobox.key"
    secret_file.write_text("ab" * 32 + "\n")
    secret_file.chmod(0o600)
    for shown in (shared, shared / "secrets", secret_file):
        env = {"TEMP_DIR": str(tmp_path / "work"), secret: str(secret_file), "AGENT_SANDBOX_PATHS": str(shown)}
        with pytest.raises(SettingsError, match="must not show the agent a secret file"):
            load_settings(env)


def test_temp_dir_and_cache_dir_named_through_a_symlink_are_checked_and_hidden_at_their_real_paths(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "disk"
    (disk / "work" / "inside").mkdir(parents=True)
    (disk / "cache").mkdir()
    (tmp_path / "data").symlink_to(disk)
    linked = {"TEMP_DIR": str(tmp_path / "data" / "work"), "CACHE_DIR": str(tmp_path / "data" / "cache")}

    settings = load_settings(linked)
    assert settings.temp_dir == disk / "work" and settings.clone_cache_dir == disk / "cache"
    with pytest.raises(SettingsError, match="inside TEMP_DIR"):
        load_settings({**linked, "AGENT_SANDBOX_PATHS": str(disk / "work" / "inside")})
    with pytest.raises(SettingsError, match="must not name CACHE_DIR"):
        load_settings({**linked, "AGENT_SANDBOX_PATHS": str(disk)})
    shared = load_settings({"TEMP_DIR": linked["TEMP_DIR"], "AGENT_SANDBOX_PATHS": str(disk)})
    argv = bwrap_argv(shared, "/usr/bin/bwrap", [Bind(disk, disk)], disk, ["/bin/true"], staged=False)
    assert argv[argv.index("--tmpfs", argv.index("/var/tmp")) + 1] == str(disk / "work")


def test_sandbox_paths_are_split_on_colons_and_commas(tmp_path: Path) -> None:
    settings = load_settings({"AGENT_SANDBOX_PATHS": f"/usr, {tmp_path}:/usr"})
    assert settings.agent_sandbox_paths == (Path("/usr"), tmp_path.resolve())


def test_job_uids_are_unprivileged_and_differ_between_attempts() -> None:
    uids = {job_uid(f"{n:012x}") for n in range(1000)}
    assert len(uids) == 1000 and min(uids) >= 2_000_000_000 and max(uids) < 2**31 - 1
