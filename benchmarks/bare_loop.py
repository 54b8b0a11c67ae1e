"""The baseline consumer: a bare redis-py loop doing what a runner must at least do, and nothing
more. Run as a process (`python -m benchmarks.bare_loop MODE REDIS_URL STREAM`) beside the runner.

- `pickup`: XREADGROUP (BLOCK, one entry) → HSET status=running → HSET status=success → XACK;
- `dispatch`: XREADGROUP (COUNT 10) → HGETALL per entry → XACK per entry (its job is final).
"""

from __future__ import annotations

import sys

import redis

GROUP = "bare"
BLOCK_MS = 400
DISPATCH_COUNT = 10


def main(mode: str, url: str, stream: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError:
        pass  # BUSYGROUP: it exists
    print("ready", flush=True)
    count = 1 if mode == "pickup" else DISPATCH_COUNT
    while True:
        reply = client.xreadgroup(GROUP, "bare-1", {stream: ">"}, count=count, block=BLOCK_MS)
        for entry_id, fields in reply[0][1] if reply else []:
            job_key = f"job:{fields['job_id']}"
            if mode == "pickup":
                client.hset(job_key, "status", "running")
                client.hset(job_key, "status", "success")
            else:
                client.hgetall(job_key)
            client.xack(stream, GROUP, entry_id)


if __name__ == "__main__":
    main(*sys.argv[1:4])
