"""`python -m repobox_cli.reaper COMMAND`: the agent's own parent.

It runs COMMAND with `/bin/sh -c` as a child subreaper, so everything the agent leaves behind
(daemonized with a double fork and a new session, or not) is re-parented here rather than to the
runner; when COMMAND exits, everything below is killed and reaped, then the reaper exits with
COMMAND's status. Anything that still reaches the runner escaped a reaper (e.g. killed it): the
runner kills every such orphan, whatever it claims to be.
"""

from __future__ import annotations

import os
import sys

from repobox_cli import procs

SIGNAL_EXIT_BASE = 128


def main(argv: list[str]) -> int:
    as_user = None
    if len(argv) == 4 and argv[1] == "--as":
        as_user, argv = argv[2], [argv[0], argv[3]]
    if len(argv) != 2:
        print("usage: python -m repobox_cli.reaper [--as UID:GID] COMMAND", file=sys.stderr)
        return 2
    procs.become_subreaper()
    child = os.fork()
    if child == 0:  # pragma: no cover - replaced by exec
        try:
            os.umask(procs.AGENT_UMASK)
            procs.restore_default_signals()
            if as_user:
                procs.switch_user(as_user)
            os.execv("/bin/sh", ["/bin/sh", "-c", argv[1]])
        except OSError as exc:
            print(f"repobox: cannot start the agent: {exc}", file=sys.stderr)
        os._exit(127)
    _, status = os.waitpid(child, 0)
    procs.kill_all_below(os.getpid())
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else SIGNAL_EXIT_BASE - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
