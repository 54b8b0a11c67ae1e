"""One lane of the engine: one kind of work on its own stream and group, with its own leases,
waiting queues, admission and takeover sweeper; every lane shares the runner's WorkerPool.

Threads: a lane's `read_once` runs only on that lane's consumer thread; `duties` and
`take_over` on the supervisor thread (and, in burst mode, `take_over` on the consumer thread:
the sweeper's own lock guards its cursor); `wake` on the thread that stops the runner. The pool
and the waiting queues are thread-safe, and no lock is held across a Redis call.

A lane reads on a connection of its own, whose `CLIENT ID` it learns on every (re)connect, so a
stopping runner ends a blocked read at once with `CLIENT UNBLOCK` (the read returns as if its
BLOCK had passed; nothing is lost, since nothing was delivered). Where the ACL refuses those two
commands, a stop waits for the read's BLOCK instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from repobox_cli.admission import Admission
from repobox_cli.housekeeping import tidy_group
from repobox_cli.kinds import WorkKind
from repobox_cli.logs import JobLog
from repobox_cli.redaction import one_line
from repobox_cli.redis_conn import CONNECTION_ERRORS, RedisHealth
from repobox_cli.settings import Settings
from repobox_cli.supervisor import Every
from repobox_cli.sweeper import ClaimSweeper
from repobox_cli.waiting import WaitingQueues
from repobox_cli.workers import WorkerPool

log = logging.getLogger(__name__)

MAX_WAITING_ENTRIES = 1000  # entries held for users at their limit; beyond this, stop reading
# The longest a lane that receives forwarded entries (session prompts and pushes moved to their
# session's owner, which it finds by XPENDING between reads) blocks in a read while this runner
# holds a session's working copy; also how often a burst-mode lane reads again while work runs.
POLL_MS = 400
_unblock_warned = threading.Event()  # the ACL is the server's: one warning per process, not per lane


def _refused(exc: redis.ResponseError) -> bool:
    """NOPERM (an ACL without the command) or a server that does not know it."""
    return isinstance(exc, redis.exceptions.NoPermissionError) or "unknown command" in str(exc).lower()


def _warn_unblock_refused(jlog: JobLog, command: str, exc: redis.ResponseError) -> None:
    if not _unblock_warned.is_set():
        _unblock_warned.set()
        jlog.warning("Redis refused %s (%s): a stop waits up to BLOCK_MS for each read to end", command, exc)


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
        self._reader: redis.Redis | None = None  # made on the consumer thread, at its first read
        self._reader_id: int | None = None  # its connection's CLIENT ID, for `wake`
        self._unblock_refused = False
        self._forwarded_while_full = Every(POLL_MS / 1000)
        self._held_unseen = threading.Event()  # entries in this consumer's pending list that no one here has seen

    @property
    def name(self) -> str:
        return self.kind.name

    def ensure_group(self) -> None:
        ensure_group(self.client, self.kind.stream, self.kind.group)

    # -- the lane's consumer thread --------------------------------------------------------
    def read_once(self, block_ms: int | None) -> bool | None:
        """Read (waiting up to `block_ms` for an entry; None: not at all) and admit a batch; False
        when the stream had nothing, None when there was no room to read."""
        free = self.pool.free()
        if free <= 0 or self.waiting.full():
            if self.kind.receives_forwarded and not self.waiting.full() and self._forwarded_while_full.due():
                # Every worker busy: forwarded entries wait here all the same, their claims renewed
                # (left unread, another runner's sweep would take them and forward them back).
                self._admit_forwarded(0)
            self.pool.wait_for_room(self.settings.tick_s)
            return None
        if self.kind.receives_forwarded or self._held_unseen.is_set():
            self._held_unseen.clear()
            with self._unseen_on_error():
                self._admit_forwarded(free)
        with self._unseen_on_error():
            reply = self._read_client().xreadgroup(
                self.kind.group, self.consumer, {self.kind.stream: ">"}, count=free, block=block_ms
            )
        self.health.ok()
        entries = reply[0][1] if reply else []
        if entries:
            self.idle.clear()  # before admitting: burst mode must not end while these begin
        with self._unseen_on_error(), self.admission.batch():  # final entries' acks: one round trip at the end
            if self.stopping.is_set():
                self.release_unstarted([entry_id for entry_id, _ in entries])
            else:
                self.admission.admit_many([(entry_id, fields, 1) for entry_id, fields in entries])
        if not entries:
            self.idle.set()
        return bool(entries)

    @contextmanager
    def _unseen_on_error(self) -> Iterator[None]:
        """Entries this lane was given and had not admitted when Redis went away (an admission
        stops at the first lost connection) stay in its pending list, unseen: the next read
        admits them from there first, instead of leaving them to a takeover that counts a delivery."""
        try:
            yield
        except BaseException:
            self._held_unseen.set()
            raise

    def _read_client(self) -> redis.Redis:
        """This lane's own connection (from the runner's pool, so Sentinel and TLS settings hold);
        connecting raises to the consumer loop like any read."""
        if self._reader is None:
            reader = redis.Redis(connection_pool=self.client.connection_pool, single_connection_client=True)
            connection = reader.connection
            assert connection is not None  # a single-connection client holds one from the start
            # A read whose reply was lost is never sent again by redis-py: the entries it delivered
            # would stay unseen in this consumer's pending list. It raises, and the next read
            # admits them from there (`_unseen_on_error`).
            connection.retry = Retry(NoBackoff(), 0)
            connection.register_connect_callback(self._learn_reader_id)
            try:
                self._learn_reader_id(connection)  # it connected before the callback was there
            except BaseException:
                self._release(reader)
                raise
            self._reader = reader
        return self._reader

    def _learn_reader_id(self, connection: AbstractConnection) -> None:
        """On every (re)connect of the read connection: its CLIENT ID. A connection whose answer
        did not come is dropped, so no late reply is ever read as a read's."""
        self._reader_id = None
        try:
            connection.send_command("CLIENT", "ID")
            self._reader_id = int(connection.read_response())
        except redis.ResponseError as exc:
            if not _refused(exc):
                connection.disconnect()
                raise redis.ConnectionError(f"learning the read connection's id: {exc}") from exc
            self._unblock_refused = True
            _warn_unblock_refused(self.log, "CLIENT ID", exc)
        except Exception as exc:
            connection.disconnect()
            raise redis.ConnectionError(f"learning the read connection's id: {exc}") from exc

    def wake(self) -> None:
        """End this lane's waits now: its blocked read (CLIENT UNBLOCK) and any wait on the pool.
        A read that begins after this still blocks: whoever stops the runner calls it again.
        Nothing is sent while Redis is away (the read fails on its own then)."""
        self.pool.wake()
        reader_id = self._reader_id
        if reader_id is None or self._unblock_refused or self._reader is None or self.health.is_lost:
            return
        try:
            self.client.client_unblock(reader_id)
        except redis.ResponseError as exc:
            if _refused(exc):
                self._unblock_refused = True
                _warn_unblock_refused(self.log, "CLIENT UNBLOCK", exc)
        except CONNECTION_ERRORS:
            pass

    def close_reader(self) -> None:
        """After the consumer thread has ended: the read connection closed, never reused."""
        if self._reader is not None:
            reader, self._reader = self._reader, None
            self._release(reader)

    def _release(self, reader: redis.Redis) -> None:
        self._reader_id = None
        connection = reader.connection
        if connection is not None:
            connection.deregister_connect_callback(self._learn_reader_id)
            connection.disconnect()
        reader.close()

    def _admit_forwarded(self, room: int) -> None:
        """Entries in this runner's pending list that it is not running or holding: those other
        runners moved there (its sessions' prompts and pushes), or left unseen by an admission
        Redis cut short. Admitted like new ones: XPENDING and XRANGE leave delivery counts alone."""
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

    def release_held(self) -> None:
        """At the stop, once this runner's heartbeat says so: every entry held here that is not
        running is handed back, not counted: those waiting, and those forwarded here (a session's
        prompts and pushes) that were not read yet."""
        held = self.waiting.clear()
        if self.kind.receives_forwarded:
            try:
                rows = self.client.xpending_range(
                    self.kind.stream,
                    self.kind.group,
                    min="-",
                    max="+",
                    count=MAX_WAITING_ENTRIES + self.pool.size,
                    consumername=self.consumer,
                )
            except redis.RedisError as exc:  # away, or the group gone: claimable after CLAIM_MIN_IDLE, marked waiting
                self.log.warning("could not list the %s entries forwarded here: %s", self.name, one_line(str(exc)))
                rows = []
            held += [str(row["message_id"]) for row in rows if str(row["message_id"]) not in held]
        # Not one that began meanwhile (a waiting entry the supervisor was starting as the stop came).
        self.release_unstarted([i for i in held if not self.pool.has(self.name, i)])

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
        if not claimed:
            return False
        for item in claimed:
            self.log.info(
                "took over %s entry %s (idle past CLAIM_MIN_IDLE, delivery %d)",
                self.name,
                item.entry_id,
                item.deliveries,
            )
        with self._unseen_on_error():
            self.admission.admit_many([(item.entry_id, item.fields, item.deliveries) for item in claimed])
        return True

    def tidy(self) -> None:
        tidy_group(self.client, self.leases, self.consumer)

    def leave_group(self) -> None:
        """At the stop, after the heartbeat is gone: this runner's consumer is removed if it holds
        nothing, in one script (an entry delivered to it meanwhile keeps it)."""
        self.leases.remove_consumer_if_gone(self.consumer)
