"""Read package indexes: PEP 691 JSON, PEP 503 HTML and ``--find-links`` locations.

:class:`IndexClient` turns a project name into the list of wheel files (:class:`Candidate`)
that every configured source offers: the index (``--index-url``, default the PyTorch CPU
index), extra indexes (``--extra-index-url``) and find-links directories or HTML pages
(``--find-links``), over ``http(s)://`` or ``file://``. It knows nothing of Lambda.

Network behaviour: one injectable ``httpx.Client``; timeouts; retries with backoff on 5xx,
429 and dropped connections; an on-disk cache of index pages that honours ``Cache-Control``
(``max-age``, ``no-cache``, ``no-store``) and revalidates with ``ETag`` / ``If-None-Match``;
``offline`` mode that reads only that cache. Each project page is fetched at most once per
client. Every failure is a :class:`~torchwheel.errors.NetworkError` (or its subclass
:class:`~torchwheel.errors.IndexPageError`) with a one-line message naming the URL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import url2pathname

import httpx
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .atomic import atomic_write
from .errors import HashMismatch, IndexPageError, InputError, NetworkError
from .targets import facts

__all__ = [
    "ACCEPT",
    "DEFAULT_INDEX_URL",
    "Candidate",
    "IndexClient",
    "PageCache",
    "add_index_arguments",
    "default_cache_dir",
    "index_client_from_args",
    "normalize_name",
    "parse_html_links",
    "parse_json_links",
]

DEFAULT_INDEX_URL: str = str(facts()["pytorch"]["default_index_url"])

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = ("text/html", "application/vnd.pypi.simple.v1+html")
#: PEP 691 content negotiation: JSON preferred, HTML accepted.
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"

_DIST_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".egg", ".tar.xz", ".tar")
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def normalize_name(name: str) -> str:
    """PEP 503 normalization: ``Torch_Vision`` → ``torch-vision``."""
    return str(canonicalize_name(name))


@dataclass(frozen=True)
class Candidate:
    """One wheel file offered by an index or find-links location."""

    filename: str
    url: str
    project: str  # PEP 503-normalized
    version: Version
    sha256: str | None
    requires_python: str | None
    yanked: bool | str  # False, True, or the reason
    metadata_sha256: str | None
    has_metadata: bool  # PEP 658/714: core metadata at url + ".metadata"
    size: int | None
    source: str  # the index URL or find-links location it came from

    @property
    def metadata_url(self) -> str:
        """Where the PEP 658 metadata file lives."""
        return self.url + ".metadata"


# -- parsing (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A file link read from an index page, before it is filtered to wheels of one project."""

    url: str
    filename: str
    sha256: str | None = None
    requires_python: str | None = None
    yanked: bool | str = False
    has_metadata: bool = False
    metadata_sha256: str | None = None
    size: int | None = None


