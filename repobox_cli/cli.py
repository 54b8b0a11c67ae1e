"""The `repobox` command line: parse, build settings, call one function, render, exit."""

from __future__ import annotations

import functools
import getpass
import inspect
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

# Only what defining the commands needs: a command imports the Redis client and the engine's
# modules when it runs, so `--help`, `decrypt` and `completion` start without them.
from repobox_cli import (
    __version__,
    completions,
    config_report,
    envscrub,
    keys,
    sandbox,
    tokens,
    validation,
)
from repobox_cli.control import StopReason
from repobox_cli.crypto import decrypt as decrypt_token
from repobox_cli.crypto import mask_token, token_kind
from repobox_cli.errors import BadInput, RepoboxError, SettingsError
from repobox_cli.failures import DEBUG_ENV, failure, internal_error_line
from repobox_cli.jobs import Status
from repobox_cli.logs import setup_logging
from repobox_cli.output_limits import AGENT_SOURCE
from repobox_cli.settings import (
    DECRYPT,
    EXEC,
    MAX_SECONDS,
    PENDING,
    RUN,
    SECRET_ENV_NAMES,
    Settings,
    load_settings,
    misspelled,
    options_for,
    setting_sources,
)

if TYPE_CHECKING:
    import redis

    from repobox_cli import admin, checks
    from repobox_cli.status import StatusReport

