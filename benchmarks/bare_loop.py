"""The baseline consumers: bare redis-py loops doing what a runner must at least do, and nothing
more. Run as a process (`python -m benchmarks.bare_loop MODE REDIS_URL STREAM`) beside the runner.

- `pickup`: XREADGROUP (BLOCK, one entry) → HSET status=running → HSET status=success → XACK;
- `begin`: XREADGROUP (BLOCK, one entry) → the runner's own begin script (`Leases.begin`, which
  marks the job running atomically with its checks and user slot) → its finish script. What
  any consumer that keeps repobox's start guarantees pays, without the rest of the runner;
- `dispatch`: XREADGROUP (COUNT 10) → HGETALL per entry → XACK per entry (its job is final).
"""

from __future__ import annotations

import sys
import uuid

import redis

from repobox_cli.jobs import now_ms
from repobox_cli.leases import Attempt, Leases

GROUP = "bare"
CONSUMER = "bare-1"
BLOCK_MS = 400
DISPATCH_COUNT = 10
BEGIN_LIMIT = 3  # the runner's default MAX_JOBS_PER_USER
BEGIN_LEASE_MS = 300_000


def main(mode: str, url: str, stream: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError:
        pass  # BUSYGROUP: it exists
    # Its own slots keys: the runner's users' limits are not this loop's to take.
    leases = Leases(client, stream=stream, group=GROUP, slots_key=lambda user: f"bench:slots:{user}")
    print("ready", flush=True)
    count = DISPATCH_COUNT if mode == "dispatch" else 1
    while True:
        reply = client.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=count, block=BLOCK_MS)
        for entry_id, fields in reply[0][1] if reply else []:
            job_key = f"job:{fields['job_id']}"
            if mode == "pickup":
                client.hset(job_key, "status", "running")
                client.hset(job_key, "status", "success")
                client.xack(stream, GROUP, entry_id)
            elif mode == "begin":
                attempt = Attempt(fields["job_id"], fields["user_id"], CONSUMER, entry_id, uuid.uuid4().hex[:12])
                leases.begin(attempt, limit=BEGIN_LIMIT, lease_ms=BEGIN_LEASE_MS, started_at=now_ms(), read=True)
                leases.finish(attempt, now_ms(), {"status": "success"})
            else:
                client.hgetall(job_key)
                client.xack(stream, GROUP, entry_id)


if __name__ == "__main__":
    main(*sys.argv[1:4])
