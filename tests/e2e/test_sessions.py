"""Work sessions (SESSIONS.md). So far: the runner creates the three session groups at start."""

from __future__ import annotations

from repobox_cli import keys
from tests.support.world import World


def test_the_runner_creates_the_three_session_groups_at_start(world: World) -> None:
    client = world.client
    client.xadd(keys.SESSION_INIT_STREAM, {"session_id": "x"})  # a stream the web app made first

    assert world.run_burst().returncode == 0

    for stream, group in keys.SESSION_GROUPS:
        assert [g["name"] for g in client.xinfo_groups(stream)] == [group]
    # Messages stay for the session consumers: none is delivered (or acknowledged) by a job runner.
    assert client.xinfo_groups(keys.SESSION_INIT_STREAM)[0]["last-delivered-id"] == "0-0"
