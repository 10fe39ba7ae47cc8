"""The on-disk cache of index pages (HTTP caching facts kept beside each body).

One JSON header and one body file per URL, written atomically; a damaged entry reads as a
miss. ``Cache-Control`` ``max-age``, ``no-cache`` and ``no-store`` are honoured by the client
through :func:`parse_cache_control` and :meth:`CachedPage.fresh`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

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
