"""One lane of the engine: one kind of work on its own stream and group, with its own leases,
waiting queues, admission and takeover sweeper; every lane shares the runner's WorkerPool.

Threads: a lane's `read_once` runs only on that lane's consumer thread; `duties` and
`take_over` on the supervisor thread (and, in burst mode, `take_over` on the consumer thread:
the sweeper's own lock guards its cursor). The pool and the waiting queues are thread-safe, and no
lock is held across a Redis call.
"""

from __future__ import annotations

import logging
import threading

import redis

from repobox_cli.admission import Admission
from repobox_cli.housekeeping import tidy_group
from repobox_cli.kinds import WorkKind
from repobox_cli.logs import JobLog
from repobox_cli.redis_conn import CONNECTION_ERRORS, RedisHealth
from repobox_cli.settings import Settings
from repobox_cli.sweeper import ClaimSweeper
from repobox_cli.waiting import WaitingQueues
from repobox_cli.workers import WorkerPool

log = logging.getLogger(__name__)

MAX_WAITING_ENTRIES = 1000  # entries held for users at their limit; beyond this, stop reading


def ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) when missing; BUSYGROUP means it exists."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Lane:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        kind: WorkKind,
        pool: WorkerPool,
        health: RedisHealth,
        stopping: threading.Event,
        jlog: JobLog,
    ) -> None:
        self.settings = settings
        self.client = client
        self.kind = kind
        self.pool = pool
        self.health = health
        self.stopping = stopping
        self.log = jlog
        self.consumer = settings.runner_id
        self.leases = kind.leases()
        self.waiting = WaitingQueues(MAX_WAITING_ENTRIES)
        self.admission = Admission(settings, client, kind, self.leases, pool, self.waiting, health, stopping, jlog)
        self.sweeper = ClaimSweeper(client, self.leases, self.consumer, int(settings.claim_min_idle_s * 1000))
        self.idle = threading.Event()  # the last read found nothing (burst mode asks)

    @property
    def name(self) -> str:
        return self.kind.name

    def ensure_group(self) -> None:
        ensure_group(self.client, self.kind.stream, self.kind.group)

    # -- the lane's consumer thread --------------------------------------------------------
    def read_once(self) -> bool | None:
        """Read and admit a batch; False when the stream had nothing, None when no room to read."""
        free = self.pool.free()
        if free <= 0 or self.waiting.full():
            self.pool.wait_for_room(self.settings.tick_s)
            return None
        if self.kind.receives_forwarded:
            self._admit_forwarded(free)
        reply = self.client.xreadgroup(
            self.kind.group, self.consumer, {self.kind.stream: ">"}, count=free, block=self.settings.block_ms
        )
        self.health.ok()
        entries = reply[0][1] if reply else []
        with self.admission.batch():  # acks of entries whose jobs are already final: one round trip
            for entry_id, fields in entries:
                if self.stopping.is_set():
                    self.release_unstarted([entry_id])
                    continue
                self.admission.admit_safely(entry_id, fields, deliveries=1)
        if entries:
            self.idle.clear()
        else:
            self.idle.set()
        return bool(entries)

    def _admit_forwarded(self, room: int) -> None:
        """Entries other runners moved to this runner's pending list (its sessions' prompts and
        pushes): admitted like new ones. XPENDING and XRANGE leave delivery counts alone."""
        rows = self.client.xpending_range(
            self.kind.stream,
            self.kind.group,
            min="-",
            max="+",
            count=room + len(self.waiting) + self.pool.size,
            consumername=self.consumer,
        )
        for row in rows:
            entry_id = str(row["message_id"])
            if self.pool.has(self.name, entry_id) or entry_id in self.waiting or self.stopping.is_set():
                continue
            found = self.client.xrange(self.kind.stream, entry_id, entry_id, count=1)
            if found:
                self.admission.admit_safely(entry_id, found[0][1], deliveries=int(row["times_delivered"]))

    def on_response_error(self, exc: redis.ResponseError) -> None:
        if "NOGROUP" in str(exc):
            self.log.warning("consumer group %s missing (Redis restarted empty?): creating it again", self.kind.group)
            self.ensure_group()
        else:
            self.log.error("Redis refused a command: %s", exc)

    def release_unstarted(self, ids: list[str]) -> None:
        """Entries held but never started: claimable at once, their takeover not counted."""
        if not ids:
            return
        try:
            self.leases.release_unstarted(self.consumer, ids)
            self.log.info("handed back %d %s entries not started here, for other runners", len(ids), self.name)
        except CONNECTION_ERRORS:
            self.log.warning("could not hand back %d entries: they become claimable after CLAIM_MIN_IDLE", len(ids))

    # -- the supervisor's steps ------------------------------------------------------------
    def renew_waiting(self) -> None:
        lost = self.leases.renew_waiting(self.consumer, self.waiting.ids())
        if lost:
            self.waiting.drop(set(lost))

    def take_over(self) -> bool:
        """Claim entries idle ≥ CLAIM_MIN_IDLE (their runner is gone) and admit them; True if any."""
        room = self.pool.free() + max(0, MAX_WAITING_ENTRIES - len(self.waiting))
        claimed = self.sweeper.sweep(room)
        for item in claimed:
            self.log.info(
                "took over %s entry %s (idle past CLAIM_MIN_IDLE, delivery %d)",
                self.name,
                item.entry_id,
                item.deliveries,
            )
            self.admission.admit_safely(item.entry_id, item.fields, deliveries=item.deliveries)
        return bool(claimed)

    def tidy(self) -> None:
        tidy_group(self.client, self.leases, self.consumer)

    def leave_group(self) -> None:
        pending = self.client.xpending_range(
            self.kind.stream, self.kind.group, min="-", max="+", count=1, consumername=self.consumer
        )
        if not pending:
            self.client.xgroup_delconsumer(self.kind.stream, self.kind.group, self.consumer)
