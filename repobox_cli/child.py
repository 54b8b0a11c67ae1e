"""Run one short-lived child (git) and collect its output on the calling thread: stdin written,
stdout kept, stderr handed on in decoded chunks as it arrives. No helper threads, one `poll`
loop: starting a child costs a fork and an exec, not the thread set-up of a process library.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from repobox_cli import procs

READ_BYTES = 65536
# After the child exits, how long its pipes may stay open: a process it left behind in another
# session (not killed with its group) could hold them for ever.
PIPE_GRACE_S = 5.0
POLL_S = 0.5  # how often an open pipe's wait checks whether the child has exited


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str


class Child:
    """A started child; `finish` drives its pipes and waits for it."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        stdin: str | None,
        on_stderr: Callable[[str], None],
        stdout_errors: str = "replace",
        pass_fds: Sequence[int] = (),
    ) -> None:
        # Surrogate escapes (file names that are not UTF-8, as os.listdir gives them) go back to
        # the bytes they stand for.
        self._input = stdin.encode("utf-8", "surrogateescape") if stdin is not None else b""
        self._stdout_errors = stdout_errors
        self._on_stderr = on_stderr
        with procs.spawning() as spawned:
            # OSError (no such program, no such directory) is the caller's to word.
            self.process = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                pass_fds=tuple(pass_fds),
            )
            spawned.add(self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    def finish(self) -> Finished:
        """Write stdin, read stdout and stderr until both end, wait; the exit status (negative:
        killed by that signal) and stdout, decoded with replacement characters."""
        process = self.process
        stdout: list[bytes] = []
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            self._pump(stdout, decoder)
            tail = decoder.decode(b"", final=True)
            if tail:
                self._on_stderr(tail)
        except BaseException:
            # Never wait below for a child nobody reads any more: its whole group goes (git's own
            # helpers too: remote-https, index-pack, checkout workers).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            raise
        finally:
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
            try:
                code = process.wait()
            finally:
                procs.forget(process.pid)
        return Finished(code, b"".join(stdout).decode("utf-8", self._stdout_errors))

    def _pump(self, stdout: list[bytes], decoder: codecs.IncrementalDecoder) -> None:
        """Move the bytes until every pipe has ended, or PIPE_GRACE_S after the child exited."""
        process = self.process
        assert process.stdout is not None and process.stderr is not None
        with selectors.DefaultSelector() as selector:
            if process.stdin is not None:
                if self._input:
                    os.set_blocking(process.stdin.fileno(), False)
                    selector.register(process.stdin, selectors.EVENT_WRITE)
                else:
                    process.stdin.close()
            selector.register(process.stdout, selectors.EVENT_READ)
            selector.register(process.stderr, selectors.EVENT_READ)
            written = 0
            exited_at: float | None = None
            while selector.get_map():
                ready = selector.select(POLL_S)
                if exited_at is None and process.poll() is not None:
                    exited_at = time.monotonic()
                if exited_at is not None and time.monotonic() - exited_at > PIPE_GRACE_S:
                    return  # what it wrote so far is its output
                for key, _ in ready:
                    fileobj = key.fileobj
                    if fileobj is process.stdin:
                        written += self._write(selector, written)
                        continue
                    chunk = os.read(key.fd, READ_BYTES)
                    if not chunk:
                        selector.unregister(fileobj)
                    elif fileobj is process.stdout:
                        stdout.append(chunk)
                    else:
                        self._on_stderr(decoder.decode(chunk))

    def _write(self, selector: selectors.BaseSelector, written: int) -> int:
        """Write the next part of stdin; the bytes written. Closes stdin at the end, or when the
        child stopped reading (it will say why on stderr, or its status will)."""
        stdin = self.process.stdin
        assert stdin is not None
        try:
            count = os.write(stdin.fileno(), self._input[written : written + READ_BYTES])
        except BrokenPipeError:
            count = len(self._input) - written
        if written + count >= len(self._input):
            selector.unregister(stdin)
            stdin.close()
        return count
