"""Counting one process's Redis commands with MONITOR: commands sent by its own connections
(found in /proc), not those run inside its Lua scripts. A raw socket, so that waiting with a
timeout cannot upset a client library's connection state."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter

from benchmarks.procinfo import local_ports

READ_TIMEOUT_S = 0.05
PORT_SCAN_S = 0.1
# +1732780000.123456 [0 127.0.0.1:54321] "XREADGROUP" "GROUP" ...   ([0 lua] inside scripts)
LINE = re.compile(r'^\+[\d.]+ \[\d+ (?:[\d.]+:(?P<port>\d+)|lua)\] "(?P<name>[^"]*)"(?: "(?P<key>[^"]*)")?')


class CommandCounter:
    def __init__(self, redis_port: int, pid: int) -> None:
        self.pid = pid
        self.redis_port = redis_port
        self.counting = threading.Event()
        self.stopped = threading.Event()
        self.commands: Counter[str] = Counter()
        self._seen: list[tuple[int, str]] = []
        self._ports: set[int] = set()
        self._sock = socket.create_connection(("127.0.0.1", redis_port))
        self._sock.sendall(b"MONITOR\r\n")
        self._sock.settimeout(READ_TIMEOUT_S)
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        buffer = b""
        scanned = 0.0
        while not self.stopped.is_set():
            if time.monotonic() - scanned > PORT_SCAN_S:
                self._ports |= local_ports(self.pid, self.redis_port)
                scanned = time.monotonic()
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            if not self.counting.is_set():
                continue
            for raw in lines:
                match = LINE.match(raw.decode(errors="replace"))
                if match and match["port"]:
                    name = match["name"].upper()
                    if (match["key"] or "").endswith(":output"):
                        name += " (output)"
                    self._seen.append((int(match["port"]), name))

    def close(self) -> Counter[str]:
        """Stop; the process's commands seen while counting, by name (output pushes apart)."""
        self.stopped.set()
        self._thread.join(timeout=5)
        self._sock.close()
        self._ports |= local_ports(self.pid, self.redis_port)
        for port, name in self._seen:
            if port in self._ports:
                self.commands[name] += 1
        return self.commands
