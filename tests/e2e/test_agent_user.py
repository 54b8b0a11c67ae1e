"""AGENT_USER: the agent runs as another OS user, so it cannot read the runner's repository, list
the work directories, or read the runner's (or git's) process environment."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.world import World

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="starting the agent as another user needs a root runner (CI runs as root)"
)

NOBODY_UID = pwd.getpwnam("nobody").pw_uid

PROBE = r"""
id -u > uid.txt
if cat "$REPOBOX_REPO_DIR/../git/config" >/dev/null 2>&1; then echo readable; else echo denied; fi > gitdir.txt
if ls "$REPOBOX_REPO_DIR/.." >/dev/null 2>&1; then echo listable; else echo denied; fi > parent.txt
ls "$REPOBOX_REPO_DIR/.." 2>/dev/null | tr '\n' ' ' > parent-listing.txt; echo >> parent-listing.txt
echo denied > runner_env.txt
pid=$PPID; hops=0
while [ "${pid:-0}" -gt 0 ] && [ $hops -lt 20 ]; do
  if grep -qa ENCRYPTION_KEY /proc/$pid/environ 2>/dev/null; then echo readable > runner_env.txt; fi
  pid=$(cut -d' ' -f4 /proc/$pid/stat 2>/dev/null); hops=$((hops + 1))
done
echo probe done
"""


@pytest.fixture
def traversable_temp_dir() -> Iterator[Path]:
    """pytest's tmp dirs are 0700 root: the agent's user could not reach its own clone there."""
    top = Path(tempfile.mkdtemp(prefix="repobox-agent-user-"))
    top.chmod(0o711)
    yield top / "work"
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_agent_runs_as_another_user_and_cannot_reach_the_runner(
    world: World, traversable_temp_dir: Path, sandbox: str
) -> None:
    job_id = world.add_job()
    result = world.run_burst(
        AGENT_USER="nobody", AGENT_COMMAND=PROBE, TEMP_DIR=str(traversable_temp_dir), AGENT_SANDBOX=sandbox
    )
    assert result.returncode == 0, result.stderr
    assert world.job(job_id)["status"] == "success", world.output_text(job_id)
    branch = f"repobox/{job_id[:8]}"

    def committed(name: str) -> str:
        return world.git.show_file(world.repo_name, branch, name).strip()

    assert committed("uid.txt") == str(NOBODY_UID)
    assert committed("gitdir.txt") == "denied"
    if sandbox == "none":
        assert committed("parent.txt") == "denied"
    else:  # the sandbox shows the attempt directory with only the agent's own directories in it
        assert committed("parent-listing.txt").split() == ["home", "repo", "tmp"]
    # No ancestor the agent can see (its reaper, then the runner; in the sandbox, only its namespace's init)
    # shows it an environment holding the runner's ENCRYPTION_KEY.
    assert committed("runner_env.txt") == "denied"
    assert "probe done" in world.output_text(job_id)


def test_agent_user_needs_an_existing_user(world: World) -> None:
    result = world.run_burst(AGENT_USER="no-such-user-here")
    assert result.returncode == 2
    assert "AGENT_USER" in result.stderr and "Traceback" not in result.stderr
