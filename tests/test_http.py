"""torchwheel.http: the client factory, GET with retries and Retry-After, file:// rules,
#sha256= fragments and the cache root — against a real loopback server."""

from __future__ import annotations

import email.utils
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import platformdirs
import pytest

from tests.support.indexserver import QuietHTTPServer
from torchwheel import __version__
from torchwheel.errors import InputError, NetworkError
from torchwheel.http import (
    MAX_REDIRECTS,
    MAX_RETRY_AFTER,
    NotFound,
    cache_root,
    file_url_path,
    get_with_retries,
    local_path,
    make_client,
    parse_retry_after,
    path_url,
    retry_delay,
    split_hash_fragment,
)

Answer = tuple[int, dict[str, str], bytes]


class _ScriptServer:
    """Answers GETs from a script: each path has a list of answers, the last one repeats.

    An answer of status 0 drops the connection without a response. Every request is logged
    with its headers and the time it arrived.
    """

    def __init__(self) -> None:
        self.script: dict[str, list[Answer]] = {}
        self.log: list[tuple[str, dict[str, str], float]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.log.append((self.path, headers, time.monotonic()))
                answers = outer.script.get(self.path, [(404, {}, b"no\n")])
                status, extra, body = answers.pop(0) if len(answers) > 1 else answers[0]
                if status == 0:
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.log if p == path)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_ScriptServer]:
    srv = _ScriptServer()
    yield srv
    srv.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with make_client() as c:
        yield c


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


# -- the client factory ------------------------------------------------------------------------


def test_client_sends_user_agent_and_follows_redirects(
    server: _ScriptServer, client: httpx.Client
) -> None:
    server.script["/old"] = [(301, {"Location": "/new"}, b"")]
    server.script["/new"] = [(200, {}, b"moved here")]
    resp = get_with_retries(client, server.url("/old"), backoff=0)
    assert resp.content == b"moved here"
    assert [p for p, _, _ in server.log] == ["/old", "/new"]
    assert all(h["user-agent"] == f"torchwheel/{__version__}" for _, h, _ in server.log)
    connect, read = client.timeout.connect, client.timeout.read
    assert connect is not None and read is not None and connect <= read


def test_redirect_loop_is_one_network_error(server: _ScriptServer, client: httpx.Client) -> None:
    server.script["/loop"] = [(302, {"Location": "/loop"}, b"")]
    with pytest.raises(NetworkError) as err:
        get_with_retries(client, server.url("/loop"), backoff=0)
    assert str(err.value) == f"{server.url('/loop')}: more than {MAX_REDIRECTS} redirects"
    assert server.count("/loop") == MAX_REDIRECTS + 1


# -- retries -----------------------------------------------------------------------------------


def test_5xx_and_429_are_retried_then_succeed(server: _ScriptServer, client: httpx.Client) -> None:
    server.script["/p"] = [(503, {}, b""), (429, {}, b""), (502, {}, b""), (200, {}, b"ok")]
    attempts: list[int] = []
    resp = get_with_retries(
        client, server.url("/p"), retries=3, backoff=0, on_attempt=lambda: attempts.append(1)
    )
    assert resp.content == b"ok" and server.count("/p") == 4 and len(attempts) == 4


def test_gives_up_after_retries_with_one_line(server: _ScriptServer, client: httpx.Client) -> None:
    server.script["/p"] = [(500, {}, b"")]
    with pytest.raises(NetworkError) as err:
        get_with_retries(client, server.url("/p"), retries=2, backoff=0)
    assert str(err.value) == f"{server.url('/p')}: HTTP 500 Internal Server Error after 3 attempts"
    assert server.count("/p") == 3


def test_client_errors_are_not_retried_and_404_410_are_told_apart(
    server: _ScriptServer, client: httpx.Client
) -> None:
    server.script["/forbidden"] = [(403, {}, b"")]
    with pytest.raises(NetworkError) as err:
        get_with_retries(client, server.url("/forbidden"), backoff=0)
    assert not isinstance(err.value, NotFound)
    assert str(err.value) == f"{server.url('/forbidden')}: HTTP 403 Forbidden"
    assert server.count("/forbidden") == 1
    server.script["/gone"] = [(410, {}, b"")]
    for path, status in (("/missing", 404), ("/gone", 410)):
        with pytest.raises(NotFound) as nf:
            get_with_retries(client, server.url(path), backoff=0)
        assert nf.value.status == status and nf.value.url == server.url(path)
        assert server.count(path) == 1
    assert str(nf.value) == f"{server.url('/gone')}: HTTP 410 Gone"


def test_accept_status_returns_the_answer(server: _ScriptServer, client: httpx.Client) -> None:
    server.script["/range"] = [(416, {}, b"")]
    resp = get_with_retries(client, server.url("/range"), backoff=0, accept_status=(416,))
    assert resp.status_code == 416


