"""Selftests of the test-support helpers (redis, TLS, git server, node crypto)."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.support.git_server import GitHttpsServer, clean_git_env
from tests.support.node_crypto import NodeCryptoError, node_encrypt, node_encrypt_many
from tests.support.redis_server import RedisServer
from tests.support.tls import TestCA, make_test_ca

TOKEN = "ghp_selftesttoken1234"
GIT_DEADLINE_S = 30.0

pytestmark = pytest.mark.timeout(60)


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def git_server(tmp_path: Path, tls: TestCA) -> Iterator[GitHttpsServer]:
    with GitHttpsServer(tmp_path / "repos", tls) as server:
        server.allow_token(TOKEN)
        yield server


def git_env(tls: TestCA, token: str | None) -> dict[str, str]:
    extra = {"GIT_SSL_CAINFO": str(tls.ca_file), "GIT_TERMINAL_PROMPT": "0"}
    if token is not None:
        basic = base64.b64encode(f"oauth2:{token}".encode()).decode()
        extra |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }
    return clean_git_env(extra)


def run_git(
    args: list[str], env: dict[str, str], cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GIT_DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {args} failed: {result.stderr}")
    return result


def https_get(
    server: GitHttpsServer, tls: TestCA, path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


# -- redis -------------------------------------------------------------------------


def test_redis_start_stop_restart_keeps_aof_data(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    try:
        server.start()
        assert server.is_running()
        assert server.url == f"redis://127.0.0.1:{server.port}"
        client = server.client()
        client.set("k", "v")
        client.xadd("s", {"a": "1"})
        client.close()
        port = server.port
        server.restart()
        assert server.port == port
        client = server.client()
        assert client.get("k") == "v"  # decode_responses=True
        assert client.xlen("s") == 1
        client.close()
        server.kill()
        assert not server.is_running()
        server.start()  # AOF with fsync always survives SIGKILL
        client = server.client()
        assert client.get("k") == "v"
        client.close()
    finally:
        server.stop()
    server.stop()  # idempotent
    assert not server.is_running()
    assert (tmp_path / "redis" / "redis.log").exists()


def test_redis_without_aof_loses_data_on_restart(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        client = server.client()
        client.set("k", "v")
        client.close()
        server.restart()
        client = server.client()
        assert client.get("k") is None
        client.close()


def test_redis_restart_fails_clearly_when_port_taken(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        with pytest.raises(RuntimeError, match=f"port {server.port}.*in use"):
            server.start()
    assert not server.is_running()


# -- git over https ----------------------------------------------------------------


def test_clone_push_and_inspect(git_server: GitHttpsServer, tls: TestCA, tmp_path: Path) -> None:
    url = git_server.create_repo(
        "team/app",
        {"README.md": "hello\n", "src/main.py": "print(1)\n"},
        extra_branches={"dev": {"DEV.md": "dev\n"}},
    )
    assert url == f"{git_server.base_url}/team/app.git"
    before = git_server.branches("team/app")
    assert set(before) == {"main", "dev"}
    assert git_server.log("team/app", "dev")[0][1] == "Add dev files"
    assert git_server.show_file("team/app", "dev", "README.md") == "hello\n"

    env = git_env(tls, TOKEN)
    clone = tmp_path / "clone"
    run_git(["clone", "--branch", "main", url, str(clone)], env)
    assert (clone / "src" / "main.py").read_text() == "print(1)\n"

    # A push big enough that git sends it with Transfer-Encoding: chunked.
    run_git(["checkout", "-b", "repobox/abcd1234"], env, cwd=clone)
    (clone / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (clone / "note.txt").write_text("changed\n")
    run_git(["add", "-A"], env, cwd=clone)
    run_git(["commit", "-q", "-m", "repobox: change things"], env, cwd=clone)
    run_git(["push", "origin", "repobox/abcd1234"], env, cwd=clone)

    after = git_server.branches("team/app")
    head = run_git(["rev-parse", "HEAD"], env, cwd=clone).stdout.strip()
    assert after["repobox/abcd1234"] == head
    assert after["main"] == before["main"]
    assert git_server.log("team/app", "repobox/abcd1234")[0] == (head, "repobox: change things")
    assert git_server.show_file("team/app", "repobox/abcd1234", "note.txt") == "changed\n"

    posts = [r for r in git_server.requests if r.method == "POST"]
    assert any(r.path.endswith("/git-receive-pack") for r in posts)
    assert any(r.headers.get("Transfer-Encoding") == "chunked" for r in posts)
    expected_auth = "Basic " + base64.b64encode(f"oauth2:{TOKEN}".encode()).decode()
    assert all(r.authorization == expected_auth for r in git_server.requests)


def test_wrong_token_is_401_and_git_fails_fast(git_server: GitHttpsServer, tls: TestCA, tmp_path: Path) -> None:
    url = git_server.create_repo("app", {"a.txt": "a\n"})
    for token in ("wrong-token", None):
        result = run_git(["ls-remote", url], git_env(tls, token), check=False)
        assert result.returncode != 0
        assert any(text in result.stderr for text in ("Authentication failed", "could not read Username"))
    assert git_server.requests and all(r.path.startswith("/app.git/") for r in git_server.requests)

    response = https_get(git_server, tls, "/app.git/info/refs?service=git-upload-pack")
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == 'Basic realm="git"'
    bad_user = base64.b64encode(f"someone:{TOKEN}".encode()).decode()
    response = https_get(
        git_server, tls, "/app.git/info/refs?service=git-upload-pack", {"Authorization": f"Basic {bad_user}"}
    )
    assert response.status == 401


def test_ls_remote_ok_and_unknown_repo_404(git_server: GitHttpsServer, tls: TestCA) -> None:
    url = git_server.create_repo("app", {"a.txt": "a\n"}, branch="trunk")
    out = run_git(["ls-remote", "--symref", url, "HEAD"], git_env(tls, TOKEN)).stdout
    assert "ref: refs/heads/trunk\tHEAD" in out
    # git 2.39 speaks protocol v2 for fetches; the header reaches http-backend.
    assert all(r.headers.get("Git-Protocol") == "version=2" for r in git_server.requests)
    good = base64.b64encode(f"oauth2:{TOKEN}".encode()).decode()
    response = https_get(
        git_server, tls, "/nope.git/info/refs?service=git-upload-pack", {"Authorization": f"Basic {good}"}
    )
    assert response.status == 404


def test_redirect_mode_answers_302(git_server: GitHttpsServer, tls: TestCA) -> None:
    git_server.create_repo("app", {"a.txt": "a\n"})
    git_server.redirect_to = "https://evil.example"
    response = https_get(git_server, tls, "/app.git/info/refs?service=git-upload-pack")
    assert response.status == 302
    assert response.getheader("Location") == ("https://evil.example/app.git/info/refs?service=git-upload-pack")


def test_untrusted_ca_is_rejected(git_server: GitHttpsServer, tmp_path: Path) -> None:
    url = git_server.create_repo("app", {"a.txt": "a\n"})
    other = make_test_ca(tmp_path / "other-ca")
    result = run_git(["ls-remote", url], git_env(other, TOKEN), check=False)
    assert result.returncode != 0
    assert "certificate" in result.stderr.lower()


# -- node crypto -------------------------------------------------------------------


def _decrypt(blob: str, key: bytes) -> str:
    iv_b64, tag_b64, ct_b64 = blob.split(":")
    iv, tag, ct = (base64.b64decode(p) for p in (iv_b64, tag_b64, ct_b64))
    assert len(iv) == 12 and len(tag) == 16
    return AESGCM(key).decrypt(iv, ct + tag, None).decode()


@pytest.mark.parametrize("form", ["hex", "base64", "utf8"])
def test_node_encrypt_decrypts_with_aesgcm(form: str) -> None:
    if form == "utf8":
        key_text = "k" * 31 + "Z"  # 32 ASCII characters
        raw = key_text.encode()
    else:
        raw = os.urandom(32)
        key_text = raw.hex() if form == "hex" else base64.b64encode(raw).decode()
    plaintext = "ghp_tökén-✓"
    blob = node_encrypt(plaintext, key_text)
    assert _decrypt(blob, raw) == plaintext


def test_node_encrypt_many_uses_fresh_ivs() -> None:
    raw = os.urandom(32)
    blobs = node_encrypt_many(["a", "a", ""], raw.hex())
    assert [_decrypt(b, raw) for b in blobs] == ["a", "a", ""]
    assert blobs[0].split(":")[0] != blobs[1].split(":")[0]


def test_node_encrypt_rejects_bad_key() -> None:
    with pytest.raises(NodeCryptoError, match="Invalid encryption key"):
        node_encrypt("x", "too-short")
