"""Ownership of work across runners, as atomic Lua scripts (`repobox_cli/lua/*.lua`).

- An *attempt* is one run of a job by one runner. `runner:attempt:{job}` holds the current
  attempt's token (`<attempt id>|<consumer>`): every status write, the ack and the slot release
  check it, and check that the runner still owns the stream entry (its consumer in the PEL).
- A *slot* is a member of `runner:slots:{user}` scored by its lease expiry (Redis clock, ms):
  taken atomically under the per-user limit, renewed with the entry's claim, and gone by itself
  when a dead runner stops renewing them.
- The entry's claim is renewed with `XCLAIM … JUSTID` (resets idle, does not count a delivery).

An attempt ends in exactly one of three ways, each one script: `finish` (final fields, slot
freed, entry acked), `return_to_pending` (a debug run gives the job back), `abandon` (lost or
stopping: slot freed, entry handed back, nothing the next attempt owns is written). An entry that
never became an attempt is settled by `reject` (failed, optionally dead-lettered, acked),
`acknowledge` (its job was already final) or `release_unstarted` (handed back, not counted).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources

import redis

from repobox_cli import keys
from repobox_cli.jobs import Status
from repobox_cli.redis_conn import Durability

ATTEMPT_KEY_TTL_S = 7 * 24 * 3600
WAITING_MARK_TTL_S = 24 * 3600
HAND_BACK_IDLE_MS = 365 * 24 * 3600 * 1000  # makes an entry claimable by any runner's next sweep
_COMMON = "common.lua"


def _script(name: str) -> str:
    """The script's text with the shared helpers in front (package data, read once at start)."""
    folder = resources.files("repobox_cli") / "lua"
    return f"local NO_KEY = '{keys.NO_KEY}'\n" + (folder / _COMMON).read_text() + "\n" + (folder / name).read_text()


class BeginOutcome(StrEnum):
    OK = "ok"  # this attempt is current: run it
    BUSY = "busy"  # the user is at the limit: wait
    ACTIVE = "active"  # another attempt of the job runs with a live lease: never beside it
    LOST = "lost"  # the entry is no longer this runner's
    MISSING = "missing"  # no job hash
    FINAL = "final"  # the job is already success/failed/cancelled
    OTHER_USER = "user"  # the job is not the user's the entry named (asked with `read=True`): untouched


class FinishOutcome(StrEnum):
    OK = "ok"  # the final fields were written
    CANCELLED = "cancelled"  # the web app cancelled it meanwhile: only finished_at written
    PENDING = "pending"  # given back as pending (return_to_pending)
    MISSING = "missing"  # the job hash was deleted while it ran
    LOST = "lost"  # another attempt took over: nothing written


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Attempt:
    """One run of one job by one runner; `token` is what every guarded write compares."""

    job_id: str
    user_id: str
    consumer: str
    entry_id: str  # '' when run by `repobox exec` without a stream entry
    attempt_id: str

    @property
    def token(self) -> str:
        return f"{self.attempt_id}|{self.consumer}"


@dataclass(frozen=True)
class Also:
    """A hash `finish` writes in the same step as the final state, if it exists (a work session's):
    `fields`, and `count_field` ('' for none) counted up by one."""

    key: str
    fields: Mapping[str, str | int]
    count_field: str = ""


def _flat(fields: Mapping[str, str | int]) -> list[str | int]:
    return [part for pair in fields.items() for part in pair]


@dataclass(frozen=True)
class BeginResult:
    outcome: BeginOutcome
    final_status: Status | None = None  # set with FINAL
    previous_consumer: str = ""  # set when an unfinished earlier attempt is being taken over
    record: dict[str, str] | None = None  # the job's fields, with OK, BUSY and ACTIVE when begun with `read=True`


def _begin_result(raw: Sequence[str], *, read: bool) -> BeginResult:
    word, _, rest = raw[0].partition(":")
    outcome = BeginOutcome(word)
    if outcome is BeginOutcome.FINAL:
        return BeginResult(outcome, final_status=Status(rest))
    record = dict(zip(raw[1::2], raw[2::2], strict=True)) if read and len(raw) > 1 else None
    previous = rest.split("|", 1)[-1] if rest else ""
    return BeginResult(outcome, previous_consumer=previous, record=record)


