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
    w = World(tmp_path, redis_server, git_server, tls)
    yield w
    w.close()
