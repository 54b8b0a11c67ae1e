"""Commands that need no Redis start without importing the Redis client (about a third of
`repobox --help`'s start-up): the client is imported by the commands that connect."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.world import World


def imported_modules(world: World, *args: str, stdin: str | None = None) -> tuple[set[str], str]:
    """The modules a real `python -m repobox_cli ARGS` process imported, and its stdout."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "repobox_cli", *args],
        env=world.env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[-1].strip() for line in lines}, result.stdout


@pytest.mark.parametrize("args", [["--help"], ["decrypt", "--help"], ["completion", "bash"]])
def test_commands_that_need_no_redis_do_not_import_its_client(world: World, args: list[str]) -> None:
    modules, out = imported_modules(world, *args)
    assert out.strip()
    assert "redis" not in modules and "asyncio" not in modules, sorted(m for m in modules if "redis" in m)


def test_decrypting_a_ciphertext_does_not_import_the_redis_client(world: World) -> None:
    modules, out = imported_modules(world, "decrypt", stdin=world.encrypted(world.token))
    assert "kind" in out and world.token not in out
    assert "redis" not in modules


def test_pending_imports_the_client_it_needs_and_answers(world: World) -> None:
    modules, out = imported_modules(world, "pending", "--json")
    assert "redis" in modules and '"group_exists"' in out
