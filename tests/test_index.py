"""IndexClient against a real loopback index: PEP 691 JSON, PEP 503 HTML, find-links,
several indexes, retries, the page cache (ETag, Cache-Control, offline) and every error."""

from __future__ import annotations

import argparse
import hashlib
import socket
from pathlib import Path
from urllib.request import url2pathname

import httpx
import pytest
from packaging.version import Version

from tests.support.indexserver import (
    TORCH_SHAPES,
    IndexFile,
    IndexServer,
    IndexServerFactory,
    wheel_metadata,
)
from tests.support.wheels import make_wheel, wheel_sha256
from torchwheel.commands._options import add_index_arguments, index_client_from_args
from torchwheel.errors import HashMismatch, IndexPageError, InputError, NetworkError
from torchwheel.index import IndexClient, normalize_name, parse_html_links
from torchwheel.resolution import DEFAULT_INDEX_URL


def client_for(url: str, **kw: object) -> IndexClient:
    kw.setdefault("backoff", 0.0)
    return IndexClient(url, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["json", "html"])
def fmt_index(
    request: pytest.FixtureRequest,
    index_server_factory: IndexServerFactory,
    torch_like_wheels: list[Path],
) -> IndexServer:
    """The torch index served in only one format (the client asks for JSON first)."""
    server: IndexServer = index_server_factory(formats=(request.param,))
    server.add_project("torch", torch_like_wheels, requires_python=">=3.9")
    return server


def test_both_formats_give_the_same_candidates(
    fmt_index: IndexServer, torch_like_wheels: list[Path]
) -> None:
    with client_for(fmt_index.url) as idx:
        cands = idx.candidates("torch")
    assert [c.filename for c in cands] == [p.name for p in torch_like_wheels]
    by_name = {p.name: p for p in torch_like_wheels}
    for c in cands:
        assert c.project == "torch"
        assert c.sha256 == wheel_sha256(by_name[c.filename])
        assert c.requires_python == ">=3.9"
        assert c.yanked is False
        assert c.has_metadata
        meta = wheel_metadata(by_name[c.filename])
        assert meta is not None
        assert c.metadata_sha256 == hashlib.sha256(meta).hexdigest()
        assert c.url == fmt_index.file_url("torch", c.filename)
        assert c.source == fmt_index.url
    versions = {str(c.version) for c in cands}
    assert versions == {v for v, _ in TORCH_SHAPES}
    assert fmt_index.count("/simple/torch/") == 1


def test_client_prefers_json_through_accept(torch_index: IndexServer) -> None:
    with client_for(torch_index.url) as idx:
        cands = idx.candidates("torch")
    accept = torch_index.requests[0].headers["accept"]
    assert accept.startswith("application/vnd.pypi.simple.v1+json")
    assert "text/html" in accept
    # JSON carries sizes, HTML does not
    assert all(c.size is not None and c.size > 0 for c in cands)


@pytest.mark.parametrize("fmt", ["html", "json"])
def test_attributes_unescaped_yanked_and_metadata(
    index_server: IndexServer, tmp_path: Path, fmt: str
) -> None:
    a = make_wheel(tmp_path, "demo", "1.0", tags="py3-none-any")
    b = make_wheel(tmp_path, "demo", "1.1", tags="py3-none-any")
    c = make_wheel(tmp_path, "demo", "1.2", tags="py3-none-any")
    index_server.formats = (fmt,)
    index_server.add_project(
        "demo",
        [
            IndexFile(a.name, a, requires_python=">=3.8,<4", yanked="broken build"),
            IndexFile(b.name, b, yanked=True, metadata=None),
            IndexFile(c.name, c, metadata_sha256=None),
        ],
    )
    with client_for(index_server.url) as idx:
        got = {x.filename: x for x in idx.candidates("demo")}
    assert got[a.name].requires_python == ">=3.8,<4"  # served as &gt;=3.8,&lt;4
    assert got[a.name].yanked == "broken build"
    assert got[b.name].yanked is True
    assert not got[b.name].has_metadata
    assert got[c.name].has_metadata and got[c.name].metadata_sha256 is None
    assert got[c.name].yanked is False
    # PEP 503 HTML has no sizes; PEP 691 v1.1 JSON does
    assert got[c.name].size == (None if fmt == "html" else c.stat().st_size)


