"""Verified, cached, resumable downloads of wheel files.

:func:`fetch` streams a wheel into a content-addressed cache and returns its path:

- the cache lives in the platform's user cache dir (``platformdirs``), or ``cache_dir``, or
  ``$TORCHWHEEL_CACHE_DIR``; a finished file sits at ``wheels/<h[:2]>/<sha256>/<filename>``;
- the sha256 is computed while the bytes stream in; the file is renamed into place only when
  it matches (a mismatch raises :class:`~torchwheel.errors.HashMismatch` and leaves nothing
  behind);
- an interrupted download keeps ``partial/<sha256>.part`` and the next attempt asks only for
  the missing bytes (HTTP ``Range``); a server that ignores the range is handled (restart);
- a cached file is reused without any network access, after it is verified again (its
  sha256; and a wheel cached without a known hash must still open as a wheel with a valid
  RECORD) — a bad entry is dropped and downloaded again;
- a wheel enters the cache only verified: by the expected hash when the index gave one,
  else it must open as a wheel with a valid RECORD (a 200 answer of garbage is not cached);
- concurrent processes on one cache are safe: each download holds a lock on its partial
  file, and a finished file is moved into place only if none is there yet (rename-if-absent);
- ``file://`` URLs and local paths are verified in place and returned as they are; an index
  candidate whose page was read over the network never names a local file.

This module knows nothing of Lambda; it takes an injected :class:`httpx.Client`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import httpx

from .atomic import atomic_write
from .errors import ArchiveError, HashMismatch, InputError, NetworkError
from .http import (
    cache_root,
    get_with_retries,
    is_remote_url,
    local_path,
    make_client,
    split_hash_fragment,
)
from .wheelfile import find_dist_info, parse_record, parse_wheel
from .zipread import ZipReader

__all__ = ["FetchStats", "Fetchable", "cache_root", "cached_path", "fetch", "make_client"]

Progress = Callable[[int, "int | None"], None]
"""Progress callback: ``(bytes done, total bytes or None)``."""

_CHUNK = 1 << 20
#: Seconds a download may take before its average rate is judged ...
DOWNLOAD_GRACE = 60.0
#: ... and the bytes per second it must average from then on (a server that drips a byte
#: every few seconds is given up on, not waited for).
DOWNLOAD_MIN_RATE = 16 * 1024
#: Most bytes one download may bring when the server states no size (a chunked body): the
#: biggest wheels on PyPI are a few GB; a body past this is not a wheel but a disk filler.
MAX_DOWNLOAD_BYTES = 16 * 1024**3
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"bytes (\d{1,20})-(\d{1,20})/(\d{1,20}|\*)")


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


def _filename_from_url(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or "/" in name or name in (".", ".."):
        raise InputError(f"{url}: cannot tell the file name from the URL")
    return name


def cached_path(
    sha256: str, filename: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where a verified file with this hash and name lives in the cache (it may not exist).
    Raises :class:`~torchwheel.errors.InputError` when ``sha256`` is not 64 hex digits or
    ``filename`` is not a bare file name (either would name a path outside the cache)."""
    if not _HEX64.match(sha256):
        raise InputError(f"{sha256!r}: not a sha256 (64 lowercase hex digits)")
    if not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
        raise InputError(f"{filename!r}: not a file name (a wheel is cached by its bare name)")
    return cache_root(cache_dir) / "wheels" / sha256[:2] / sha256 / filename


def _url_key(url: str) -> str:
    return hashlib.sha256(url.split("#", 1)[0].encode()).hexdigest()


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


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
        url, frag_hash = split_hash_fragment(url)
        expected = sha256 or frag_hash
        filename = None
    else:
        url, frag_hash = split_hash_fragment(item.url)
        expected = sha256 or item.sha256 or frag_hash
        filename = item.filename
        source = getattr(item, "source", None)
        if isinstance(source, str) and is_remote_url(source) and not is_remote_url(url):
            raise InputError(
                f"{url}: a page from {source} links outside HTTP(S); only --find-links paths "
                "and file:// indexes you give reach local files"
            )
    if expected is not None:
        expected = expected.lower()
        if not _HEX64.match(expected):
            raise InputError(f"{url}: expected sha256 {expected!r} is not 64 hex digits")

    local = local_path(url)
    if local is not None:
        return _verify_local(local, url, expected)

    filename = filename or _filename_from_url(url)
    root = cache_root(cache_dir)
    hit = _cached(root, url, filename, expected)
    if hit is not None:
        stats.cache_hits += 1
        return hit
    if offline:
        raise NetworkError(f"{url}: not in the cache {root} and --offline was given")

    own_client = client is None
    http = client if client is not None else make_client()
    try:
        with _partial_lock(root, url, expected):
            hit = _cached(root, url, filename, expected)  # another process finished it
            if hit is not None:
                stats.cache_hits += 1
                return hit
            return _download_with_retries(
                http, url, filename, expected, root, progress, stats, retries
            )
    finally:
        if own_client:
            http.close()


