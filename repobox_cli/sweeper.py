"""Taking over entries of runners that are gone: XAUTOCLAIM of entries idle ≥ CLAIM_MIN_IDLE.

Runs on the supervisor thread; in burst mode the consumer thread asks too (is anything left?),
so the cursor is guarded by the sweeper's own lock, which only sweeps ever wait on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis

from repobox_cli import metrics
from repobox_cli.leases import Leases

log = logging.getLogger(__name__)

MAX_CLAIM_BATCH = 100
PENDING_LOOKUP_SLACK = 1000


@dataclass(frozen=True)
class Claimed:
    entry_id: str
    fields: dict[str, str]
    deliveries: int  # deliveries that count toward MAX_DELIVERIES (waiting ones do not)


class ClaimSweeper:
    def __init__(self, client: redis.Redis, leases: Leases, consumer: str, min_idle_ms: int) -> None:
        self.client = client
        self.leases = leases
        self.consumer = consumer
        self.min_idle_ms = min_idle_ms
        self._lock = threading.Lock()
        self._cursor = "0-0"

    def sweep(self, room: int) -> list[Claimed]:
        """Claim up to `room` idle entries for this runner."""
        if room <= 0:
            return []
        with self._lock:
            reply = self.client.xautoclaim(
                self.leases.stream,
                self.leases.group,
                self.consumer,
                self.min_idle_ms,
                start_id=self._cursor,
                count=min(room, MAX_CLAIM_BATCH),
            )
            self._cursor = str(reply[0]) if reply else "0-0"
        claimed = [(i, f) for i, f in (reply[1] if reply else []) if i]
        if not claimed:
            return []
        metrics.taken_over(self.consumer, self.leases.stream, len(claimed))
        counts = self._delivery_counts([i for i, _ in claimed])
        return [Claimed(i, dict(f or {}), self._uncount_waiting(i, counts.get(i, 1))) for i, f in claimed]

    def _uncount_waiting(self, entry_id: str, deliveries: int) -> int:
        """A delivery to a runner that died while the entry only *waited* for a slot does not
        count toward MAX_DELIVERIES: waiting must not burn a job's budget."""
        if not self.leases.take_waiting_mark(entry_id) or deliveries <= 1:
            return deliveries
        self.client.xclaim(
            self.leases.stream, self.leases.group, self.consumer, 0, [entry_id], retrycount=deliveries - 1, justid=True
        )
        return deliveries - 1

    def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        rows = self.client.xpending_range(
            self.leases.stream,
            self.leases.group,
            min=min(ids, key=_id_key),
            max=max(ids, key=_id_key),
            count=len(ids) + PENDING_LOOKUP_SLACK,
            consumername=self.consumer,
        )
        return {str(r["message_id"]): int(r["times_delivered"]) for r in rows}


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
