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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from repobox_cli import procs

READ_BYTES = 65536


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
            )
            spawned.add(self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    def finish(self) -> Finished:
        """Write stdin, read stdout and stderr until both end, wait; the exit status (negative:
        killed by that signal) and stdout, decoded with replacement characters."""
        process = self.process
        assert process.stdout is not None and process.stderr is not None
        stdout: list[bytes] = []
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
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
                while selector.get_map():
                    for key, _ in selector.select():
                        fileobj = key.fileobj
                        if fileobj is process.stdin:
                            written += self._write(selector, written)
                            continue
                        chunk = os.read(key.fd, READ_BYTES)
                        if not chunk:
                            selector.unregister(fileobj)
                            continue
                        if fileobj is process.stdout:
                            stdout.append(chunk)
                        else:
                            self._on_stderr(decoder.decode(chunk))
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
