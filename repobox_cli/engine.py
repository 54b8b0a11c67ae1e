"""The runner's own process. `repobox run` parses its options with the CLI, then replaces itself
(exec: the same pid, the same stdout and stderr) with `python -m repobox_cli.engine`, its options
passed in its environment. A runner lives for weeks: it should not hold
Typer, click, rich and pydantic (≈ 12 MiB) for the one parse they did. This module imports only
what running needs, and ends as the CLI does: one line on stderr and an exit status."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from repobox_cli import envscrub, metrics, sandbox
from repobox_cli.errors import SettingsError
from repobox_cli.failures import DEBUG_ENV, failure, internal_error_line
from repobox_cli.keycheck import check_key
from repobox_cli.logs import setup_logging
from repobox_cli.redis_conn import connect
from repobox_cli.settings import RUN, SECRET_ENV_NAMES, load_settings
from repobox_cli.stop_signals import StopSignals

MODULE = "repobox_cli.engine"
BURST = "--burst"
OPTIONS_ENV = "REPOBOX_RUN_OPTIONS"


def exec_engine(overrides: Mapping[str, Any], *, burst: bool) -> NoReturn:
    """Become the engine. The options given (None: not given) travel as JSON in OPTIONS_ENV, the
    same values `load_settings` got here (never on a command line; wiped once read)."""
    given = {name: value for name, value in overrides.items() if value is not None}
    env = {**os.environ, OPTIONS_ENV: json.dumps(given, default=str)}  # paths as text
    # -P: the directory `repobox run` was started in is not put on sys.path (a json.py or a
    # repobox_cli/ there would be imported by the runner instead of the real ones).
    argv = [sys.executable, "-P", "-m", MODULE, *([BURST] if burst else [])]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        print(f"repobox: cannot start the runner ({sys.executable}): {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)


def _options() -> dict[str, Any]:
    raw = os.environ.get(OPTIONS_ENV, "{}")
    try:
        options = json.loads(raw)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise SettingsError(f"{OPTIONS_ENV} is not what `repobox run` writes: start the runner with `repobox run`")
    return options


def run(burst: bool) -> int:
    """What `repobox run` does once its options are parsed; the exit status."""
    options = _options()
    envscrub.scrub((OPTIONS_ENV,))  # it may hold --redis-url's password
    settings = load_settings(command=RUN, **options)
    settings.require_key()
    envscrub.scrub(SECRET_ENV_NAMES)
    setup_logging(settings.log_format)
    sandbox.require(settings)
    client = connect(settings.redis, block_ms=settings.block_ms, full_check=True)
    check_key(client, settings.require_key())
    from repobox_cli.runner import Runner

    runner = Runner(settings, client, burst=burst)
    server = (
        None
        if settings.metrics_port is None
        else metrics.serve(metrics.view_of(runner), settings.metrics_host, settings.metrics_port)
    )
    signals = StopSignals()
    signals.install()
    try:
        return runner.run(signals)
    finally:
        if server is not None:
            server.close()


def main(argv: list[str]) -> int:
    if argv not in ([], [BURST]):
        print(f"repobox: {MODULE} is started by `repobox run`, not by hand", file=sys.stderr)
        return 2
    try:
        return run(burst=argv == [BURST])
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        ended = failure(exc)
        if ended is None:
            if os.environ.get(DEBUG_ENV):
                raise
            ended = internal_error_line(exc), 1
        print(f"repobox: {ended[0]}", file=sys.stderr)
        return ended[1]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
