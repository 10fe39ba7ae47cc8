"""The on-disk cache of index pages (HTTP caching facts kept beside each body).

One JSON header and one body file per URL, written atomically; a damaged entry — unreadable,
the wrong shape or types, a body whose hash differs, another URL's — reads as a miss.
``Cache-Control`` ``max-age``, ``no-cache`` and ``no-store`` are honoured by the client
through :func:`parse_cache_control` and :meth:`CachedPage.fresh`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write

__all__ = ["CachedPage", "PageCache", "parse_cache_control"]


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


def parse_cache_control(header: str | None) -> tuple[float | None, bool, bool]:
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


#: Largest header file read (a real one is a few hundred bytes).
_MAX_HEADER = 64 * 1024


def _page_of(meta: Any, body: bytes) -> CachedPage | None:
    """The cached page a header describes, or None when any field has the wrong type or the
    body's hash differs (a damaged or hand-edited entry is a miss, never an error)."""
    if not isinstance(meta, dict):
        return None
    texts = [meta.get(k) for k in ("url", "final_url", "content_type", "body_sha256")]
    stored_at, max_age, etag = meta.get("stored_at"), meta.get("max_age"), meta.get("etag")
    if not all(isinstance(t, str) for t in texts):
        return None
    if not isinstance(stored_at, (int, float)) or not _finite(stored_at):
        return None
    if not (max_age is None or _finite(max_age)):
        return None
    if not (etag is None or (isinstance(etag, str) and etag.isprintable() and len(etag) < 1024)):
        return None
    if hashlib.sha256(body).hexdigest() != meta["body_sha256"]:
        return None
    return CachedPage(
        url=meta["url"],
        final_url=meta["final_url"],
        content_type=meta["content_type"],
        body=body,
        stored_at=float(stored_at),
        etag=etag,
        max_age=None if max_age is None else float(max_age),
        no_cache=meta.get("no_cache") is True,
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
            meta = json.loads(head.read_bytes()[:_MAX_HEADER])
            data = body.read_bytes()
        except (OSError, ValueError, RecursionError):
            return None
        page = _page_of(meta, data)
        if page is None or page.url != url:
            return None
        return page

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
