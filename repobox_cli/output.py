"""A job's output list `job:{id}:output`: redacted JSON lines, kept in order through Redis outages."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from repobox_cli import keys
from repobox_cli.jobs import output_line
from repobox_cli.redaction import redact
from repobox_cli.redis_conn import CONNECTION_ERRORS, RedisHealth

log = logging.getLogger(__name__)

OUTPUT_TTL_S = 86400
RUNNER_SOURCE = "runner"
# The web app's one name for agent output, whatever the agent is (its types know no other).
AGENT_SOURCE = "claude"
ERROR_PREFIX = "Error: "
MAX_BUFFERED_LINES = 100_000  # while Redis is away; beyond this the oldest are dropped, and counted

Echo = Callable[[str, str, str], None]  # (line, stream, source), already redacted


class JobOutput:
    """Appends output lines; if Redis is away they wait in memory and go out, in order, later."""

    def __init__(self, client: redis.Redis, job_id: str, health: RedisHealth, echo: Echo | None = None, *,
                 key: str | None = None, ttl_s: int = OUTPUT_TTL_S) -> None:
        """Lines go to `job:{job_id}:output`, or to `key` (a work session's output) with `ttl_s`."""
        self.client = client
        self.key = key or keys.job_output(job_id)
        self.ttl_s = ttl_s
        self.health = health
        self.echo = echo
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self.dropped = 0

    def write(self, line: str, stream: str = "stdout", source: str = "runner") -> None:
        safe = redact(line)
        if self.echo is not None:
            self.echo(safe, stream, source)
        with self._lock:
            self._buffer.append(output_line(safe, stream=stream, source=source))
            if len(self._buffer) > MAX_BUFFERED_LINES:
                del self._buffer[0]
                self.dropped += 1
            self._flush_locked()

    def runner(self, line: str) -> None:
        """One of the runner's own lines: a step (`Cloning …`) or a report; never an error."""
        self.write(line, "stdout", RUNNER_SOURCE)

    def error(self, reason: str) -> None:
        """The runner reports an error: `Error: <reason>` on stderr (the web app paints it red)."""
        self.write(f"{ERROR_PREFIX}{reason}", "stderr", RUNNER_SOURCE)

    def agent(self, line: str, stream: str) -> None:
        self.write(line, stream, AGENT_SOURCE)

    def git(self, line: str, stream: str) -> None:
        self.write(line, stream, RUNNER_SOURCE)

    def flush(self) -> bool:
        """True when nothing is left waiting."""
        with self._lock:
            return self._flush_locked()

    def drain(self) -> None:
        """Write every waiting line now; raises a connection error if Redis is away (for retry)."""
        with self._lock:
            if self._buffer:
                self._write_locked()

    @property
    def pending_lines(self) -> int:
        return len(self._buffer)

    def _flush_locked(self) -> bool:
        if not self._buffer:
            return True
        if self.health.is_lost:
            return False  # the supervisor's flush will retry; don't stall the job on each line
        try:
            self._write_locked()
        except CONNECTION_ERRORS as exc:
            self.health.lost(exc)
            return False
        return True

    def _write_locked(self) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(self.key, *self._buffer)
            pipe.expire(self.key, self.ttl_s)
            pipe.execute()
        except redis.ResponseError as exc:  # e.g. WRONGTYPE: the key is not a list
            log.warning("cannot write to %s: %s; %d output line(s) dropped", self.key, exc, len(self._buffer))
            self.dropped += len(self._buffer)
        self._buffer.clear()
