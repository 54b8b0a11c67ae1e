"""`repobox run --metrics-port`: Prometheus metrics scraped over HTTP while a real runner runs
jobs against a real Redis and the suite's HTTPS git server."""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from repobox_cli import __version__, metrics
from tests.support.redis_server import find_free_port
from tests.support.reliability_helpers import wait_agent_running, wait_ready, wait_status
from tests.support.world import World, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
SCRAPE_TIMEOUT_S = 5.0

pytestmark = pytest.mark.timeout(120)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> tuple[set[str], Samples]:
    """(the metric families' names, every sample by name and labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as reply:
        text = reply.read().decode()
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def metric(port: int, name: str, **labels: str) -> float:
    return value(scrape(port)[1], name, **labels)


def hold_agent(world: World) -> tuple[str, Path]:
    """An AGENT_COMMAND that waits until the returned file exists, then edits the README."""
    gate = world.tmp / "go"
    return f"while [ ! -e {gate} ]; do sleep 0.05; done; echo more >> README.md", gate


def test_metrics_endpoint_serves_the_documented_metrics_and_they_follow_the_jobs(world: World) -> None:
    port = find_free_port()
    agent, gate = hold_agent(world)
    world.start_runner("--metrics-port", str(port), name="metered", AGENT_COMMAND=agent, MAX_CONCURRENT_JOBS="1")
    wait_ready(world, ["metered"])
    first = world.add_job()
    wait_agent_running(world, first)
    second = world.add_job(user=world.user("second"))

    names, samples = scrape(port)
    assert set(metrics.DOCUMENTED) <= names
    assert value(samples, "repobox_runner_info", runner_id="metered", version=__version__) == 1
    assert value(samples, "repobox_workers") == 1
    assert value(samples, "repobox_jobs_running") == 1
    assert value(samples, "repobox_stream_lag", stream="jobs:stream") == 1  # no free worker: not read yet
    assert value(samples, "repobox_jobs_finished_total", kind="job", status="success") == 0

    gate.touch()
    wait_status(world, first, "success")
    wait_status(world, second, "success")

    wait_for(lambda: metric(port, "repobox_jobs_finished_total", kind="job", status="success") == 2, what="2 done")
    _, samples = scrape(port)
    assert value(samples, "repobox_jobs_running") == 0
    assert value(samples, "repobox_stream_lag", stream="jobs:stream") == 0
    assert value(samples, "repobox_job_duration_seconds_count", kind="job") == 2
    assert value(samples, "repobox_job_duration_seconds_sum", kind="job") > 0
    for step in ("clone", "agent", "commit", "push"):
        assert value(samples, "repobox_step_duration_seconds_count", step=step) == 2, step


def test_failures_dropped_output_takeovers_dead_letters_and_reconnects_are_counted(world: World) -> None:
    port = find_free_port()
    chatty = 'for i in $(seq 1 300); do echo "line $i"; done; [ "$REPOBOX_PROMPT" = fail ] && exit 3; true'
    world.start_runner(
        "--metrics-port", str(port), name="counted", AGENT_COMMAND=chatty, MAX_OUTPUT_LINES="100",
        CLAIM_MIN_IDLE="1", MAX_DELIVERIES="1",
    )  # fmt: skip
    wait_ready(world, ["counted"])
    failing = world.add_job(prompt="fail")
    wait_status(world, failing, "failed")
    wait_for(lambda: metric(port, "repobox_jobs_finished_total", kind="job", status="failed") == 1, what="failure")
    assert metric(port, "repobox_output_lines_dropped_total", kind="job") > 0

    # An entry a vanished runner read once: taken over, and past MAX_DELIVERIES=1 a dead letter.
    ghost = world.add_job(enqueue=False)
    pipe = world.client.pipeline(transaction=True)  # read by the ghost before the runner can
    job = world.job(ghost)
    fields = {k: job[k] for k in ("user_id", "provider_id", "repo_url", "prompt", "environment")}
    pipe.xadd("jobs:stream", {"job_id": ghost, **fields})
    pipe.xreadgroup("jobs:stream:runners", "ghost", {"jobs:stream": ">"}, count=1)
    pipe.execute()
    wait_for(lambda: metric(port, "repobox_dead_letters_total", stream="jobs:stream") == 1, what="a dead letter")
    assert metric(port, "repobox_takeovers_total", stream="jobs:stream") >= 1

    world.redis_server.stop()
    world.redis_server.start()
    wait_for(lambda: metric(port, "repobox_redis_reconnects_total") >= 1, timeout_s=30, what="a reconnect")


def test_a_metrics_port_in_use_stops_run_in_one_line(world: World) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = world.repobox("run", "--burst", "--metrics-port", str(busy.getsockname()[1]))

    assert result.returncode == 2, result.stderr
    assert "cannot serve metrics" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def engine_view(runner_id: str) -> metrics.EngineView:
    # No lanes: the collector makes no Redis call, so the client never connects.
    return metrics.EngineView(runner_id, redis.Redis(port=1), 2, lambda: 0, lambda: 0, lambda: 0, ())


def test_two_runners_in_one_process_keep_their_own_metrics() -> None:
    one = metrics.serve(engine_view("one"), "127.0.0.1", 0)
    two = metrics.serve(engine_view("two"), "127.0.0.1", 0)
    try:
        metrics.taken_over("one", "jobs:stream", 3)
        metrics.taken_over("nobody", "jobs:stream", 5)  # a runner without metrics: nothing happens

        assert metric(one.port, "repobox_takeovers_total", stream="jobs:stream") == 3
        assert metric(two.port, "repobox_takeovers_total", stream="jobs:stream") == 0
        assert metric(two.port, "repobox_runner_info", runner_id="two", version=__version__) == 1
    finally:
        one.close()
        two.close()
    metrics.taken_over("one", "jobs:stream", 1)  # closed: forgotten, no error


def test_the_readme_documents_every_metric() -> None:
    text = README.read_text()
    missing = [name for name in metrics.DOCUMENTED if f"`{name}`" not in text]
    assert not missing, f"README.md does not document {missing}"


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections to `port` that process `pid` holds open (its own sockets only:
    the runner's Redis connections come and go beside them)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            held += local_port == port and state == "01" and inode in inodes  # 01: ESTABLISHED
    return held


def test_idle_connections_to_the_metrics_port_hold_no_descriptors_of_the_runner_and_scrapes_go_on(
    world: World,
) -> None:
    """As an agent on the host network could do: open connections and send nothing."""
    port = find_free_port()
    runner = world.start_runner("--metrics-port", str(port), name="metered")
    wait_ready(world, ["metered"])
    engine = runner.process.pid  # `run` execs the engine: the same process
    idle = []
    try:
        for _ in range(60):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))  # accepted or queued by the kernel: never answered
            idle.append(sock)
        time.sleep(1.0)  # the connections sit idle, as an attacker's would (no state to wait for)
        held = connections_held(engine, port)
        assert held <= 1, f"the runner holds {held} of 60 idle connections open"
    finally:
        for sock in idle:
            sock.close()
    assert metric(port, "repobox_workers") == 4  # served again once the idle ones are gone
