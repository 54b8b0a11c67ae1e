"""The demo's git remote: `git http-backend` behind a small HTTPS server with Basic auth (user
`oauth2`, the token as password, as the runner sends them), in threads of this process; each
request's CGI process is tracked and gone when the server stops."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import os
import ssl
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from repobox_cli.demo.certs import CertFiles
from repobox_cli.errors import RepoboxError
from repobox_cli.redaction import GIT_USERNAME

SOCKET_TIMEOUT_S = 30.0
CGI_DEADLINE_S = 60.0
GIT_DEADLINE_S = 30.0
STOP_DEADLINE_S = 5.0
MAX_BODY_BYTES = 64 * 1024 * 1024
IDENTITY = {"GIT_AUTHOR_NAME": "Repobox Demo", "GIT_AUTHOR_EMAIL": "demo@repobox.invalid"}


def git_env(**extra: str) -> dict[str, str]:
    """The environment minus GIT_* and with no system or global config: the host's git setup stays out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", **IDENTITY)
    env.update(GIT_COMMITTER_NAME=IDENTITY["GIT_AUTHOR_NAME"], GIT_COMMITTER_EMAIL=IDENTITY["GIT_AUTHOR_EMAIL"])
    env.update(extra)
    return env


def git(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args], env=env or git_env(), cwd=cwd, capture_output=True, text=True, timeout=GIT_DEADLINE_S
    )
    if done.returncode != 0:
        raise RepoboxError(f"git {args[0]} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _http_backend() -> str:
    return str(Path(git("--exec-path").strip()) / "git-http-backend")


def _read_chunked(rfile: Any) -> bytes:
    body = bytearray()
    while True:
        size = int(rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise ConnectionError("request body too large")
        body += rfile.read(size)
        rfile.readline(1024)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, remote: GitRemote, context: ssl.SSLContext) -> None:
        self.remote = remote
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The TLS handshake in the request's thread: a stalled client cannot block the accept loop."""
        request.settimeout(SOCKET_TIMEOUT_S)
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away: nothing to report in the demo's output


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "repobox-demo-git"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.rfile)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ConnectionError("request body too large")
        return self.rfile.read(length) if length else b""

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _serve(self) -> None:
        self.close_connection = True
        body = self._body()
        if not self.server.remote.authorised(self.headers.get("Authorization")):
            self._respond(401, [("WWW-Authenticate", 'Basic realm="repobox demo"')], b"authentication required\n")
            return
        path, _, query = self.path.partition("?")
        env = git_env(
            GIT_PROJECT_ROOT=str(self.server.remote.root),
            GIT_HTTP_EXPORT_ALL="1",
            GATEWAY_INTERFACE="CGI/1.1",
            REQUEST_METHOD=self.command,
            PATH_INFO=path,
            QUERY_STRING=query,
            REMOTE_USER=GIT_USERNAME,
            REMOTE_ADDR=self.client_address[0],
            CONTENT_LENGTH=str(len(body)),
        )
        for name, value in self.headers.items():
            if name.lower() not in ("authorization", "content-length", "transfer-encoding"):
                env["HTTP_" + name.upper().replace("-", "_")] = value
        if self.headers.get("Content-Type"):
            env["CONTENT_TYPE"] = self.headers["Content-Type"]
        self._respond(*_parse_cgi(self.server.remote.run_cgi(env, body)))


def _parse_cgi(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    head, sep, body = output.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = output.partition(b"\n\n")
    if not sep:
        return 502, [], b"bad CGI output\n"
    status, headers = 200, []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name and name.lower() not in ("content-length", "connection"):
            headers.append((name.strip(), value.strip()))
    return status, headers, body


class GitRemote:
    """Bare repositories under `root`, served over HTTPS on a free loopback port."""

    def __init__(self, root: Path, certs: CertFiles, token: str) -> None:
        self.root = root
        self.certs = certs
        self._token = token
        self._backend = _http_backend()
        self._lock = threading.Lock()
        self._cgis: set[subprocess.Popen[bytes]] = set()
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def authorised(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        ok_user = scheme.lower() == "basic" and bool(sep) and user == GIT_USERNAME
        return ok_user and hmac.compare_digest(password.encode(), self._token.encode())

    def run_cgi(self, env: dict[str, str], body: bytes) -> bytes:
        with self._lock:
            if self._stopping:
                return b"Status: 503\r\n\r\nstopping\n"
            process = subprocess.Popen(
                [self._backend], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            self._cgis.add(process)
        try:
            output, _ = process.communicate(body, timeout=CGI_DEADLINE_S)
            return output
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return b"Status: 504\r\n\r\ngit http-backend timed out\n"
        finally:
            with self._lock:
                self._cgis.discard(process)

    def start(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.certs.cert_file), str(self.certs.key_file))
        self._server = _Server(self, context)
        self.base_url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="demo-git-remote", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, kill any CGI process still running, wait for the server thread."""
        with self._lock:
            self._stopping = True
            for process in self._cgis:
                with contextlib.suppress(OSError):
                    process.kill()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=STOP_DEADLINE_S)

    def create_repo(self, name: str, files: dict[str, str], branch: str = "main") -> str:
        """A bare repository `name.git` whose `branch` holds one commit of `files`; its URL."""
        bare = self.root / f"{name}.git"
        git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare))
        git("config", "-f", str(bare / "config"), "http.receivepack", "true")
        with tempfile.TemporaryDirectory(prefix="seed-", dir=self.root) as seed:
            work = Path(seed) / "work"
            for rel, text in files.items():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                (work / rel).write_text(text)
            env = git_env(GIT_DIR=str(bare), GIT_WORK_TREE=str(work), GIT_INDEX_FILE=str(Path(seed) / "index"))
            git("add", "--all", ".", env=env, cwd=work)
            tree = git("write-tree", env=env).strip()
            commit = git("commit-tree", tree, "-m", "Initial commit", env=env).strip()
            git("update-ref", f"refs/heads/{branch}", commit, env=env)
        return f"{self.base_url}/{name}.git"

    def bare_git(self, name: str, *args: str) -> str:
        return git("--git-dir", str(self.root / f"{name}.git"), *args)
