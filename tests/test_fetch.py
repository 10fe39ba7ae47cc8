"""fetch(): content-addressed cache, sha256 while streaming, resume with Range, local files."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.indexserver import IndexServer, QuietHTTPServer
from tests.support.wheels import make_wheel, wheel_sha256
from torchwheel.download import FetchStats, cache_root, cached_path, fetch
from torchwheel.errors import HashMismatch, InputError, NetworkError


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    # a few hundred KiB of incompressible content, so "half way" is a real split
    blob = hashlib.sha256(b"seed").digest() * 1
    data = b"".join(hashlib.sha256(blob + i.to_bytes(4, "big")).digest() for i in range(12000))
    return make_wheel(tmp_path / "src", "demo", "1.0", files={"demo/blob.bin": data})


class _DropServer:
    """Serves one file; the first ``drops`` GETs send half the body and hang up."""

    def __init__(self, data: bytes, drops: int = 1, honour_range: bool = True) -> None:
        self.data = data
        self.drops = drops
        self.honour_range = honour_range
        self.requests: list[dict[str, str]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append({k.lower(): v for k, v in self.headers.items()})
                body = outer.data
                status = 200
                extra: dict[str, str] = {}
                rng = self.headers.get("Range")
                if rng and outer.honour_range:
                    m = re.fullmatch(r"bytes=(\d+)-", rng)
                    assert m
                    start = int(m.group(1))
                    body = outer.data[start:]
                    status = 206
                    last = len(outer.data) - 1
                    extra["Content-Range"] = f"bytes {start}-{last}/{len(outer.data)}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                if outer.drops > 0:
                    outer.drops -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/files/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def drop_server(wheel: Path) -> Iterator[_DropServer]:
    srv = _DropServer(wheel.read_bytes())
    yield srv
    srv.stop()


def _cache_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_download_is_verified_cached_and_reused_offline(
    index_server: IndexServer, wheel: Path, tmp_path: Path
) -> None:
    index_server.add_project("demo", [wheel])
    url = index_server.file_url("demo", wheel.name)
    digest = wheel_sha256(wheel)
    cache = tmp_path / "cache"
    seen: list[tuple[int, int | None]] = []
    stats = FetchStats()
    with httpx.Client() as client:
        path = fetch(
            url,
            sha256=digest,
            cache_dir=cache,
            client=client,
            progress=lambda d, t: seen.append((d, t)),
            stats=stats,
        )
    assert path == cached_path(digest, wheel.name, cache)
    assert path.read_bytes() == wheel.read_bytes()
    assert stats.downloads == 1 and stats.bytes_downloaded == wheel.stat().st_size
    assert seen[-1] == (wheel.stat().st_size, wheel.stat().st_size)
    assert index_server.count("/files/") == 1
    # the server is gone: the cached file is returned without any network
    index_server.stop()
    stats2 = FetchStats()
    again = fetch(url + f"#sha256={digest}", cache_dir=cache, offline=True, stats=stats2)
    assert again == path and stats2.cache_hits == 1 and stats2.downloads == 0
    # nothing but the finished file in the cache
    assert _cache_files(cache) == [path]


def test_hash_mismatch_leaves_nothing_in_cache(
    index_server: IndexServer, wheel: Path, tmp_path: Path
) -> None:
    index_server.add_project("demo", [wheel])
    url = index_server.file_url("demo", wheel.name)
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(HashMismatch) as info:
        fetch(url, sha256=wrong, cache_dir=cache)
    msg = str(info.value)
    assert url in msg and wrong in msg and wheel_sha256(wheel) in msg and "\n" not in msg
    assert _cache_files(cache) == []


def test_interrupted_download_keeps_part_and_resumes_with_range(
    drop_server: _DropServer, wheel: Path, tmp_path: Path
) -> None:
    url = drop_server.url(wheel.name)
    digest = wheel_sha256(wheel)
    cache = tmp_path / "cache"
    size = wheel.stat().st_size
    with pytest.raises(NetworkError, match=r"interrupted.*run again to resume"):
        fetch(url, sha256=digest, cache_dir=cache, retries=0)
    part = cache / "partial" / f"{digest}.part"
    assert part.is_file() and 0 < part.stat().st_size < size
    have = part.stat().st_size
    stats = FetchStats()
    path = fetch(url, sha256=digest, cache_dir=cache, retries=0, stats=stats)
    assert path.read_bytes() == wheel.read_bytes()
    assert drop_server.requests[-1].get("range") == f"bytes={have}-"
    assert stats.resumed == 1 and stats.bytes_downloaded == size - have
    assert not part.exists()


def test_retry_within_one_call_resumes(
    drop_server: _DropServer, wheel: Path, tmp_path: Path
) -> None:
    drop_server.drops = 2
    stats = FetchStats()
    path = fetch(
        drop_server.url(wheel.name),
        sha256=wheel_sha256(wheel),
        cache_dir=tmp_path / "c",
        retries=2,
        stats=stats,
    )
    assert path.read_bytes() == wheel.read_bytes()
    assert len(drop_server.requests) == 3
    assert [("range" in r) for r in drop_server.requests] == [False, True, True]
    assert stats.resumed == 2


def test_server_ignoring_range_restarts_from_zero(wheel: Path, tmp_path: Path) -> None:
    srv = _DropServer(wheel.read_bytes(), drops=1, honour_range=False)
    try:
        path = fetch(srv.url(wheel.name), sha256=wheel_sha256(wheel), cache_dir=tmp_path / "c")
    finally:
        srv.stop()
    assert path.read_bytes() == wheel.read_bytes()
    assert "range" in srv.requests[1]  # asked for the rest, got the whole file, started over


def test_url_without_hash_is_cached_by_url(
    index_server: IndexServer, wheel: Path, tmp_path: Path
) -> None:
    index_server.add_project("demo", [wheel])
    url = index_server.file_url("demo", wheel.name)
    cache = tmp_path / "cache"
    first = fetch(url, cache_dir=cache)
    assert first == cached_path(wheel_sha256(wheel), wheel.name, cache)
    index_server.stop()
    assert fetch(url, cache_dir=cache, offline=True) == first


def test_offline_miss_and_http_errors(index_server: IndexServer, tmp_path: Path) -> None:
    url = index_server.file_url("demo", "demo-1.0-py3-none-any.whl")
    with pytest.raises(NetworkError, match="not in the cache"):
        fetch(url, cache_dir=tmp_path, offline=True)
    with pytest.raises(NetworkError, match="HTTP 404"):
        fetch(url, cache_dir=tmp_path)
    with pytest.raises(NetworkError, match=r"127\.0\.0\.1:9"):
        fetch("http://127.0.0.1:9/x-1.0-py3-none-any.whl", cache_dir=tmp_path, retries=0)


def test_local_paths_and_file_urls(wheel: Path, tmp_path: Path) -> None:
    digest = wheel_sha256(wheel)
    assert fetch(wheel, sha256=digest, cache_dir=tmp_path / "c") == wheel
    assert fetch(wheel.as_uri() + f"#sha256={digest}", cache_dir=tmp_path / "c") == wheel
    with pytest.raises(HashMismatch):
        fetch(wheel, sha256="f" * 64)
    with pytest.raises(InputError, match="no such file"):
        fetch(tmp_path / "missing.whl")
    with pytest.raises(InputError, match="64 hex"):
        fetch(wheel, sha256="abc")
    assert not (tmp_path / "c").exists()  # local files are not copied


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCHWHEEL_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("TORCHWHEEL_CACHE_DIR")
    assert cache_root().name == "torchwheel" and os.path.isabs(cache_root())