app = typer.Typer(
    name="repobox",
    help="The Repobox job runner: takes code-agent jobs from Redis, clones, runs the agent, pushes a branch.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
HEALTH_TIMEOUT_S = 0.5
SIGINT_EXIT_CODE = 130
STATUS_REFRESH_S = 2.0
out_console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def setting_options(command: str) -> Callable[[F], F]:
    """Give a command the table's options for it (`settings.SETTINGS`): each becomes a keyword
    parameter (default None: not given) that reaches `load_settings` through `**overrides`."""

    def add(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = []
        for setting in options_for(command):
            help_text = f"{setting.help} (env: {setting.env}; default: {setting.shown_default})".replace("`", "")
            annotation = Annotated[setting.option_type | None, typer.Option(setting.option, help=help_text)]  # type: ignore[name-defined]
            extra.append(
                inspect.Parameter(setting.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
            )
        func.__signature__ = signature.replace(parameters=params + extra)  # type: ignore[attr-defined]
        func.__annotations__ = {**func.__annotations__, **{p.name: p.annotation for p in extra}}
        return func

    return add


log = logging.getLogger("repobox_cli.cli")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(Text(f"repobox: {message}"), soft_wrap=True)
    raise typer.Exit(code)


def one_line_errors(func: F) -> F:
    """Every failure ends as one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            ended = failure(exc)
            if ended is None:
                raise  # a bug: main() words it
            fail(*ended)

    return wrapper  # type: ignore[return-value]


def _connected(settings: Settings, *, full_check: bool = False) -> redis.Redis:
    """The one client of this command, after `check_server` (version and cluster with `full_check`)."""
    from repobox_cli.redis_conn import connect

    return connect(settings.redis, block_ms=settings.block_ms, full_check=full_check)


@app.command()
@one_line_errors
@setting_options(RUN)
def run(
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit 0 once nothing is left to deliver and nothing runs")
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Check the settings, Redis and the agent sandbox on this host, run no job; "
            "exit 0 if all is well, else 2",
        ),
    ] = False,
    **overrides: Any,
) -> None:
    """The long-lived worker: consume jobs:stream and run jobs."""
    if check:
        raise typer.Exit(_check(overrides))
    from repobox_cli import engine

    engine.exec_engine(overrides, burst=burst)  # which reads the settings, and refuses bad ones


def _check(options: dict[str, Any], run_checks: Callable[[Settings], list[checks.Check]] | None = None) -> int:
    """`run --check` (and `config --check`: `checks.host_checks`): one line per check; 0 when every
    check passed, else 2."""
    from repobox_cli import checks

    run_checks = run_checks or checks.run_checks
    try:
        settings = load_settings(command=RUN, **options)
    except SettingsError as exc:
        out_console.print(Text(checks.Check(checks.Verdict.FAIL, "settings", str(exc)).line), soft_wrap=True)
        return 2
    names = [checks.Check(checks.Verdict.WARN, "settings", line) for line in misspelled(os.environ)]
    found = [checks.Check(checks.Verdict.OK, "settings", "valid"), *names, *run_checks(settings)]
    for check in found:
        out_console.print(Text(check.line), soft_wrap=True)
    return 2 if any(c.verdict is checks.Verdict.FAIL for c in found) else 0


def _render_output(line: str, stream: str, source: str) -> None:
    from_agent = source == AGENT_SOURCE
    style = "red" if stream == "stderr" else ("cyan" if from_agent else "")
    prefix = "agent │ " if from_agent else "      │ "
    out_console.print(Text(prefix + line, style=style), soft_wrap=True)


@app.command("exec")
@one_line_errors
@setting_options(EXEC)
def exec_job(
    job_id: Annotated[str, typer.Argument(help="The job to run now")],
    no_push: Annotated[bool, typer.Option("--no-push", help="Do everything but push")] = False,
    keep_workdir: Annotated[bool, typer.Option("--keep-workdir", help="Keep TEMP_DIR/<job> for inspection")] = False,
    **overrides: Any,
) -> None:
    """Run one job now, in the foreground, writing to Redis as a worker would."""
    settings = load_settings(command=EXEC, **overrides)
    settings.require_key()
    envscrub.scrub(SECRET_ENV_NAMES)
    setup_logging(settings.log_format)
    sandbox.require(settings)
    from repobox_cli.active import RunOutcome  # the engine: only `exec` pays for importing it
    from repobox_cli.executor import ExecOptions
    from repobox_cli.single import SingleJob

    single = SingleJob(
        settings, _connected(settings, full_check=True), ExecOptions(push=not no_push, keep_workdir=keep_workdir)
    )

    def interrupt(_signum: int, _frame: object) -> None:
        if single.control.stopped.is_set():
            single.hard_stop.set()  # second signal: stop waiting for Redis too
        single.control.cancel(StopReason.INTERRUPTED)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    outcome = single.run(job_id, _render_output)
    if keep_workdir and single.work_dir:
        out_console.print(Text(f"work directory kept: {single.work_dir}"), soft_wrap=True)
    # --no-push returns a job whose steps all succeeded to pending: that run succeeded.
    if outcome is RunOutcome.INTERRUPTED:
        out_console.print(Text(f"job {job_id}: {outcome}", style="bold yellow"))
        raise typer.Exit(SIGINT_EXIT_CODE)
    ok = outcome in (RunOutcome.SUCCESS, RunOutcome.PENDING)
    out_console.print(Text(f"job {job_id}: {outcome}", style="bold green" if ok else "bold red"))
    raise typer.Exit(0 if ok else 1)


@app.command()
@one_line_errors
@setting_options(DECRYPT)
def decrypt(
    ciphertext: Annotated[
        str | None, typer.Argument(help="iv:authTag:ciphertext (base64); read from stdin when absent")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="User id of a stored provider token")] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="Provider id of a stored provider token")] = None,
    **overrides: Any,
) -> None:
    """Decrypt a token and show it masked, with the key format and the token's kind."""
    settings = load_settings(command=DECRYPT, **overrides)
    key = settings.require_key()
    source = _ciphertext_source(settings, ciphertext, user, provider)
    token = decrypt_token(source, key)
    table = Table(show_header=False, box=None)
    table.add_row("token", mask_token(token))
    table.add_row("kind", token_kind(token))
    table.add_row("length", f"{len(token)} characters")
    table.add_row("key format", key.key_format)
    out_console.print(table)


def _ciphertext_source(settings: Settings, ciphertext: str | None, user: str | None, provider: str | None) -> str:
    if (user is None) != (provider is None):
        raise RepoboxError("--user and --provider go together")
    if user is not None and provider is not None:
        if ciphertext is not None:
            raise RepoboxError("give a ciphertext or --user/--provider, not both")
        key_name = keys.git_provider(validation.key_part(user, "--user"), validation.key_part(provider, "--provider"))
        stored = _connected(settings).hget(key_name, "token")
        if not stored:
            raise RepoboxError(f"no token stored at {key_name}")
        return str(stored)
    if ciphertext is None:
        if sys.stdin.isatty():
            raise RepoboxError("give a ciphertext as argument or on stdin, or --user and --provider")
        try:
            ciphertext = sys.stdin.buffer.read().decode("ascii")
        except UnicodeDecodeError:
            raise RepoboxError("the ciphertext on stdin is not base64 text") from None
    if not ciphertext.strip():
        raise RepoboxError("the ciphertext is empty")
    return ciphertext


@app.command()
@one_line_errors
@setting_options(PENDING)
def pending(
    claim: Annotated[
        bool, typer.Option("--claim", help="Hand entries idle longer than --min-idle back for delivery")
    ] = False,
    min_idle: Annotated[float | None, typer.Option("--min-idle", help="Seconds; default CLAIM_MIN_IDLE")] = None,
    claim_runner: Annotated[
        str | None,
        typer.Option(
            "--runner",
            help="With --claim: hand back every entry of this runner at once, alive or not (fencing makes "
            "a mistake harmless: a live runner stops the job without writing)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    **overrides: Any,
) -> None:
    """The group's pending entries, lag, consumers and dead letters."""
    if min_idle is not None and not 0 <= min_idle <= MAX_SECONDS:
        raise SettingsError(f"--min-idle must be a number of seconds from 0 to {MAX_SECONDS:.0f} (ten years)")
    from repobox_cli.pending import claim_idle, pending_report

    settings = load_settings(command=PENDING, **overrides)
    client = _connected(settings)
    idle_s = settings.claim_min_idle_s if min_idle is None else min_idle
    if claim_runner is not None and not claim:
        raise SettingsError("--runner goes with --claim")
    handed = claim_idle(client, idle_s, claim_runner) if claim else []
    report = pending_report(client, settings.claim_min_idle_s)
    if as_json:
        data = report.as_json()
        if claim:
            data["claimed"] = handed
        out_console.print_json(json.dumps(data))
        return
    _print_report(report, handed if claim else None)


def _print_report(report: Any, handed: list[str] | None) -> None:
    if not report.group_exists:
        out_console.print(f"no consumer group {keys.RUNNERS_GROUP} on {keys.JOBS_STREAM} yet")
    else:
        out_console.print(
            f"stream {keys.JOBS_STREAM}: {report.stream_length} entries, lag {report.lag}, "
            f"{len(report.entries)} pending"
        )
    entries = Table(title="pending entries")
    for col in ("entry", "consumer", "idle", "deliveries", "job", "user", "job status", "claimable"):
        entries.add_column(col)
    for e in report.entries:
        entries.add_row(
            e.entry_id,
            e.consumer,
            f"{e.idle_ms / 1000:.1f}s",
            str(e.deliveries),
            e.job_id,
            e.user_id,
            e.job_status,
            "yes" if e.claimable else "no",
        )
    out_console.print(entries)
    consumers = Table(title="consumers")
    for col in ("consumer", "host", "pid", "jobs", "heartbeat", "idle", "pending", "alive"):
        consumers.add_column(col, overflow="fold")
    for c in report.consumers:
        jobs = f"{c.running} running, {c.waiting} waiting" if c.running is not None else "-"
        beat = f"{c.heartbeat_age_ms / 1000:.1f}s ago" if c.heartbeat_age_ms is not None else "gone"
        consumers.add_row(
            c.name,
            c.host or "-",
            str(c.pid or "-"),
            jobs,
            beat,
            f"{c.idle_ms / 1000:.1f}s",
            str(c.pending),
            "yes" if c.alive else "no",
        )
    out_console.print(consumers)
    dead = Table(title=f"dead letters ({keys.DEAD_LETTERS_STREAM})")
    for col in ("id", "entry", "job", "deliveries", "reason"):
        dead.add_column(col)
    for d in report.dead_letters:
        dead.add_row(d.id, d.entry_id, d.job_id, d.deliveries, d.reason)
    out_console.print(dead)
    if handed is not None:
        out_console.print(f"handed back {len(handed)} entr{'y' if len(handed) == 1 else 'ies'} for delivery")


def _status_renderable(report: StatusReport) -> Group:
    """The report as tables that fold (never truncate) ids in 80 columns."""
    runners = Table(title=f"runners ({len(report.runners)} live)", expand=False)
    runners.add_column("runner", no_wrap=True)  # ids are copied from here: never folded or cut
    for col in ("host", "pid", "started (UTC)", "jobs", "heartbeat"):
        runners.add_column(col, overflow="fold")
    for r in report.runners:
        started = time.strftime("%m-%d %H:%M:%S", time.gmtime(r.started_at / 1000)) if r.started_at else "-"
        jobs = f"{r.running} running, {r.waiting} waiting of {r.concurrency or '-'}"
        runners.add_row(r.runner_id, r.host, str(r.pid or "-"), started, jobs, f"{r.heartbeat_age_ms / 1000:.1f}s ago")
    slots = Table(title="user slots in use")
    slots.add_column("user", no_wrap=True)
    slots.add_column("slots")
    for user, count in sorted(report.slots.items()):
        slots.add_row(user, str(count))
    finished = ", ".join(f"{n} {s}" for s, n in sorted(report.finished_last_hour.items())) or "none"
    summary = Text(
        f"{keys.JOBS_STREAM}: {report.stream_length} entries, lag {report.lag if report.lag is not None else '-'}, "
        f"{report.pending} pending; dead letters: {report.dead_letters}; finished in the last hour: {finished}"
    )
    return Group(runners, slots, summary)


@app.command()
@one_line_errors
@setting_options(PENDING)
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh in place every 2 s until Ctrl-C")] = False,
    **overrides: Any,
) -> None:
    """Live runners, user slots in use, the stream, dead letters, jobs finished in the last hour."""
    from repobox_cli.status import status_report

    client = _connected(load_settings(command=PENDING, **overrides))
    if as_json:
        out_console.print_json(json.dumps(status_report(client).as_json()))
        return
    if not watch:
        out_console.print(_status_renderable(status_report(client)))
        return
    with Live(_status_renderable(status_report(client)), console=out_console, auto_refresh=False) as live:
        while True:
            time.sleep(STATUS_REFRESH_S)
            live.update(_status_renderable(status_report(client)), refresh=True)


@app.command()
@one_line_errors
@setting_options(RUN)
def config(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Also check Redis (and its version), the key against stored tokens, the sandbox, TEMP_DIR and git; "
            "exit 2 if any check fails",
        ),
    ] = False,
    **overrides: Any,
) -> None:
    """The settings `run` would use, where each comes from (option, env, file, default); secrets hidden."""
    if check:
        from repobox_cli import checks

        raise typer.Exit(_check(overrides, checks.host_checks))
    settings = load_settings(command=RUN, **overrides)
    table = Table(box=None, pad_edge=False)
    for column in ("setting", "value", "from"):
        table.add_column(column, overflow="fold")
    for row in config_report.effective_settings(settings, setting_sources(**overrides)):
        table.add_row(row.env, Text(row.value), str(row.source))
    out_console.print(table)


@app.command()
def completion(
    shell: Annotated[completions.Shell, typer.Argument(help="bash, zsh or fish", case_sensitive=False)],
) -> None:
    """Print the shell completion script (the same as completions/ in the source); see README."""
    sys.stdout.write(completions.render(shell.value))


def _render_web_line(line: admin.OutputLine) -> None:
    """A line as the web app's terminal view shows it: stderr red with ✗, agent lines marked."""
    if line.stream == "stderr":
        out_console.print(Text(f"✗ {line.line}", style="red"), soft_wrap=True)
    else:
        _render_output(line.line, line.stream, line.source)


@app.command()
@one_line_errors
@setting_options(PENDING)
def enqueue(
    user: Annotated[str, typer.Option("--user", help="The web app's user id, e.g. github:12345678")],
    provider: Annotated[str, typer.Option("--provider", help="The user's git provider id (its token is used)")],
    repo: Annotated[str, typer.Option("--repo", help="The repository's https:// URL")],
    prompt: Annotated[str, typer.Option("--prompt", help="What the agent should do")],
    branch: Annotated[str, typer.Option("--branch", help="Base branch")] = "main",
    environment: Annotated[str, typer.Option("--environment", help="The job's environment")] = "default",
    **overrides: Any,
) -> None:
    """Create a job exactly as the web app does (hash, user index, stream entry); print its id."""
    from repobox_cli import admin

    client = _connected(load_settings(command=PENDING, **overrides))
    job_id = admin.enqueue(client, admin.NewJob(user, provider, repo, prompt, branch, environment))
    out_console.print(job_id)


@app.command()
@one_line_errors
@setting_options(PENDING)
def logs(
    job_id: Annotated[str, typer.Argument(help="The job")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Tail until the job is final; exit 0 on success, else 1")
    ] = False,
    **overrides: Any,
) -> None:
    """The job's output as the web app shows it."""
    from repobox_cli import admin

    client = _connected(load_settings(command=PENDING, **overrides))
    for line in admin.output_lines(client, job_id, follow=follow):
        _render_web_line(line)
    if follow:
        status = admin.job_status(client, job_id)
        out_console.print(Text(f"job {job_id}: {status}", style="bold"))
        raise typer.Exit(0 if status == Status.SUCCESS else 1)


@app.command()
@one_line_errors
@setting_options(PENDING)
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job")],
    **overrides: Any,
) -> None:
    """What the web app's cancel does: a queued job never starts, a running one is stopped."""
    from repobox_cli import admin

    status = admin.cancel(_connected(load_settings(command=PENDING, **overrides)), job_id)
    out_console.print(f"job {job_id}: {status}")


@app.command()
@one_line_errors
@setting_options(PENDING)
def retry(
    job_id: Annotated[str, typer.Argument(help="A failed, cancelled or dead-lettered job")],
    **overrides: Any,
) -> None:
    """Put a failed, cancelled or dead-lettered job back to pending and enqueue it again."""
    from repobox_cli import admin

    admin.retry(_connected(load_settings(command=PENDING, **overrides)), job_id)
    out_console.print(f"job {job_id}: pending (enqueued again)")


@app.command()
@setting_options(PENDING)
def health(
    runner_id: Annotated[
        str | None, typer.Option("--runner-id", help="Also require this runner's heartbeat to be fresh")
    ] = None,
    **overrides: Any,
) -> None:
    """A liveness/readiness probe, by exit code: 0 healthy, 1 Redis unreachable, 2 bad settings,
    3 no consumer group, 4 runner gone, 5 runner's heartbeat stale."""
    from repobox_cli import admin

    try:
        from repobox_cli.redis_conn import open_client

        settings = load_settings(command=PENDING, **overrides)
        client = open_client(settings.redis, socket_timeout_s=HEALTH_TIMEOUT_S)
    except SettingsError as exc:
        fail(str(exc), 2)
    except RepoboxError as exc:
        fail(str(exc), admin.Health.REDIS_UNREACHABLE)
    code, message = admin.health(client, runner_id)
    (out_console if code is admin.Health.OK else err_console).print(Text(message), soft_wrap=True)
    raise typer.Exit(int(code))


@app.command()
@one_line_errors
def demo(
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="Use this Redis instead of starting a throwaway one (a scratch one: the demo's worker "
            "takes any job queued there)",
        ),
    ] = None,
) -> None:
    """Try it: a throwaway Redis and HTTPS git remote, one job run by the worker, the result shown."""
    from repobox_cli.demo.command import demo as run_demo

    raise typer.Exit(run_demo(out_console, redis_url))


