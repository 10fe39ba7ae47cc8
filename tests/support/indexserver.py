"""A real package index on 127.0.0.1 for tests and benchmarks (pytest plugin).

``IndexServer`` is a stdlib ``http.server`` in a thread that serves, from one description
of projects and files:

- ``/simple/`` and ``/simple/<project>/`` as PEP 691 JSON when the ``Accept`` header asks for
  ``application/vnd.pypi.simple.v1+json`` and as PEP 503 HTML otherwise (``#sha256=``
  fragments, ``data-requires-python``, ``data-yanked``, ``data-dist-info-metadata`` /
  ``data-core-metadata``); non-normalized project names are redirected (301) like PyPI does;
- ``/files/<project>/<filename>`` with single HTTP ranges (206 / ``Content-Range``; switch
  ``ignore_range`` to serve the whole file instead) and ``<filename>.metadata`` (PEP 658/714);
- pages registered with :meth:`IndexServer.add_page` (find-links pages, "not an index" HTML);
- any other file under ``root`` at its relative path (ranges too);
- ``ETag`` + ``If-None-Match`` (304) and a configurable ``Cache-Control`` on index pages.

Every request is logged (:attr:`IndexServer.requests`, :meth:`IndexServer.count`) and
failures can be injected (:meth:`IndexServer.fail`: an HTTP status or a dropped connection,
``times`` times). Fixtures: ``index_server`` (one server per test) and
``index_server_factory`` (more servers, e.g. for ``--extra-index-url``).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.support.wheels import wheel_sha256

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html"


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel_metadata(path: Path) -> bytes | None:
    """The ``*.dist-info/METADATA`` bytes of a wheel file, or None if it has none."""
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                parts = name.split("/")
                if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                    return zf.read(name)
    except (zipfile.BadZipFile, OSError):
        return None
    return None


_UNSET: Any = object()


@dataclass
class IndexFile:
    """One file listed on a project page, with the attributes the index advertises."""

    filename: str
    path: Path
    sha256: str | None = _UNSET  # advertised hash; default: the real one; None: no hash
    requires_python: str | None = None
    yanked: bool | str = False
    metadata: bytes | None = _UNSET  # PEP 658 file; default: the wheel's METADATA
    metadata_sha256: str | None = _UNSET  # advertised metadata hash; default: the real one
    href: str | None = None  # override the link (absolute or relative)
    size: int | None = _UNSET

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.sha256 is _UNSET:
            self.sha256 = wheel_sha256(self.path) if self.path.exists() else None
        if self.metadata is _UNSET:
            self.metadata = wheel_metadata(self.path) if self.filename.endswith(".whl") else None
        if self.metadata_sha256 is _UNSET:
            self.metadata_sha256 = None if self.metadata is None else _sha256(self.metadata)
        if self.size is _UNSET:
            self.size = self.path.stat().st_size if self.path.exists() else None


@dataclass
class Request:
    """One logged request."""

    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    sent: int = 0  # body bytes written
    done: bool = False  # the handler has finished with it (``sent`` is final)


@dataclass
class _Failure:
    pattern: str
    status: int | None  # None: drop the connection
    times: int


@dataclass
class _Page:
    body: bytes
    content_type: str


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that keeps handler exceptions instead of printing them.

    ``socketserver`` prints a traceback on ``sys.stderr`` when a handler raises (a client
    that hangs up mid-answer: ``BrokenPipeError``); from a server thread that lands in the
    output a test is capturing from the CLI. A client hanging up is normal; anything else is
    kept in ``errors`` for the test to see.
    """

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: list[BaseException] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, ConnectionError):
            self.errors.append(exc)