def test_dropped_connection_is_retried(server: _ScriptServer, client: httpx.Client) -> None:
    server.script["/p"] = [(0, {}, b""), (0, {}, b""), (200, {}, b"ok")]
    assert get_with_retries(client, server.url("/p"), retries=2, backoff=0).content == b"ok"
    assert server.count("/p") == 3


def test_refused_connection_is_retried_once_only() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/p"
    attempts: list[int] = []
    with make_client() as c, pytest.raises(NetworkError) as err:
        get_with_retries(c, url, retries=5, backoff=0, on_attempt=lambda: attempts.append(1))
    assert len(attempts) == 2
    assert str(err.value).startswith(f"{url}: cannot connect (")
    with make_client() as c, pytest.raises(NetworkError) as err:
        get_with_retries(c, url, backoff=0, unreachable=lambda d: f"nope: {d}")
    assert str(err.value).startswith("nope: ") and "\n" not in str(err.value)


def test_bad_urls_are_not_retried() -> None:
    attempts: list[int] = []
    with make_client() as c:
        with pytest.raises(NetworkError):
            get_with_retries(c, "ftp://127.0.0.1/x", on_attempt=lambda: attempts.append(1))
        assert len(attempts) == 1
        with pytest.raises(InputError, match="not a valid URL"):
            get_with_retries(c, "http://[::1/x")


def test_retry_after_seconds_is_honoured(server: _ScriptServer, client: httpx.Client) -> None:
    server.script["/p"] = [(503, {"Retry-After": "1"}, b""), (200, {}, b"ok")]
    assert get_with_retries(client, server.url("/p"), backoff=0).content == b"ok"
    (_, _, first), (_, _, second) = server.log
    assert second - first >= 0.95


def test_retry_after_http_date_is_honoured(server: _ScriptServer, client: httpx.Client) -> None:
    # an HTTP date has whole seconds: two seconds ahead waits more than one
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    server.script["/p"] = [(429, {"Retry-After": when}, b""), (200, {}, b"ok")]
    assert get_with_retries(client, server.url("/p"), backoff=0).content == b"ok"
    (_, _, first), (_, _, second) = server.log
    assert second - first >= 0.95


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now=now) == 90.0
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after("9" * 40) == float("inf")
    for junk in ("soon", "-5", "1.5", "", "²"):
        assert parse_retry_after(junk) is None, junk


def test_retry_delay_backoff_retry_after_and_cap() -> None:
    assert [retry_delay(a, 0.5) for a in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert retry_delay(3, 0.0) == 0.0
    assert retry_delay(0, 0.5, "3") == 3.0  # the server asks for longer
    assert retry_delay(3, 0.5, "1") == 4.0  # the backoff is already longer
    assert retry_delay(0, 0.2, "86400") == MAX_RETRY_AFTER
    assert retry_delay(0, 0.2, "86400", cap=2.0) == 2.0
    assert retry_delay(1, 0.2, "garbage") == 0.4


# -- file:// and fragments ---------------------------------------------------------------------


def test_file_urls_and_paths(tmp_path: Path) -> None:
    f = tmp_path / "a b+c.whl"
    f.write_bytes(b"x")
    url = path_url(f)
    assert url.startswith("file:///") and "%20" in url
    assert file_url_path(url) == f
    assert file_url_path("file://localhost" + url[len("file://") :]) == f
    for remote in ("file://fileserver/share/x.whl", "file://10.0.0.1/x.whl"):
        with pytest.raises(InputError, match="remote hosts"):
            file_url_path(remote)
        with pytest.raises(InputError, match="remote hosts"):
            local_path(remote)
    assert local_path(url) == f
    assert local_path(str(f)) == f
    assert local_path("https://example.invalid/x.whl") is None


def test_split_hash_fragment() -> None:
    h = "AB" * 32
    assert split_hash_fragment(f"http://h/x.whl#sha256={h}") == ("http://h/x.whl", h.lower())
    assert split_hash_fragment(f"http://h/x.whl#egg=x&sha256={h}&y=1") == (
        "http://h/x.whl",
        h.lower(),
    )
    assert split_hash_fragment("http://h/x.whl") == ("http://h/x.whl", None)
    assert split_hash_fragment("http://h/x.whl#sha256=abc") == ("http://h/x.whl", None)
    assert split_hash_fragment(f"http://h/x.whl#md5={h}") == ("http://h/x.whl", None)


def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache_root(tmp_path / "c") == tmp_path / "c"
    monkeypatch.setenv("TORCHWHEEL_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("TORCHWHEEL_CACHE_DIR")
    assert cache_root() == Path(platformdirs.user_cache_dir("torchwheel", appauthor=False))
