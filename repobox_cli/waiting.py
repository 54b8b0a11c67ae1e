"""Entries admitted but not running: per-user FIFO queues, waiting for a worker or a user slot.

Thread-safe: every method takes the queues' own lock, and none makes a Redis call, so the
consumer thread (adding) and the supervisor (starting heads, renewing, dropping) never wait on
the network for each other.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from repobox_cli.jobs import Job, StreamEntry
from repobox_cli.leases import new_attempt_id


@dataclass
class Waiting:
    """An admitted entry not yet running. Its attempt id is fixed, so a retried begin after a
    lost reply is recognised as the same attempt. `job` is None until the begin script reads it
    (`WorkKind.entry_user`): `user_id` is then the user the entry names."""

    entry: StreamEntry
    user_id: str
    job: Job | None = None
    attempt_id: str = field(default_factory=new_attempt_id)

    @property
    def entry_id(self) -> str:
        return self.entry.entry_id


class WaitingQueues:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Waiting]] = {}
        self._ids: set[str] = set()

    def add(self, waiting: Waiting) -> None:
        with self._lock:
            if waiting.entry_id in self._ids:
                return
            self._queues.setdefault(waiting.user_id, deque()).append(waiting)
            self._ids.add(waiting.entry_id)

    def __contains__(self, entry_id: object) -> bool:
        with self._lock:
            return entry_id in self._ids

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def full(self) -> bool:
        return len(self) >= self.limit

    def ids(self) -> list[str]:
        with self._lock:
            return [w.entry_id for queue in self._queues.values() for w in queue]

    def heads(self) -> list[Waiting]:
        """Each user's oldest waiting entry: only heads try for a slot, so a user's jobs start
        in order and a user at the limit holds up nobody else."""
        with self._lock:
            return [queue[0] for queue in self._queues.values() if queue]

    def settle(self, head: Waiting, *, to_back: bool = False) -> None:
        """`head` is done waiting (started, refused, gone): remove it if it is still its user's
        head; with `to_back`, move it behind the user's other entries instead."""
        with self._lock:
            queue = self._queues.get(head.user_id)
            if not queue or queue[0] is not head:
                return
            queue.popleft()
            if to_back:
                queue.append(head)
            else:
                self._ids.discard(head.entry_id)
            if not queue:
                del self._queues[head.user_id]

    def drop(self, entry_ids: set[str]) -> None:
        """Forget entries that are no longer this runner's."""
        with self._lock:
            for user in list(self._queues):
                kept = deque(w for w in self._queues[user] if w.entry_id not in entry_ids)
                if kept:
                    self._queues[user] = kept
                else:
                    del self._queues[user]
            self._ids -= entry_ids

    def clear(self) -> list[str]:
        """Empty every queue; the ids that were waiting."""
        with self._lock:
            ids = [w.entry_id for queue in self._queues.values() for w in queue]
            self._queues.clear()
            self._ids.clear()
            return ids
