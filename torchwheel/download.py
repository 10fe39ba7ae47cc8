"""Verified, cached, resumable downloads of wheel files.

:func:`fetch` streams a wheel into a content-addressed cache and returns its path:

- the cache lives in the platform's user cache dir (``platformdirs``), or ``cache_dir``, or
  ``$TORCHWHEEL_CACHE_DIR``; a finished file sits at ``wheels/<h[:2]>/<sha256>/<filename>``;
- the sha256 is computed while the bytes stream in; the file is renamed into place only when
  it matches (a mismatch raises :class:`~torchwheel.errors.HashMismatch` and leaves nothing
  behind);
- an interrupted download keeps ``partial/<sha256>.part`` and the next attempt asks only for
  the missing bytes (HTTP ``Range``); a server that ignores the range is handled (restart);
- a cached file is reused without any network access;
- ``file://`` URLs and local paths are verified in place and returned as they are.

This module knows nothing of Lambda; it takes an injected :class:`httpx.Client`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import httpx

from .atomic import atomic_write
from .errors import HashMismatch, InputError, NetworkError

__all__ = ["FetchStats", "Fetchable", "cache_root", "cached_path", "fetch", "make_client"]

Progress = Callable[[int, "int | None"], None]
"""Progress callback: ``(bytes done, total bytes or None)``."""

_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Fetchable(Protocol):
    """What :func:`fetch` needs from an index candidate (``torchwheel.index.Candidate``)."""

    @property
    def url(self) -> str: ...

    @property
    def filename(self) -> str: ...

    @property
    def sha256(self) -> str | None: ...


@dataclass
class FetchStats:
    """Counters a caller may pass to :func:`fetch` to learn what happened (for reports/tests)."""

    cache_hits: int = 0
    downloads: int = 0
    resumed: int = 0
    bytes_downloaded: int = 0


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$TORCHWHEEL_CACHE_DIR``, else the user cache."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("TORCHWHEEL_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("torchwheel", appauthor=False))


def make_client(timeout: float = 60.0) -> httpx.Client:
    """An ``httpx.Client`` suitable for downloads (redirects followed, generous timeouts)."""
    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(timeout, connect=15.0),
        headers={"User-Agent": "torchwheel"},
    )


def _filename_from_url(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or "/" in name or name in (".", ".."):
        raise InputError(f"{url}: cannot tell the file name from the URL")
    return name


def cached_path(
    sha256: str, filename: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where a verified file with this hash and name lives in the cache (it may not exist)."""
    return cache_root(cache_dir) / "wheels" / sha256[:2] / sha256 / filename


def _url_key(url: str) -> str:
    return hashlib.sha256(url.split("#", 1)[0].encode()).hexdigest()


def _split_fragment(url: str) -> tuple[str, str | None]:
    """``…whl#sha256=abc`` → (``…whl``, ``abc``)."""
    base, _, frag = url.partition("#")
    m = re.search(r"(?:^|&)sha256=([0-9a-fA-F]{64})(?:&|$)", frag)
    return base, (m.group(1).lower() if m else None)


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _local_path(url: str) -> Path | None:
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise InputError(f"{url}: file URLs on other hosts are not supported")
        return Path(url2pathname(parts.path))
    if "://" in url:
        return None
    return Path(url)