def _filename_of(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def _hash_fragment(url: str) -> tuple[str, str | None]:
    base, _, frag = url.partition("#")
    m = re.match(r"sha256=([0-9a-fA-F]{64})$", frag)
    return base, (m.group(1).lower() if m else None)


def _metadata_attr(value: str | None) -> tuple[bool, str | None]:
    """``data-core-metadata`` value → (present, sha256)."""
    if value is None:
        return False, None
    m = re.match(r"\s*sha256=([0-9a-fA-F]{64})\s*$", value)
    if m:
        return True, m.group(1).lower()
    return value.strip().lower() != "false", None


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            href = dict(attrs).get("href")
            if href:
                self.base = href
        elif tag == "a":
            self.anchors.append(dict(attrs))


def parse_html_links(text: str, page_url: str) -> list[Link]:
    """Every ``<a href>`` of a PEP 503 page (or find-links page) as a :class:`Link`.

    Relative URLs are resolved against ``page_url`` (or the page's ``<base href>``);
    attribute values are HTML-unescaped. Raises :class:`IndexPageError` when the page has
    links but none to a distribution file (an error page, a login page, a directory
    listing of something else).
    """
    parser = _AnchorParser()
    try:
        parser.feed(text)
        parser.close()
    except Exception as exc:  # html.parser is lenient; anything it raises is a broken page
        raise IndexPageError(f"{page_url}: cannot parse HTML ({exc})") from None
    base = urljoin(page_url, parser.base) if parser.base else page_url
    links: list[Link] = []
    for a in parser.anchors:
        href = a.get("href")
        if not href:
            continue
        url, sha = _hash_fragment(urljoin(base, href.strip()))
        yanked_attr = a.get("data-yanked")
        yanked: bool | str = False if yanked_attr is None else (yanked_attr.strip() or True)
        meta_value = a.get("data-core-metadata")
        if meta_value is None:
            meta_value = a.get("data-dist-info-metadata")
        has_meta, meta_sha = _metadata_attr(meta_value)
        links.append(
            Link(
                url=url,
                filename=_filename_of(url),
                sha256=sha,
                requires_python=(a.get("data-requires-python") or "").strip() or None,
                yanked=yanked,
                has_metadata=has_meta,
                metadata_sha256=meta_sha,
            )
        )
    if links and not any(lk.filename.lower().endswith(_DIST_SUFFIXES) for lk in links):
        raise IndexPageError(
            f"{page_url}: not a package index page ({len(links)} links, none to a "
            "distribution file)"
        )
    return links


def parse_json_links(data: Any, page_url: str) -> list[Link]:
    """The ``files`` of a PEP 691 project document as :class:`Link` objects."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise IndexPageError(f"{page_url}: not a PEP 691 project page (no 'files' list)")
    links: list[Link] = []
    for f in data["files"]:
        if not isinstance(f, dict) or not isinstance(f.get("url"), str):
            raise IndexPageError(f"{page_url}: malformed PEP 691 file entry {f!r:.80}")
        url, frag_sha = _hash_fragment(urljoin(page_url, f["url"]))
        raw_hashes = f.get("hashes")
        hashes: dict[str, Any] = raw_hashes if isinstance(raw_hashes, dict) else {}
        sha = hashes.get("sha256") or frag_sha
        meta = f.get("core-metadata", f.get("dist-info-metadata", False))
        meta_sha: str | None = None
        if isinstance(meta, dict):
            has_meta = True
            meta_sha = meta.get("sha256")
        else:
            has_meta = bool(meta)
        yanked = f.get("yanked", False)
        if isinstance(yanked, str):
            yanked = yanked.strip() or True
        rp = f.get("requires-python")
        size = f.get("size")
        filename = f.get("filename") if isinstance(f.get("filename"), str) else None
        links.append(
            Link(
                url=url,
                filename=filename or _filename_of(url),
                sha256=sha.lower() if isinstance(sha, str) else None,
                requires_python=rp.strip() or None if isinstance(rp, str) else None,
                yanked=bool(yanked) if not isinstance(yanked, str) else yanked,
                has_metadata=has_meta,
                metadata_sha256=meta_sha.lower() if isinstance(meta_sha, str) else None,
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            )
        )
    return links


def wheel_candidates(links: Sequence[Link], project: str, source: str) -> list[Candidate]:
    """Keep the wheels of ``project`` (normalized) among ``links``; skip invalid names."""
    want = normalize_name(project)
    out: list[Candidate] = []
    for lk in links:
        if not lk.filename.endswith(".whl"):
            continue
        try:
            name, version, _build, _tags = parse_wheel_filename(lk.filename)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if normalize_name(str(name)) != want:
            continue
        out.append(
            Candidate(
                filename=lk.filename,
                url=lk.url,
                project=want,
                version=version,
                sha256=lk.sha256,
                requires_python=lk.requires_python,
                yanked=lk.yanked,
                metadata_sha256=lk.metadata_sha256,
                has_metadata=lk.has_metadata,
                size=lk.size,
                source=source,
            )
        )
    return out


# -- on-disk page cache ----------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$TORCHWHEEL_CACHE_DIR`` or the per-user cache directory (platformdirs)."""
    env = os.environ.get("TORCHWHEEL_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("torchwheel", appauthor=False))


@dataclass
class CachedPage:
    """A stored index page and the HTTP caching facts that came with it."""

    url: str
    final_url: str
    content_type: str
    body: bytes
    stored_at: float
    etag: str | None = None
    max_age: float | None = None
    no_cache: bool = False

    def fresh(self, now: float) -> bool:
        """True when it may be used without asking the server."""
        if self.no_cache or self.max_age is None:
            return False
        return now - self.stored_at < self.max_age


def _cache_control(header: str | None) -> tuple[float | None, bool, bool]:
    """``Cache-Control`` → (max_age, no_cache, no_store)."""
    max_age: float | None = None
    no_cache = no_store = False
    for part in (header or "").lower().split(","):
        part = part.strip()
        if part.startswith("max-age="):
            try:
                max_age = float(part[len("max-age=") :].strip('"'))
            except ValueError:
                max_age = None
        elif part == "no-cache":
            no_cache = True
        elif part == "no-store":
            no_store = True
    return max_age, no_cache, no_store


class PageCache:
    """Index pages on disk, one JSON header + one body file per URL (atomic writes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory) / "index-pages-v1"

    def _key(self, url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()

    def load(self, url: str) -> CachedPage | None:
        """The stored page for ``url``, or None (also for a damaged entry)."""
        key = self._key(url)
        head = self.directory / f"{key}.json"
        body = self.directory / f"{key}.body"
        try:
            meta = json.loads(head.read_text("utf-8"))
            data = body.read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["body_sha256"]:
                return None
            return CachedPage(
                url=meta["url"],
                final_url=meta["final_url"],
                content_type=meta["content_type"],
                body=data,
                stored_at=float(meta["stored_at"]),
                etag=meta.get("etag"),
                max_age=meta.get("max_age"),
                no_cache=bool(meta.get("no_cache")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store(self, page: CachedPage) -> None:
        """Write ``page`` (body first, then its header; each via a temp file + rename)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            key = self._key(page.url)
            atomic_write(self.directory / f"{key}.body", page.body)
            meta = {
                "url": page.url,
                "final_url": page.final_url,
                "content_type": page.content_type,
                "stored_at": page.stored_at,
                "etag": page.etag,
                "max_age": page.max_age,
                "no_cache": page.no_cache,
                "body_sha256": hashlib.sha256(page.body).hexdigest(),
            }
            atomic_write(self.directory / f"{key}.json", json.dumps(meta).encode())
        except OSError:
            pass  # a cache that cannot be written is not an error

    def load_blob(self, name: str) -> bytes | None:
        """Content-addressed blob (metadata files keyed by their sha256)."""
        try:
            return (self.directory / "blobs" / name).read_bytes()
        except OSError:
            return None

    def store_blob(self, name: str, data: bytes) -> None:
        """Store a content-addressed blob."""
        try:
            (self.directory / "blobs").mkdir(parents=True, exist_ok=True)
            atomic_write(self.directory / "blobs" / name, data)
        except OSError:
            pass


# -- the client -------------------------------------------------------------------------------


@dataclass
class Page:
    """A fetched page: its final URL (after redirects), content type and body."""

    url: str
    content_type: str
    body: bytes
    origin: str = "network"  # "network", "revalidated", "cache", "file"


class _NotFound(Exception):
    def __init__(self, url: str, status: int) -> None:
        super().__init__(url)
        self.url = url
        self.status = status


@dataclass
class FetchRecord:
    """One page the client needed, and where it came from."""

    url: str
    origin: str


class IndexClient:
    """Wheel candidates of a project from every configured index and find-links location.

    ``client`` is an injectable ``httpx.Client`` (one is created and owned otherwise).
    ``cache_dir`` enables the on-disk page cache (None: no disk cache); ``offline`` answers
    only from that cache. ``retries`` / ``backoff`` control retrying 5xx, 429 and dropped
    connections (delays ``backoff``, ``2*backoff``, ...).
    """

    def __init__(
        self,
        index_url: str = DEFAULT_INDEX_URL,
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
    ) -> None:
        self.index_url = index_url
        self.index_urls: list[str] = [] if no_index else [index_url, *extra_index_urls]
        self.find_links: list[str] = list(find_links)
        self.no_index = no_index
        self.offline = offline
        self.retries = retries
        self.backoff = backoff
        self.cache = PageCache(cache_dir) if cache_dir is not None else None
        self._own_client = client is None
        self.client = client or httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
            headers={"User-Agent": f"torchwheel/{_version()}"},
        )
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
            except _NotFound as nf:
                missing.append(f"{nf.url} ({nf.status})")
                continue
            found.extend(wheel_candidates(self._links(page), name, index))
        if missing and not found and not self.find_links:
            where = ", ".join(missing)
            raise IndexPageError(f"project {name!r} not found: {where}")
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
        if data is None:
            if url.startswith("file:"):
                try:
                    data = _file_url_path(url).read_bytes()
                except OSError:
                    data = None
            else:
                if self.offline:
                    raise NetworkError(f"{url}: offline and not in the cache")
                try:
                    resp = self._request(url, accept="*/*", index=cand.source)
                except _NotFound:
                    data = None
                else:
                    data = resp.content
        if data is not None and cand.metadata_sha256:
            actual = hashlib.sha256(data).hexdigest()
            if actual != cand.metadata_sha256:
                raise HashMismatch(url, cand.metadata_sha256, actual)
            if self.cache and blob_key:
                self.cache.store_blob(blob_key, data)
        self._metadata[cand.url] = data
        return data

    # pages -------------------------------------------------------------------------------

    def _links(self, page: Page) -> list[Link]:
        ctype = page.content_type.split(";")[0].strip().lower()
        if ctype == JSON_TYPE or ctype.endswith("+json") or ctype == "application/json":
            try:
                data = json.loads(page.body)
            except ValueError:
                raise IndexPageError(f"{page.url}: invalid JSON index page") from None
            return parse_json_links(data, page.url)
        if ctype in HTML_TYPES or ctype == "":
            text = page.body.decode("utf-8", errors="replace")
            if ctype == "" and text.lstrip().startswith("{"):
                try:
                    return parse_json_links(json.loads(text), page.url)
                except ValueError:
                    pass
            return parse_html_links(text, page.url)
        raise IndexPageError(f"{page.url}: not an index page (Content-Type {ctype})")

    def _find_links_candidates(self, location: str, project: str) -> list[Candidate]:
        if "://" not in location or location.startswith("file:"):
            path = _file_url_path(location) if location.startswith("file:") else Path(location)
            if path.is_dir():
                links = [
                    Link(
                        url=p.resolve().as_uri(),
                        filename=p.name,
                        size=p.stat().st_size,
                    )
                    for p in sorted(path.iterdir())
                    if p.name.endswith(".whl") and p.is_file()
                ]
                return wheel_candidates(links, project, location)
            if path.is_file():
                page = Page(path.resolve().as_uri(), "text/html", path.read_bytes(), "file")
                return wheel_candidates(self._links(page), project, location)
            raise InputError(f"{location}: --find-links location does not exist")
        remote = self._pages.get(location)
        if remote is None:
            try:
                remote = self._get_page(location, index=None)
            except _NotFound as nf:
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
        resp = self._request(url, accept=ACCEPT, index=index, headers=headers)
        max_age, no_cache, no_store = _cache_control(resp.headers.get("cache-control"))
        if resp.status_code == 304 and cached is not None:
            cached.stored_at = now
            cached.max_age = max_age if max_age is not None else cached.max_age
            cached.no_cache = no_cache
            if self.cache:
                self.cache.store(cached)
            self.fetches.append(FetchRecord(url, "revalidated"))
            return Page(cached.final_url, cached.content_type, cached.body, "revalidated")
        page = Page(str(resp.url), resp.headers.get("content-type", ""), resp.content)
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
        path = _file_url_path(url)
        if path.is_dir():
            for name in ("index.json", "index.html"):
                if (path / name).is_file():
                    path = path / name
                    break
            else:
                raise _NotFound(url, 404)
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            raise _NotFound(url, 404) from None
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
        """GET with retries; 404/410 raise _NotFound; other failures raise NetworkError."""
        hdrs = {"Accept": accept, **(headers or {})}
        attempt = 0
        while True:
            self.request_count += 1
            try:
                resp = self.client.get(url, headers=hdrs, follow_redirects=True)
            except httpx.TransportError as exc:
                # a refused connection or unknown host will not heal in a second: one retry
                limit = 1 if isinstance(exc, httpx.ConnectError) else self.retries
                if attempt < limit:
                    self._sleep(attempt)
                    attempt += 1
                    continue
                raise NetworkError(_unreachable_message(url, exc, index)) from None
            if resp.status_code in _RETRY_STATUS and attempt < self.retries:
                self._sleep(attempt)
                attempt += 1
                continue
            if resp.status_code in (404, 410):
                raise _NotFound(url, resp.status_code)
            if resp.status_code == 304 or resp.status_code < 300:
                return resp
            extra = f" after {attempt + 1} attempts" if attempt else ""
            raise NetworkError(f"{url}: HTTP {resp.status_code} {resp.reason_phrase}{extra}")

    def _sleep(self, attempt: int) -> None:
        if self.backoff > 0:
            time.sleep(self.backoff * (2**attempt))


def _unreachable_message(url: str, exc: Exception, index: str | None) -> str:
    detail = str(exc).strip() or type(exc).__name__
    detail = detail.splitlines()[0]
    msg = f"{url}: cannot reach the index ({detail})"
    if index is not None and index.rstrip("/") == DEFAULT_INDEX_URL.rstrip("/"):
        msg = (
            f"cannot reach the default index {DEFAULT_INDEX_URL} ({detail}); "
            "point torchwheel at a reachable one with --index-url URL, or at local wheels "
            "with --find-links DIR"
        )
    return msg


def _file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InputError(f"{url}: file URLs on remote hosts are not supported")
    return Path(url2pathname(parts.path))


def _version() -> str:
    from . import __version__

    return __version__


# -- CLI helpers -----------------------------------------------------------------------------


def _env_list(var: str) -> list[str]:
    return os.environ.get(var, "").split()


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    """``--index-url``, ``--extra-index-url``, ``--find-links``, ``--no-index``, ``--offline``,
    ``--cache-dir``, ``--no-cache`` (defaults from ``TORCHWHEEL_*`` environment variables)."""
    g = p.add_argument_group("package index")
    g.add_argument(
        "--index-url",
        metavar="URL",
        default=None,
        help=f"PEP 503/691 index (default $TORCHWHEEL_INDEX_URL or {DEFAULT_INDEX_URL})",
    )
    g.add_argument(
        "--extra-index-url",
        metavar="URL",
        action="append",
        default=None,
        help="another index to read too (repeatable; $TORCHWHEEL_EXTRA_INDEX_URL, space-separated)",
    )
    g.add_argument(
        "--find-links",
        metavar="PATH|URL",
        action="append",
        default=None,
        help="a directory of wheels or an HTML page of links (repeatable; "
        "$TORCHWHEEL_FIND_LINKS, space-separated)",
    )
    g.add_argument("--no-index", action="store_true", help="ignore indexes; use --find-links only")
    g.add_argument("--offline", action="store_true", help="use only cached index pages; no network")
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="index page cache (default $TORCHWHEEL_CACHE_DIR or the user cache directory)",
    )
    g.add_argument("--no-cache", action="store_true", help="do not read or write the page cache")