def test_metadata_attr_dist_info_only(index_server: IndexServer, tmp_path: Path) -> None:
    w = make_wheel(tmp_path, "demo", "1.0")
    index_server.formats = ("html",)
    index_server.metadata_attrs = ("data-dist-info-metadata",)
    index_server.add_project("demo", [w])
    with client_for(index_server.url) as idx:
        (cand,) = idx.candidates("demo")
        assert cand.has_metadata
        assert idx.get_metadata(cand) == wheel_metadata(w)


def test_absolute_urls_and_name_normalization(index_server: IndexServer, tmp_path: Path) -> None:
    w = make_wheel(tmp_path, "Typing_Extensions", "4.12.2")
    index_server.absolute_urls = True
    index_server.add_project("typing-extensions", [w])
    with client_for(index_server.url + "/") as idx:
        (cand,) = idx.candidates("Typing.Extensions")
    assert cand.project == "typing-extensions"
    assert cand.filename == w.name
    assert [r.path for r in index_server.requests] == ["/simple/typing-extensions/"]
    assert normalize_name("Typing__Extensions") == "typing-extensions"


def test_redirects_are_followed(index_server: IndexServer, tmp_path: Path) -> None:
    """A find-links URL that redirects: links resolve against the final URL."""
    w = make_wheel(tmp_path, "demo", "1.0")
    index_server.formats = ("html",)
    index_server.add_project("demo", [w])
    with httpx.Client() as hc:
        assert hc.get(index_server.url + "/Demo").status_code == 301
    # an injected client without follow_redirects still follows (the client asks per request)
    with (
        httpx.Client() as hc,
        IndexClient(find_links=[index_server.url + "/Demo"], no_index=True, client=hc) as idx,
    ):
        (cand,) = idx.candidates("demo")
    assert cand.url == index_server.file_url("demo", w.name)
    assert [r.status for r in index_server.requests[1:]] == [301, 200]


def test_pages_fetched_once_per_client(torch_index: IndexServer) -> None:
    with client_for(torch_index.url) as idx:
        first = idx.candidates("torch")
        second = idx.candidates("TORCH")
        assert first == second
        assert idx.fetch_count == 1
    assert torch_index.count("/simple/") == 1


def test_invalid_and_foreign_files_skipped(index_server: IndexServer, tmp_path: Path) -> None:
    good = make_wheel(tmp_path, "demo", "1.0")
    other = make_wheel(tmp_path, "other", "1.0")
    index_server.add_project(
        "demo",
        [
            good,
            IndexFile(other.name, other),
            ("demo-1.0.tar.gz", b"sdist"),
            ("demo-notaversion-py3-none-any.whl", b"x"),
            ("demo.whl", b"x"),
        ],
    )
    with client_for(index_server.url) as idx:
        assert [c.filename for c in idx.candidates("demo")] == [good.name]


# -- find-links --------------------------------------------------------------------------------


def test_find_links_directory_and_file_url(tmp_path: Path) -> None:
    d = tmp_path / "wheels"
    w1 = make_wheel(d, "torch", "2.5.1+cpu", tags="cp311-cp311-linux_x86_64")
    w2 = make_wheel(d, "torch", "2.5.1", tags="cp311-cp311-manylinux2014_aarch64")
    make_wheel(d, "numpy", "2.0.0", tags="cp311-cp311-manylinux_2_17_x86_64")
    (d / "notes.txt").write_text("not a wheel")
    for loc in (str(d), d.as_uri()):
        with IndexClient(find_links=[loc], no_index=True) as idx:
            cands = idx.candidates("torch")
            assert sorted(c.filename for c in cands) == sorted([w1.name, w2.name])
            assert all(c.url.startswith("file://") for c in cands)
            assert {c.size for c in cands} == {w1.stat().st_size, w2.stat().st_size}
            assert idx.fetch_count == 0
            assert all(c.source == loc for c in cands)
            assert Path(httpx.URL(cands[0].url).path).exists()


