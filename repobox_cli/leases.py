"""Ownership of jobs across runners, as atomic Lua scripts.

- An *attempt* is one run of a job by one runner. `runner:attempt:{job}` holds the current
  attempt's token (`<attempt id>|<consumer>`): every status write, the ack and the slot release
  check it, and check that the runner still owns the stream entry (its consumer in the PEL).
- A *slot* is a member of `runner:slots:{user}` scored by its lease expiry (Redis clock, ms):
  taken atomically under the per-user limit, renewed with the entry's claim, and gone by itself
  when a dead runner stops renewing it.
- The entry's claim is renewed with `XCLAIM … JUSTID` (resets idle, does not count a delivery).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from repobox_cli import keys

ATTEMPT_KEY_TTL_S = 7 * 24 * 3600
WAITING_MARK_TTL_S = 24 * 3600
HAND_BACK_IDLE_MS = 365 * 24 * 3600 * 1000  # makes an entry claimable by any runner's next sweep

_LUA_COMMON = """
local function owns(stream, group, id, consumer)
  if id == '' then return true end
  local p = redis.call('XPENDING', stream, group, 'IDLE', 0, id, id, 1)
  return p[1] ~= nil and p[1][2] == consumer
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function is_final(s) return s == 'success' or s == 'failed' or s == 'cancelled' end
"""

# KEYS: job, attempt, slots, stream, waiting marker.
# ARGV: group, consumer, entry, token, limit, lease_ms, started_at, ttl_s
_BEGIN = _LUA_COMMON + """
if not owns(KEYS[4], ARGV[1], ARGV[3], ARGV[2]) then return 'lost' end
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 'missing' end
local status = redis.call('HGET', KEYS[1], 'status')
if is_final(status) then return 'final:' .. status end
local previous = redis.call('GET', KEYS[2]) or ''
if previous == ARGV[4] then return 'ok:' end  -- this attempt already began: a retried call
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
-- Another attempt whose slot lease is still alive is running somewhere: never run beside it.
if previous ~= '' and redis.call('ZSCORE', KEYS[3], previous) then return 'active' end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return 'busy' end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[4])
redis.call('PEXPIRE', KEYS[3], 2 * tonumber(ARGV[6]))
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[8])
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[7])
if ARGV[3] ~= '' then
  redis.call('XCLAIM', KEYS[4], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
  redis.call('DEL', KEYS[5])
end
if string.sub(previous, -9) == '#finished' then previous = '' end
return 'ok:' .. previous
"""

# KEYS: attempt, slots, stream. ARGV: group, consumer, entry, token, lease_ms
_RENEW = _LUA_COMMON + """
if not owns(KEYS[3], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[4] then return 0 end
if ARGV[3] ~= '' then redis.call('XCLAIM', KEYS[3], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID') end
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[5]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[5]))
return 1
"""

# KEYS: stream. ARGV: group, consumer, entry ids... Returns the ids no longer ours.
_RENEW_WAITING = _LUA_COMMON + """
local lost = {}
for i = 3, #ARGV do
  if owns(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# KEYS: attempt, stream. ARGV: group, consumer, entry, token
_CHECK = _LUA_COMMON + """
if not owns(KEYS[2], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[4] then return 0 end
return 1
"""

# KEYS: job, attempt, slots, stream. ARGV: group, consumer, entry, token, finished_at, field, value...
_FINISH = _LUA_COMMON + """
local done = ARGV[4] .. '#finished'
if redis.call('GET', KEYS[2]) == done then return 'ok' end  -- already finished: a retried call
if not owns(KEYS[4], ARGV[1], ARGV[3], ARGV[2]) then return 'lost' end
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return 'lost' end
local result = 'ok'
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  result = 'missing'
elseif redis.call('HGET', KEYS[1], 'status') == 'cancelled' then
  if redis.call('HEXISTS', KEYS[1], 'finished_at') == 0 then
    redis.call('HSET', KEYS[1], 'finished_at', ARGV[5])
  end
  result = 'cancelled'
elseif ARGV[5] == '0' then
  -- a debug run (exec --no-push) gives the job back untouched for a real run
  redis.call('HDEL', KEYS[1], 'started_at', 'finished_at')
  redis.call('HSET', KEYS[1], 'status', 'pending')
else
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[5], unpack(ARGV, 6))
end
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('SET', KEYS[2], done, 'EX', 3600)
if ARGV[3] ~= '' then redis.call('XACK', KEYS[4], ARGV[1], ARGV[3]) end
return result
"""

# KEYS: stream, dead letters ('' for none), job ('' for none).
# ARGV: group, consumer, entry, reason, finished_at, fields json, deliveries
# Fails the job (if it exists and is not final), optionally files a dead letter, and acks.
_REJECT = _LUA_COMMON + """
if not owns(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
if KEYS[2] ~= '' then
  local fields = cjson.decode(ARGV[6])
  redis.call('XADD', KEYS[2], '*', 'entry_id', ARGV[3], 'job_id', tostring(fields['job_id'] or ''),
    'reason', ARGV[4], 'deliveries', ARGV[7], 'consumer', ARGV[2], 'dead_at', ARGV[5], 'fields', ARGV[6])
end
if KEYS[3] ~= '' and redis.call('TYPE', KEYS[3]).ok == 'hash' and not is_final(redis.call('HGET', KEYS[3], 'status')) then
  redis.call('HSET', KEYS[3], 'status', 'failed', 'error_message', ARGV[4], 'finished_at', ARGV[5])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('DEL', KEYS[4])
return 1
"""

# KEYS: stream. ARGV: group, consumer, idle_ms, entry ids... Returns the ids handed back.
_HAND_BACK = _LUA_COMMON + """
local handed = {}
for i = 4, #ARGV do
  if owns(KEYS[1], ARGV[1], ARGV[i], ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    table.insert(handed, ARGV[i])
  end
end
return handed
"""

# KEYS: stream, heartbeat of the consumer. ARGV: group, consumer.
# Removes a consumer only if its runner is gone (no heartbeat) and it holds nothing, atomically.
_REMOVE_CONSUMER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] == ARGV[2] then
    if tonumber(info['pending']) ~= 0 then return 0 end
    return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) + 1
  end
