from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.git_server import GitHttpsServer
from tests.support.redis_server import RedisServer
from tests.support.tls import TestCA, make_test_ca
from tests.support.world import World


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory, tls: TestCA) -> Iterator[GitHttpsServer]:
    with GitHttpsServer(tmp_path_factory.mktemp("git"), tls) as server:
        yield server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def world(tmp_path: Path, redis_server: RedisServer, git_server: GitHttpsServer, tls: TestCA) -> Iterator[World]:
    git_server.redirect_to = None
    git_server.api = None
    w = World(tmp_path, redis_server, git_server, tls)
    yield w
    w.close()


@pytest.fixture(scope="session", autouse=True)
def _runner_processes_run_this_checkout(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runner subprocesses import the installed package: it must be this checkout's code."""
    import subprocess
    import sys

    here = Path(__file__).resolve().parent.parent
    found = subprocess.run(
        [sys.executable, "-I", "-c", "import repobox_cli; print(repobox_cli.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.getbasetemp(),
        check=False,
    ).stdout.strip()
    if not found or Path(found).resolve().parent.parent != here:
        pytest.exit(f"repobox_cli is installed from {found or 'nowhere'}, not {here}: run `pip install -e .` here", 2)