def test_find_links_local_html_page(tmp_path: Path) -> None:
    d = tmp_path / "w"
    w = make_wheel(d, "torch", "2.5.1+cpu", tags="cp311-cp311-linux_x86_64")
    page = d / "links.html"
    sha = wheel_sha256(w)
    page.write_text(f'<html><body><a href="{w.name}#sha256={sha}">{w.name}</a></body></html>')
    with IndexClient(find_links=[str(page)], no_index=True) as idx:
        (cand,) = idx.candidates("torch")
    assert cand.sha256 == sha
    assert Path(url2pathname(httpx.URL(cand.url).path)) == w.resolve()


def test_find_links_http_page_fetched_once(index_server: IndexServer, tmp_path: Path) -> None:
    d = tmp_path / "w"
    torch = make_wheel(d, "torch", "2.5.1+cpu", tags="cp311-cp311-linux_x86_64")
    fl = make_wheel(d, "filelock", "3.16.1")
    index_server.add_find_links_page("/links.html", "torch", [torch])
    url = index_server.add_find_links_page("/links.html", "filelock", [torch, fl])
    with IndexClient(find_links=[url], no_index=True, backoff=0) as idx:
        assert [c.filename for c in idx.candidates("torch")] == [torch.name]
        assert [c.filename for c in idx.candidates("filelock")] == [fl.name]
    assert index_server.count("/links.html") == 1


def test_find_links_missing_directory(tmp_path: Path) -> None:
    with (
        IndexClient(find_links=[str(tmp_path / "nope")], no_index=True) as idx,
        pytest.raises(InputError, match="nope: --find-links location does not exist"),
    ):
        idx.candidates("torch")


def test_no_index_without_find_links_is_an_input_error() -> None:
    with pytest.raises(InputError, match="--no-index"):
        IndexClient(no_index=True)


def test_file_url_index(tmp_path: Path, torch_like_wheels: list[Path]) -> None:
    """A PEP 503 tree on disk, read through file:// (dir/index.html)."""
    root = tmp_path / "simple"
    (root / "torch").mkdir(parents=True)
    links = "".join(
        f'<a href="{p.as_uri()}#sha256={wheel_sha256(p)}">{p.name}</a>\n' for p in torch_like_wheels
    )
    (root / "torch" / "index.html").write_text(f"<html><body>{links}</body></html>")
    with IndexClient(root.as_uri()) as idx:
        cands = idx.candidates("torch")
        assert len(cands) == len(torch_like_wheels)
        with pytest.raises(IndexPageError, match="project 'numpy' not found"):
            idx.candidates("numpy")


# -- several sources -------------------------------------------------------------------------


def test_extra_index_merges_and_404_on_one_index_is_fine(
    index_server_factory: IndexServerFactory, tmp_path: Path
) -> None:
    main: IndexServer = index_server_factory()
    extra: IndexServer = index_server_factory(formats=("html",))
    a = make_wheel(tmp_path / "a", "torch", "2.5.1+cpu", tags="cp311-cp311-linux_x86_64")
    b = make_wheel(tmp_path / "b", "torch", "2.8.0+cpu", tags="cp312-cp312-manylinux_2_28_x86_64")
    f = make_wheel(tmp_path / "b", "filelock", "3.16.1")
    main.add_project("torch", [a])
    extra.add_project("torch", [a, b])
    extra.add_project("filelock", [f])
    with client_for(main.url, extra_index_urls=[extra.url]) as idx:
        cands = idx.candidates("torch")
        assert [c.filename for c in cands] == [a.name, b.name]
        assert [c.source for c in cands] == [main.url, extra.url]
        (fc,) = idx.candidates("filelock")  # 404 on main, found on extra
        assert fc.source == extra.url
    assert main.count("/simple/filelock/") == 1


