"""The per-user waiting queues: FIFO per user, heads only, duplicates ignored, and safe when one
thread adds while another iterates, renews and drops (the supervisor and the consumer thread)."""

from __future__ import annotations

import threading
import time
import uuid

from repobox_cli.jobs import StreamEntry
from repobox_cli.waiting import Waiting, WaitingQueues

DEADLINE_S = 10.0


def waiting(entry_id: str, user: str) -> Waiting:
    """An entry admitted but not yet read (the begin script reads its job): queued by its user."""
    job_id = str(uuid.uuid4())
    return Waiting(StreamEntry(entry_id, job_id, {"job_id": job_id, "user_id": user}), user)


def test_heads_are_each_users_oldest_entry() -> None:
    queues = WaitingQueues(limit=10)
    for entry_id, user in (("1-0", "github:1"), ("2-0", "github:1"), ("3-0", "google:2")):
        queues.add(waiting(entry_id, user))

    assert sorted(w.entry_id for w in queues.heads()) == ["1-0", "3-0"]


def test_settle_removes_the_head_and_to_back_moves_it_behind_the_users_others() -> None:
    queues = WaitingQueues(limit=10)
    first, second = waiting("1-0", "github:1"), waiting("2-0", "github:1")
    queues.add(first)
    queues.add(second)

    queues.settle(first, to_back=True)
    assert [w.entry_id for w in queues.heads()] == ["2-0"] and "1-0" in queues

    queues.settle(second)
    assert [w.entry_id for w in queues.heads()] == ["1-0"] and "2-0" not in queues and len(queues) == 1


def test_settle_of_an_entry_that_is_no_longer_head_does_nothing() -> None:
    queues = WaitingQueues(limit=10)
    first, second = waiting("1-0", "u"), waiting("2-0", "u")
    queues.add(first)
    queues.add(second)

    queues.settle(second)

    assert len(queues) == 2


def test_a_duplicate_entry_is_held_once() -> None:
    queues = WaitingQueues(limit=10)
    queues.add(waiting("1-0", "u"))
    queues.add(waiting("1-0", "u"))

    assert len(queues) == 1 and queues.ids() == ["1-0"]


def test_drop_and_clear_forget_entries() -> None:
    queues = WaitingQueues(limit=2)
    for entry_id, user in (("1-0", "a"), ("2-0", "b")):
        queues.add(waiting(entry_id, user))
    assert queues.full()

    queues.drop({"1-0"})
    assert queues.ids() == ["2-0"] and not queues.full()
    assert queues.clear() == ["2-0"] and len(queues) == 0 and queues.heads() == []


def test_adding_from_one_thread_while_another_iterates_and_drops_never_fails() -> None:
    queues = WaitingQueues(limit=1_000_000)
    errors: list[BaseException] = []
    stop = threading.Event()

    def supervisor() -> None:
        try:
            while not stop.is_set():
                ids = queues.ids()
                queues.heads()
                len(queues)
                queues.drop(set(ids[: len(ids) // 2]))
        except BaseException as exc:  # noqa: BLE001 - the test reports what the thread hit
            errors.append(exc)

    thread = threading.Thread(target=supervisor)
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    try:
        for i in range(5_000):
            queues.add(waiting(f"{i}-0", f"github:{i % 97}"))
            if time.monotonic() > deadline:
                break
    finally:
        stop.set()
        thread.join(DEADLINE_S)

    assert not thread.is_alive() and errors == []
    assert len(queues) == len(queues.ids()) == len(set(queues.ids()))
