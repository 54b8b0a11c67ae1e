"""Every setting is declared once (`settings.SETTINGS`): the Settings dataclass, each command's
options and the README's table all follow from that table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer.main

from repobox_cli.cli import app
from repobox_cli.settings import (
    DECRYPT,
    EXEC,
    PENDING,
    RUN,
    SETTINGS,
    RedisSettings,
    Settings,
    load_settings,
    options_for,
    settings_markdown,
)

README = Path(__file__).resolve().parents[2] / "README.md"
DERIVED_FIELDS = {"git_env", "agent_env", "path_env"}  # passed through from the environment, not settings
COMMAND_OWN_OPTIONS = {
    RUN: {"--burst", "--check"},
    EXEC: {"--no-push", "--keep-workdir"},
    DECRYPT: {"--user", "--provider"},
    PENDING: {"--claim", "--runner", "--min-idle", "--json"},
}


def test_every_settings_field_is_declared_in_the_table() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)} - DERIVED_FIELDS - {"redis"}
    assert fields == {s.field for s in SETTINGS if not s.group}


def test_every_redis_connection_field_is_declared_in_the_table() -> None:
    fields = {f.name for f in dataclasses.fields(RedisSettings)} - {"url"}  # url is REDIS_URL
    assert fields == {s.field for s in SETTINGS if s.group == "redis"}


def test_each_environment_variable_and_option_is_declared_once() -> None:
    envs = [s.env for s in SETTINGS]
    options = [s.option for s in SETTINGS if s.option]
    assert len(envs) == len(set(envs)) and len(options) == len(set(options))


@pytest.mark.parametrize("command", [RUN, EXEC, DECRYPT, PENDING])
def test_each_command_takes_exactly_the_tables_options(command: str) -> None:
    group = typer.main.get_command(app)  # Typer's own click: duck-typed, not isinstance
    cmd = group.commands[command]  # type: ignore[attr-defined]
    flags = {flag for p in cmd.params if p.param_type_name == "option" for flag in p.opts + p.secondary_opts}
    wanted = {flag for s in options_for(command) for flag in s.option.split("/")}
    assert flags - {"--help"} == wanted | COMMAND_OWN_OPTIONS[command]


def test_the_readme_settings_table_is_the_generated_one() -> None:
    text = README.read_text()
    table = text.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert table == settings_markdown(), "run: python -m repobox_cli.settings, and paste it into README.md"


def test_a_command_does_not_read_settings_it_does_not_use() -> None:
    env = {"MAX_CONCURRENT_JOBS": "abc", "JOB_TIMEOUT": "-1", "AGENT_ENV": "REDIS_URL"}
    assert load_settings(env, command=PENDING).redis_url == "redis://localhost:6379"
    assert load_settings(env, command=DECRYPT).encryption_key is None


def test_an_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        load_settings({}, no_such_option=1)
