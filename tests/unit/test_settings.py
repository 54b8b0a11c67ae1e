"""repobox_cli.settings.load_settings on its own: SPEC §3 defaults, validation, option precedence."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from repobox_cli import engine, failures
from repobox_cli.errors import KeyFormatError, SettingsError
from repobox_cli.settings import OTHER_ENV_NAMES, Settings, load_settings, misspelled

HEX_KEY = "ab" * 32


def load(env: dict[str, str] | None = None, **options: Any) -> Settings:
    return load_settings(env={} if env is None else env, stderr_is_tty=False, **options)


# -- defaults (SPEC §3) --------------------------------------------------------------------------


def test_defaults_match_the_spec_table() -> None:
    s = load()
    assert s.redis_url == "redis://localhost:6379"
    assert s.encryption_key is None
    assert s.max_concurrent_jobs == 10
    assert s.max_jobs_per_user == 3
    assert s.job_timeout_s == 3600
    assert s.temp_dir == Path("/tmp/repobox")
    assert s.cleanup_after_job is True
    assert s.claim_min_idle_s == 300
    assert s.agent_command == ""
    assert s.git_author_name == "Repobox"
    assert s.git_author_email == "repobox@localhost"
    assert s.max_deliveries == 5
    assert s.shutdown_timeout_s == s.job_timeout_s
    assert s.allowed_git_hosts == ()
    assert s.allow_http is False


def test_default_runner_id_is_unique_per_process() -> None:
    first, second = load().runner_id, load().runner_id
    assert socket.gethostname() in first and str(os.getpid()) in first
    assert first != second


def test_log_format_defaults_to_pretty_on_a_terminal_json_otherwise() -> None:
    assert load_settings(env={}, stderr_is_tty=True).log_format == "pretty"
    assert load_settings(env={}, stderr_is_tty=False).log_format == "json"


def test_shutdown_timeout_defaults_to_job_timeout() -> None:
    assert load({"JOB_TIMEOUT": "120"}).shutdown_timeout_s == 120
    assert load(job_timeout=90.0).shutdown_timeout_s == 90
    assert load({"JOB_TIMEOUT": "120", "SHUTDOWN_TIMEOUT": "30"}).shutdown_timeout_s == 30


def test_empty_variables_mean_the_default() -> None:
    s = load({"MAX_CONCURRENT_JOBS": "", "JOB_TIMEOUT": "", "REDIS_URL": "", "TEMP_DIR": ""})
    assert (s.max_concurrent_jobs, s.job_timeout_s, s.redis_url) == (10, 3600, "redis://localhost:6379")
    assert s.temp_dir == Path("/tmp/repobox")


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        load().max_jobs_per_user = 99  # type: ignore[misc]


# -- values from the environment -----------------------------------------------------------------


def test_every_setting_from_the_environment(tmp_path: Path) -> None:
    s = load(
        {
            "REDIS_URL": "redis://redis.internal:6380/2",
            "ENCRYPTION_KEY": HEX_KEY,
            "RUNNER_ID": "runner-a",
            "MAX_CONCURRENT_JOBS": "4",
            "MAX_JOBS_PER_USER": "1",
            "JOB_TIMEOUT": "2.5",
            "TEMP_DIR": str(tmp_path),
            "CLEANUP_AFTER_JOB": "false",
            "CLAIM_MIN_IDLE": "30",
            "AGENT_COMMAND": "my-agent --fast",
            "LOG_FORMAT": "PRETTY",
            "GIT_AUTHOR_NAME": "Bot",
            "GIT_AUTHOR_EMAIL": "bot@example.com",
            "MAX_DELIVERIES": "2",
            "SHUTDOWN_TIMEOUT": "7",
            "ALLOWED_GIT_HOSTS": "GitHub.com, gitlab.example.com:8443",
            "ALLOW_HTTP_REMOTES": "yes",
        }
    )
    assert s.redis_url == "redis://redis.internal:6380/2"
    assert s.encryption_key is not None and s.encryption_key.key_bytes == bytes.fromhex(HEX_KEY)
    assert s.runner_id == "runner-a"
    assert (s.max_concurrent_jobs, s.max_jobs_per_user, s.max_deliveries) == (4, 1, 2)
    assert (s.job_timeout_s, s.claim_min_idle_s, s.shutdown_timeout_s) == (2.5, 30, 7)
    assert s.temp_dir == tmp_path
    assert s.cleanup_after_job is False
    assert s.agent_command == "my-agent --fast"
    assert s.log_format == "pretty"
    assert (s.git_author_name, s.git_author_email) == ("Bot", "bot@example.com")
    assert s.allowed_git_hosts == ("github.com", "gitlab.example.com:8443")
    assert s.allow_http is True


def test_relative_temp_dir_becomes_absolute() -> None:
    assert load({"TEMP_DIR": "work"}).temp_dir == Path.cwd() / "work"


def test_an_empty_path_option_is_refused_not_taken_for_the_current_directory() -> None:
    with pytest.raises(SettingsError, match="TEMP_DIR must not be empty"):
        load(temp_dir="")


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        (" True ", True),
        ("0", False),
        ("false", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_words(word: str, value: bool) -> None:
    assert load({"CLEANUP_AFTER_JOB": word}).cleanup_after_job is value


def test_git_passthrough_only_carries_git_and_proxy_variables() -> None:
    s = load(
        {
            "GIT_SSL_CAINFO": "/etc/ca.pem",
            "HTTPS_PROXY": "http://proxy:3128",
            "NO_PROXY": "internal",
            "ENCRYPTION_KEY": HEX_KEY,
            "REDIS_URL": "redis://x:1",
            "AWS_SECRET_ACCESS_KEY": "s",
        }
    )
    assert dict(s.git_env) == {
        "GIT_SSL_CAINFO": "/etc/ca.pem",
        "HTTPS_PROXY": "http://proxy:3128",
        "NO_PROXY": "internal",
    }


def test_agent_env_passes_only_the_named_variables() -> None:
    s = load({"AGENT_ENV": "OPENAI_API_KEY, MODEL", "OPENAI_API_KEY": "sk-1", "MODEL": "m", "OTHER": "o"})
    assert dict(s.agent_env) == {"OPENAI_API_KEY": "sk-1", "MODEL": "m"}
    assert s.agent_env_names == ("OPENAI_API_KEY", "MODEL")


@pytest.mark.parametrize("names", ["ENCRYPTION_KEY", "REDIS_URL", "MODEL,ENCRYPTION_KEY", "REDIS_URL ENCRYPTION_KEY"])
def test_agent_env_never_passes_the_key_or_redis(names: str) -> None:
    with pytest.raises(SettingsError, match="AGENT_ENV must not pass") as info:
        load({"AGENT_ENV": names, "ENCRYPTION_KEY": HEX_KEY})
    assert HEX_KEY not in str(info.value)


# -- options override the environment -------------------------------------------------------------


def test_options_override_the_environment(tmp_path: Path) -> None:
    env = {
        "REDIS_URL": "redis://env:1",
        "RUNNER_ID": "env-runner",
        "MAX_CONCURRENT_JOBS": "5",
        "MAX_JOBS_PER_USER": "5",
        "JOB_TIMEOUT": "50",
        "TEMP_DIR": "/env/tmp",
        "CLEANUP_AFTER_JOB": "true",
        "CLAIM_MIN_IDLE": "50",
        "AGENT_COMMAND": "env-agent",
        "LOG_FORMAT": "json",
        "MAX_DELIVERIES": "5",
        "SHUTDOWN_TIMEOUT": "50",
        "ALLOWED_GIT_HOSTS": "env.example.com",
        "ALLOW_HTTP_REMOTES": "false",
    }
    s = load(
        env,
        redis_url="redis://opt:2",
        runner_id="opt-runner",
        concurrency=7,
        max_jobs_per_user=2,
        job_timeout=20.0,
        temp_dir=tmp_path,
        cleanup=False,
        claim_min_idle=40.0,
        agent_command="opt-agent",
        log_format="pretty",
        max_deliveries=9,
        shutdown_timeout=11.0,
        allowed_git_hosts="opt.example.com",
        allow_http=True,
    )
    assert (s.redis_url, s.runner_id, s.max_concurrent_jobs, s.max_jobs_per_user) == (
        "redis://opt:2",
        "opt-runner",
        7,
        2,
    )
    assert (s.job_timeout_s, s.temp_dir, s.cleanup_after_job, s.claim_min_idle_s) == (20, tmp_path, False, 40)
    assert (s.agent_command, s.log_format, s.max_deliveries, s.shutdown_timeout_s) == ("opt-agent", "pretty", 9, 11)
    assert (s.allowed_git_hosts, s.allow_http) == (("opt.example.com",), True)


def test_options_given_as_none_leave_the_environment() -> None:
    s = load({"MAX_CONCURRENT_JOBS": "5", "CLEANUP_AFTER_JOB": "false"}, concurrency=None, cleanup=None)
    assert (s.max_concurrent_jobs, s.cleanup_after_job) == (5, False)


def test_false_option_overrides_true_environment() -> None:
    assert load({"CLEANUP_AFTER_JOB": "true"}, cleanup=False).cleanup_after_job is False
    assert load({"ALLOW_HTTP_REMOTES": "true"}, allow_http=False).allow_http is False


# -- refusals: one clear line naming the setting ---------------------------------------------------


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MAX_JOBS_PER_USER": "-1"}, "MAX_JOBS_PER_USER must be at least 1, got -1"),
        ({"MAX_JOBS_PER_USER": "0"}, "MAX_JOBS_PER_USER must be at least 1, got 0"),
        ({"MAX_CONCURRENT_JOBS": "0"}, "MAX_CONCURRENT_JOBS must be at least 1"),
        ({"MAX_CONCURRENT_JOBS": "-3"}, "MAX_CONCURRENT_JOBS must be at least 1"),
        ({"MAX_DELIVERIES": "0"}, "MAX_DELIVERIES must be at least 1"),
        ({"JOB_TIMEOUT": "0"}, "JOB_TIMEOUT must be more than 0 seconds"),
        ({"JOB_TIMEOUT": "-5"}, "JOB_TIMEOUT must be more than 0 seconds"),
        ({"CLAIM_MIN_IDLE": "0"}, "CLAIM_MIN_IDLE must be at least 1 seconds"),
        ({"CLAIM_MIN_IDLE": "0.5"}, "CLAIM_MIN_IDLE must be at least 1 seconds"),
        ({"SHUTDOWN_TIMEOUT": "-1"}, "SHUTDOWN_TIMEOUT must be more than 0 seconds"),
        ({"MAX_JOBS_PER_USER": "abc"}, "MAX_JOBS_PER_USER must be a whole number, got 'abc'"),
        ({"MAX_CONCURRENT_JOBS": "1.5"}, "MAX_CONCURRENT_JOBS must be a whole number"),
        ({"MAX_CONCURRENT_JOBS": "ten"}, "MAX_CONCURRENT_JOBS must be a whole number"),
        ({"JOB_TIMEOUT": "abc"}, "JOB_TIMEOUT must be a number of seconds, got 'abc'"),
        ({"JOB_TIMEOUT": "1h"}, "JOB_TIMEOUT must be a number of seconds"),
        ({"JOB_TIMEOUT": "nan"}, "JOB_TIMEOUT must be more than 0 seconds"),
        ({"JOB_TIMEOUT": "inf"}, "JOB_TIMEOUT must be more than 0 seconds"),
        ({"CLAIM_MIN_IDLE": "soon"}, "CLAIM_MIN_IDLE must be a number of seconds"),
        ({"CLEANUP_AFTER_JOB": "maybe"}, "CLEANUP_AFTER_JOB must be true or false, got 'maybe'"),
        ({"ALLOW_HTTP_REMOTES": "2"}, "ALLOW_HTTP_REMOTES must be true or false"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be 'pretty' or 'json', got 'xml'"),
        ({"LOG_FORMAT": "rich"}, "LOG_FORMAT must be 'pretty' or 'json'"),
    ],
)
def test_bad_environment_values_are_refused(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(env)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"concurrency": 0}, "MAX_CONCURRENT_JOBS must be at least 1"),
        ({"max_jobs_per_user": -1}, "MAX_JOBS_PER_USER must be at least 1"),
        ({"job_timeout": 0.0}, "JOB_TIMEOUT must be more than 0 seconds"),
        ({"claim_min_idle": -1.0}, "CLAIM_MIN_IDLE must be at least 1 seconds"),
        ({"max_deliveries": 0}, "MAX_DELIVERIES must be at least 1"),
        ({"shutdown_timeout": 0.0}, "SHUTDOWN_TIMEOUT must be more than 0 seconds"),
        ({"log_format": "yaml"}, "LOG_FORMAT must be 'pretty' or 'json'"),
    ],
)
def test_bad_option_values_are_refused(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        load({}, **options)


def test_a_bad_option_is_refused_even_when_the_environment_is_fine() -> None:
    with pytest.raises(SettingsError, match="MAX_CONCURRENT_JOBS must be at least 1"):
        load({"MAX_CONCURRENT_JOBS": "4"}, concurrency=0)


@pytest.mark.parametrize("key", ["short", "ab" * 31, "ab" * 33, "x" * 31, "x" * 33])
def test_bad_encryption_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        load({"ENCRYPTION_KEY": key})
    assert key not in str(info.value)
    assert isinstance(info.value, SettingsError)


def test_require_key() -> None:
    with pytest.raises(SettingsError, match="ENCRYPTION_KEY is not set"):
        load().require_key()
    assert load({"ENCRYPTION_KEY": HEX_KEY}).require_key().key_bytes == bytes.fromhex(HEX_KEY)


def test_key_is_never_in_the_settings_repr() -> None:
    text = repr(load({"ENCRYPTION_KEY": HEX_KEY, "AGENT_ENV": "API", "API": "sk-secret"}))
    assert HEX_KEY not in text and "sk-secret" not in text


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"RUNNER_ID": "a/b"}, "RUNNER_ID"),
        ({"RUNNER_ID": "x" * 129}, "RUNNER_ID"),
        ({"MAX_CONCURRENT_JOBS": "100000"}, "at most 256"),
        ({"ALLOWED_GIT_HOSTS": "bad host"}, "ALLOWED_GIT_HOSTS"),
        ({"ALLOWED_GIT_HOSTS": "gitlab.example.com,https://x"}, "ALLOWED_GIT_HOSTS"),
    ],
)
def test_settings_that_cannot_work_are_refused(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        load(env)


def test_host_list_accepts_hosts_and_ports() -> None:
    assert load({"ALLOWED_GIT_HOSTS": "GitLab.example.com, 127.0.0.1:8443"}).allowed_git_hosts == (
        "gitlab.example.com",
        "127.0.0.1:8443",
    )


def test_a_misspelled_setting_is_named_with_the_one_meant_and_other_variables_are_left_alone() -> None:
    env = {
        "AGENT_SANBOX": "none",
        "MAX_CONCURENT_JOBS": "3",
        "REDIS_PORT": "6379",  # a container link's variable: not ours, not close to one
        "RUNNER_NAME": "r1",
        "PATH": "/usr/bin",
        "REPOBOX_DEBUG": "1",
        "REPOBOX_RUN_OPTIONS": "{}",
        "ENCRYPTION_KEY_FILE": "/run/secrets/key",
        "GIT_SSL_CAINFO": "/etc/ca.pem",
    }
    assert misspelled(env) == [
        "AGENT_SANBOX is not a setting: did you mean AGENT_SANDBOX? (it is ignored)",
        "MAX_CONCURENT_JOBS is not a setting: did you mean MAX_CONCURRENT_JOBS? (it is ignored)",
    ]


def test_the_names_read_outside_the_settings_table_are_known_to_the_spelling_check() -> None:
    assert {failures.DEBUG_ENV, engine.OPTIONS_ENV} <= set(OTHER_ENV_NAMES)