@dataclass
class IndexSettings:
    """The index options after defaults and environment variables are applied."""

    index_url: str
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    offline: bool = False
    cache_dir: Path | None = None


def index_settings_from_args(args: argparse.Namespace) -> IndexSettings:
    """Combine command-line options and ``TORCHWHEEL_*`` environment variables."""
    index_url = getattr(args, "index_url", None) or os.environ.get(
        "TORCHWHEEL_INDEX_URL", DEFAULT_INDEX_URL
    )
    extra = getattr(args, "extra_index_url", None)
    links = getattr(args, "find_links", None)
    no_cache = bool(getattr(args, "no_cache", False))
    cache_dir = getattr(args, "cache_dir", None)
    return IndexSettings(
        index_url=index_url.strip(),
        extra_index_urls=list(extra)
        if extra is not None
        else _env_list("TORCHWHEEL_EXTRA_INDEX_URL"),
        find_links=list(links) if links is not None else _env_list("TORCHWHEEL_FIND_LINKS"),
        no_index=bool(getattr(args, "no_index", False)),
        offline=bool(getattr(args, "offline", False)),
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
    )


def index_client_from_args(
    args: argparse.Namespace, client: httpx.Client | None = None
) -> IndexClient:
    """An :class:`IndexClient` configured from :func:`add_index_arguments` options."""
    s = index_settings_from_args(args)
    if s.offline and s.cache_dir is None:
        raise InputError("--offline needs the page cache; drop --no-cache")
    return IndexClient(
        s.index_url,
        s.extra_index_urls,
        s.find_links,
        no_index=s.no_index,
        client=client,
        cache_dir=s.cache_dir,
        offline=s.offline,
    )
