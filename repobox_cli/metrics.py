"""Prometheus metrics of one runner (`repobox run --metrics-port N`): the definitions, the hooks
the engine calls, and the HTTP endpoint.

Each runner has its own `CollectorRegistry`, found by the hooks through the runner id (the
consumer name every attempt, sweeper and admission carries), so several runners in one process
never mix; a hook for a runner without metrics (`exec`, a runner without a port) does nothing.

Threads: hooks run on worker, consumer and supervisor threads; prometheus_client's metrics are
thread-safe and `_registered` has its own lock, held only to look a runner up. prometheus_client
is imported only when a runner serves metrics: the hooks cost other commands nothing. Live values
(running, waiting, stream lag, Redis reconnects) are read when Prometheus scrapes, on the HTTP
server's thread: the lag with one XINFO GROUPS per stream, never under an engine lock.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from repobox_cli import __version__
from repobox_cli.errors import SettingsError

if TYPE_CHECKING:
    import redis
    from prometheus_client import Counter, Histogram
    from prometheus_client.registry import Collector

    from repobox_cli.active import ActiveJob, RunOutcome
    from repobox_cli.runner import Runner

log = logging.getLogger(__name__)

JOB_DURATION_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
STEP_DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

# name -> help: the README's metrics table is checked against this (tests/e2e/test_metrics.py).
DOCUMENTED: dict[str, str] = {
    "repobox_runner_info": "this runner: runner_id and version labels, value 1",
    "repobox_jobs_finished_total": "work finished on this runner, by kind and outcome (success, failed, cancelled, "
    "lost, handed back, missing, error)",
    "repobox_job_duration_seconds": "histogram: from the start of an attempt to its end, by kind",
    "repobox_step_duration_seconds": "histogram: one step of an attempt (clone, agent, commit, push)",
    "repobox_jobs_running": "attempts running on this runner now",
    "repobox_jobs_waiting": "entries held by this runner for a user at MAX_JOBS_PER_USER",
    "repobox_workers": "worker threads (MAX_CONCURRENT_JOBS)",
    "repobox_stream_lag": "entries of a stream not yet delivered to its group (XINFO GROUPS lag)",
    "repobox_stream_pending": "entries of a stream delivered and not yet acknowledged, fleet-wide",
    "repobox_takeovers_total": "entries this runner took over from runners gone silent, by stream",
    "repobox_dead_letters_total": "entries this runner moved to the dead letters (MAX_DELIVERIES), by stream",
    "repobox_redis_reconnects_total": "times this runner's connection to Redis came back after a loss",
    "repobox_output_lines_dropped_total": "output lines dropped by MAX_OUTPUT_LINES / MAX_OUTPUT_BYTES, by kind",
}


class RunnerMetrics:
    """The counters and histograms of one runner, in its own registry."""

    def __init__(self, runner_id: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.runner_id = runner_id
        self.registry = CollectorRegistry()
        r = self.registry
        d = DOCUMENTED
        self.finished: Counter = Counter(
            "repobox_jobs_finished", d["repobox_jobs_finished_total"], ["kind", "status"], registry=r
        )
        self.job_duration: Histogram = Histogram(
            "repobox_job_duration_seconds",
            d["repobox_job_duration_seconds"],
            ["kind"],
            buckets=JOB_DURATION_BUCKETS_S,
            registry=r,
        )
        self.step_duration: Histogram = Histogram(
            "repobox_step_duration_seconds",
            d["repobox_step_duration_seconds"],
            ["step"],
            buckets=STEP_DURATION_BUCKETS_S,
            registry=r,
        )
        self.takeovers: Counter = Counter("repobox_takeovers", d["repobox_takeovers_total"], ["stream"], registry=r)
        self.dead_letters: Counter = Counter(
            "repobox_dead_letters", d["repobox_dead_letters_total"], ["stream"], registry=r
        )
        self.output_dropped: Counter = Counter(
            "repobox_output_lines_dropped", d["repobox_output_lines_dropped_total"], ["kind"], registry=r
        )


_lock = threading.Lock()
_registered: dict[str, RunnerMetrics] = {}


def _for(runner_id: str) -> RunnerMetrics | None:
    with _lock:
        return _registered.get(runner_id)


# -- the hooks the engine calls (one line each at the call site) --------------------------------------


def work_finished(active: ActiveJob, outcome: RunOutcome) -> None:
    """An attempt ended on a worker: its outcome, duration and the output lines its caps dropped."""
    metrics = _for(active.attempt.consumer)
    if metrics is None:
        return
    metrics.finished.labels(active.lane, str(outcome)).inc()
    metrics.job_duration.labels(active.lane).observe(time.monotonic() - active.started_monotonic)
    if active.output.cut_lines:
        metrics.output_dropped.labels(active.lane).inc(active.output.cut_lines)


def taken_over(runner_id: str, stream: str, count: int) -> None:
    metrics = _for(runner_id)
    if metrics is not None and count:
        metrics.takeovers.labels(stream).inc(count)


def dead_lettered(runner_id: str, stream: str) -> None:
    metrics = _for(runner_id)
    if metrics is not None:
        metrics.dead_letters.labels(stream).inc()


class _HasSettings(Protocol):
    @property
    def settings(self) -> Any: ...


R = TypeVar("R")


def timed_step(step: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Decorate a method of an object with `.settings` (Git, Executor): its duration is observed as
    `step` for that runner, whether it succeeds or raises."""

    def decorate(method: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(method)
        def timed(self: _HasSettings, *args: Any, **kwargs: Any) -> R:
            started = time.monotonic()
            try:
                return method(self, *args, **kwargs)
            finally:
                metrics = _for(self.settings.runner_id)
                if metrics is not None:
                    metrics.step_duration.labels(step).observe(time.monotonic() - started)

        return timed

    return decorate


# -- live values, read at scrape time ----------------------------------------------------------------


@dataclass(frozen=True)
class EngineView:
    """What the collector reads from a running engine when Prometheus scrapes."""

    runner_id: str
    client: redis.Redis
    workers: int
    running: Callable[[], int]
    waiting: Callable[[], int]
    reconnects: Callable[[], int]
    groups: tuple[tuple[str, str], ...]  # (stream, group) of each lane


def _engine_collector(view: EngineView) -> Collector:
    from prometheus_client.registry import Collector

    class EngineCollector(Collector):
        def collect(self) -> Iterator[Any]:
            return _engine_samples(view)

    return EngineCollector()


def _engine_samples(v: EngineView) -> Iterator[Any]:
    """The live values as metric families."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    d = DOCUMENTED
    info = GaugeMetricFamily("repobox_runner_info", d["repobox_runner_info"], labels=["runner_id", "version"])
    info.add_metric([v.runner_id, __version__], 1)
    yield info
    yield GaugeMetricFamily("repobox_jobs_running", d["repobox_jobs_running"], value=v.running())
    yield GaugeMetricFamily("repobox_jobs_waiting", d["repobox_jobs_waiting"], value=v.waiting())
    yield GaugeMetricFamily("repobox_workers", d["repobox_workers"], value=v.workers)
    yield CounterMetricFamily("repobox_redis_reconnects", d["repobox_redis_reconnects_total"], value=v.reconnects())
    lag = GaugeMetricFamily("repobox_stream_lag", d["repobox_stream_lag"], labels=["stream"])
    pending = GaugeMetricFamily("repobox_stream_pending", d["repobox_stream_pending"], labels=["stream"])
    for stream, group in v.groups:
        found = _group_info(v.client, stream, group)
        if found is None:
            continue
        if found.get("lag") is not None:
            lag.add_metric([stream], float(found["lag"]))
        pending.add_metric([stream], float(found.get("pending") or 0))
    yield lag
    yield pending


def _group_info(client: redis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    import redis  # loaded already: this runs in the runner, which holds a client

    try:
        groups = client.xinfo_groups(stream)
    except (redis.RedisError, OSError) as exc:  # Redis away or no stream yet: no sample this scrape
        log.debug("metrics: XINFO GROUPS %s failed: %s", stream, exc)
        return None
    return next((dict(g) for g in groups if str(g.get("name")) == group), None)


# -- the endpoint ------------------------------------------------------------------------------------


REQUEST_TIMEOUT_S = 5.0  # a connection that sends no request in this time is closed


class MetricsServer:
    """`/metrics` of one runner over HTTP on a daemon thread; `close` stops it and forgets the runner.

    One request at a time, each connection closed after its answer or REQUEST_TIMEOUT_S of
    silence: whoever can reach the port (an agent, with AGENT_NETWORK=host) can at most delay a
    scrape. prometheus_client's own server starts a thread per connection and keeps an idle one
    open for ever, so idle connections could take every descriptor of the runner."""

    def __init__(self, metrics: RunnerMetrics, host: str, port: int) -> None:
        from http.server import HTTPServer

        self.metrics = metrics
        handler = _handler_for(metrics)
        try:
            self._server = HTTPServer((host, port), handler)
        except OSError as exc:
            raise SettingsError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        self.port = int(self._server.server_address[1])
        self.host = host

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with _lock:
            if _registered.get(self.metrics.runner_id) is self.metrics:
                del _registered[self.metrics.runner_id]


def _handler_for(metrics: RunnerMetrics) -> type[Any]:
    from http.server import BaseHTTPRequestHandler

    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S  # on every read of the connection

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0] not in ("/", "/metrics"):
                self.send_error(404)
                return
            body = generate_latest(metrics.registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
            pass  # a scrape every few seconds is no news

    return Handler


def serve(view: EngineView, host: str, port: int) -> MetricsServer:
    """Register a runner's metrics and serve them at http://host:port/metrics."""
    metrics = RunnerMetrics(view.runner_id)
    metrics.registry.register(_engine_collector(view))
    with _lock:
        _registered[view.runner_id] = metrics
    try:
        server = MetricsServer(metrics, host, port)
    except SettingsError:
        with _lock:
            _registered.pop(view.runner_id, None)
        raise
    log.info("metrics of runner %s at http://%s:%d/metrics", view.runner_id, host, server.port)
    return server


def view_of(runner: Runner) -> EngineView:
    """The engine's live values, as the runner holds them."""
    return EngineView(
        runner_id=runner.consumer,
        client=runner.client,
        workers=runner.pool.size,
        running=runner.pool.running_count,
        waiting=lambda: sum(len(lane.waiting) for lane in runner.lanes),
        reconnects=lambda: runner.health.recoveries,
        groups=tuple((lane.kind.stream, lane.kind.group) for lane in runner.lanes),
    )