@dataclass
class IndexServer:
    """A loopback package index. Use as a context manager or through the pytest fixtures."""

    root: Path
    cache_control: str | None = "max-age=600"
    ignore_range: bool = False
    formats: tuple[str, ...] = ("json", "html")
    absolute_urls: bool = False
    metadata_attrs: tuple[str, ...] = ("data-core-metadata", "data-dist-info-metadata")
    etags: bool = True
    projects: dict[str, list[IndexFile]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _pages: dict[str, _Page] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: QuietHTTPServer | None = None
    _thread: threading.Thread | None = None
    _port: int = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> IndexServer:
        """Bind 127.0.0.1:0 and serve in a daemon thread."""
        self.root.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"index": self})
        self._httpd = QuietHTTPServer(("127.0.0.1", 0), handler)
        self._port = int(self._httpd.server_address[1])  # kept after stop() for messages
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> IndexServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        assert self._port, "server not started"
        return self._port

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The index URL: ``http://127.0.0.1:PORT/simple``."""
        return f"{self.base}/simple"

    # -- content ---------------------------------------------------------------------------

    def entry(self, item: Path | tuple[str, bytes] | IndexFile, **attrs: Any) -> IndexFile:
        """Turn a wheel path, ``(filename, bytes)`` or IndexFile into an IndexFile."""
        if isinstance(item, IndexFile):
            return item
        if isinstance(item, tuple):
            filename, data = item
            dest = self.root / "blobs" / filename
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            return IndexFile(filename=filename, path=dest, **attrs)
        path = Path(item)
        return IndexFile(filename=path.name, path=path, **attrs)

    def add_project(
        self,
        name: str,
        files: Sequence[Path | tuple[str, bytes] | IndexFile],
        **attrs: Any,
    ) -> str:
        """Add (or extend) a project; ``attrs`` apply to every non-IndexFile entry.

        Returns the project page URL.
        """
        entries = [self.entry(f, **attrs) for f in files]
        with self._lock:
            self.projects.setdefault(normalize(name), []).extend(entries)
        return f"{self.url}/{normalize(name)}/"

    def file_url(self, project: str, filename: str) -> str:
        """Absolute URL of a served file."""
        return f"{self.base}/files/{normalize(project)}/{quote(filename)}"

    def add_page(self, path: str, body: str | bytes, content_type: str = HTML_TYPE) -> str:
        """Serve ``body`` at ``path`` (e.g. ``/links.html``); returns its URL."""
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._pages["/" + path.lstrip("/")] = _Page(data, content_type)
        return f"{self.base}/{path.lstrip('/')}"

    def add_find_links_page(self, path: str, project: str, files: Sequence[Path]) -> str:
        """A flat HTML page (pip ``--find-links`` style) linking to ``files``; returns its URL."""
        entries = [self.entry(f) for f in files]
        with self._lock:
            self.projects.setdefault(normalize(project), [])
            known = {e.filename for e in self.projects[normalize(project)]}
            self.projects[normalize(project)].extend(e for e in entries if e.filename not in known)
        links = "\n".join(
            f'<a href="{html.escape(self.file_url(project, e.filename))}">'
            f"{html.escape(e.filename)}</a><br/>"
            for e in entries
        )
        return self.add_page(path, f"<!DOCTYPE html><html><body>\n{links}\n</body></html>\n")

    def fail(self, pattern: str, status: int | None = 503, times: int = 1) -> None:
        """Answer the next ``times`` requests whose path starts with ``pattern`` with
        ``status`` (None: drop the connection without an answer)."""
        with self._lock:
            self._failures.append(_Failure(pattern, status, times))

    # -- request log -----------------------------------------------------------------------

    def count(self, prefix: str = "", method: str | None = None) -> int:
        """Requests whose path starts with ``prefix`` (and, if given, used ``method``)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r.path.startswith(prefix) and (method is None or r.method == method)
            )

    def bytes_sent(self, prefix: str = "") -> int:
        """Body bytes sent for requests whose path starts with ``prefix`` (after waiting for
        requests still being answered: a client may have read a body before the handler
        thread counted it)."""
        self.wait_idle()
        with self._lock:
            return sum(r.sent for r in self.requests if r.path.startswith(prefix))

    def range_requests(self, prefix: str = "") -> list[Request]:
        """Logged requests with a ``Range`` header whose path starts with ``prefix``."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix) and "range" in r.headers]

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until every logged request has been answered (or ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(r.done for r in self.requests):
                    return
            time.sleep(0.005)

    def clear_log(self) -> None:
        """Forget the logged requests."""
        with self._lock:
            self.requests.clear()

    # -- rendering -------------------------------------------------------------------------

    def _href(self, project: str, f: IndexFile) -> str:
        if f.href is not None:
            href = f.href
        elif self.absolute_urls:
            href = self.file_url(project, f.filename)
        else:
            href = f"../../files/{project}/{quote(f.filename)}"
        if f.sha256:
            href += f"#sha256={f.sha256}"
        return href

    def project_json(self, project: str) -> dict[str, Any]:
        """The PEP 691 (v1.1) project document."""
        files = []
        for f in self.projects[project]:
            meta: dict[str, str] | bool = (
                {"sha256": f.metadata_sha256}
                if f.metadata is not None and f.metadata_sha256
                else f.metadata is not None
            )
            entry: dict[str, Any] = {
                "filename": f.filename,
                "url": self._href(project, f).split("#", 1)[0],
                "hashes": {"sha256": f.sha256} if f.sha256 else {},
                "requires-python": f.requires_python,
                "yanked": f.yanked,
                "core-metadata": meta,
                "dist-info-metadata": meta,
            }
            if f.size is not None:
                entry["size"] = f.size
            files.append(entry)
        return {"meta": {"api-version": "1.1"}, "name": project, "files": files, "versions": []}

    def project_html(self, project: str) -> str:
        """The PEP 503 project page."""
        lines = [
            "<!DOCTYPE html>",
            "<html>",
            '<head><meta name="pypi:repository-version" content="1.1">'
            f"<title>Links for {html.escape(project)}</title></head>",
            f"<body><h1>Links for {html.escape(project)}</h1>",
        ]
        for f in self.projects[project]:
            attrs = [f'href="{html.escape(self._href(project, f))}"']
            if f.requires_python:
                attrs.append(f'data-requires-python="{html.escape(f.requires_python)}"')
            if f.yanked is not False:
                reason = f.yanked if isinstance(f.yanked, str) else ""
                attrs.append(f'data-yanked="{html.escape(reason)}"')
            if f.metadata is not None:
                value = f"sha256={f.metadata_sha256}" if f.metadata_sha256 else "true"
                attrs.extend(f'{a}="{value}"' for a in self.metadata_attrs)
            lines.append(f"<a {' '.join(attrs)}>{html.escape(f.filename)}</a><br/>")
        lines.append("</body></html>")
        return "\n".join(lines) + "\n"

    def root_json(self) -> dict[str, Any]:
        """The PEP 691 root document."""
        return {
            "meta": {"api-version": "1.1"},
            "projects": [{"name": p} for p in sorted(self.projects)],
        }

    def root_html(self) -> str:
        """The PEP 503 root page."""
        links = "\n".join(f'<a href="{p}/">{p}</a><br/>' for p in sorted(self.projects))
        return f"<!DOCTYPE html><html><body>\n{links}\n</body></html>\n"

    def pick_format(self, accept: str | None) -> str | None:
        """Content negotiation (PEP 691): ``"json"``, ``"html"`` or None (406)."""
        if not accept:
            return "html" if "html" in self.formats else self.formats[0]
        best: tuple[float, int, str] | None = None
        for part in accept.split(","):
            bits = [b.strip() for b in part.split(";")]
            mtype = bits[0].lower()
            q = 1.0
            for b in bits[1:]:
                if b.startswith("q="):
                    try:
                        q = float(b[2:])
                    except ValueError:
                        q = 0.0
            fmt = {
                JSON_TYPE: "json",
                "application/vnd.pypi.simple.latest+json": "json",
                "application/vnd.pypi.simple.v1+html": "html",
                "application/vnd.pypi.simple.latest+html": "html",
                "text/html": "html",
                "*/*": "html",
            }.get(mtype)
            if fmt is None or q <= 0 or fmt not in self.formats:
                continue
            key = (q, 1 if fmt == "json" else 0, fmt)
            if best is None or key > best:
                best = key
        return None if best is None else best[2]


class _Handler(BaseHTTPRequestHandler):
    index: IndexServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, *, head: bool) -> None:
        self._rec: Request | None = None
        try:
            self._dispatch(head=head)
        finally:
            if self._rec is not None:
                with self.index._lock:
                    self._rec.done = True

    # ---------------------------------------------------------------------------------------

    def _dispatch(self, *, head: bool) -> None:
        idx = self.index
        path = unquote(urlsplit(self.path).path)
        rec = Request(self.command, path, {k.lower(): v for k, v in self.headers.items()})
        self._rec = rec
        with idx._lock:
            idx.requests.append(rec)
            failure = next(
                (f for f in idx._failures if f.times > 0 and path.startswith(f.pattern)), None
            )
            if failure is not None:
                failure.times -= 1
        if failure is not None:
            if failure.status is None:
                rec.status = -1
                self.close_connection = True
                return
            self._send(rec, failure.status, b"injected failure\n", "text/plain", head=head)
            return
        if path in idx._pages:
            page = idx._pages[path]
            self._send(rec, 200, page.body, page.content_type, head=head)
            return
        if path in ("/simple", "/simple/"):
            self._index_page(rec, None, head=head)
            return
        m = re.fullmatch(r"/simple/([^/]+)(/?)", path)
        if m:
            name, slash = m.groups()
            if normalize(name) != name or not slash:
                self._redirect(rec, f"/simple/{normalize(name)}/")
                return
            self._index_page(rec, name, head=head)
            return
        m = re.fullmatch(r"/files/([^/]+)/([^/]+)", path)
        if m:
            self._file(rec, m.group(1), m.group(2), head=head)
            return
        static = (idx.root / path.lstrip("/")).resolve()
        if static.is_file() and static.is_relative_to(idx.root.resolve()):
            self._bytes(rec, static, head=head)
            return
        self._send(rec, 404, b"not found\n", "text/plain", head=head)

    def _redirect(self, rec: Request, location: str) -> None:
        rec.status = 301
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(
        self,
        rec: Request,
        status: int,
        body: bytes,
        ctype: str,
        *,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)
            rec.sent += len(body)

    def _index_page(self, rec: Request, project: str | None, *, head: bool) -> None:
        idx = self.index
        fmt = idx.pick_format(self.headers.get("Accept"))
        if fmt is None:
            self._send(rec, 406, b"not acceptable\n", "text/plain", head=head)
            return
        with idx._lock:
            if project is not None and project not in idx.projects:
                fmt = "missing"
            elif fmt == "json":
                doc = idx.project_json(project) if project else idx.root_json()
                body = json.dumps(doc).encode()
            else:
                body = (idx.project_html(project) if project else idx.root_html()).encode()
        if fmt == "missing":
            self._send(rec, 404, b"not found\n", "text/plain", head=head)
            return
        ctype = JSON_TYPE if fmt == "json" else "text/html; charset=utf-8"
        extra = {"Vary": "Accept"}
        if idx.cache_control:
            extra["Cache-Control"] = idx.cache_control
        if idx.etags:
            etag = f'"{_sha256(body)[:32]}-{fmt}"'
            extra["ETag"] = etag
            inm = self.headers.get("If-None-Match")
            if inm and etag in [t.strip() for t in inm.split(",")]:
                rec.status = 304
                self.send_response(304)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self._send(rec, 200, body, ctype, head=head, extra=extra)

    def _file(self, rec: Request, project: str, filename: str, *, head: bool) -> None:
        idx = self.index
        want_meta = filename.endswith(".metadata")
        base = filename[: -len(".metadata")] if want_meta else filename
        with idx._lock:
            entry = next((f for f in idx.projects.get(project, []) if f.filename == base), None)
        if entry is None or (want_meta and entry.metadata is None):
            self._send(rec, 404, b"not found\n", "text/plain", head=head)
            return
        if want_meta:
            assert entry.metadata is not None
            self._send(rec, 200, entry.metadata, "application/octet-stream", head=head)
            return
        self._bytes(rec, entry.path, head=head)

    def _bytes(self, rec: Request, path: Path, *, head: bool) -> None:
        """Serve a file from disk: a single Range as 206, else the whole file (streamed)."""
        idx = self.index
        size = path.stat().st_size
        rng = self.headers.get("Range")
        status, start, end = 200, 0, size - 1
        extra = {} if idx.ignore_range else {"Accept-Ranges": "bytes"}
        if rng and not idx.ignore_range:
            span = _parse_range(rng, size)
            if span == "unsatisfiable":
                self._send(
                    rec,
                    416,
                    b"",
                    "text/plain",
                    head=head,
                    extra={"Content-Range": f"bytes */{size}"},
                )
                return
            if isinstance(span, tuple):
                status, (start, end) = 206, span
                extra["Content-Range"] = f"bytes {start}-{end}/{size}"
        rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            try:
                while left > 0:
                    chunk = f.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    rec.sent += len(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range → inclusive (start, end); ``"unsatisfiable"``; None to ignore."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multiple ranges or garbage: serve the whole file (allowed by RFC 9110)
    first, last = m.groups()
    if not first:
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


# -- pytest plugin -----------------------------------------------------------------------------

#: The ``index_server_factory`` fixture: call it with :class:`IndexServer` options.
IndexServerFactory = Callable[..., IndexServer]


@pytest.fixture
def index_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexServerFactory]:
    """Call it to start another loopback index: ``index_server_factory(**IndexServer options)``."""
    started: list[IndexServer] = []

    def make(**options: Any) -> IndexServer:
        root = tmp_path_factory.mktemp("index")
        server = IndexServer(root=root, **options).start()
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def index_server(index_server_factory: IndexServerFactory) -> IndexServer:
    """One loopback index (empty until ``add_project``)."""
    server: IndexServer = index_server_factory()
    return server


