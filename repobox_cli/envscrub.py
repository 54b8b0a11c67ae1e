"""Wiping secrets from this process's own environment once they have been read.

`/proc/<pid>/environ` shows the environment block the process was started with (the bytes
between the kernel's `env_start` and `env_end`), whatever `os.environ` says later. So after the
settings are read, each secret's value is overwritten *in that block* with `*` and the variable
is removed from `os.environ` (and libc's copy), so no child inherits it either.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# Fields of /proc/self/stat, counted from 1 as in proc(5).
_ENV_START_FIELD = 50
_ENV_END_FIELD = 51
_FIRST_FIELD_AFTER_NAME = 3  # the state; the name in parentheses may hold spaces
MASK_BYTE = b"*"


def _env_block() -> tuple[int, int] | None:
    try:
        text = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()
    try:
        start = int(rest[_ENV_START_FIELD - _FIRST_FIELD_AFTER_NAME])
        end = int(rest[_ENV_END_FIELD - _FIRST_FIELD_AFTER_NAME])
    except (IndexError, ValueError):
        return None
    return (start, end) if 0 < start < end else None


def scrub(names: Iterable[str]) -> int:
    """Overwrite the values of `names` in the process's environment block and drop them from
    os.environ; returns how many values were overwritten in the block."""
    wanted = {name.encode() for name in names}
    for name in wanted:
        os.environ.pop(name.decode(), None)
    block = _env_block()
    if block is None:
        return 0
    start, end = block
    data = ctypes.string_at(start, end - start)
    wiped = 0
    offset = 0
    for entry in data.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name in wanted and value:
            at = start + offset + len(name) + 1
            ctypes.memmove(at, MASK_BYTE * len(value), len(value))
            wiped += 1
        offset += len(entry) + 1
    return wiped