def test_project_missing_everywhere(index_server_factory: IndexServerFactory) -> None:
    a: IndexServer = index_server_factory()
    b: IndexServer = index_server_factory()
    with (
        client_for(a.url, extra_index_urls=[b.url]) as idx,
        pytest.raises(IndexPageError) as err,
    ):
        idx.candidates("torch")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{a.url}/torch/ (404)" in msg and f"{b.url}/torch/ (404)" in msg


# -- retries -----------------------------------------------------------------------------------


def test_retries_5xx_then_succeeds(torch_index: IndexServer) -> None:
    torch_index.fail("/simple/torch/", 503, times=2)
    with client_for(torch_index.url) as idx:
        assert len(idx.candidates("torch")) == len(TORCH_SHAPES)
        assert idx.request_count == 3
    assert [r.status for r in torch_index.requests] == [503, 503, 200]


def test_retries_dropped_connection(torch_index: IndexServer) -> None:
    torch_index.fail("/simple/torch/", None, times=1)
    with client_for(torch_index.url) as idx:
        assert idx.candidates("torch")
    assert torch_index.count("/simple/torch/") == 2


def test_gives_up_after_retries(torch_index: IndexServer) -> None:
    torch_index.fail("/simple/torch/", 502, times=10)
    with client_for(torch_index.url, retries=2) as idx, pytest.raises(NetworkError) as err:
        idx.candidates("torch")
    assert str(err.value) == f"{torch_index.url}/torch/: HTTP 502 Bad Gateway after 3 attempts"
    assert torch_index.count("/simple/torch/") == 3


def test_client_error_is_not_retried(torch_index: IndexServer) -> None:
    torch_index.fail("/simple/torch/", 403, times=5)
    with client_for(torch_index.url) as idx, pytest.raises(NetworkError, match="HTTP 403"):
        idx.candidates("torch")
    assert torch_index.count("/simple/torch/") == 1


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_unreachable_index() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/simple"
    with client_for(url) as idx, pytest.raises(NetworkError) as err:
        idx.candidates("torch")
    msg = str(err.value)
    assert msg.startswith(f"{url}/torch/: cannot reach the index (")
    assert "\n" not in msg


def test_an_index_must_be_named() -> None:
    # the index knows no default of its own: the caller names it (or a default)
    with pytest.raises(InputError, match="no package index given"):
        IndexClient()
    with IndexClient(default_index_url="http://127.0.0.1:9/simple") as idx:
        assert idx.index_urls == ["http://127.0.0.1:9/simple"]


def test_unreachable_default_index_hints_index_url_and_find_links() -> None:
    # every request goes through a proxy on a closed loopback port: nothing leaves the host
    hc = httpx.Client(proxy=f"http://127.0.0.1:{_closed_port()}")
    with (
        IndexClient(client=hc, backoff=0, default_index_url=DEFAULT_INDEX_URL) as idx,
        pytest.raises(NetworkError) as err,
    ):
        idx.candidates("torch")
    msg = str(err.value)
    assert f"cannot reach the default index {DEFAULT_INDEX_URL}" in msg
    assert "--index-url" in msg and "--find-links" in msg
    assert "\n" not in msg
    hc.close()


# -- pages that are not indexes ----------------------------------------------------------------


def test_html_that_is_not_an_index(index_server: IndexServer) -> None:
    url = index_server.add_page(
        "/portal/torch/", '<html><a href="/login">Log in</a> <a href="/help">Help</a></html>'
    )
    base = url.rsplit("/torch/", 1)[0]
    with client_for(base) as idx, pytest.raises(IndexPageError) as err:
        idx.candidates("torch")
    problem = "not a package index page (2 links, none to a distribution file)"
    assert str(err.value) == f"{url}: {problem}"


