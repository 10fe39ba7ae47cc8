"""Hostile servers and caches (issue 13): redirect loops, false encodings, deep JSON, slow and
endless bodies, Retry-After, where links may point, a cache that never serves garbage —
each a one-line NetworkError / IndexPageError / InputError, within its budget."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostileserver import (
    HostileServer,
    drip,
    endless_chunked,
    false_gzip,
    fixed,
    real_gzip,
    redirect_to,
    sequence,
    status,
)
from tests.support.indexserver import IndexServer
from tests.support.wheels import make_wheel, wheel_sha256
from torchwheel import download
from torchwheel.download import cached_path, fetch
from torchwheel.errors import IndexPageError, InputError, NetworkError
from torchwheel.http import MAX_REDIRECTS, get_with_retries, make_client, read_body, retry_delay
from torchwheel.index import IndexClient, PageCache
from torchwheel.index.parse import MAX_JSON_DEPTH, parse_html_links, parse_json_links, parse_page

JSON = "application/vnd.pypi.simple.v1+json"
TW = (sys.executable, "-m", "torchwheel")
TARGET = ("--runtime", "python3.12", "--arch", "x86_64")


@pytest.fixture
def srv() -> Iterator[HostileServer]:
    s = HostileServer()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return make_wheel(tmp_path / "wheels", "demo", "1.0")


def _client(srv: HostileServer, **kw: float) -> IndexClient:
    return IndexClient(f"{srv.base}/simple", retries=0, backoff=0, **kw)  # type: ignore[arg-type]


def test_redirect_loop_is_one_network_error(srv: HostileServer) -> None:
    srv.route("/simple/demo/", redirect_to("/simple/demo/"))
    with _client(srv) as idx, pytest.raises(NetworkError, match="more than 10 redirects"):
        idx.candidates("demo")
    assert srv.counts["/simple/demo/"] == MAX_REDIRECTS + 1


def test_redirect_loop_through_the_cli_exits_2_in_one_line(srv: HostileServer) -> None:
    srv.route("/simple/torch/", redirect_to("/simple/torch/"))
    proc = subprocess.run(
        [*TW, "resolve", *TARGET, "--index-url", f"{srv.base}/simple"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "more than 10 redirects" in proc.stderr


def test_body_claiming_gzip_that_is_not(srv: HostileServer, wheel: Path) -> None:
    page = json.dumps({"files": [{"url": "x.whl", "filename": wheel.name, "hashes": {}}]})
    srv.route("/simple/demo/", false_gzip(page.encode(), JSON))
    with _client(srv) as idx, pytest.raises(NetworkError, match="not in its stated encoding"):
        idx.candidates("demo")
    srv.route("/simple/demo/", real_gzip(page.encode(), JSON))  # a real gzip body reads
    with _client(srv) as idx:
        assert [c.filename for c in idx.candidates("demo")] == [wheel.name]


def test_json_nested_200000_deep(srv: HostileServer) -> None:
    srv.route("/simple/demo/", fixed(b'{"files": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", JSON))
    with _client(srv) as idx, pytest.raises(IndexPageError, match="invalid JSON index page"):
        idx.candidates("demo")


def test_json_depth_just_under_and_over() -> None:
    def page(depth: int) -> bytes:  # the object is depth 1, "files" depth 2, ...
        inner = "[" * (depth - 1) + "]" * (depth - 1)
        return ('{"files": [], "meta": ' + inner + "}").encode()

    assert parse_page(JSON, page(MAX_JSON_DEPTH), "u") == []
    with pytest.raises(IndexPageError, match=f"nested more than {MAX_JSON_DEPTH} deep"):
        parse_page(JSON, page(MAX_JSON_DEPTH + 1), "u")


def test_page_dripping_a_byte_at_a_time_hits_the_deadline(srv: HostileServer) -> None:
    srv.route("/simple/demo/", drip(0.2))
    start = time.monotonic()
    with (
        _client(srv, page_deadline=1.0) as idx,
        pytest.raises(NetworkError, match="did not arrive in time"),
    ):
        idx.candidates("demo")
    assert time.monotonic() - start < 5


def test_page_size_just_under_and_over(srv: HostileServer, wheel: Path) -> None:
    links = f'<a href="/f/{wheel.name}">{wheel.name}</a>'.encode()
    limit = 4096
    srv.route("/simple/demo/", fixed(links + b" " * (limit - len(links))))
    with _client(srv, max_page_bytes=limit) as idx:
        assert [c.filename for c in idx.candidates("demo")] == [wheel.name]
    srv.route("/simple/demo/", fixed(links + b" " * (limit - len(links) + 1)))
    with _client(srv, max_page_bytes=limit) as idx, pytest.raises(NetworkError, match="4,096"):
        idx.candidates("demo")


def test_endless_chunked_page_stops_at_the_cap(srv: HostileServer, tmp_path: Path) -> None:
    srv.route("/simple/demo/", endless_chunked())
    cache = tmp_path / "cache"
    with (
        IndexClient(
            f"{srv.base}/simple", retries=0, cache_dir=cache, max_page_bytes=8 << 20
        ) as idx,
        pytest.raises(NetworkError, match="over the 8,388,608-byte limit"),
    ):
        idx.candidates("demo")
    assert not list(cache.rglob("*.body"))  # nothing of it was cached


def test_read_body_deadline_and_cap_directly(srv: HostileServer) -> None:
    url = srv.route("/x", fixed(b"a" * 1000))
    with make_client() as client:
        resp = get_with_retries(client, url, stream=True)
        assert read_body(resp, url, limit=1000) == b"a" * 1000
        resp = get_with_retries(client, url, stream=True)
        with pytest.raises(NetworkError, match="1,000 bytes, over the 999-byte limit"):
            read_body(resp, url, limit=999)


def test_retry_after_is_honoured(srv: HostileServer, wheel: Path) -> None:
    page = f'<a href="/f/{wheel.name}">x</a>'.encode()
    srv.route("/simple/demo/", sequence(status(503, {"Retry-After": "1"}), fixed(page)))
    with IndexClient(f"{srv.base}/simple", retries=1, backoff=0) as idx:
        assert len(idx.candidates("demo")) == 1
    first, second = srv.times["/simple/demo/"]
    assert second - first >= 0.95


def test_retry_after_cap_just_under_and_over(srv: HostileServer) -> None:
    assert retry_delay(0, 0, "5", cap=5.0) == 5.0
    assert retry_delay(0, 0, "5", cap=4.5) == 4.5
    url = srv.route("/x", sequence(status(503, {"Retry-After": "3600"}), fixed(b"ok")))
    start = time.monotonic()
    with make_client() as client:
        resp = get_with_retries(client, url, retries=1, backoff=0, retry_after_cap=0.3)
    assert resp.status_code == 200 and 0.25 < time.monotonic() - start < 5


# -- where links may point ---------------------------------------------------------------------


def test_file_links_on_an_http_page_are_dropped(srv: HostileServer, wheel: Path) -> None:
    html = (
        f'<a href="{wheel.as_uri()}">{wheel.name}</a>'
        f'<a href="file:///etc/passwd#/demo-2.0-py3-none-any.whl">x</a>'
        f'<a href="/files/demo-1.5-py3-none-any.whl">ok</a>'
    )
    srv.route("/simple/demo/", fixed(html.encode()))
    with _client(srv) as idx:
        cands = idx.candidates("demo")
        assert [c.url for c in cands] == [f"{srv.base}/files/demo-1.5-py3-none-any.whl"]
        assert idx.refused_links == [wheel.as_uri(), "file:///etc/passwd"]


def test_json_file_url_is_never_read(srv: HostileServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0\n")
    page = {
        "files": [
            {"url": secret.as_uri(), "filename": "demo-1.0-py3-none-any.whl", "hashes": {}},
        ]
    }
    srv.route("/simple/demo/", fixed(json.dumps(page).encode(), JSON))
    with _client(srv) as idx:
        assert idx.candidates("demo") == []
        assert idx.refused_links == [secret.as_uri()]


def test_fetch_refuses_a_network_candidate_naming_a_local_file(wheel: Path) -> None:
    class Cand:
        url = wheel.as_uri()
        filename = wheel.name
        sha256 = None
        source = "https://evil.example/simple"

    with pytest.raises(InputError, match="links outside HTTP"):
        fetch(Cand())


def test_build_from_an_index_linking_file_urls_installs_nothing_local(
    srv: HostileServer, wheel: Path, tmp_path: Path
) -> None:
    srv.route("/simple/demo/", fixed(f'<a href="{wheel.as_uri()}">{wheel.name}</a>'.encode()))
    out = tmp_path / "layer.zip"
    proc = subprocess.run(
        [*TW, "build", "demo", *TARGET, "--index-url", f"{srv.base}/simple", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TORCHWHEEL_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_a_user_given_file_index_still_reaches_local_files(tmp_path: Path, wheel: Path) -> None:
    index = tmp_path / "index" / "demo"
    index.mkdir(parents=True)
    (index / "index.html").write_text(f'<a href="{wheel.as_uri()}">{wheel.name}</a>')
    with IndexClient((tmp_path / "index").as_uri()) as idx:
        [cand] = idx.candidates("demo")
    assert fetch(cand) == wheel


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<base href="https://files.example/pkgs/"><a href="a-1.whl">', "https://files.example/pkgs/a-1.whl"),
        ('<base href="sub/"><a href="a-1.whl">', "https://idx.example/simple/a/sub/a-1.whl"),
        ('<base target="_top"><base href="/x/"><a href="a-1.whl">', "https://idx.example/x/a-1.whl"),
        ('<base href="/first/"><base href="/second/"><a href="a-1.whl">', "https://idx.example/first/a-1.whl"),
        ('<base href=""><a href="a-1.whl">', "https://idx.example/simple/a/a-1.whl"),
        ('<base href="data:text/html,x"><a href="a-1.whl">', "https://idx.example/simple/a/a-1.whl"),
        ('<base href="javascript:alert(1)"><a href="a-1.whl">', "https://idx.example/simple/a/a-1.whl"),
        ('<base href="http://[::1"><a href="a-1.whl">', "https://idx.example/simple/a/a-1.whl"),
    ],
)  # fmt: skip
def test_base_href_follows_the_html_standard(html: str, expected: str) -> None:
    [link] = parse_html_links(html, "https://idx.example/simple/a/")
    assert link.url == expected


def test_cross_host_links_are_followed_and_every_host_is_recorded(
    srv: HostileServer, index_server: IndexServer, wheel: Path, tmp_path: Path
) -> None:
    index_server.add_project("demo", [wheel])
    file_url = index_server.file_url("demo", wheel.name)
    srv.route("/simple/demo/", fixed(f'<a href="{file_url}">{wheel.name}</a>'.encode()))
    with _client(srv) as idx:
        [cand] = idx.candidates("demo")
        fetch(cand, cache_dir=tmp_path / "c", client=idx.client)
        hosts = idx.hosts
    assert hosts == [srv.base, index_server.base]


# -- the cache ---------------------------------------------------------------------------------


def test_garbage_for_a_link_without_hash_is_not_cached(
    srv: HostileServer, wheel: Path, tmp_path: Path
) -> None:
    path = f"/f/{wheel.name}"
    srv.route(path, sequence(fixed(b"<html>oops</html>"), fixed(wheel.read_bytes())))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=r"not a valid wheel .*nothing was cached"):
        fetch(srv.base + path, cache_dir=cache)
    assert not [p for p in cache.rglob("*") if p.is_file()]
    got = fetch(srv.base + path, cache_dir=cache)  # the server is fixed: the next run works
    assert got.read_bytes() == wheel.read_bytes()
    assert got == cached_path(wheel_sha256(wheel), wheel.name, cache)


def test_a_bad_cached_entry_is_dropped_and_fetched_again(
    srv: HostileServer, wheel: Path, tmp_path: Path
) -> None:
    path = f"/f/{wheel.name}"
    url = srv.route(path, fixed(wheel.read_bytes()))
    cache = tmp_path / "cache"
    digest = wheel_sha256(wheel)
    first = fetch(url + f"#sha256={digest}", cache_dir=cache)
    first.write_bytes(b"bit rot")
    again = fetch(url + f"#sha256={digest}", cache_dir=cache)
    assert again.read_bytes() == wheel.read_bytes() and srv.counts[path] == 2
    # without a hash: a cached entry that is no wheel any more is dropped too
    url2 = srv.route("/g/" + wheel.name, fixed(wheel.read_bytes()))
    second = fetch(url2, cache_dir=cache)
    assert second == again  # same content, same place
    second.write_bytes(b"junk")
    download_count = srv.counts["/g/" + wheel.name]
    assert fetch(url2, cache_dir=cache).read_bytes() == wheel.read_bytes()
    assert srv.counts["/g/" + wheel.name] == download_count + 1


def test_hand_corrupted_page_cache_metadata_is_a_miss(
    index_server: IndexServer, wheel: Path, tmp_path: Path
) -> None:
    index_server.add_project("demo", [wheel])
    cache = tmp_path / "cache"
    with IndexClient(index_server.url, cache_dir=cache) as idx:
        assert len(idx.candidates("demo")) == 1
    [head] = (cache / "index-pages-v1").glob("*.json")
    good = json.loads(head.read_text())
    for bad in (
        [1, 2],
        {**good, "max_age": "600"},
        {**good, "stored_at": None},
        {**good, "etag": {"x": 1}},
        {**good, "url": "http://elsewhere/"},
        "[" * 100_000,
    ):
        head.write_text(bad if isinstance(bad, str) else json.dumps(bad))
        assert PageCache(cache).load(f"{index_server.url}/demo/") is None
        with IndexClient(index_server.url, cache_dir=cache) as idx:
            assert len(idx.candidates("demo")) == 1  # fetched again, no error


_CONCURRENT = """
import sys
from torchwheel.download import fetch
print(fetch(sys.argv[1], cache_dir=sys.argv[2]))
"""


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_fetches_on_a_cold_cache(
    index_server: IndexServer, tmp_path: Path, round_: int
) -> None:
    big = make_wheel(
        tmp_path / "w", "demo", "1.0", files={"demo/blob.bin": bytes(range(256)) * 20_000}
    )
    index_server.add_project("demo", [big])
    url = index_server.file_url("demo", big.name)
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, url, str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _o, err in results]
    assert {out.strip() for out, _e in results} == {
        str(cached_path(wheel_sha256(big), big.name, cache))
    }


def test_download_dripping_bytes_is_given_up(
    srv: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "DOWNLOAD_GRACE", 0.5)
    url = srv.route("/f/demo-1.0-py3-none-any.whl", drip(0.1, total=1000))
    start = time.monotonic()
    with pytest.raises(NetworkError, match="download too slow"):
        fetch(url, cache_dir=tmp_path / "c", retries=0)
    assert time.monotonic() - start < 5


def test_client_hook_keeps_an_injected_client_usable(srv: HostileServer) -> None:
    url = srv.route("/x", fixed(b"ok"))
    with httpx.Client() as client:
        idx = IndexClient(f"{srv.base}/simple", client=client)
        assert client.get(url).content == b"ok"
        assert idx.hosts == [srv.base]


def test_resolve_json_lists_every_host_contacted(
    torch_index: IndexServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchwheel.cli import main

    args = ["resolve", *TARGET, "--index-url", torch_index.url, "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["hosts"] == [torch_index.base]
    assert main([*args[:-1], "--all", "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["hosts"] == [torch_index.base]


def test_page_hashes_name_no_paths_and_a_damaged_metadata_blob_is_fetched_again(
    index_server: IndexServer, wheel: Path, tmp_path: Path
) -> None:
    [link] = parse_json_links(
        {
            "files": [
                {
                    "url": "a-1.0-py3-none-any.whl",
                    "hashes": {"sha256": "../../x"},
                    "core-metadata": {"sha256": "/../../y"},
                }
            ]
        },
        "https://idx.example/simple/a/",
    )
    assert link.sha256 is None and link.metadata_sha256 is None and link.has_metadata
    index_server.add_project("demo", [wheel])
    cache = tmp_path / "cache"
    with IndexClient(index_server.url, cache_dir=cache) as idx:
        [cand] = idx.candidates("demo")
        first = idx.get_metadata(cand)
    assert first is not None
    blob = cache / "index-pages-v1" / "blobs" / f"metadata-{cand.metadata_sha256}"
    blob.write_bytes(b"damaged")
    with IndexClient(index_server.url, cache_dir=cache) as idx:
        [cand] = idx.candidates("demo")
        assert idx.get_metadata(cand) == first
    assert blob.read_bytes() == first


def test_a_page_file_name_with_a_path_is_not_a_candidate_and_fetch_stays_in_the_cache(
    index_server: IndexServer, wheel: Path, tmp_path: Path
) -> None:
    """A PEP 691 ``filename`` (or an HTML link whose last segment unquotes) carrying ``../``
    named the cached file: fetch wrote the download outside the cache."""
    index_server.add_project("demo", [wheel])
    url = index_server.file_url("demo", wheel.name)
    escape = f"../../../../escape/{wheel.name}"
    page = {
        "meta": {"api-version": "1.0"},
        "name": "demo",
        "files": [{"filename": escape, "url": url, "hashes": {"sha256": wheel_sha256(wheel)}}],
    }
    index_server.add_page("/evil/demo/", json.dumps(page), JSON)
    quoted = f"{index_server.base}/files/demo/..%2F..%2F..%2F..%2Fescape%2F{wheel.name}"
    index_server.add_page("/evil-html/demo/", f'<a href="{quoted}">demo</a>')
    cache = tmp_path / "deep" / "er" / "cache"
    for simple in ("evil", "evil-html"):
        with IndexClient(f"{index_server.base}/{simple}", cache_dir=cache) as idx:
            assert idx.candidates("demo") == []
    with pytest.raises(InputError, match="not a file name"):
        cached_path(wheel_sha256(wheel), escape, cache)
    assert not (tmp_path / "deep" / "escape").exists()


def test_endless_download_stops_at_the_cap_and_keeps_nothing(
    srv: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the real cap (16 GiB) lowered for the test: a chunked body with no size is given up on
    # once past it, and no partial file is left to be "resumed" later
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 2 << 20)
    url = srv.route("/files/demo-1.0-py3-none-any.whl", endless_chunked())
    cache = tmp_path / "cache"
    with pytest.raises(NetworkError, match="sent more than 2,097,152 bytes with no size given"):
        fetch(url, cache_dir=cache, retries=0)
    assert [p for p in cache.rglob("*") if p.is_file()] == []