class Leases:
    """The scripts, bound to one client and one stream's consumer group."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        stream: str = keys.JOBS_STREAM,
        group: str = keys.RUNNERS_GROUP,
        durability: Durability | None = None,
        record_key: Callable[[str], str] = keys.job,
        slots_key: Callable[[str], str] = keys.user_slots,
    ) -> None:
        """`record_key` names the hash an attempt runs (the web app's `job:{id}`, or a runner-owned
        record for session steps); `slots_key` the user's slots that `limit` applies to."""
        self.client = client
        self.stream = stream
        self.group = group
        self.durability = durability or Durability()  # begin and finish wait for replicas (failover safety)
        self.record_key = record_key
        self.slots_key = slots_key
        load = client.register_script
        self._begin = load(_script("begin.lua"))
        self._renew = load(_script("renew.lua"))
        self._renew_waiting = load(_script("renew_waiting.lua"))
        self._finish = load(_script("finish.lua"))
        self._abandon = load(_script("abandon.lua"))
        self._reject = load(_script("reject.lua"))
        self._release_unstarted = load(_script("release_unstarted.lua"))
        self._trim = load(_script("trim.lua"))
        self._remove_consumer = load(_script("remove_consumer.lua"))
        self._forward = load(_script("forward.lua"))

    # -- an attempt's life ------------------------------------------------------------------
    def begin(self, attempt: Attempt, *, limit: int, lease_ms: int, started_at: int, read: bool = False) -> BeginResult:
        """Atomically: still ours, job exists and is not final, a user slot is free; then mark it
        running and make this attempt the current one. Retrying after a lost reply is safe.

        With `read`, the job was not read first: `attempt.user_id` is the user its entry names; a
        job of another user is left untouched (OTHER_USER), and OK, BUSY and ACTIVE carry the
        job's fields."""
        script_keys, args = self._begin_call(attempt, limit, lease_ms, started_at, read)
        raw = self.durability.apply(
            self.client,
            lambda conn: self._begin(keys=script_keys, args=args, client=conn),
            f"beginning job {attempt.job_id}",
        )
        return _begin_result([str(part) for part in raw], read=read)

    def begin_many(
        self, starts: Sequence[tuple[Attempt, bool]], *, limit: int, lease_ms: int, started_at: int
    ) -> list[BeginResult]:
        """`begin` for several (attempt, read) at once, in one round trip: each script is atomic on
        its own, as one by one. With replicas to wait for, one by one (`Durability` confirms each
        write on the connection that made it). A reply that is an error (the script not loaded
        on a restarted server) is retried alone, which loads it, or raises."""
        if len(starts) == 1 or self.durability.replicas > 0:
            return [self.begin(a, limit=limit, lease_ms=lease_ms, started_at=started_at, read=r) for a, r in starts]
        pipe = self.client.pipeline(transaction=False)
        calls = [self._begin_call(attempt, limit, lease_ms, started_at, read) for attempt, read in starts]
        for script_keys, args in calls:
            pipe.evalsha(self._begin.sha, len(script_keys), *script_keys, *args)
        replies = pipe.execute(raise_on_error=False)
        results = []
        for (attempt, read), reply in zip(starts, replies, strict=True):
            if isinstance(reply, Exception):
                results.append(self.begin(attempt, limit=limit, lease_ms=lease_ms, started_at=started_at, read=read))
            else:
                results.append(_begin_result([str(part) for part in reply], read=read))
        return results

    def _begin_call(
        self, attempt: Attempt, limit: int, lease_ms: int, started_at: int, read: bool
    ) -> tuple[list[str], list[str | int]]:
        script_keys = [
            self.record_key(attempt.job_id),
            keys.job_attempt(attempt.job_id),
            self.slots_key(attempt.user_id),
            self.stream,
            keys.waiting_entry(attempt.entry_id),
        ]
        args: list[str | int] = [
            self.group,
            attempt.consumer,
            attempt.entry_id,
            attempt.token,
            limit,
            lease_ms,
            started_at,
            ATTEMPT_KEY_TTL_S,
            attempt.user_id if read else "",
        ]
        return script_keys, args

    def renew(self, attempt: Attempt, lease_ms: int) -> bool:
        """Extend the entry's claim and the user slot; False when the attempt is no longer current."""
        return bool(
            self._renew(
                keys=[keys.job_attempt(attempt.job_id), self.slots_key(attempt.user_id), self.stream],
                args=[self.group, attempt.consumer, attempt.entry_id, attempt.token, lease_ms],
            )
        )

    def confirm_current(self, attempt: Attempt, lease_ms: int) -> bool:
        """Before an irreversible step (the push): renew the attempt (a write) and require the
        replicas to acknowledge it. A primary that was paused and failed over still answers for a
        moment, but cannot confirm: the attempt stops rather than push beside its successor."""
        renewed, confirmed = self.durability.confirmed(
            self.client,
            lambda conn: self._renew(
                keys=[keys.job_attempt(attempt.job_id), self.slots_key(attempt.user_id), self.stream],
                args=[self.group, attempt.consumer, attempt.entry_id, attempt.token, lease_ms],
                client=conn,
            ),
        )
        return bool(renewed) and confirmed

    def finish(
        self, attempt: Attempt, finished_at: int, fields: Mapping[str, str | int], also: Also | None = None
    ) -> FinishOutcome:
        """Write the final fields, free the slot and ack, all or nothing; with `also`, write that
        hash too in the same step (unless LOST). Retrying is safe: a finish that ran is not run again."""
        return self._end(attempt, "final", finished_at, fields, also)

    def return_to_pending(self, attempt: Attempt) -> FinishOutcome:
        """Give the job back as `pending`, untouched (a debug run must not consume it); the slot
        is freed and the entry (if any) acked. PENDING, or CANCELLED/MISSING/LOST as `finish`."""
        return self._end(attempt, "pending", 0, {}, None)

    def _end(
        self, attempt: Attempt, mode: str, finished_at: int, fields: Mapping[str, str | int], also: Also | None
    ) -> FinishOutcome:
        flat, also_flat = _flat(fields), _flat(also.fields) if also else []
        script_keys = [
            self.record_key(attempt.job_id),
            keys.job_attempt(attempt.job_id),
            self.slots_key(attempt.user_id),
            self.stream,
            keys.RECENTLY_FINISHED,
            also.key if also else keys.NO_KEY,
        ]
        args = [self.group, attempt.consumer, attempt.entry_id, attempt.token, mode, finished_at]
        args += [len(flat), also.count_field if also else "", *flat, *also_flat]
        raw = self.durability.apply(
            self.client,
            lambda conn: self._finish(keys=script_keys, args=args, client=conn),
            f"finishing job {attempt.job_id}",
        )
        return FinishOutcome(str(raw))

    def abandon(self, attempt: Attempt, *, hand_back: bool) -> bool:
        """The attempt will not finish here: free its slot and, with `hand_back`, make its entry
        claimable at once if still ours. Writes nothing the next attempt owns; True if handed back."""
        return bool(
            self._abandon(
                keys=[self.slots_key(attempt.user_id), self.stream],
                args=[
                    self.group,
                    attempt.consumer,
                    attempt.entry_id,
                    attempt.token,
                    "1" if hand_back else "0",
                    HAND_BACK_IDLE_MS,
                ],
            )
        )

    # -- entries that never became an attempt --------------------------------------------
    def reject(
        self,
        consumer: str,
        entry_id: str,
        fields: Mapping[str, str],
        reason: str,
        now: int,
        *,
        job_id: str = "",
        dead_letter: bool = False,
        deliveries: int = 1,
    ) -> bool:
        """Fail the entry's job (when it exists and is not final) with `reason` and ack the entry;
        with `dead_letter`, also file the entry under runner:dead_letters."""
        return bool(
            self._reject(
                keys=[
                    self.stream,
                    keys.DEAD_LETTERS_STREAM if dead_letter else keys.NO_KEY,
                    keys.job(job_id) if job_id else keys.NO_KEY,
                    keys.waiting_entry(entry_id),
                ],
                args=[self.group, consumer, entry_id, reason, now, json.dumps(dict(fields)), deliveries],
            )
        )

    def acknowledge(self, consumer: str, entry_id: str) -> bool:
        """Ack an entry whose job is already final (nothing written to the job)."""
        return self.reject(consumer, entry_id, {}, "", 0)

    def acknowledge_many(self, consumer: str, entry_ids: Sequence[str]) -> list[bool]:
        """`acknowledge` for each entry, in one round trip (a pipeline of the same script: each
        entry still checked for ownership on its own). By its sha, so the pipeline asks no
        `SCRIPT EXISTS` first; a reply that is an error (the script not loaded on a restarted
        server) is retried alone, which loads it, or raises."""
        if len(entry_ids) <= 1:
            return [self.acknowledge(consumer, entry_id) for entry_id in entry_ids]
        pipe = self.client.pipeline(transaction=False)
        for entry_id in entry_ids:
            ack_keys = [self.stream, keys.NO_KEY, keys.NO_KEY, keys.waiting_entry(entry_id)]
            pipe.evalsha(self._reject.sha, len(ack_keys), *ack_keys, self.group, consumer, entry_id, "", 0, "{}", 1)
        replies = pipe.execute(raise_on_error=False)
        return [
            self.acknowledge(consumer, entry_id) if isinstance(reply, Exception) else bool(reply)
            for entry_id, reply in zip(entry_ids, replies, strict=True)
        ]

    def release_unstarted(self, consumer: str, entry_ids: Sequence[str]) -> list[str]:
        """Hand back entries `consumer` holds but never started: claimable at once, marked as only
        waited on (the takeover does not count a delivery). Returns the ids handed back."""
        if not entry_ids:
            return []
        handed = self._release_unstarted(
            keys=[self.stream],
            args=[self.group, consumer, HAND_BACK_IDLE_MS, keys.WAITING_PREFIX, WAITING_MARK_TTL_S, *entry_ids],
        )
        return [str(i) for i in handed]

    # -- waiting entries -------------------------------------------------------------------
    def renew_waiting(self, consumer: str, entry_ids: Sequence[str]) -> list[str]:
        """Keep claims on entries waiting for a slot; returns the ids that are no longer ours."""
        if not entry_ids:
            return []
        lost = self._renew_waiting(keys=[self.stream], args=[self.group, consumer, *entry_ids])
        return [str(i) for i in lost]

    def mark_waiting(self, consumer: str, entry_id: str) -> None:
        self.client.set(keys.waiting_entry(entry_id), consumer, ex=WAITING_MARK_TTL_S)

    def take_waiting_mark(self, entry_id: str) -> bool:
        """True if the entry's last holder only waited with it (the mark is removed)."""
        return self.client.getdel(keys.waiting_entry(entry_id)) is not None

    def forward(self, consumer: str, entry_id: str, owner: str) -> bool:
        """Move an entry `consumer` holds to `owner`'s pending list if `owner` is alive and not
        stopping, marked as waiting; True if moved."""
        return bool(
            self._forward(
                keys=[self.stream, keys.heartbeat(owner), keys.waiting_entry(entry_id)],
                args=[self.group, consumer, entry_id, owner, WAITING_MARK_TTL_S],
            )
        )

    # -- the group -------------------------------------------------------------------------
    def hand_back(self, consumer: str, entry_ids: Sequence[str]) -> list[str]:
        """Make entries of `consumer` claimable at once (operator's `pending --claim`); entries
        another runner took meanwhile are left alone. Counted as deliveries when taken over."""
        return [
            entry_id
            for entry_id in entry_ids
            if self._abandon(
                keys=[keys.NO_KEY, self.stream], args=[self.group, consumer, entry_id, "", "1", HAND_BACK_IDLE_MS]
            )
        ]

    def remove_consumer_if_gone(self, consumer: str) -> bool:
        """Delete a consumer with no heartbeat and nothing pending; True if it was removed."""
        return bool(self._remove_consumer(keys=[self.stream, keys.heartbeat(consumer)], args=[self.group, consumer]))

    def trim(self) -> int:
        """Drop acknowledged entries; never one still pending or not yet delivered."""
        return int(self._trim(keys=[self.stream]))