def fetch(
    item: Fetchable | str | os.PathLike[str],
    *,
    sha256: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    client: httpx.Client | None = None,
    progress: Progress | None = None,
    offline: bool = False,
    retries: int = 2,
    stats: FetchStats | None = None,
) -> Path:
    """Return a local path holding the verified bytes of ``item``.

    ``item`` is an index candidate (anything with ``url``, ``filename``, ``sha256``), a URL
    (an ``#sha256=`` fragment is honoured) or a local path. ``sha256`` overrides the expected
    hash. Remote files are cached content-addressed; the cached copy is reused without
    network. An interrupted transfer is resumed with a Range request, up to ``retries`` times
    within this call and on the next call otherwise. Raises
    :class:`~torchwheel.errors.HashMismatch` (nothing cached),
    :class:`~torchwheel.errors.NetworkError` or :class:`~torchwheel.errors.InputError`.
    """
    stats = stats if stats is not None else FetchStats()
    if isinstance(item, (str, os.PathLike)):
        url = os.fspath(item)
        url, frag_hash = _split_fragment(url)
        expected = sha256 or frag_hash
        filename = None
    else:
        url, frag_hash = _split_fragment(item.url)
        expected = sha256 or item.sha256 or frag_hash
        filename = item.filename
    if expected is not None:
        expected = expected.lower()
        if not _HEX64.match(expected):
            raise InputError(f"{url}: expected sha256 {expected!r} is not 64 hex digits")

    local = _local_path(url)
    if local is not None:
        return _verify_local(local, url, expected)

    filename = filename or _filename_from_url(url)
    root = cache_root(cache_dir)
    if expected is None:
        known = _lookup_url(root, url)
        if known is not None:
            hit = cached_path(known, filename, root)
            if hit.is_file():
                stats.cache_hits += 1
                return hit
    else:
        hit = cached_path(expected, filename, root)
        if hit.is_file():
            stats.cache_hits += 1
            return hit
    if offline:
        raise NetworkError(f"{url}: not in the cache {root} and --offline was given")

    own_client = client is None
    http = client if client is not None else make_client()
    try:
        attempt = 0
        while True:
            try:
                return _download(http, url, filename, expected, root, progress, stats)
            except _Interrupted as exc:
                attempt += 1
                if attempt > retries:
                    raise NetworkError(
                        f"{url}: download interrupted after {exc.done:,} bytes ({exc.reason}); "
                        "run again to resume"
                    ) from None
    finally:
        if own_client:
            http.close()


class _Interrupted(Exception):
    def __init__(self, done: int, reason: str) -> None:
        super().__init__(reason)
        self.done = done
        self.reason = reason


def _verify_local(path: Path, url: str, expected: str | None) -> Path:
    if not path.is_file():
        raise InputError(f"{url}: no such file")
    if expected is not None:
        actual, _ = _hash_file(path)
        if actual != expected:
            raise HashMismatch(url, expected, actual)
    return path


def _lookup_url(root: Path, url: str) -> str | None:
    try:
        text = (root / "urls" / _url_key(url)).read_text("ascii").strip()
    except OSError:
        return None
    return text if _HEX64.match(text) else None


def _remember_url(root: Path, url: str, digest: str) -> None:
    d = root / "urls"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(d / _url_key(url), digest.encode())


def _download(
    http: httpx.Client,
    url: str,
    filename: str,
    expected: str | None,
    root: Path,
    progress: Progress | None,
    stats: FetchStats,
) -> Path:
    partial_dir = root / "partial"
    partial_dir.mkdir(parents=True, exist_ok=True)
    part = partial_dir / f"{expected or 'url-' + _url_key(url)}.part"

    hasher = hashlib.sha256()
    have = 0
    if part.is_file():
        with open(part, "rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
                have += len(chunk)
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with http.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 416 and have:
                # our partial file is as long as (or longer than) the file: start again
                part.unlink(missing_ok=True)
                raise _Interrupted(0, "server refused the resume range")
            if resp.status_code not in (200, 206):
                raise NetworkError(f"{url}: HTTP {resp.status_code} {resp.reason_phrase}")
            total: int | None = None
            mode = "ab"
            if resp.status_code == 206 and have:
                m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("content-range", ""))
                if not m or int(m.group(1)) != have:
                    raise NetworkError(f"{url}: server answered a resume with a wrong range")
                if m.group(3) != "*":
                    total = int(m.group(3))
                stats.resumed += 1
            else:
                if have:  # server ignored the Range header: start over
                    hasher = hashlib.sha256()
                    have = 0
                mode = "wb"
                length = resp.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
            stats.downloads += 1
            done = have
            if progress is not None:
                progress(done, total)
            with open(part, mode) as out:
                try:
                    for chunk in resp.iter_raw():
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        stats.bytes_downloaded += len(chunk)
                        if progress is not None:
                            progress(done, total)
                except (httpx.TransportError, httpx.StreamError) as exc:
                    raise _Interrupted(done, type(exc).__name__) from None
            if total is not None and done < total:
                raise _Interrupted(done, f"got {done:,} of {total:,} bytes")
    except httpx.TransportError as exc:
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout)):
            size = part.stat().st_size if part.exists() else 0
            raise _Interrupted(size, type(exc).__name__) from None
        raise NetworkError(f"{url}: {type(exc).__name__}: {exc or 'connection failed'}") from None

    actual = hasher.hexdigest()
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        raise HashMismatch(url, expected, actual)
    dest = cached_path(actual, filename, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)
    if expected is None:
        _remember_url(root, url, actual)
    return dest