def _download_with_retries(
    http: httpx.Client,
    url: str,
    filename: str,
    expected: str | None,
    root: Path,
    progress: Progress | None,
    stats: FetchStats,
    retries: int,
) -> Path:
    attempt = 0
    while True:
        try:
            return _download(http, url, filename, expected, root, progress, stats, retries)
        except _Interrupted as exc:
            attempt += 1
            if attempt > retries:
                raise NetworkError(
                    f"{url}: download interrupted after {exc.done:,} bytes ({exc.reason}); "
                    "run again to resume"
                ) from None


def _part_path(root: Path, url: str, expected: str | None) -> Path:
    return root / "partial" / f"{expected or 'url-' + _url_key(url)}.part"


@contextlib.contextmanager
def _partial_lock(root: Path, url: str, expected: str | None) -> Iterator[None]:
    """Hold an exclusive lock on this download's partial file (another process downloading
    the same file waits, then finds it in the cache). The lock file is removed when done:
    whoever locks next looks in the cache first; in the rare race where a process locks a
    new file while another still holds the old one, both may write the partial file, and
    verification keeps the result out of the cache unless it is right."""
    lock = _part_path(root, url, expected).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


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


def _cached(root: Path, url: str, filename: str, expected: str | None) -> Path | None:
    """The finished file in the cache (by the expected hash, else by what ``url`` gave),
    verified again: its sha256, and for a wheel cached without a known hash, that it opens
    as a wheel with a valid RECORD. A bad entry is removed and reads as a miss."""
    digest = expected if expected is not None else _lookup_url(root, url)
    if digest is None:
        return None
    hit = cached_path(digest, filename, root)
    if not hit.is_file():
        return None
    try:
        actual, _ = _hash_file(hit)
        if actual == digest and (expected is not None or _wheel_problem(hit, filename) is None):
            return hit
    except OSError:
        pass
    with contextlib.suppress(OSError):
        hit.unlink()
    return None


def _wheel_problem(path: Path, filename: str) -> str | None:
    """Why ``path`` is not a wheel with a valid RECORD (every file it lists present), or None.
    Files not named ``*.whl`` are not judged."""
    if not filename.endswith(".whl"):
        return None
    try:
        project = parse_wheel(filename).name
        with ZipReader(path) as zr:
            names = {m.name for m in zr.members}
            dist_info = find_dist_info(names, project, source=filename)
            record = next((m for m in zr.members if m.name == f"{dist_info}/RECORD"), None)
            if record is None:
                return f"{dist_info}/RECORD is missing"
            entries = parse_record(zr.read(record, limit=1 << 26), source=f"{filename}: RECORD")
    except (ArchiveError, InputError) as exc:  # InvalidWheelFilename is an InputError
        return str(exc)
    missing = [e.path for e in entries if e.path not in names]
    if missing:
        return f"RECORD lists {len(missing)} file(s) the wheel lacks (first: {missing[0]})"
    return None


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
    retries: int,
) -> Path:
    """One transfer into ``partial/``: resumed from what is there, renamed into the cache
    when the hash matches. Raises :class:`_Interrupted` when the body stops short."""
    part = _part_path(root, url, expected)
    part.parent.mkdir(parents=True, exist_ok=True)
    hasher, have = _hash_partial(part)
    resp = _open(http, url, part, have, retries)
    try:
        total, resumed = _expected_total(resp, url, have)
        if resumed:
            stats.resumed += 1
        else:  # a fresh body: the server ignored our Range header, or we sent none
            hasher, have = hashlib.sha256(), 0
        stats.downloads += 1
        _receive(resp, part, "ab" if resumed else "wb", hasher, have, total, progress, stats)
    finally:
        resp.close()
    return _finish(part, hasher.hexdigest(), url, filename, expected, root)


