"""Item 6: output latency, a line printed by the agent → readable in `job:{id}:output`. The agent
prints its own wall-clock time on each line; the benchmark reads the list when Redis announces a
push (keyspace notification) and subtracts. Same machine, same clock."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from benchmarks.env import Bench
from benchmarks.stats import median, percentile
from benchmarks.table import Row, fmt_ms

MARK = "bench-line"
TAIL = 20


def _agent(lines: int) -> str:
    return f'for i in $(seq {lines}); do echo "{MARK} $(date +%s.%N)"; sleep 0.2; done'


def run(bench: Bench, quick: bool) -> list[Row]:
    lines = 5 if quick else 25
    latencies: list[float] = []
    seen: set[str] = set()
    lock = threading.Lock()

    def on_push(message: dict[str, Any]) -> None:
        arrived = time.time()
        key = str(message["channel"]).split(":", 1)[1]
        for raw in bench.client.lrange(key, -TAIL, -1):
            text = str(json.loads(raw).get("line", ""))
            if text.startswith(MARK):
                with lock:
                    if text not in seen:
                        seen.add(text)
                        latencies.append(arrived - float(text.split()[1]))

    bench.client.config_set("notify-keyspace-events", "KA")
    pubsub = bench.client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(**{"__keyspace@0__:job:*:output": on_push})
    thread = pubsub.run_in_thread(sleep_time=0.1, daemon=True)
    runner = bench.start_runner(
        name="output", MAX_CONCURRENT_JOBS="1", AGENT_COMMAND=_agent(lines), AGENT_SANDBOX="none"
    )
    try:
        bench.wait_final(bench.world.add_job())
    finally:
        bench.stop_runner(runner)
        thread.stop()
        thread.join(timeout=5)
        pubsub.close()
    p50, worst = median(latencies), percentile(latencies, 100)
    return [
        Row(
            "6",
            f"output line latency, agent → Redis, p50 ({len(latencies)} lines)",
            fmt_ms(p50),
            "",
            target="≤ 100 ms",
            met=p50 <= 0.1,
        ),
        Row("6", "output line latency, worst", fmt_ms(worst), "", target="≤ 100 ms", met=worst <= 0.1),
    ]