token_app = typer.Typer(help="Store a provider token as the web app does, or check a stored one against a repository.")
app.add_typer(token_app, name="token")
MAX_TOKEN_INPUT_BYTES = 64 * 1024


def _read_token() -> str:
    """The token from a hidden prompt on a terminal, else from stdin: never from the command line."""
    if sys.stdin.isatty():
        return getpass.getpass("Token (input hidden): ").strip()
    data = sys.stdin.buffer.read(MAX_TOKEN_INPUT_BYTES + 1)
    if len(data) > MAX_TOKEN_INPUT_BYTES:
        raise BadInput("the token on stdin is too large")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadInput("the token on stdin is not UTF-8 text") from None


@token_app.command("set")
@one_line_errors
@setting_options(DECRYPT)
def token_set(
    user: Annotated[str, typer.Option("--user", help="The web app's user id, e.g. github:12345678")],
    provider: Annotated[str, typer.Option("--provider", help="The provider id (a uuid, as the web app makes them)")],
    provider_type: Annotated[tokens.ProviderType, typer.Option("--type", help="github or gitlab")],
    url: Annotated[str, typer.Option("--url", help="The provider's base URL, e.g. https://github.com")],
    **overrides: Any,
) -> None:
    """Store a provider token as the web app does (git_provider:{user}:{provider}).

    The token is read from a hidden prompt on a terminal, else from stdin; never from the command line."""
    settings = load_settings(command=DECRYPT, **overrides)
    key = settings.require_key()
    tokens.provider_url(url)  # before asking for the token
    client = _connected(settings)
    token = tokens.checked_token(_read_token())
    stored = tokens.store(client, key, user, provider, provider_type, url, token)
    verb = "created" if stored.created else "updated"
    out_console.print(
        Text(f"{verb} {stored.key}: {provider_type} at {tokens.provider_url(url)}, token {mask_token(token)}"),
        soft_wrap=True,
    )


