"""An HTTPS smart-HTTP git server (``git http-backend`` behind Basic auth).

Runs a ``ThreadingHTTPServer`` in a background thread.  The TLS handshake is
done in the per-connection worker thread so a misbehaving client cannot stall
the accept loop.  Every request is recorded in ``GitHttpsServer.requests``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from tests.support.api_standin import ApiStandIn, send
from tests.support.tls import TestCA

GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
SOCKET_TIMEOUT_S = 30.0
CGI_DEADLINE_S = 60.0
STOP_DEADLINE_S = 5.0
GIT_DEADLINE_S = 30.0
COPY_CHUNK = 64 * 1024

# Headers not exported as HTTP_* CGI variables (secrets or dedicated vars).
_NOT_EXPORTED = {"authorization", "content-type", "content-length", "proxy-authorization"}


@dataclass
class RecordedRequest:
    method: str
    path: str  # path + query string, as sent by the client
    authorization: str | None  # raw Authorization header
    headers: dict[str, str]
    response_bytes: int = 0  # the body's size once answered


def clean_git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment minus GIT_* variables, with config isolation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="Repobox Test",
        GIT_AUTHOR_EMAIL="test@repobox.invalid",
        GIT_COMMITTER_NAME="Repobox Test",
        GIT_COMMITTER_EMAIL="test@repobox.invalid",
        GIT_AUTHOR_DATE="2024-01-01T00:00:00Z",
        GIT_COMMITTER_DATE="2024-01-01T00:00:00Z",
    )
    if extra:
        env.update(extra)
    return env


def git_in(
    git_dir: Path, *args: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """git on the repository `git_dir` (GIT_DIR, plus `env`), isolated from any config; its result."""
    return subprocess.run(
        ["git", *args],
        env=clean_git_env({"GIT_DIR": str(git_dir), **(env or {})}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=GIT_DEADLINE_S,
        check=check,
    )


def _git(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        env=env if env is not None else clean_git_env(),
        cwd=cwd,
        capture_output=True,
        timeout=GIT_DEADLINE_S,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
        )
    return result.stdout.decode()


# --------------------------------------------------------------------------
# request body readers


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def readline(self, size: int = -1, /) -> bytes: ...


class _Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Discard:
    def write(self, data: bytes, /) -> int:
        return len(data)


def _copy_fixed(src: _Reader, dst: _Writer, length: int) -> None:
    remaining = length
    while remaining > 0:
        chunk = src.read(min(COPY_CHUNK, remaining))
        if not chunk:
            raise ConnectionError("client closed connection mid-body")
        dst.write(chunk)
        remaining -= len(chunk)


def _copy_chunked(src: _Reader, dst: _Writer) -> None:
    """Decode a ``Transfer-Encoding: chunked`` body from src into dst."""
    while True:
        line = src.readline(1024)
        if not line:
            raise ConnectionError("client closed connection in chunk header")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise ConnectionError(f"bad chunk size line {line!r}") from exc
        if size == 0:
            # Trailers (usually none) end with an empty line.
            while True:
                trailer = src.readline(8192)
                if trailer in (b"\r\n", b"\n", b""):
                    return
        _copy_fixed(src, dst, size)
        if src.readline(1024) not in (b"\r\n", b"\n"):
            raise ConnectionError("missing CRLF after chunk")


# --------------------------------------------------------------------------
# HTTP plumbing


class _TLSThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: GitHttpsServer, ssl_context: ssl.SSLContext) -> None:
        self.owner = owner
        self.ssl_context = ssl_context
        self.errors: list[BaseException] = []
        super().__init__(("127.0.0.1", 0), _GitHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(SOCKET_TIMEOUT_S)
        # As a production server does: no Nagle delay between the headers' write and the body's
        # (with the client's delayed ACK, each response could stall 40 ms).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls_sock = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.errors.append(exc)  # e.g. client rejected our certificate
            return
        try:
            self.RequestHandlerClass(tls_sock, client_address, self)  # type: ignore[arg-type]
        finally:
            with contextlib.suppress(OSError):
                tls_sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if exc is not None:
            self.errors.append(exc)  # quiet: no traceback on stderr


class _GitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "repobox-test-git"
    server: _TLSThreadingHTTPServer
    _recorded: RecordedRequest | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    # -- dispatch ----------------------------------------------------------

    def _dispatch(self) -> None:
        owner = self.server.owner
        self._recorded = RecordedRequest(
            method=self.command,
            path=self.path,
            authorization=self.headers.get("Authorization"),
            headers={k: v for k, v in self.headers.items()},
        )
        owner._record(self._recorded)
        # Each response closes the connection: keeps body handling simple.
        self.close_connection = True
        api = owner.api
        if api is not None and self.path.startswith("/api/"):
            self._serve_api(api)
            return
        redirect = owner.redirect_to
        if redirect is not None:
            self._drain_body()
            self._respond(302, [("Location", redirect.rstrip("/") + self.path)], b"")
            return
        if not owner._authorised(self.headers.get("Authorization")):
            self._drain_body()
            self._respond(
                401,
                [("WWW-Authenticate", 'Basic realm="git"'), ("Content-Type", "text/plain")],
                b"authentication required\n",
            )
            return
        self._run_backend()

    def _serve_api(self, api: ApiStandIn) -> None:
        """The provider's REST API on the git host, as GitHub Enterprise and GitLab serve it."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        send(self, api.handle(self.command, self.path, dict(self.headers.items()), raw))

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        if self._recorded is not None:
            self._recorded.response_bytes = len(body)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _drain_body(self) -> None:
        """Consume (and discard) any request body."""
        with contextlib.suppress(ConnectionError, OSError):
            self._copy_body(_Discard())

    def _copy_body(self, dst: _Writer) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            _copy_chunked(self.rfile, dst)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                _copy_fixed(self.rfile, dst, length)

    # -- CGI ---------------------------------------------------------------

    def _cgi_env(self, user: str) -> dict[str, str]:
        path, _, query = self.path.partition("?")
        env = clean_git_env(
            {
                "GIT_PROJECT_ROOT": str(self.server.owner.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "SERVER_SOFTWARE": self.server_version,
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REMOTE_USER": user,
                "REMOTE_ADDR": self.client_address[0],
                "AUTH_TYPE": "Basic",
            }
        )
        hidden = self.server.owner.hidden_for(self.headers.get("Authorization"))
        env["GIT_CONFIG_COUNT"] = str(len(hidden))
        for index, ref in enumerate(hidden):
            env[f"GIT_CONFIG_KEY_{index}"] = "uploadpack.hideRefs"
            env[f"GIT_CONFIG_VALUE_{index}"] = ref
        if self.headers.get("Content-Type"):
            env["CONTENT_TYPE"] = self.headers["Content-Type"]
        # Chunked bodies have no length: leave CONTENT_LENGTH unset so
        # http-backend reads to EOF.
        if self.headers.get("Content-Length") and "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            env["CONTENT_LENGTH"] = self.headers["Content-Length"]
        for name, value in self.headers.items():
            if name.lower() in _NOT_EXPORTED:
                continue
            env["HTTP_" + name.upper().replace("-", "_")] = value
        if self.headers.get("Git-Protocol"):
            env["HTTP_GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        return env

    def _run_backend(self) -> None:
        user = self.server.owner.username
        with tempfile.TemporaryFile() as stderr_file:
            proc = subprocess.Popen(
                [GIT_HTTP_BACKEND],
                env=self._cgi_env(user),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
            )
            assert proc.stdin is not None and proc.stdout is not None
            feed_errors: list[BaseException] = []
            feeder = threading.Thread(
                target=self._feed_stdin,
                args=(proc.stdin, feed_errors),
                name="git-cgi-stdin",
                daemon=True,
            )
            feeder.start()
            try:
                output = proc.stdout.read()
                _wait_exit(proc, CGI_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_DEADLINE_S)
                raise
            finally:
                proc.stdout.close()
                feeder.join(timeout=CGI_DEADLINE_S)
        status, headers, body = _parse_cgi_output(output)
        self._respond(status, headers, body)

    def _feed_stdin(self, stdin: IO[bytes], errors: list[BaseException]) -> None:
        try:
            self._copy_body(stdin)
        except (BrokenPipeError, ConnectionError, OSError) as exc:
            errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                stdin.close()


def _wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """`proc.wait(timeout)` without its polling (sleeps of up to 50 ms, which made every request
    to this server take a multiple of 50 ms): wait on a pidfd instead."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout_s)
    proc.wait()


def _parse_cgi_output(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Split CGI output into (status, headers, body), honouring ``Status:``."""
    sep_crlf = output.find(b"\r\n\r\n")
    sep_lf = output.find(b"\n\n")
    candidates = [(i, 4) for i in [sep_crlf] if i >= 0] + [(i, 2) for i in [sep_lf] if i >= 0]
    if not candidates:
        return 502, [("Content-Type", "text/plain")], b"bad CGI output\n"
    end, sep_len = min(candidates)
    head, body = output[:end], output[end + sep_len :]
    status = 200
    headers: list[tuple[str, str]] = []
    for raw in head.decode("latin-1").splitlines():
        if not raw.strip() or ":" not in raw:
            continue
        name, value = (part.strip() for part in raw.split(":", 1))
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name.lower() not in ("content-length", "connection"):
            headers.append((name, value))
    return status, headers, body


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    """(user, password) of a Basic Authorization header, or (None, None)."""
    if not header:
        return None, None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


def _password(header: str | None) -> str | None:
    return _basic_credentials(header)[1]


# --------------------------------------------------------------------------
# public API


class GitHttpsServer:
    """Smart-HTTP git over TLS with Basic auth (user `username`, password = token)."""

    def __init__(self, root: Path, tls: TestCA, *, username: str = "oauth2") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.username = username
        self.redirect_to: str | None = None
        self.api: ApiStandIn | None = None  # serves /api/… when set (GitHub Enterprise, GitLab)
        self._lock = threading.Lock()
        # Plain containers (mutate freely from tests); the server guards its
        # own reads/appends with _lock.
        self.tokens: set[str] = set()
        self.hidden_refs: dict[str, tuple[str, ...]] = {}  # token -> refs its fetches never see
        self.requests: list[RecordedRequest] = []
        self._httpd: _TLSThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url: str = ""

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._httpd is not None:
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
        self._httpd = _TLSThreadingHTTPServer(self, ctx)
        port = self._httpd.server_address[1]
        self.base_url = f"https://127.0.0.1:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="git-https-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=STOP_DEADLINE_S)
            if thread.is_alive():
                raise RuntimeError("git https server thread did not stop in time")
        self._httpd = None
        self._thread = None

    def __enter__(self) -> GitHttpsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def errors(self) -> list[BaseException]:
        """Connection-level errors (TLS handshake failures etc.), for debugging."""
        return list(self._httpd.errors) if self._httpd is not None else []

    # -- auth & recording --------------------------------------------------

    def allow_token(self, token: str) -> None:
        with self._lock:
            self.tokens.add(token)

    def hide_refs(self, token: str, *refs: str) -> None:
        """Fetches with `token` neither see nor may fetch `refs` (`uploadpack.hideRefs`): a
        branch that user may not read, as a provider's per-user permissions would have it."""
        with self._lock:
            self.hidden_refs[token] = refs

    def hidden_for(self, header: str | None) -> tuple[str, ...]:
        token = _password(header)
        with self._lock:
            return self.hidden_refs.get(token, ()) if token else ()

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _authorised(self, header: str | None) -> bool:
        user, password = _basic_credentials(header)
        with self._lock:
            return user == self.username and password is not None and password in self.tokens

    # -- repositories ------------------------------------------------------

    def repo_path(self, name: str) -> Path:
        return self.root / f"{name}.git"

    def repo_url(self, name: str) -> str:
        return f"{self.base_url}/{name}.git"

    def create_repo(
        self,
        name: str,
        files: dict[str, str],
        *,
        branch: str = "main",
        extra_branches: dict[str, dict[str, str]] | None = None,
    ) -> str:
        """Create bare repo ``root/<name>.git`` and return its HTTPS URL.

        `branch` gets one root commit ("Initial commit") holding `files`, and
        HEAD points at it.  Each extra branch gets one commit on top of it
        ("Add <branch> files") whose tree is `files` overlaid with that
        branch's files.  Commits use a fixed identity and date.
        """
        bare = self.repo_path(name)
        if bare.exists():
            raise FileExistsError(bare)
        bare.parent.mkdir(parents=True, exist_ok=True)
        _git(["init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare)])
        _git(["config", "-f", str(bare / "config"), "http.receivepack", "true"])
        base = self._commit_tree(bare, files, parent=None, message="Initial commit")
        bare_env = clean_git_env({"GIT_DIR": str(bare)})
        _git(["update-ref", f"refs/heads/{branch}", base], env=bare_env)
        for extra, extra_files in (extra_branches or {}).items():
            sha = self._commit_tree(
                bare,
                {**files, **extra_files},
                parent=base,
                message=f"Add {extra} files",
            )
            _git(["update-ref", f"refs/heads/{extra}", sha], env=bare_env)
        return self.repo_url(name)

    @staticmethod
    def _commit_tree(bare: Path, files: dict[str, str], *, parent: str | None, message: str) -> str:
        with tempfile.TemporaryDirectory(prefix="repobox-seed-") as tmp:
            work = Path(tmp) / "work"
            work.mkdir()
            for rel, content in files.items():
                target = work / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            env = clean_git_env(
                {
                    "GIT_DIR": str(bare),
                    "GIT_WORK_TREE": str(work),
                    "GIT_INDEX_FILE": str(Path(tmp) / "index"),
                }
            )
            _git(["add", "--all", "--force", "."], env=env, cwd=work)
            tree = _git(["write-tree"], env=env).strip()
            parent_args = ["-p", parent] if parent else []
            return _git(["commit-tree", tree, *parent_args, "-m", message], env=env).strip()

    def _bare_git(self, name: str, args: list[str]) -> str:
        return _git(["--git-dir", str(self.repo_path(name)), *args])

    def branches(self, name: str) -> dict[str, str]:
        out = self._bare_git(name, ["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/"])
        result: dict[str, str] = {}
        for line in out.splitlines():
            ref, sha = line.split(" ", 1)
            result[ref.removeprefix("refs/heads/")] = sha
        return result

    def log(self, name: str, ref: str) -> list[tuple[str, str]]:
        out = self._bare_git(name, ["log", "--format=%H%x00%s", ref, "--"])
        return [tuple(line.split("\0", 1)) for line in out.splitlines()]  # type: ignore[misc]

    def show_file(self, name: str, ref: str, path: str) -> str:
        return self._bare_git(name, ["show", f"{ref}:{path}"])

    def delete_repo(self, name: str) -> None:
        shutil.rmtree(self.repo_path(name), ignore_errors=True)


__all__ = ["GitHttpsServer", "RecordedRequest", "clean_git_env"]
