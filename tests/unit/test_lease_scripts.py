"""Each lease script's outcomes, driven directly on a real redis-server: begin (ok, busy, active,
lost, missing, final, retried), renew, finish (ok, cancelled, missing, lost, retried),
return_to_pending, abandon, reject/acknowledge, release_unstarted, renew_waiting, trim."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from repobox_cli import keys
from repobox_cli.heartbeat import Heartbeat
from repobox_cli.jobs import Status
from repobox_cli.leases import (
    Also,
    Attempt,
    BeginOutcome,
    BeginResult,
    FinishOutcome,
    Leases,
    new_attempt_id,
)
from tests.support.redis_server import RedisServer

USER = "github:12345678"
LEASE_MS = 30_000
LIMIT = 2


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis_server.client()
    c.xgroup_create(keys.JOBS_STREAM, keys.RUNNERS_GROUP, id="0", mkstream=True)
    yield c


@pytest.fixture
def leases(client: redis.Redis) -> Leases:
    return Leases(client)


def delivered_job(client: redis.Redis, consumer: str = "r1", *, user: str = USER, status: str = "pending") -> Attempt:
    """A job hash and its stream entry, delivered to `consumer`: the attempt it would begin."""
    job_id = str(uuid.uuid4())
    client.hset(keys.job(job_id), mapping={"id": job_id, "user_id": user, "status": status})
    client.xadd(keys.JOBS_STREAM, {"job_id": job_id})
    reply = client.xreadgroup(keys.RUNNERS_GROUP, consumer, {keys.JOBS_STREAM: ">"}, count=1)
    entry_id = reply[0][1][0][0]
    return Attempt(job_id, user, consumer, entry_id, new_attempt_id())


def begin(leases: Leases, attempt: Attempt, limit: int = LIMIT) -> BeginOutcome:
    return leases.begin(attempt, limit=limit, lease_ms=LEASE_MS, started_at=1).outcome


def owner(client: redis.Redis, entry_id: str) -> str | None:
    rows = client.xpending_range(keys.JOBS_STREAM, keys.RUNNERS_GROUP, min=entry_id, max=entry_id, count=1)
    return str(rows[0]["consumer"]) if rows else None


# -- begin -------------------------------------------------------------------------------------


def test_begin_marks_running_takes_a_slot_and_sets_the_fencing_token(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)

    assert begin(leases, attempt) is BeginOutcome.OK

    assert client.hget(keys.job(attempt.job_id), "status") == "running"
    assert client.get(keys.job_attempt(attempt.job_id)) == attempt.token
    assert client.zscore(keys.user_slots(USER), attempt.token) is not None


def test_begin_retried_for_the_same_attempt_is_ok_and_takes_one_slot(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)

    assert begin(leases, attempt) is BeginOutcome.OK

    assert client.zcard(keys.user_slots(USER)) == 1


def test_begin_retried_while_its_slot_lives_counts_the_lease_from_the_retry(
    client: redis.Redis, leases: Leases
) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)  # its reply was lost: the runner's lease clock starts at the retry
    seconds, micros = client.time()
    sent_ms = seconds * 1000 + micros // 1000
    client.zadd(keys.user_slots(USER), {attempt.token: sent_ms + 1_000})  # the first begin was long ago

    assert leases.begin(attempt, limit=LIMIT, lease_ms=LEASE_MS, started_at=1).outcome is BeginOutcome.OK

    assert client.zscore(keys.user_slots(USER), attempt.token) >= sent_ms + LEASE_MS
    assert client.zcard(keys.user_slots(USER)) == 1


def test_begin_at_the_user_limit_is_busy_and_writes_nothing(client: redis.Redis, leases: Leases) -> None:
    for _ in range(LIMIT):
        assert begin(leases, delivered_job(client)) is BeginOutcome.OK
    extra = delivered_job(client)

    assert begin(leases, extra) is BeginOutcome.BUSY

    assert client.hget(keys.job(extra.job_id), "status") == "pending"
    assert client.get(keys.job_attempt(extra.job_id)) is None


def test_begin_beside_a_live_attempt_of_the_same_job_is_active(client: redis.Redis, leases: Leases) -> None:
    first = delivered_job(client)
    begin(leases, first)
    client.xadd(keys.JOBS_STREAM, {"job_id": first.job_id})  # a duplicate entry of the same job
    entry_id = client.xreadgroup(keys.RUNNERS_GROUP, "r2", {keys.JOBS_STREAM: ">"}, count=1)[0][1][0][0]
    second = Attempt(first.job_id, USER, "r2", entry_id, new_attempt_id())

    assert begin(leases, second) is BeginOutcome.ACTIVE


def test_begin_after_the_previous_attempt_lease_expired_takes_over(client: redis.Redis, leases: Leases) -> None:
    first = delivered_job(client)
    begin(leases, first)
    client.zadd(keys.user_slots(USER), {first.token: 1})  # its lease ran out long ago
    client.xclaim(keys.JOBS_STREAM, keys.RUNNERS_GROUP, "r2", 0, [first.entry_id])
    second = Attempt(first.job_id, USER, "r2", first.entry_id, new_attempt_id())

    result = leases.begin(second, limit=LIMIT, lease_ms=LEASE_MS, started_at=2)

    assert result.outcome is BeginOutcome.OK and result.previous_consumer == "r1"


def test_begin_of_an_entry_another_runner_owns_is_lost(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    client.xclaim(keys.JOBS_STREAM, keys.RUNNERS_GROUP, "r2", 0, [attempt.entry_id])

    assert begin(leases, attempt) is BeginOutcome.LOST


def test_begin_of_a_deleted_job_is_missing(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    client.delete(keys.job(attempt.job_id))

    assert begin(leases, attempt) is BeginOutcome.MISSING


def test_begin_of_a_final_job_is_final_with_its_status(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client, status="cancelled")

    result = leases.begin(attempt, limit=LIMIT, lease_ms=LEASE_MS, started_at=1)

    assert (result.outcome, result.final_status) == (BeginOutcome.FINAL, Status.CANCELLED)


def test_begin_that_reads_the_job_returns_its_fields_with_ok_and_again_when_retried(
    client: redis.Redis, leases: Leases
) -> None:
    attempt = delivered_job(client)
    client.hset(keys.job(attempt.job_id), mapping={"prompt": "Add a test file", "branch": "main"})

    first = leases.begin(attempt, limit=LIMIT, lease_ms=LEASE_MS, started_at=7, read=True)
    again = leases.begin(attempt, limit=LIMIT, lease_ms=LEASE_MS, started_at=7, read=True)

    stored = client.hgetall(keys.job(attempt.job_id))
    assert first.outcome is BeginOutcome.OK and first.record == stored
    assert stored["status"] == "running" and stored["prompt"] == "Add a test file"
    assert again.outcome is BeginOutcome.OK and again.record == stored
    assert client.zcard(keys.user_slots(USER)) == 1


def test_begin_that_reads_a_job_of_another_user_than_its_entry_writes_nothing(
    client: redis.Redis, leases: Leases
) -> None:
    attempt = delivered_job(client, user="google:987654321")
    claimed = Attempt(attempt.job_id, USER, attempt.consumer, attempt.entry_id, attempt.attempt_id)

    result = leases.begin(claimed, limit=LIMIT, lease_ms=LEASE_MS, started_at=1, read=True)

    assert (result.outcome, result.record) == (BeginOutcome.OTHER_USER, None)
    assert client.hget(keys.job(attempt.job_id), "status") == "pending"
    assert client.get(keys.job_attempt(attempt.job_id)) is None
    assert client.exists(keys.user_slots(USER), keys.user_slots("google:987654321")) == 0


def test_begin_that_reads_the_job_refuses_a_final_job_and_carries_the_fields_of_a_busy_one(
    client: redis.Redis, leases: Leases
) -> None:
    final = delivered_job(client, status="success")
    assert leases.begin(final, limit=LIMIT, lease_ms=LEASE_MS, started_at=1, read=True) == BeginResult(
        BeginOutcome.FINAL, final_status=Status.SUCCESS
    )
    for _ in range(LIMIT):
        begin(leases, delivered_job(client))
    extra = delivered_job(client)

    busy = leases.begin(extra, limit=LIMIT, lease_ms=LEASE_MS, started_at=1, read=True)

    assert busy.outcome is BeginOutcome.BUSY
    assert busy.record is not None and busy.record == client.hgetall(keys.job(extra.job_id))
    assert busy.record["status"] == "pending"


def test_begin_many_gives_each_attempt_the_outcome_begin_alone_would(client: redis.Redis, leases: Leases) -> None:
    running = delivered_job(client)
    final = delivered_job(client, status="cancelled")
    other = delivered_job(client, user="google:987654321")
    claimed_other = Attempt(other.job_id, USER, other.consumer, other.entry_id, other.attempt_id)
    client.script_flush()  # a restarted server: the pipelined script is not loaded

    results = leases.begin_many(
        [(running, True), (final, True), (claimed_other, True)], limit=LIMIT, lease_ms=LEASE_MS, started_at=1
    )

    assert [r.outcome for r in results] == [BeginOutcome.OK, BeginOutcome.FINAL, BeginOutcome.OTHER_USER]
    assert results[0].record == client.hgetall(keys.job(running.job_id))
    assert client.hget(keys.job(running.job_id), "status") == "running"
    assert client.hget(keys.job(other.job_id), "status") == "pending"
    again = leases.begin_many([(running, True)], limit=LIMIT, lease_ms=LEASE_MS, started_at=1)
    assert again[0].outcome is BeginOutcome.OK and client.zcard(keys.user_slots(USER)) == 1


# -- renew and check ---------------------------------------------------------------------------


def test_renew_extends_the_slot_and_fails_once_superseded(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)
    client.zadd(keys.user_slots(USER), {attempt.token: 5})

    assert leases.renew(attempt, LEASE_MS) and leases.confirm_current(attempt, LEASE_MS)
    assert client.zscore(keys.user_slots(USER), attempt.token) > 5

    client.set(keys.job_attempt(attempt.job_id), "other|r9")
    assert not leases.renew(attempt, LEASE_MS) and not leases.confirm_current(attempt, LEASE_MS)


# -- finish, return_to_pending, abandon --------------------------------------------------------


def test_renew_of_a_slot_removed_as_expired_fails_and_leaves_the_user_within_the_limit(
    client: redis.Redis, leases: Leases
) -> None:
    first = delivered_job(client, "r1")
    assert begin(leases, first, limit=1) is BeginOutcome.OK
    client.zadd(keys.user_slots(USER), {first.token: 1})  # r1 could not renew in time: its slot expired
    second = delivered_job(client, "r2")
    assert begin(leases, second, limit=1) is BeginOutcome.OK  # removes the expired slot, takes the user's one
    assert leases.renew(first, LEASE_MS) is False
    assert client.zrange(keys.user_slots(USER), 0, -1) == [second.token]


def test_begin_retried_after_its_own_slot_expired_begins_anew_under_the_limit(
    client: redis.Redis, leases: Leases
) -> None:
    first = delivered_job(client, "r1")
    assert begin(leases, first, limit=1) is BeginOutcome.OK  # its reply was lost: the runner retries it later
    client.zadd(keys.user_slots(USER), {first.token: 1})  # the retry comes after the slot's lease ran out
    second = delivered_job(client, "r1")
    assert begin(leases, second, limit=1) is BeginOutcome.OK
    assert begin(leases, first, limit=1) is BeginOutcome.BUSY
    assert client.zrange(keys.user_slots(USER), 0, -1) == [second.token]
    client.zrem(keys.user_slots(USER), second.token)  # the other job ended
    assert begin(leases, first, limit=1) is BeginOutcome.OK
    assert client.zrange(keys.user_slots(USER), 0, -1) == [first.token]


def test_a_runner_with_a_shorter_lease_never_shortens_the_life_of_the_users_slots(
    client: redis.Redis, leases: Leases
) -> None:
    long_lived = delivered_job(client, "r1")
    assert begin(leases, long_lived, limit=2) is BeginOutcome.OK  # the key lives 2 × LEASE_MS
    short_lease_ms = 1_000
    short_lived = delivered_job(client, "r2")
    assert leases.begin(short_lived, limit=2, lease_ms=short_lease_ms, started_at=1).outcome is BeginOutcome.OK
    assert leases.renew(short_lived, short_lease_ms)
    assert client.pttl(keys.user_slots(USER)) > LEASE_MS  # not cut to 2 × the short lease


def test_finish_writes_fields_frees_the_slot_and_acks(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)

    outcome = leases.finish(attempt, 99, {"status": "success", "lines_added": 3})

    job = client.hgetall(keys.job(attempt.job_id))
    assert outcome is FinishOutcome.OK
    assert (job["status"], job["finished_at"], job["lines_added"]) == ("success", "99", "3")
    assert client.zcard(keys.user_slots(USER)) == 0 and owner(client, attempt.entry_id) is None


def test_finish_retried_after_a_lost_reply_is_ok_and_writes_once(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)
    leases.finish(attempt, 99, {"status": "success"})
    client.hset(keys.job(attempt.job_id), "status", "cancelled")  # anything later must stay

    assert leases.finish(attempt, 100, {"status": "failed"}) is FinishOutcome.OK

    assert client.hget(keys.job(attempt.job_id), "finished_at") == "99"
    assert client.hget(keys.job(attempt.job_id), "status") == "cancelled"


def test_finish_of_a_cancelled_job_keeps_cancelled(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)
    client.hset(keys.job(attempt.job_id), "status", "cancelled")

    assert leases.finish(attempt, 99, {"status": "success"}) is FinishOutcome.CANCELLED

    assert client.hget(keys.job(attempt.job_id), "status") == "cancelled"


def test_finish_of_a_superseded_attempt_is_lost_and_writes_nothing(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)
    client.set(keys.job_attempt(attempt.job_id), "newer|r2")

    assert leases.finish(attempt, 99, {"status": "success"}) is FinishOutcome.LOST

    assert client.hget(keys.job(attempt.job_id), "status") == "running"
    assert owner(client, attempt.entry_id) == "r1"


def test_finish_of_a_deleted_job_is_missing_and_still_acks(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)
    client.delete(keys.job(attempt.job_id))

    assert leases.finish(attempt, 99, {"status": "success"}) is FinishOutcome.MISSING

    assert owner(client, attempt.entry_id) is None and not client.exists(keys.job(attempt.job_id))


def test_return_to_pending_gives_the_job_back_untouched(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)

    assert leases.return_to_pending(attempt) is FinishOutcome.PENDING

    job = client.hgetall(keys.job(attempt.job_id))
    assert job["status"] == "pending" and "started_at" not in job and "finished_at" not in job
    assert client.zcard(keys.user_slots(USER)) == 0


def test_abandon_frees_the_slot_and_hands_the_entry_back(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)

    assert leases.abandon(attempt, hand_back=True)

    assert client.zcard(keys.user_slots(USER)) == 0
    assert client.hget(keys.job(attempt.job_id), "status") == "running", "abandon writes nothing to the job"
    reply = client.xautoclaim(keys.JOBS_STREAM, keys.RUNNERS_GROUP, "r2", 60_000, start_id="0-0")
    assert [i for i, _ in reply[1]] == [attempt.entry_id]


def test_abandon_leaves_an_entry_another_runner_took(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    begin(leases, attempt)
    client.xclaim(keys.JOBS_STREAM, keys.RUNNERS_GROUP, "r2", 0, [attempt.entry_id])

    assert not leases.abandon(attempt, hand_back=True)

    assert owner(client, attempt.entry_id) == "r2"


# -- entries that never began ------------------------------------------------------------------


def test_reject_fails_the_job_files_a_dead_letter_and_acks(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    fields = {"job_id": attempt.job_id}

    assert leases.reject(
        "r1", attempt.entry_id, fields, "poison", 7, job_id=attempt.job_id, dead_letter=True, deliveries=6
    )

    job = client.hgetall(keys.job(attempt.job_id))
    assert (job["status"], job["error_message"], job["finished_at"]) == ("failed", "poison", "7")
    ((dead_id, dead),) = client.xrange(keys.DEAD_LETTERS_STREAM)
    assert dead["entry_id"] == attempt.entry_id and dead["deliveries"] == "6" and json.loads(dead["fields"]) == fields
    assert owner(client, attempt.entry_id) is None


def test_reject_of_an_entry_no_longer_ours_does_nothing(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client)
    client.xclaim(keys.JOBS_STREAM, keys.RUNNERS_GROUP, "r2", 0, [attempt.entry_id])

    assert not leases.reject("r1", attempt.entry_id, {}, "x", 7, job_id=attempt.job_id)

    assert client.hget(keys.job(attempt.job_id), "status") == "pending"


def test_acknowledge_acks_without_touching_a_final_job(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client, status="success")

    assert leases.acknowledge("r1", attempt.entry_id)

    assert owner(client, attempt.entry_id) is None
    assert client.hgetall(keys.job(attempt.job_id))["status"] == "success"


def script_exists_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_script|exists", {})
    return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0


@pytest.mark.parametrize("restarted", [False, True], ids=["scripts-loaded", "server-restarted"])
def test_acknowledge_many_acks_ours_in_one_call_and_leaves_an_entry_another_runner_took(
    client: redis.Redis, leases: Leases, restarted: bool
) -> None:
    ours = [delivered_job(client, status="success") for _ in range(3)]
    taken = delivered_job(client, status="success")
    client.xclaim(keys.JOBS_STREAM, keys.RUNNERS_GROUP, "r2", 0, [taken.entry_id])
    if restarted:
        client.script_flush()  # the pipelined script is not loaded: each ack is retried alone
    exists_asked = script_exists_calls(client)

    done = leases.acknowledge_many("r1", [a.entry_id for a in ours] + [taken.entry_id])

    assert script_exists_calls(client) == exists_asked, "the pipeline asked SCRIPT EXISTS first: a round trip more"

    assert done == [True, True, True, False]
    assert all(owner(client, a.entry_id) is None for a in ours)
    assert owner(client, taken.entry_id) == "r2"
    assert all(client.hget(keys.job(a.job_id), "status") == "success" for a in [*ours, taken])


def test_release_unstarted_marks_as_waited_and_hands_back(client: redis.Redis, leases: Leases) -> None:
    mine = delivered_job(client)
    theirs = delivered_job(client, "r2")

    handed = leases.release_unstarted("r1", [mine.entry_id, theirs.entry_id])

    assert handed == [mine.entry_id]
    assert leases.take_waiting_mark(mine.entry_id) and not leases.take_waiting_mark(theirs.entry_id)


def test_renew_waiting_returns_the_entries_no_longer_ours(client: redis.Redis, leases: Leases) -> None:
    kept = delivered_job(client)
    taken = delivered_job(client)
    client.xclaim(keys.JOBS_STREAM, keys.RUNNERS_GROUP, "r2", 0, [taken.entry_id])

    assert leases.renew_waiting("r1", [kept.entry_id, taken.entry_id]) == [taken.entry_id]


def test_remove_consumer_only_when_it_has_no_heartbeat_and_nothing_pending(client: redis.Redis, leases: Leases) -> None:
    attempt = delivered_job(client, "gone")
    assert not leases.remove_consumer_if_gone("gone")  # still holds an entry
    client.xack(keys.JOBS_STREAM, keys.RUNNERS_GROUP, attempt.entry_id)
    client.set(keys.heartbeat("gone"), "{}")
    assert not leases.remove_consumer_if_gone("gone")  # alive
    client.delete(keys.heartbeat("gone"))

    assert leases.remove_consumer_if_gone("gone")

    assert "gone" not in [c["name"] for c in client.xinfo_consumers(keys.JOBS_STREAM, keys.RUNNERS_GROUP)]


def _heartbeat(client: redis.Redis, runner: str, *, stopping: bool) -> None:
    heartbeat = Heartbeat(client, runner, 4)
    if stopping:
        heartbeat.stopping(1, 0)
    else:
        heartbeat.beat(1, 0)


@pytest.mark.parametrize(
    ("alive", "stopping", "moved"), [(True, False, True), (True, True, False), (False, False, False)]
)
def test_forward_moves_an_entry_only_to_a_live_owner_that_is_not_stopping_and_marks_it_waiting(
    client: redis.Redis, leases: Leases, alive: bool, stopping: bool, moved: bool
) -> None:
    attempt = delivered_job(client, "r2")
    if alive:
        _heartbeat(client, "r1", stopping=stopping)

    assert leases.forward("r2", attempt.entry_id, "r1") is moved

    assert owner(client, attempt.entry_id) == ("r1" if moved else "r2")
    assert (client.get(keys.waiting_entry(attempt.entry_id)) == "r1") is moved  # its takeover counts no delivery


def begun_step(client: redis.Redis, leases: Leases, session: dict[str, str]) -> tuple[Attempt, str]:
    """A begun attempt, and a work session's hash with `session`'s fields (its key)."""
    attempt = delivered_job(client)
    assert begin(leases, attempt) is BeginOutcome.OK
    session_key = keys.work_session(str(uuid.uuid4()))
    client.hset(session_key, mapping=session)
    return attempt, session_key


def test_finish_ends_the_step_and_its_session_together_and_a_retry_counts_nothing_twice(
    client: redis.Redis, leases: Leases
) -> None:
    attempt, session_key = begun_step(client, leases, {"status": "running", "job_count": "1", "user_id": USER})
    session = Also(session_key, {"status": "ready", "last_job_status": "success"}, "job_count")

    for _ in range(2):  # the second: a retry after a lost reply
        assert leases.finish(attempt, 5, {"status": "success"}, session) is FinishOutcome.OK

    assert client.hgetall(keys.job(attempt.job_id))["status"] == "success"
    assert client.hgetall(session_key) == {
        "status": "ready",
        "last_job_status": "success",
        "job_count": "2",
        "user_id": USER,
    }


def test_a_finish_that_lost_its_attempt_leaves_the_session_alone_and_never_makes_one(
    client: redis.Redis, leases: Leases
) -> None:
    attempt, session_key = begun_step(client, leases, {"status": "running", "job_count": "1"})
    client.set(keys.job_attempt(attempt.job_id), "another|r2")  # taken over meanwhile

    assert leases.finish(attempt, 5, {"status": "success"}, Also(session_key, {"status": "ready"}, "job_count")) is (
        FinishOutcome.LOST
    )
    assert client.hgetall(session_key) == {"status": "running", "job_count": "1"}

    gone = keys.work_session(str(uuid.uuid4()))  # archived and deleted by the web app meanwhile
    other = delivered_job(client)
    assert begin(leases, other) is BeginOutcome.OK
    assert leases.finish(other, 5, {"status": "success"}, Also(gone, {"status": "ready"}, "job_count")) is (
        FinishOutcome.OK
    )
    assert not client.exists(gone)


def test_a_step_that_ends_after_its_session_was_archived_leaves_the_session_archived(
    client: redis.Redis, leases: Leases
) -> None:
    attempt, session_key = begun_step(client, leases, {"status": "archived", "job_count": "1"})  # deleted meanwhile

    assert leases.finish(attempt, 5, {"status": "success"}, Also(session_key, {"status": "ready"}, "job_count")) is (
        FinishOutcome.OK
    )
    assert client.hgetall(session_key) == {"status": "archived", "job_count": "1"}
    assert client.hget(keys.job(attempt.job_id), "status") == "success"