def test_wrong_content_type_and_bad_json(index_server: IndexServer) -> None:
    index_server.add_page("/text/torch/", "hello", content_type="text/plain")
    index_server.add_page(
        "/badjson/torch/", "{not json", content_type="application/vnd.pypi.simple.v1+json"
    )
    index_server.add_page(
        "/nofiles/torch/", '{"meta": {}}', content_type="application/vnd.pypi.simple.v1+json"
    )
    cases = {
        "/text": "not an index page (Content-Type text/plain)",
        "/badjson": "invalid JSON index page",
        "/nofiles": "not a PEP 691 project page (no 'files' list)",
    }
    for prefix, problem in cases.items():
        with client_for(index_server.base + prefix) as idx, pytest.raises(IndexPageError) as err:
            idx.candidates("torch")
        assert str(err.value) == f"{index_server.base}{prefix}/torch/: {problem}"


def test_empty_project_page_is_valid(index_server: IndexServer) -> None:
    index_server.add_project("torch", [])
    with client_for(index_server.url) as idx:
        assert idx.candidates("torch") == []


def test_parse_html_links_base_href_and_fragments() -> None:
    page = (
        '<html><head><base href="https://files.example/pkgs/"></head><body>'
        '<a href="torch-2.5.1-cp311-cp311-linux_x86_64.whl#sha256=' + "A" * 64 + '" '
        'data-requires-python="&gt;=3.9" data-yanked="">x</a>'
        '<a href="t%2Bx-1.0-py3-none-any.whl#md5=abc" data-core-metadata="true">y</a>'
        "</body></html>"
    )
    one, two = parse_html_links(page, "https://idx.example/simple/torch/")
    assert one.url == "https://files.example/pkgs/torch-2.5.1-cp311-cp311-linux_x86_64.whl"
    assert one.sha256 == "a" * 64
    assert one.requires_python == ">=3.9"
    assert one.yanked is True
    assert two.filename == "t+x-1.0-py3-none-any.whl"
    assert two.sha256 is None and two.has_metadata and two.metadata_sha256 is None


# -- metadata (PEP 658) ------------------------------------------------------------------------


def test_get_metadata_verified_and_mismatch(index_server: IndexServer, tmp_path: Path) -> None:
    good = make_wheel(tmp_path, "demo", "1.0", requires_dist=["filelock"])
    bad = make_wheel(tmp_path, "demo", "1.1")
    none = make_wheel(tmp_path, "demo", "1.2")
    index_server.add_project(
        "demo",
        [
            good,
            IndexFile(bad.name, bad, metadata_sha256="0" * 64),
            IndexFile(none.name, none, metadata=None),
        ],
    )
    with client_for(index_server.url) as idx:
        cands = {c.filename: c for c in idx.candidates("demo")}
        meta = idx.get_metadata(cands[good.name])
        assert meta is not None and b"Requires-Dist: filelock" in meta
        assert idx.get_metadata(cands[good.name]) == meta  # memoized
        with pytest.raises(HashMismatch, match=r"\.metadata: hash mismatch: expected sha256 0000"):
            idx.get_metadata(cands[bad.name])
        assert idx.get_metadata(cands[none.name]) is None
    assert index_server.count(f"/files/demo/{good.name}.metadata") == 1
    assert index_server.count(f"/files/demo/{none.name}") == 0  # never downloaded a wheel


# -- the page cache ----------------------------------------------------------------------------


