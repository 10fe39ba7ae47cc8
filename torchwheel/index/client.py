"""Read package indexes: PEP 691 JSON, PEP 503 HTML and ``--find-links`` locations.

:class:`IndexClient` turns a project name into the list of wheel files (:class:`Candidate`)
that every configured source offers: the index (``index_url``), extra indexes
(``extra_index_urls``) and find-links directories or HTML pages (``find_links``), over
``http(s)://`` or ``file://``. It knows nothing of Lambda: the caller names the index, and
may name a ``default_index_url`` (used when ``index_url`` is not given, and worded as "the
default index" when it cannot be reached).

Network behaviour: one injectable ``httpx.Client`` (else :func:`torchwheel.http.make_client`);
retries with backoff through :func:`torchwheel.http.get_with_retries`; an on-disk cache of
index pages that honours ``Cache-Control`` (``max-age``, ``no-cache``, ``no-store``) and
revalidates with ``ETag`` / ``If-None-Match``; ``offline`` mode that reads only that cache.
Each project page is fetched at most once per client. Every failure is a
:class:`~torchwheel.errors.NetworkError` (or its subclass
:class:`~torchwheel.errors.IndexPageError`) with a one-line message naming the URL.

Budgets and rules (docs/security.md): a page or metadata file is read under a byte cap and an
overall deadline (:func:`torchwheel.http.read_body`); a page read over HTTP(S) may link to
HTTP(S) files only — a ``file:`` (or any other) link on it is dropped and counted in
:attr:`IndexClient.refused_links`, so only ``--find-links`` paths and a ``file://`` index the
user gave reach local files; links to other hosts are followed (PyPI serves files from
another host) and every host contacted is listed in :attr:`IndexClient.hosts`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from ..errors import ArchiveError, HashMismatch, IndexPageError, InputError, NetworkError
from ..http import (
    MAX_PAGE_BYTES,
    PAGE_DEADLINE,
    HostLog,
    NotFound,
    file_url_path,
    get_with_retries,
    is_remote_url,
    local_path,
    make_client,
    path_url,
    read_body,
)
from ..limits import open_regular
from .cache import CachedPage, PageCache, parse_cache_control
from .parse import (
    ACCEPT,
    JSON_TYPE,
    Candidate,
    Link,
    normalize_name,
    parse_page,
    wheel_candidates,
)

__all__ = ["FetchRecord", "IndexClient", "Page"]


@dataclass
class Page:
    """A fetched page: its final URL (after redirects), content type and body."""

    url: str
    content_type: str
    body: bytes
    origin: str = "network"  # "network", "revalidated", "cache", "file"


@dataclass
class FetchRecord:
    """One page the client needed, and where it came from."""

    url: str
    origin: str


def _simple_hint(index_urls: Sequence[str]) -> str:
    """For an index URL that is a site's root (``https://pypi.org``) rather than a PEP 503
    index: where its index probably is."""
    roots = [u for u in index_urls if urlsplit(u).path in ("", "/")]
    if not roots:
        return ""
    guesses = " or ".join(f"{u.rstrip('/')}/simple/" for u in roots)
    return (
        f"; {', '.join(roots)} is a site's root, not a package index (PEP 503 indexes "
        f"usually end in /simple/): try --index-url {guesses}"
    )


class IndexClient:
    """Wheel candidates of a project from every configured index and find-links location.

    ``index_url`` is the index to read (``default_index_url`` when None; with ``no_index``
    neither is read). ``client`` is an injectable ``httpx.Client`` (one is created and owned
    otherwise). ``cache_dir`` enables the on-disk page cache (None: no disk cache);
    ``offline`` answers only from that cache. ``retries`` / ``backoff`` control retrying
    5xx, 429 and dropped connections (delays ``backoff``, ``2*backoff``, ...).
    ``max_page_bytes`` and ``page_deadline`` (seconds) bound each page or metadata request.
    """

    def __init__(
        self,
        index_url: str | None = None,
        extra_index_urls: Sequence[str] = (),
        find_links: Sequence[str] = (),
        *,
        no_index: bool = False,
        client: httpx.Client | None = None,
        cache_dir: Path | None = None,
        offline: bool = False,
        retries: int = 3,
        backoff: float = 0.2,
        timeout: float = 30.0,
        default_index_url: str | None = None,
        max_page_bytes: int = MAX_PAGE_BYTES,
        page_deadline: float = PAGE_DEADLINE,
    ) -> None:
        self.index_url = index_url if index_url is not None else default_index_url
        self.default_index_url = default_index_url
        self.index_urls: list[str] = []
        if not no_index:
            if self.index_url is None:
                raise InputError("no package index given: pass index_url (or no_index=True)")
            self.index_urls = [self.index_url, *extra_index_urls]
        self.find_links: list[str] = list(find_links)
        self.no_index = no_index
        self.offline = offline
        self.retries = retries
        self.backoff = backoff
        self.cache = PageCache(cache_dir) if cache_dir is not None else None
        self._own_client = client is None
        self.client = client or make_client(timeout)
        self.max_page_bytes = max_page_bytes
        self.page_deadline = page_deadline
        self._host_log = HostLog().attach(self.client)
        #: links dropped because a page read over the network pointed outside HTTP(S)
        self.refused_links: list[str] = []
        self.fetch_count = 0  # page fetches that went to the network (incl. 304 answers)
        self.request_count = 0  # HTTP requests, retries included
        self.fetches: list[FetchRecord] = []
        self._projects: dict[str, list[Candidate]] = {}
        self._pages: dict[str, Page] = {}  # find-links pages, fetched once per client
        self._metadata: dict[str, bytes | None] = {}
        if not self.index_urls and not self.find_links:
            raise InputError("--no-index needs at least one --find-links location")

    # context manager ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the httpx client if this object created it."""
        if self._own_client:
            self.client.close()

    def __enter__(self) -> IndexClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # public API --------------------------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        """Every host this client's HTTP client contacted (``scheme://host[:port]``, redirects
        and downloads through it included), in the order first seen."""
        return list(self._host_log.hosts)

    @property
    def sources(self) -> list[str]:
        """Every configured location, in lookup order (find-links, index, extra indexes)."""
        return [*self.find_links, *self.index_urls]

    def candidates(self, project: str) -> list[Candidate]:
        """Every wheel of ``project`` from all sources, de-duplicated by filename.

        Find-links locations come first (a local file beats a download), then the index,
        then extra indexes. A project missing (404) on some indexes is fine as long as one
        source knows it; missing everywhere raises :class:`IndexPageError`.
        """
        name = normalize_name(project)
        if name in self._projects:
            return list(self._projects[name])
        found: list[Candidate] = []
        missing: list[str] = []
        for loc in self.find_links:
            found.extend(self._find_links_candidates(loc, name))
        for index in self.index_urls:
            url = f"{index.rstrip('/')}/{name}/"
            try:
                page = self._get_page(url, index=index)
            except NotFound as nf:
                missing.append(f"{nf.url} ({nf.status})")
                continue
            found.extend(wheel_candidates(self._links(page), name, index))
        if missing and not found and not self.find_links:
            where = ", ".join(missing)
            raise IndexPageError(
                f"project {name!r} not found: {where}{_simple_hint(self.index_urls)}"
            )
        seen: set[str] = set()
        unique: list[Candidate] = []
        for c in found:
            if c.filename not in seen:
                seen.add(c.filename)
                unique.append(c)
        self._projects[name] = unique
        return list(unique)

    def get_metadata(self, cand: Candidate) -> bytes | None:
        """The PEP 658 core metadata of ``cand`` (hash-verified), or None if not offered."""
        if not cand.has_metadata:
            return None
        if cand.url in self._metadata:
            return self._metadata[cand.url]
        url = cand.metadata_url
        blob_key = f"metadata-{cand.metadata_sha256}" if cand.metadata_sha256 else None
        data = self.cache.load_blob(blob_key) if self.cache and blob_key else None
        if data is not None and hashlib.sha256(data).hexdigest() != cand.metadata_sha256:
            data = None  # a damaged cache entry: fetched again, never an error
        if data is None:
            data = self._read_metadata(url, cand.source)
        if data is not None and cand.metadata_sha256:
            actual = hashlib.sha256(data).hexdigest()
            if actual != cand.metadata_sha256:
                raise HashMismatch(url, cand.metadata_sha256, actual)
            if self.cache and blob_key:
                self.cache.store_blob(blob_key, data)
        self._metadata[cand.url] = data
        return data

    def _read_metadata(self, url: str, source: str) -> bytes | None:
        """The bytes at a metadata URL (``file://`` or the network), None when missing."""
        if url.startswith("file:"):
            try:
                return read_local(file_url_path(url), url, self.max_page_bytes)
            except (OSError, ArchiveError):
                return None
        if self.offline:
            raise NetworkError(f"{url}: offline and not in the cache")
        deadline = self._deadline()
        try:
            resp = self._request(url, accept="*/*", index=source)
        except NotFound:
            return None
        limit = self.max_page_bytes
        return read_body(resp, url, limit=limit, deadline=deadline, what="metadata file")

    # pages -------------------------------------------------------------------------------

    def _find_links_candidates(self, location: str, project: str) -> list[Candidate]:
        path = local_path(location)
        if path is not None:
            return _local_find_links(path, location, project)
        remote = self._pages.get(location)
        if remote is None:
            try:
                remote = self._get_page(location, index=None)
            except NotFound as nf:
                raise IndexPageError(f"{nf.url}: find-links page not found ({nf.status})") from None
            self._pages[location] = remote
        return wheel_candidates(self._links(remote), project, location)

    def _get_page(self, url: str, *, index: str | None) -> Page:
        """A page from ``file://``, the fresh cache, or the network (with revalidation)."""
        if url.startswith("file:"):
            return self._file_page(url)
        cached = self.cache.load(url) if self.cache else None
        now = time.time()
        if cached is not None and (self.offline or cached.fresh(now)):
            self.fetches.append(FetchRecord(url, "cache"))
            return Page(cached.final_url, cached.content_type, cached.body, "cache")
        if self.offline:
            raise NetworkError(
                f"{url}: offline and not in the cache"
                + (f" ({self.cache.directory})" if self.cache else " (no cache directory)")
            )
        headers = {}
        if cached is not None and cached.etag:
            headers["If-None-Match"] = cached.etag
        self.fetch_count += 1
        deadline = self._deadline()
        resp = self._request(url, accept=ACCEPT, index=index, headers=headers)
        max_age, no_cache, no_store = parse_cache_control(resp.headers.get("cache-control"))
        if resp.status_code == 304 and cached is not None:
            resp.close()
            cached.stored_at = now
            cached.max_age = max_age if max_age is not None else cached.max_age
            cached.no_cache = no_cache
            if self.cache:
                self.cache.store(cached)
            self.fetches.append(FetchRecord(url, "revalidated"))
            return Page(cached.final_url, cached.content_type, cached.body, "revalidated")
        if resp.status_code == 304:  # "not modified" from what we never had: no page at all
            resp.close()
            raise IndexPageError(f"{url}: answered 304 Not Modified to a request for the page")
        body = read_body(resp, url, limit=self.max_page_bytes, deadline=deadline)
        page = Page(str(resp.url), resp.headers.get("content-type", ""), body)
        if self.cache is not None and not no_store:
            self.cache.store(
                CachedPage(
                    url=url,
                    final_url=page.url,
                    content_type=page.content_type,
                    body=page.body,
                    stored_at=now,
                    etag=resp.headers.get("etag"),
                    max_age=max_age,
                    no_cache=no_cache,
                )
            )
        self.fetches.append(FetchRecord(url, "network"))
        return page

    def _file_page(self, url: str) -> Page:
        path = file_url_path(url)
        if path.is_dir():
            for name in ("index.json", "index.html"):
                if (path / name).is_file():
                    path = path / name
                    break
            else:
                raise NotFound(url, 404)
        if not path.exists():
            raise NotFound(url, 404)
        try:
            body = read_local(path, url, self.max_page_bytes)
        except OSError as exc:
            raise NetworkError(f"{url}: cannot read ({exc.strerror})") from None
        ctype = JSON_TYPE if path.suffix == ".json" else "text/html"
        self.fetches.append(FetchRecord(url, "file"))
        return Page(path.as_uri() if not url.endswith("/") else url, ctype, body, "file")

    def _request(
        self,
        url: str,
        *,
        accept: str,
        index: str | None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """GET with retries; 404/410 raise NotFound; other failures raise NetworkError."""
        return get_with_retries(
            self.client,
            url,
            headers={"Accept": accept, **(headers or {})},
            retries=self.retries,
            backoff=self.backoff,
            unreachable=lambda detail: self._unreachable_message(url, detail, index),
            on_attempt=self._count_request,
            stream=True,
        )

    def _deadline(self) -> float:
        return time.monotonic() + self.page_deadline

    def _links(self, page: Page) -> list[Link]:
        """The page's links that it may point to: a page read over HTTP(S) links to HTTP(S)
        files only (a ``file:`` link there is dropped and counted)."""
        links = parse_page(page.content_type, page.body, page.url)
        if not is_remote_url(page.url):
            return links
        kept = [lk for lk in links if is_remote_url(lk.url)]
        if len(kept) < len(links):
            self.refused_links.extend(lk.url for lk in links if not is_remote_url(lk.url))
        return kept

    def _count_request(self) -> None:
        self.request_count += 1

    def _unreachable_message(self, url: str, detail: str, index: str | None) -> str:
        default = self.default_index_url
        if default is not None and index is not None and index.rstrip("/") == default.rstrip("/"):
            return (
                f"cannot reach the default index {default} ({detail}); "
                "point torchwheel at a reachable one with --index-url URL, or at local wheels "
                "with --find-links DIR"
            )
        return f"{url}: cannot reach the index ({detail})"


def _local_find_links(path: Path, location: str, project: str) -> list[Candidate]:
    """Wheels of ``project`` in a find-links directory, or linked from a local HTML page."""
    if path.is_dir():
        links = [
            Link(url=path_url(p), filename=p.name, size=p.stat().st_size)
            for p in sorted(path.iterdir())
            if p.name.endswith(".whl") and p.is_file()
        ]
        return wheel_candidates(links, project, location)
    if path.exists():  # a page of links; read_local refuses what is not a regular file
        page = Page(path_url(path), "text/html", read_local(path, location), "file")
        links = parse_page(page.content_type, page.body, page.url)
        return wheel_candidates(links, project, location)
    raise InputError(f"{location}: --find-links location does not exist")


def read_local(path: Path, label: str, limit: int = MAX_PAGE_BYTES) -> bytes:
    """A local index page or metadata file: a regular file only (a FIFO never blocks us),
    at most ``limit`` bytes (the same cap as a page read over HTTP)."""
    fd = open_regular(path, label)
    with open(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise IndexPageError(f"{label}: over the {limit:,}-byte page limit")
    return data