@token_app.command("check")
@one_line_errors
@setting_options(DECRYPT)
def token_check(
    user: Annotated[str, typer.Option("--user", help="The web app's user id")],
    provider: Annotated[str, typer.Option("--provider", help="The provider id")],
    repo: Annotated[
        str | None, typer.Option("--repo", help="A repository URL to list with the token (git ls-remote)")
    ] = None,
    **overrides: Any,
) -> None:
    """Decrypt a stored token and, with --repo, try it there (git ls-remote).

    Exit 0 ok; 1 the token does not decrypt, or the repository refused it or cannot be reached; 2 bad input."""
    settings = load_settings(command=DECRYPT, **overrides)
    result = tokens.check(_connected(settings), settings, settings.require_key(), user, provider, repo)
    line = f"ok: token {result.masked} ({result.kind}) decrypts"
    if result.repo_url:
        line += f"; {result.repo_url} accepts it (default branch {result.default_branch or 'none'})"
    out_console.print(Text(line), soft_wrap=True)


def _help_when_bare(ctx: typer.Context) -> None:
    """A group called without a command prints its help once and exits 0."""
    if ctx.invoked_subcommand is None:
        out_console.print(ctx.get_help(), end="")
        raise typer.Exit(0)


@token_app.callback(invoke_without_command=True)
def _token_root(ctx: typer.Context) -> None:
    _help_when_bare(ctx)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit")] = False,
) -> None:
    if version:
        out_console.print(f"repobox {__version__}")
        raise typer.Exit(0)
    _help_when_bare(ctx)


def main() -> None:
    """Entry point: usage errors too end as one line (exit 2), never Typer's multi-line box."""
    try:
        result = app(standalone_mode=False)
    except typer.TyperException as exc:  # usage errors (click's, carried by Typer): exit 2
        err_console.print(Text(f"repobox: {exc.format_message()}"), soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except Exception as exc:  # a bug: one line, the traceback only when asked for
        if os.environ.get(DEBUG_ENV):
            raise
        err_console.print(Text(f"repobox: {internal_error_line(exc)}"), soft_wrap=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