@pytest.fixture(autouse=True)
def _isolated_torchwheel_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep every test away from the user's cache and from TORCHWHEEL_* index settings."""
    monkeypatch.setenv("TORCHWHEEL_CACHE_DIR", str(tmp_path_factory.mktemp("twcache")))
    for var in ("TORCHWHEEL_INDEX_URL", "TORCHWHEEL_EXTRA_INDEX_URL", "TORCHWHEEL_FIND_LINKS"):
        monkeypatch.delenv(var, raising=False)


# -- a synthetic PyTorch CPU index ------------------------------------------------------------

#: (version, tags) of tiny real wheels whose names have the shapes the PyTorch CPU index uses.
TORCH_SHAPES: tuple[tuple[str, str], ...] = (
    ("2.5.1+cpu", "cp311-cp311-linux_x86_64"),
    ("2.5.1+cpu", "cp312-cp312-linux_x86_64"),
    ("2.5.1", "cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64"),
    ("2.5.1", "cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64"),
    ("2.5.1+cpu", "cp311-cp311-win_amd64"),
    ("2.5.1", "cp311-none-macosx_11_0_arm64"),
    ("2.8.0+cpu", "cp311-cp311-manylinux_2_28_x86_64"),
    ("2.8.0+cpu", "cp312-cp312-manylinux_2_28_x86_64"),
    ("2.8.0+cpu", "cp313-cp313-manylinux_2_28_x86_64"),
    ("2.8.0+cpu", "cp313-cp313t-manylinux_2_28_x86_64"),
    ("2.8.0", "cp311-cp311-manylinux_2_28_aarch64"),
    ("2.8.0", "cp312-cp312-manylinux_2_28_aarch64"),
    ("2.8.0", "cp313-cp313-manylinux_2_28_aarch64"),
    ("2.8.0+cpu", "cp312-cp312-win_amd64"),
    ("2.8.0", "cp312-none-macosx_11_0_arm64"),
    ("2.9.0.dev20250801+cpu", "cp312-cp312-manylinux_2_28_x86_64"),
)


def make_torch_wheels(directory: Path) -> list[Path]:
    """Write one tiny real ``torch`` wheel per :data:`TORCH_SHAPES` entry into ``directory``."""
    from .wheels import make_wheel

    reqs = ["filelock", "typing-extensions>=4.10.0", "sympy>=1.13.3"]
    return [
        make_wheel(
            directory, "torch", version, tags=tags, requires_dist=reqs, requires_python=">=3.9.0"
        )
        for version, tags in TORCH_SHAPES
    ]


@pytest.fixture(scope="session")
def torch_like_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The :data:`TORCH_SHAPES` wheels (session-wide, read-only)."""
    return make_torch_wheels(tmp_path_factory.mktemp("torch-wheels"))


@pytest.fixture
def torch_index(index_server: IndexServer, torch_like_wheels: list[Path]) -> IndexServer:
    """``index_server`` holding the synthetic torch project (requires-python >=3.9)."""
    index_server.add_project("torch", torch_like_wheels, requires_python=">=3.9")
    return index_server
