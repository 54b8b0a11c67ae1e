"""A local HTTPS stand-in for the GitHub and GitLab REST APIs (the suite's CA), recording every
request (method, path, headers, body). Answers are scripted per test."""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.tls import TestCA


@dataclass
class ApiRequest:
    method: str
    path: str  # path and query string
    headers: dict[str, str]
    body: Any  # decoded JSON, or None


@dataclass
class Reply:
    status: int
    body: Any = None  # sent as JSON; bytes as they are (a proxy's or a WAF's error page)
    headers: dict[str, str] = field(default_factory=dict)


class ApiStandIn:
    """Answers `(method, path without query)` with a scripted Reply; 404 otherwise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[ApiRequest] = []
        self.routes: dict[tuple[str, str], Reply] = {}

    def answer(self, method: str, path: str, reply: Reply) -> None:
        with self._lock:
            self.routes[(method, path)] = reply

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            self.requests.append(ApiRequest(method, path, headers, body))
            return self.routes.get((method, path.partition("?")[0]), Reply(404, {"message": "Not Found"}))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self.server.api.handle(self.command, self.path, dict(self.headers.items()), raw)
        send(self, reply)

    do_GET = do_POST = _serve


def send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    if isinstance(reply.body, bytes):
        data = reply.body
    else:
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
    handler.send_response(reply.status)
    for name, value in {"Content-Type": "application/json", **reply.headers}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(data)
    handler.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: ApiStandIn, tls: TestCA) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        self.socket = ctx.wrap_socket(self.socket, server_side=True)


class ApiServer:
    """An ApiStandIn served on its own HTTPS port: `url` is `https://127.0.0.1:<port>`."""

    def __init__(self, tls: TestCA) -> None:
        self.api = ApiStandIn()
        self._server = _Server(self.api, tls)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