end
return 0
"""

# KEYS: stream. Trims entries below the oldest one any group still needs (pending or undelivered).
_TRIM = """
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local best_ms, best_seq = nil, nil
local function consider(ms, seq)
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then best_ms, best_seq = ms, seq end
end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local ms, seq = parse(info['last-delivered-id'])
  consider(ms, seq + 1)
  local summary = redis.call('XPENDING', KEYS[1], info['name'])
  if tonumber(summary[1]) > 0 then
    local pms, pseq = parse(summary[2])
    consider(pms, pseq)
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', best_ms, best_seq))
"""


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
class BeginResult:
    outcome: str  # ok | busy | active (running elsewhere) | lost | missing | final
    final_status: str = ""
    previous_consumer: str = ""  # set when an unfinished earlier attempt is being taken over


class Leases:
    """The scripts, bound to one client and one consumer group."""

    def __init__(self, client: redis.Redis, *, group: str = keys.RUNNERS_GROUP) -> None:
        self.client = client
        self.group = group
        self._begin = client.register_script(_BEGIN)
        self._renew = client.register_script(_RENEW)
        self._renew_waiting = client.register_script(_RENEW_WAITING)
        self._check = client.register_script(_CHECK)
        self._finish = client.register_script(_FINISH)
        self._reject = client.register_script(_REJECT)
        self._trim = client.register_script(_TRIM)
        self._remove_consumer = client.register_script(_REMOVE_CONSUMER)
        self._hand_back = client.register_script(_HAND_BACK)

    def begin(self, attempt: Attempt, *, limit: int, lease_ms: int, started_at: int) -> BeginResult:
        """Atomically: still ours, job exists and is not final, a user slot is free; then mark it
        running and make this attempt the current one."""
        raw = str(self._begin(
            keys=[keys.job(attempt.job_id), keys.job_attempt(attempt.job_id),
                  keys.user_slots(attempt.user_id), keys.JOBS_STREAM, keys.waiting_entry(attempt.entry_id)],
            args=[self.group, attempt.consumer, attempt.entry_id, attempt.token, limit, lease_ms,
                  started_at, ATTEMPT_KEY_TTL_S],
        ))
        if raw.startswith("ok:"):
            previous = raw[3:]
            return BeginResult("ok", previous_consumer=previous.split("|", 1)[-1] if previous else "")
        if raw.startswith("final:"):
            return BeginResult("final", final_status=raw[6:])
        return BeginResult(raw)

    def renew(self, attempt: Attempt, lease_ms: int) -> bool:
        """Extend the entry's claim and the user slot; False when the attempt is no longer current."""
        return bool(self._renew(
            keys=[keys.job_attempt(attempt.job_id), keys.user_slots(attempt.user_id), keys.JOBS_STREAM],
            args=[self.group, attempt.consumer, attempt.entry_id, attempt.token, lease_ms],
        ))

    def renew_waiting(self, consumer: str, entry_ids: Sequence[str]) -> list[str]:
        """Keep claims on entries waiting for a slot; returns the ids that are no longer ours."""
        if not entry_ids:
            return []
        lost = self._renew_waiting(keys=[keys.JOBS_STREAM], args=[self.group, consumer, *entry_ids])
        return [str(i) for i in lost]

    def is_current(self, attempt: Attempt) -> bool:
        return bool(self._check(
            keys=[keys.job_attempt(attempt.job_id), keys.JOBS_STREAM],
            args=[self.group, attempt.consumer, attempt.entry_id, attempt.token],
        ))

    def finish(self, attempt: Attempt, finished_at: int, fields: Mapping[str, str | int]) -> str:
        """Write the final fields, free the slot and ack, all or nothing: ok | cancelled | missing | lost.
        `finished_at` 0 instead puts the job back to `pending` (a debug run that must not consume it)."""
        flat: list[str | int] = []
        for name, value in fields.items():
            flat += [name, value]
        return str(self._finish(
            keys=[keys.job(attempt.job_id), keys.job_attempt(attempt.job_id),
                  keys.user_slots(attempt.user_id), keys.JOBS_STREAM],
            args=[self.group, attempt.consumer, attempt.entry_id, attempt.token, finished_at, *flat],
        ))

    def release_slot(self, attempt: Attempt) -> None:
        """Free this attempt's slot only (its own member): for an attempt that lost or stopped."""
        self.client.zrem(keys.user_slots(attempt.user_id), attempt.token)

    def reject(self, consumer: str, entry_id: str, fields: Mapping[str, str], reason: str, now: int,
               *, job_id: str = "", dead_letter: bool = False, deliveries: int = 1) -> bool:
        """Fail the entry's job (when it exists and is not final) with `reason` and ack the entry;
        with `dead_letter`, also file the entry under runner:dead_letters."""
        return bool(self._reject(
            keys=[keys.JOBS_STREAM, keys.DEAD_LETTERS_STREAM if dead_letter else "",
                  keys.job(job_id) if job_id else "", keys.waiting_entry(entry_id)],
            args=[self.group, consumer, entry_id, reason, now, json.dumps(dict(fields)), deliveries],
        ))

    def hand_back(self, consumer: str, entry_ids: Sequence[str]) -> list[str]:
        """Make entries `consumer` still owns claimable at once by any runner (idle set far past
        every CLAIM_MIN_IDLE); entries another runner took meanwhile are left alone."""
        if not entry_ids:
            return []
        handed = self._hand_back(keys=[keys.JOBS_STREAM], args=[self.group, consumer, HAND_BACK_IDLE_MS, *entry_ids])
        return [str(i) for i in handed]

    def mark_waiting(self, consumer: str, entry_id: str) -> None:
        self.client.set(keys.waiting_entry(entry_id), consumer, ex=WAITING_MARK_TTL_S)

    def take_waiting_mark(self, entry_id: str) -> bool:
        """True if the entry's last holder only waited with it (the mark is removed)."""
        return self.client.getdel(keys.waiting_entry(entry_id)) is not None

    def remove_consumer_if_gone(self, consumer: str) -> bool:
        """Delete a consumer with no heartbeat and nothing pending; True if it was removed."""
        return bool(self._remove_consumer(keys=[keys.JOBS_STREAM, keys.heartbeat(consumer)],
                                          args=[self.group, consumer]))

    def trim(self) -> int:
        """Drop acknowledged entries; never one still pending or not yet delivered."""
        return int(self._trim(keys=[keys.JOBS_STREAM]))
