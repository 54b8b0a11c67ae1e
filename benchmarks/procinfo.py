"""What /proc says about a process: its resident memory and its TCP connections' local ports."""

from __future__ import annotations

import os
from pathlib import Path


def rss_kib(pid: int) -> int:
    """VmRSS of the process itself (children excluded), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def local_ports(pid: int, remote_port: int) -> set[int]:
    """Local ports of the process's IPv4 TCP connections to 127.0.0.1:`remote_port`."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, remote, inode = parts[1], parts[2], parts[9]
        if inode in inodes and int(remote.split(":")[1], 16) == remote_port:
            ports.add(int(local.split(":")[1], 16))
    return ports
