"""The sandbox's init as the runner pins it from bwrap's --info-fd, with real processes standing
in for the keeper, bwrap and the init."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from repobox_cli.agent import SandboxInit

TREE = (
    "import os, sys, time\n"
    "if os.fork() == 0:\n"
    "    if os.fork() == 0:\n"
    "        print(os.getpid(), flush=True); time.sleep(60)\n"
    "    time.sleep(60)\n"
    "time.sleep(60)\n"
)


def test_a_sandbox_init_is_pinned_only_below_its_keeper_where_no_namespace_is_known(
    started: list[subprocess.Popen[bytes]],
) -> None:
    """Without bwrap's PID namespace (or where it cannot be read), the pid bwrap names is pinned
    only as the keeper's child or grandchild: a pid that is anything else is never signalled."""
    keeper = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, start_new_session=True)
    started.append(keeper)
    assert keeper.stdout is not None
    grandchild = int(keeper.stdout.readline())
    try:
        pinned = SandboxInit.pin(grandchild, None, keeper.pid)
        assert pinned is not None and pinned.pid == grandchild
        pinned.close()
        assert SandboxInit.pin(grandchild, None, os.getpid()) is None  # not below this "keeper"
    finally:
        os.killpg(keeper.pid, signal.SIGKILL)
