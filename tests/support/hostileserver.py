"""A misbehaving HTTP server on 127.0.0.1 for the network budgets of issue 13.

:class:`HostileServer` answers each path with a :data:`Behaviour` registered by the test —
a function of (handler, request count for that path) that writes the whole answer: redirect
loops, a body that claims gzip and is not, a page that drips one byte at a time, an endless
chunked body, ``Retry-After``, garbage where a wheel should be. Fixture ``hostile_server``.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.support.indexserver import QuietHTTPServer

Behaviour = Callable[[BaseHTTPRequestHandler, int], None]


def send(
    h: BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    """A complete answer with a Content-Length."""
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def redirect_to(location: str) -> Behaviour:
    def behave(h: BaseHTTPRequestHandler, n: int) -> None:
        send(h, 302, headers={"Location": location})

    return behave


def fixed(
    body: bytes, content_type: str = "text/html", extra: dict[str, str] | None = None
) -> Behaviour:
    def behave(h: BaseHTTPRequestHandler, n: int) -> None:
        send(h, 200, body, {"Content-Type": content_type, **(extra or {})})

    return behave


def false_gzip(body: bytes, content_type: str) -> Behaviour:
    """Says ``Content-Encoding: gzip``; the body is not gzip."""
    return fixed(body, content_type, {"Content-Encoding": "gzip"})


def real_gzip(body: bytes, content_type: str) -> Behaviour:
    return fixed(gzip.compress(body), content_type, {"Content-Encoding": "gzip"})


def drip(every: float, total: int = 10_000) -> Behaviour:
    """Announces ``total`` bytes, then sends one every ``every`` seconds."""

    def behave(h: BaseHTTPRequestHandler, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(total))
        h.end_headers()
        try:
            for _ in range(total):
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(every)
        except OSError:
            pass

    return behave


def endless_chunked(chunk: int = 1 << 16) -> Behaviour:
    """A chunked body that never ends (until the client hangs up)."""

    def behave(h: BaseHTTPRequestHandler, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        piece = f"{chunk:x}\r\n".encode() + b"<" * chunk + b"\r\n"
        try:
            while True:
                h.wfile.write(piece)
        except OSError:
            pass

    return behave


def sequence(*behaviours: Behaviour) -> Behaviour:
    """The n-th request gets the n-th behaviour (the last one from then on)."""

    def behave(h: BaseHTTPRequestHandler, n: int) -> None:
        behaviours[min(n, len(behaviours)) - 1](h, n)

    return behave


def status(code: int, headers: dict[str, str] | None = None) -> Behaviour:
    def behave(h: BaseHTTPRequestHandler, n: int) -> None:
        send(h, code, b"", headers)

    return behave


class HostileServer:
    """Routes exact paths to behaviours; counts and times requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.counts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.counts[path] += 1
                    n = server.counts[path]
                    server.times.setdefault(path, []).append(time.monotonic())
                behave = server.routes.get(path)
                if behave is None:
                    send(self, 404, b"not here")
                else:
                    behave(self, n)

        self._httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def route(self, path: str, behaviour: Behaviour) -> str:
        """Register ``behaviour`` at ``path``; returns the full URL."""
        self.routes[path] = behaviour
        return self.base + path

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def hostile_server() -> Iterator[HostileServer]:
    """A fresh misbehaving server per test."""
    srv = HostileServer()
    try:
        yield srv
    finally:
        srv.stop()