def test_cache_max_age_serves_without_network(torch_index: IndexServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with client_for(torch_index.url, cache_dir=cache) as idx:
        first = idx.candidates("torch")
    with client_for(torch_index.url, cache_dir=cache) as idx:
        assert idx.candidates("torch") == first
        assert idx.fetch_count == 0
        assert [f.origin for f in idx.fetches] == ["cache"]
    assert torch_index.count("/simple/") == 1


def test_cache_no_cache_revalidates_with_etag(torch_index: IndexServer, tmp_path: Path) -> None:
    torch_index.cache_control = "no-cache"
    cache = tmp_path / "cache"
    with client_for(torch_index.url, cache_dir=cache) as idx:
        first = idx.candidates("torch")
    with client_for(torch_index.url, cache_dir=cache) as idx:
        assert idx.candidates("torch") == first
        assert [f.origin for f in idx.fetches] == ["revalidated"]
    assert [r.status for r in torch_index.requests] == [200, 304]
    assert torch_index.requests[1].headers["if-none-match"].startswith('"')


def test_cache_changed_page_is_refetched(index_server: IndexServer, tmp_path: Path) -> None:
    index_server.cache_control = "max-age=0"
    a = make_wheel(tmp_path, "demo", "1.0")
    b = make_wheel(tmp_path, "demo", "2.0")
    index_server.add_project("demo", [a])
    cache = tmp_path / "cache"
    with client_for(index_server.url, cache_dir=cache) as idx:
        assert [c.version for c in idx.candidates("demo")] == [Version("1.0")]
    index_server.add_project("demo", [b])
    with client_for(index_server.url, cache_dir=cache) as idx:
        assert [c.version for c in idx.candidates("demo")] == [Version("1.0"), Version("2.0")]
    assert [r.status for r in index_server.requests] == [200, 200]


def test_no_store_is_not_cached(torch_index: IndexServer, tmp_path: Path) -> None:
    torch_index.cache_control = "no-store"
    cache = tmp_path / "cache"
    for _ in range(2):
        with client_for(torch_index.url, cache_dir=cache) as idx:
            idx.candidates("torch")
    assert [r.status for r in torch_index.requests] == [200, 200]
    assert "if-none-match" not in torch_index.requests[1].headers


def test_offline_uses_only_the_cache(torch_index: IndexServer, tmp_path: Path) -> None:
    torch_index.cache_control = "no-cache"
    cache = tmp_path / "cache"
    with client_for(torch_index.url, cache_dir=cache) as idx:
        first = idx.candidates("torch")
    url = torch_index.url
    torch_index.stop()
    with client_for(url, cache_dir=cache, offline=True) as idx:
        assert idx.candidates("torch") == first
        assert idx.fetch_count == 0 and idx.request_count == 0
        with pytest.raises(NetworkError, match=r"/simple/numpy/: offline and not in the cache"):
            idx.candidates("numpy")


def test_damaged_cache_entry_is_ignored(torch_index: IndexServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with client_for(torch_index.url, cache_dir=cache) as idx:
        idx.candidates("torch")
    for body in (cache / "index-pages-v1").glob("*.body"):
        body.write_bytes(b"garbage")
    with client_for(torch_index.url, cache_dir=cache) as idx:
        assert len(idx.candidates("torch")) == len(TORCH_SHAPES)
        assert idx.fetch_count == 1


# -- command-line options ----------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_index_arguments(p)
    return p.parse_args(argv)


def test_options_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, torch_index: IndexServer
) -> None:
    monkeypatch.setenv("TORCHWHEEL_INDEX_URL", torch_index.url)
    monkeypatch.setenv("TORCHWHEEL_EXTRA_INDEX_URL", "http://127.0.0.1:9/a http://127.0.0.1:9/b")
    monkeypatch.setenv("TORCHWHEEL_FIND_LINKS", str(tmp_path))
    with index_client_from_args(_parse([])) as idx:
        assert idx.index_urls == [torch_index.url, "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
        assert idx.find_links == [str(tmp_path)]
        assert idx.cache is not None
    args = _parse(
        [
            "--index-url",
            "http://127.0.0.1:9/x",
            "--extra-index-url",
            "http://127.0.0.1:9/y",
            "--find-links",
            "d1",
            "--find-links",
            "d2",
            "--no-cache",
        ]
    )
    with index_client_from_args(args) as idx:
        assert idx.index_urls == ["http://127.0.0.1:9/x", "http://127.0.0.1:9/y"]
        assert idx.find_links == ["d1", "d2"]
        assert idx.cache is None
    with pytest.raises(InputError, match="--offline"):
        index_client_from_args(_parse(["--offline", "--no-cache"]))
    monkeypatch.delenv("TORCHWHEEL_INDEX_URL")
    with index_client_from_args(_parse([])) as idx:
        assert idx.index_url == DEFAULT_INDEX_URL
