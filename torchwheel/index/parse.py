"""Index pages as data: PEP 691 JSON, PEP 503 HTML and find-links pages → links → wheels.

Pure: bytes and URLs in, :class:`Link` and :class:`Candidate` out; no I/O. Every page that is
not what it claims raises :class:`~torchwheel.errors.IndexPageError` naming its URL, among
them JSON nested deeper than :data:`MAX_JSON_DEPTH` (a real project page is 4 deep).
``<base href>`` is read as the HTML standard says: the first ``base`` element with an ``href``
attribute sets the base URL, resolved against the page's URL; a ``data:`` or ``javascript:``
one, or one that is not a URL, is ignored. (Which schemes a link may have is the client's
rule, :class:`~torchwheel.index.IndexClient`.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from packaging.utils import canonicalize_name
from packaging.version import Version

from ..errors import IndexPageError, InvalidWheelFilename
from ..http import split_hash_fragment
from ..wheelfile import parse_wheel

__all__ = [
    "ACCEPT",
    "HTML_TYPES",
    "JSON_TYPE",
    "MAX_JSON_DEPTH",
    "Candidate",
    "Link",
    "normalize_name",
    "parse_html_links",
    "parse_json_links",
    "parse_page",
    "wheel_candidates",
]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPES = ("text/html", "application/vnd.pypi.simple.v1+html")
#: PEP 691 content negotiation: JSON preferred, HTML accepted.
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"

#: Deepest JSON nesting accepted in a PEP 691 page (a real one is 4 deep).
MAX_JSON_DEPTH = 32

_DIST_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".egg", ".tar.xz", ".tar")


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
        self.base: str | None = None  # the first <base> element's href, as written
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            values = dict(attrs)
            if "href" in values:  # the first base element *with an href attribute* counts
                self.base = values["href"] or ""
        elif tag == "a":
            self.anchors.append(dict(attrs))


def base_url(page_url: str, href: str | None) -> str:
    """The document base URL (HTML standard, "frozen base URL"): ``href`` of the first
    ``<base>`` with one, parsed relative to the page's URL; the page's URL when there is none,
    or when it does not parse or its scheme is ``data`` or ``javascript``."""
    if href is None:
        return page_url
    try:
        url = urljoin(page_url, href.strip())
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return page_url
    return page_url if scheme in ("data", "javascript") else url


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
    base = base_url(page_url, parser.base)
    links: list[Link] = []
    for a in parser.anchors:
        href = a.get("href")
        if not href:
            continue
        try:
            url, sha = split_hash_fragment(urljoin(base, href.strip()))
        except ValueError:  # not a URL (an unbalanced IPv6 bracket ...): not a link
            continue
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


def _hex64(value: Any) -> str | None:
    """A sha256 as 64 lowercase hex digits, or None for anything else (it names cache files)."""
    if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower()
    return None


def parse_json_links(data: Any, page_url: str) -> list[Link]:
    """The ``files`` of a PEP 691 project document as :class:`Link` objects."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise IndexPageError(f"{page_url}: not a PEP 691 project page (no 'files' list)")
    links: list[Link] = []
    for f in data["files"]:
        if not isinstance(f, dict) or not isinstance(f.get("url"), str):
            raise IndexPageError(f"{page_url}: malformed PEP 691 file entry {f!r:.80}")
        try:
            url, frag_sha = split_hash_fragment(urljoin(page_url, f["url"]))
        except ValueError:
            raise IndexPageError(
                f"{page_url}: malformed PEP 691 file URL {f['url']!r:.80}"
            ) from None
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
                sha256=_hex64(sha),
                requires_python=rp.strip() or None if isinstance(rp, str) else None,
                yanked=bool(yanked) if not isinstance(yanked, str) else yanked,
                has_metadata=has_meta,
                metadata_sha256=_hex64(meta_sha),
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            )
        )
    return links


def wheel_candidates(links: Sequence[Link], project: str, source: str) -> list[Candidate]:
    """Keep the wheels of ``project`` (normalized) among ``links``; skip invalid names (and
    names that carry a path)."""
    want = normalize_name(project)
    out: list[Candidate] = []
    for lk in links:
        # the file name names the cached download: a bare name, never a path (a PEP 691
        # ``filename`` or a link's unquoted last segment could carry ``../``)
        if not lk.filename.endswith(".whl") or "/" in lk.filename or "\\" in lk.filename:
            continue
        try:
            wheel = parse_wheel(lk.filename)
        except InvalidWheelFilename:
            continue
        if wheel.name != want:
            continue
        out.append(
            Candidate(
                filename=lk.filename,
                url=lk.url,
                project=want,
                version=wheel.version,
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


def _load_json(body: bytes | str, page_url: str) -> Any:
    """The JSON document, nested at most :data:`MAX_JSON_DEPTH` deep."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise IndexPageError(f"{page_url}: invalid JSON index page") from None
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise IndexPageError(
                f"{page_url}: JSON index page nested more than {MAX_JSON_DEPTH} deep"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return data


def parse_page(content_type: str, body: bytes, page_url: str) -> list[Link]:
    """The links of an index page, read as its ``Content-Type`` says (JSON or HTML).

    A page served without a content type is read as JSON when it looks like JSON, as HTML
    otherwise. Any other content type raises :class:`IndexPageError`.
    """
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == JSON_TYPE or ctype.endswith("+json") or ctype == "application/json":
        return parse_json_links(_load_json(body, page_url), page_url)
    if ctype in HTML_TYPES or ctype == "":
        text = body.decode("utf-8", errors="replace")
        if ctype == "" and text.lstrip().startswith("{"):
            try:
                return parse_json_links(_load_json(text, page_url), page_url)
            except IndexPageError:
                pass
        return parse_html_links(text, page_url)
    raise IndexPageError(f"{page_url}: not an index page (Content-Type {ctype})")
