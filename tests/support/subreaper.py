"""Run a command under a child subreaper and report the processes it left behind.

    python subreaper.py PID_FILE RESULT_FILE COMMAND...

Writes the command's pid to PID_FILE, waits for it, then writes to RESULT_FILE (JSON) its exit
code and every process still alive that was below it: any process whose parent died is
reparented to this one (PR_SET_CHILD_SUBREAPER), so a leftover, however deep, shows up here.
The leftovers are then killed and reaped."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def _children(pid: int) -> list[dict[str, str | int]]:
    found: list[dict[str, str | int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                found.append({"pid": int(entry.name), "state": fields[0], "comm": comm, "cmdline": cmdline.strip()})
    return found


def main() -> None:
    pid_file, result_file, *command = sys.argv[1:]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a signal for the command is sent to it, not here
    process = subprocess.Popen(
        command, restore_signals=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    Path(pid_file).write_text(str(process.pid))
    code = process.wait()
    left = _children(os.getpid())
    Path(result_file).write_text(json.dumps({"exit": code, "left": left}))
    for child in left:
        with contextlib.suppress(OSError):
            os.kill(int(child["pid"]), signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, 0)[0]:
            pass


if __name__ == "__main__":
    main()