def _hash_partial(part: Path) -> tuple[hashlib._Hash, int]:
    """The sha256 state and length of what an earlier attempt left in ``part``."""
    hasher = hashlib.sha256()
    have = 0
    if part.is_file():
        with open(part, "rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
                have += len(chunk)
    return hasher, have


def _open(http: httpx.Client, url: str, part: Path, have: int, retries: int) -> httpx.Response:
    """Start the GET (asking for the bytes after ``have``); the answer is 200 or 206."""
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    resp = get_with_retries(
        http, url, headers=headers, retries=retries, stream=True, accept_status=(416,)
    )
    if resp.status_code == 416 and have:
        # our partial file is as long as (or longer than) the file: start again
        resp.close()
        part.unlink(missing_ok=True)
        raise _Interrupted(0, "server refused the resume range")
    if resp.status_code not in (200, 206):
        resp.close()
        raise NetworkError(f"{url}: HTTP {resp.status_code} {resp.reason_phrase}")
    return resp


def _expected_total(resp: httpx.Response, url: str, have: int) -> tuple[int | None, bool]:
    """(the file's full size if the server says it, whether the answer continues ``have``)."""
    if resp.status_code == 206 and have:
        m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
        if not m or int(m.group(1)) != have:
            raise NetworkError(f"{url}: server answered a resume with a wrong range")
        return (int(m.group(3)) if m.group(3) != "*" else None), True
    length = resp.headers.get("content-length", "")
    ok = length.isascii() and length.isdigit() and len(length) <= 20
    return (int(length) if ok else None), False


def _receive(
    resp: httpx.Response,
    part: Path,
    mode: str,
    hasher: hashlib._Hash,
    done: int,
    total: int | None,
    progress: Progress | None,
    stats: FetchStats,
) -> None:
    """Append (``ab``) or write (``wb``) the body to ``part``, hashing as it streams in;
    after :data:`DOWNLOAD_GRACE` seconds the transfer must average :data:`DOWNLOAD_MIN_RATE`
    (what arrived is kept for a resume)."""
    if progress is not None:
        progress(done, total)
    start, first = time.monotonic(), done
    limit = total if total is not None else MAX_DOWNLOAD_BYTES
    with open(part, mode) as out:
        try:
            for chunk in resp.iter_raw():
                if done + len(chunk) > limit:  # not a wheel: nothing of it is kept
                    part.unlink(missing_ok=True)
                    raise NetworkError(
                        f"{resp.url}: the server sent more than "
                        + (
                            f"the {total:,} bytes it announced"
                            if total is not None
                            else f"{MAX_DOWNLOAD_BYTES:,} bytes with no size given"
                        )
                    )
                out.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                stats.bytes_downloaded += len(chunk)
                if progress is not None:
                    progress(done, total)
                _check_rate(resp, done - first, time.monotonic() - start)
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _Interrupted(done, type(exc).__name__) from None
    if total is not None and done < total:
        raise _Interrupted(done, f"got {done:,} of {total:,} bytes")


def _check_rate(resp: httpx.Response, got: int, seconds: float) -> None:
    if seconds > DOWNLOAD_GRACE and got < DOWNLOAD_MIN_RATE * seconds:
        raise NetworkError(
            f"{resp.url}: download too slow ({got:,} bytes in {seconds:.0f} s, under "
            f"{DOWNLOAD_MIN_RATE // 1024} KiB/s); what arrived is kept: run again to resume"
        )


def _finish(
    part: Path, actual: str, url: str, filename: str, expected: str | None, root: Path
) -> Path:
    """Verify, then move ``part`` into the cache if no file is there yet (nothing is kept when
    verification fails): the expected hash, or without one, the wheel's shape and RECORD."""
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        raise HashMismatch(url, expected, actual)
    if expected is None:
        problem = _wheel_problem(part, filename)
        if problem is not None:
            part.unlink(missing_ok=True)
            raise InputError(f"{url}: not a valid wheel ({problem}); nothing was cached")
    dest = cached_path(actual, filename, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _rename_if_absent(part, dest)
    if expected is None:
        _remember_url(root, url, actual)
    return dest


def _rename_if_absent(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest`` unless a file is there already (then ``src`` is dropped:
    the same content, named by its hash, arrived from another process)."""
    try:
        os.link(src, dest)
    except FileExistsError:
        pass
    except OSError:  # no hard links here: a rename is atomic too
        os.replace(src, dest)
        return
    src.unlink(missing_ok=True)
