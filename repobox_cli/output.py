"""A job's output list `job:{id}:output`: redacted JSON lines, kept in order through Redis outages,
and bounded so that an agent that talks without end cannot fill Redis or the runner's memory.

Bounds (one `JobOutput` per attempt; `OutputLimits` comes from MAX_OUTPUT_LINES/MAX_OUTPUT_BYTES):
- every line is cut at `MAX_LINE_BYTES` of UTF-8 and says so (`… [cut N bytes]`);
- the list never holds more than `max_lines` items nor `max_bytes` bytes (JSON as stored);
- the agent's lines and git's lines share the budget minus a reserve (`RUNNER_RESERVE_LINES`,
  `RUNNER_RESERVE_BYTES`); the reserve is kept for the runner's own step and final lines, which
  a chatty agent therefore can never crowd out;
- past the shared budget, further shared lines are counted and discarded (the agent is neither
  blocked nor killed: its pipes are still read) and exactly one runner line says so:
  `... output truncated after N lines: …`. Its counts are brought up to date in place (LSET)
  whenever a runner line follows and when the job's output is drained at its end.

Threads: the agent's two pipe readers and the job's own thread all call `write`; the runner's
`OutputBatcher` and the supervisor call `flush`. Every field below is guarded by `_lock`, and the
Redis calls (one short pipeline) run under it to keep lines in order.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import redis

from repobox_cli import keys
from repobox_cli.jobs import output_line
from repobox_cli.output_batcher import OutputBatcher
from repobox_cli.output_limits import AGENT_SOURCE, OutputLimits
from repobox_cli.redaction import redact
from repobox_cli.redis_conn import CONNECTION_ERRORS, RedisHealth

log = logging.getLogger(__name__)

OUTPUT_TTL_S = 86400
RUNNER_SOURCE = "runner"
ERROR_PREFIX = "Error: "
MAX_BUFFERED_LINES = 100_000  # while Redis is away; beyond this the oldest are dropped, and counted
MAX_LINE_BYTES = 4 * 1024
# Used only to retry a push whose reply was lost (see lua/append_output.lua).
_APPEND_OUTPUT = (resources.files("repobox_cli") / "lua" / "append_output.lua").read_text()
NOTICE_SLACK_BYTES = 128  # the notice grows a little when its counts are brought up to date

Echo = Callable[[str, str, str], None]  # (line, stream, source), already redacted


def cut_line(line: str, max_bytes: int = MAX_LINE_BYTES) -> str:
    """`line` if it fits in `max_bytes` of UTF-8, else its head and a marker saying how much was cut."""
    data = line.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return line
    marker = f" … [cut {len(data)} bytes to {max_bytes}]"
    head = data[: max_bytes - len(marker.encode())].decode("utf-8", "ignore")
    return head + marker


@dataclass
class _Notice:
    """The one truncation line: where it is (in the buffer, or at an index of the list)."""

    kept_lines: int
    item: str
    buffer_pos: int | None = None
    list_index: int | None = None
    stale: bool = False  # `item` changed after it reached Redis: an LSET is due


class JobOutput:
    """Appends output lines; if Redis is away they wait in memory and go out, in order, later."""

    def __init__(
        self,
        client: redis.Redis,
        job_id: str,
        health: RedisHealth,
        echo: Echo | None = None,
        limits: OutputLimits | None = None,
        *,
        key: str | None = None,
        ttl_s: int = OUTPUT_TTL_S,
        batcher: OutputBatcher | None = None,
    ) -> None:
        """Lines go to `job:{job_id}:output`, or to `key` (a work session's output) with `ttl_s`;
        each line at once, or with `batcher`, in batches (within `BATCH_S`)."""
        self.batcher = batcher
        self.client = client
        self.key = key or keys.job_output(job_id)
        self.ttl_s = ttl_s
        self.health = health
        self.echo = echo
        self.limits = limits or OutputLimits()
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self.dropped = 0  # lines lost to Redis (away too long, or the key is not a list)
        self.lines = 0  # lines admitted to the list, and their bytes as stored
        self.bytes = 0
        self.cut_lines = 0  # lines past a cap: counted, discarded
        self.cut_bytes = 0
        self._notice: _Notice | None = None
        # Leading buffered lines whose last push lost its reply: they may be in the list already.
        self._uncertain = 0

    def write(self, line: str, stream: str = "stdout", source: str = "runner", *, reserved: bool = False) -> None:
        """Append one line. `reserved` lines (the runner's own) may use the runner's reserve."""
        with self._lock:
            shown = self._admit_locked(line, stream, source, reserved)
            if shown and self.batcher is None:
                self._flush_locked()
        if shown and self.batcher is not None:
            self.batcher.due(self)
        if self.echo is not None:
            for text, line_stream, line_source in shown:
                self.echo(text, line_stream, line_source)

    def runner(self, line: str) -> None:
        """One of the runner's own lines: a step (`Cloning …`) or a report; never an error."""
        self.write(line, "stdout", RUNNER_SOURCE, reserved=True)

    def error(self, reason: str) -> None:
        """The runner reports an error: `Error: <reason>` on stderr (the web app paints it red)."""
        self.write(f"{ERROR_PREFIX}{reason}", "stderr", RUNNER_SOURCE, reserved=True)

    def agent(self, line: str, stream: str) -> None:
        self.write(line, stream, AGENT_SOURCE)

    def git(self, line: str, stream: str) -> None:
        # git's progress and messages share the agent's budget: only the runner's own steps
        # may use the reserve.
        self.write(line, stream, RUNNER_SOURCE)

    def flush(self) -> bool:
        """True when nothing is left waiting."""
        with self._lock:
            return self._flush_locked()

    def drain(self) -> None:
        """Write every waiting line now; raises a connection error if Redis is away (for retry)."""
        with self._lock:
            self._refresh_notice_locked()
            # Twice at most: a notice whose place the first write learned is brought up to date.
            for _ in range(2):
                if self._buffer or self._notice_stale:
                    self._write_locked()

    @property
    def pending_lines(self) -> int:
        return len(self._buffer)

    # admission --------------------------------------------------------------------------------
    def _admit_locked(self, line: str, stream: str, source: str, reserved: bool) -> list[tuple[str, str, str]]:
        """The lines to show (the line, perhaps after the notice), each already counted and buffered."""
        if self._notice is not None and not reserved:
            self._discard_locked(line)  # cheap: no redaction or JSON for output nobody will see
            return []
        safe = cut_line(redact(line))
        item = output_line(safe, stream=stream, source=source)
        size = len(item.encode())
        lines_cap, bytes_cap = self._caps(reserved)
        if self.lines + 1 <= lines_cap and self.bytes + size <= bytes_cap:
            if reserved:
                self._refresh_notice_locked()
            self._append_locked(item, size)
            return [(safe, stream, source)]
        self._discard_locked(line)
        if self._notice is not None:
            return []
        notice = self._start_notice_locked()
        return [(notice, "stdout", "runner")]

    def _caps(self, reserved: bool) -> tuple[int, int]:
        limits = self.limits
        if reserved:
            return limits.max_lines, limits.max_bytes
        return limits.shared_lines, limits.shared_bytes

    def _discard_locked(self, line: str) -> None:
        self.cut_lines += 1
        self.cut_bytes += len(line.encode("utf-8", "replace"))

    def _append_locked(self, item: str, size: int) -> None:
        self.lines += 1
        self.bytes += size
        self._buffer.append(item)
        if len(self._buffer) > MAX_BUFFERED_LINES:
            del self._buffer[0]
            self.dropped += 1
            self._uncertain = max(0, self._uncertain - 1)
            self._buffer_shifted_locked()

    # the truncation notice ----------------------------------------------------------------
    def _notice_text(self, kept_lines: int) -> str:
        limits = self.limits
        return (
            f"... output truncated after {kept_lines} lines: {self.cut_lines} more line(s) "
            f"({self.cut_bytes} bytes) dropped (MAX_OUTPUT_LINES={limits.max_lines}, "
            f"MAX_OUTPUT_BYTES={limits.max_bytes})"
        )

    def _start_notice_locked(self) -> str:
        """Write the notice from the reserve (it always fits: the reserve is far larger)."""
        text = self._notice_text(self.lines)
        item = output_line(text, stream="stdout", source="runner")
        self._notice = _Notice(kept_lines=self.lines, item=item, buffer_pos=len(self._buffer))
        self._append_locked(item, len(item.encode()) + NOTICE_SLACK_BYTES)
        return text

    def _refresh_notice_locked(self) -> None:
        """Bring the notice's counts up to date: in the buffer, or by an LSET at the next write."""
        notice = self._notice
        if notice is None:
            return
        fields = json.loads(notice.item)
        text = self._notice_text(notice.kept_lines)
        if fields["line"] == text:
            return
        fields["line"] = text  # same timestamp: it is the line written when output was cut
        notice.item = json.dumps(fields, ensure_ascii=False)
        if notice.buffer_pos is not None and notice.buffer_pos >= self._uncertain:
            self._buffer[notice.buffer_pos] = notice.item
        elif notice.buffer_pos is not None or notice.list_index is not None:
            # In Redis, or perhaps there (its push lost its reply: the retry must send it as it
            # was, to recognise it): an LSET, once its place in the list is known.
            notice.stale = True

    @property
    def _notice_stale(self) -> bool:
        return self._notice is not None and self._notice.stale

    def _buffer_shifted_locked(self) -> None:
        notice = self._notice
        if notice is not None and notice.buffer_pos is not None:
            notice.buffer_pos = notice.buffer_pos - 1 if notice.buffer_pos > 0 else None

    # writing ------------------------------------------------------------------------------
    def _flush_locked(self) -> bool:
        if not self._buffer and not self._notice_stale:
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
        pipe = self.client.pipeline(transaction=False)
        notice = self._notice
        updating = notice is not None and notice.stale and notice.list_index is not None
        if updating:
            assert notice is not None and notice.list_index is not None
            pipe.lset(self.key, notice.list_index, notice.item)
        if self._buffer and self._uncertain:
            append = self.client.register_script(_APPEND_OUTPUT)
            append(keys=[self.key], args=[self.ttl_s, self._uncertain, *self._buffer], client=pipe)
        elif self._buffer:
            pipe.rpush(self.key, *self._buffer)
            pipe.expire(self.key, self.ttl_s)
        try:
            replies = pipe.execute(raise_on_error=False)
        except CONNECTION_ERRORS:
            self._uncertain = len(self._buffer)  # sent, perhaps applied: the retry must not repeat it
            raise
        self._uncertain = 0
        if updating:
            assert notice is not None
            notice.stale = False  # an error (the list was deleted meanwhile) is not worth a retry
            replies = replies[1:]
        if self._buffer:
            self._pushed_locked(replies[0])
        self._buffer.clear()

    def _pushed_locked(self, reply: object) -> None:
        if isinstance(reply, redis.ResponseError):  # e.g. WRONGTYPE: the key is not a list
            log.warning(
                "cannot write to %s: %s; %d output line(s) dropped",
                self.key,
                reply,
                len(self._buffer),
            )
            self.dropped += len(self._buffer)
            if self._notice is not None and self._notice.buffer_pos is not None:
                self._notice.buffer_pos = None
            return
        notice = self._notice
        if notice is not None and notice.buffer_pos is not None and isinstance(reply, int):
            # RPUSH answers the list's new length: the notice's index counts from the head.
            notice.list_index = reply - len(self._buffer) + notice.buffer_pos
            notice.buffer_pos = None
