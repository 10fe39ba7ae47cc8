"""Size of a wheel before downloading it: read only the zip's central directory.

:func:`remote_wheel_size` asks for the last 64 KiB of the file with one HTTP ``Range``
request (which holds the end-of-central-directory record and, for most wheels, the whole
central directory), then for whatever else :func:`torchwheel.zipread.read_central_directory`
needs: a typical wheel costs one request, torch's (13,000+ members) two. When the server
ignores ``Range`` (answers 200 with the whole file) the body is streamed to a temporary file
and read from there: correct, just not cheap. ``file://`` URLs and local paths are read in
place.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

import httpx

from .errors import ArchiveError, NetworkError
from .http import get_with_retries, local_path, make_client
from .zipread import TAIL_READ, ZIP_DEFLATED, ZIP_STORED, ZipMember, read_central_directory

__all__ = [
    "MAX_REQUESTS",
    "RemoteSize",
    "read_remote_metadata",
    "remote_wheel_size",
    "size_from_members",
]

#: Upper bound on HTTP requests per wheel (the issue's budget).
MAX_REQUESTS = 6
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class RemoteSize:
    """What a wheel weighs, read from its central directory."""

    url: str
    zipped: int  # bytes of the .whl file
    unzipped: int  # sum of the members' uncompressed sizes
    members: int  # number of file entries
    largest: tuple[tuple[str, int], ...]  # (member name, uncompressed size), biggest first
    requests: int  # HTTP requests made (0 for local files)
    ranged: bool  # False when the server ignored Range and the whole file was downloaded


def size_from_members(
    url: str, zipped: int, members: list[ZipMember], *, top: int, requests: int, ranged: bool
) -> RemoteSize:
    """Aggregate central-directory entries into a :class:`RemoteSize`."""
    files = [m for m in members if not m.is_dir]
    biggest = sorted(files, key=lambda m: (-m.file_size, m.name))[:top]
    return RemoteSize(
        url=url,
        zipped=zipped,
        unzipped=sum(m.file_size for m in files),
        members=len(files),
        largest=tuple((m.name, m.file_size) for m in biggest),
        requests=requests,
        ranged=ranged,
    )


class _RangeReader:
    """``read_at`` over HTTP: serves reads from fetched spans, asks for the rest."""

    def __init__(
        self,
        url: str,
        client: httpx.Client,
        retries: int,
        backoff: float,
        *,
        allow_full: bool = True,
    ) -> None:
        self.url = url
        self.allow_full = allow_full  # False: give up (_NoRanges) instead of downloading it all
        self.client = client
        self.retries = retries
        self.backoff = backoff
        self.requests = 0
        self.size = -1
        self.spans: list[tuple[int, bytes]] = []
        self.full: IO[bytes] | None = None  # the whole file when Range was ignored

    def close(self) -> None:
        if self.full is not None:
            self.full.close()

    def _count(self) -> None:
        if self.requests >= MAX_REQUESTS:
            raise NetworkError(f"{self.url}: more than {MAX_REQUESTS} requests needed")
        self.requests += 1

    def _get(self, range_header: str) -> httpx.Response:
        resp = get_with_retries(
            self.client,
            self.url,
            headers={"Range": range_header},
            retries=self.retries,
            backoff=self.backoff,
            stream=True,
            unreachable=lambda detail: f"{self.url}: cannot download ({detail})",
            on_attempt=self._count,
        )
        if resp.status_code not in (200, 206):
            resp.close()
            raise NetworkError(f"{self.url}: HTTP {resp.status_code} {resp.reason_phrase}")
        return resp

    def _take(self, resp: httpx.Response) -> None:
        """Store a 206 span, or the whole 200 body in a temporary file."""
        try:
            if resp.status_code == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                if not m:
                    raise NetworkError(f"{self.url}: 206 answer without a usable Content-Range")
                start = int(m.group(1))
                if m.group(3) != "*":
                    self.size = int(m.group(3))
                data = resp.read()
                self.spans.append((start, data))
                return
            if not self.allow_full:
                raise _NoRanges(self.url)
            full = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for read_at, closed in close()
            try:
                for chunk in resp.iter_bytes(1 << 20):
                    full.write(chunk)
            except BaseException:
                full.close()
                raise
            self.size = full.tell()
            self.full = full
        except httpx.HTTPError as exc:
            raise NetworkError(f"{self.url}: download interrupted ({exc})") from None
        finally:
            resp.close()

    def open(self) -> int:
        """First request: the tail of the file; returns the file size."""
        self._take(self._get(f"bytes=-{TAIL_READ}"))
        if self.size < 0:
            raise NetworkError(f"{self.url}: server did not say how large the file is")
        return self.size

    def read_at(self, offset: int, length: int) -> bytes:
        if self.full is not None:
            self.full.seek(offset)
            return self.full.read(length)
        for start, data in self.spans:
            if start <= offset and offset + length <= start + len(data):
                return data[offset - start : offset - start + length]
        end = min(offset + length, self.size) - 1
        if end < offset:
            return b""
        self._take(self._get(f"bytes={offset}-{end}"))
        if self.full is not None:  # the server stopped honouring Range
            return self.read_at(offset, length)
        start, data = self.spans[-1]
        if start > offset or start + len(data) < offset + min(length, self.size - offset):
            raise NetworkError(f"{self.url}: server answered a different byte range")
        return data[offset - start : offset - start + length]


class _NoRanges(Exception):
    """The server ignores ``Range`` and the caller did not want the whole file."""


_LFH_SIZE = 30


def read_remote_metadata(
    client: httpx.Client, url: str, *, retries: int = 2, backoff: float = 0.2
) -> bytes | None:
    """``*.dist-info/METADATA`` of the wheel at ``url``, read with HTTP range requests.

    Typically 2 requests: the archive tail (central directory), then the member. Returns None
    when the server ignores ``Range`` (the caller then downloads the wheel, verified and
    cached) or the wheel has no single METADATA; raises :class:`ArchiveError` for a corrupt
    member and :class:`NetworkError` when the URL cannot be read.
    """
    reader = _RangeReader(url, client, retries, backoff, allow_full=False)
    try:
        size = reader.open()
        members = read_central_directory(reader.read_at, size, source=url)
        meta = [
            m
            for m in members
            if m.name.count("/") == 1
            and m.name.split("/")[0].endswith(".dist-info")
            and m.name.endswith("/METADATA")
        ]
        if len(meta) != 1:
            return None
        mem = meta[0]
        head = reader.read_at(mem.header_offset, _LFH_SIZE + 1024)
        if head[:4] != b"PK\x03\x04":
            raise ArchiveError(f"{url}: {mem.name}: bad local header")
        nlen, xlen = struct.unpack_from("<2H", head, 26)
        raw = reader.read_at(mem.header_offset + _LFH_SIZE + nlen + xlen, mem.compressed_size)
    except _NoRanges:
        return None
    finally:
        reader.close()
    if mem.compress_type == ZIP_STORED:
        data = raw
    elif mem.compress_type == ZIP_DEFLATED:
        try:
            data = zlib.decompress(raw, -15)
        except zlib.error as exc:
            raise ArchiveError(f"{url}: {mem.name}: corrupt deflate data ({exc})") from None
    else:
        return None
    if zlib.crc32(data) != mem.crc:
        raise ArchiveError(f"{url}: {mem.name}: CRC-32 mismatch")
    return data


def remote_wheel_size(
    url: str,
    *,
    client: httpx.Client | None = None,
    top: int = 10,
    retries: int = 2,
    backoff: float = 0.2,
) -> RemoteSize:
    """Zipped size, unzipped size and the ``top`` largest members of the wheel at ``url``.

    Reads only the central directory (HTTP ``Range``; at most :data:`MAX_REQUESTS`
    requests). Raises :class:`NetworkError` when the URL cannot be read and
    :class:`~torchwheel.errors.ArchiveError` when the file is not a readable zip.
    """
    local = local_path(url)
    if local is not None:
        try:
            fd = os.open(local, os.O_RDONLY)
        except OSError as exc:
            raise NetworkError(f"{url}: cannot read ({exc.strerror})") from None
        try:
            size = os.fstat(fd).st_size
            read_at: Callable[[int, int], bytes] = lambda off, n: os.pread(fd, n, off)  # noqa: E731
            members = read_central_directory(read_at, size, source=url)
        finally:
            os.close(fd)
        return size_from_members(url, size, members, top=top, requests=0, ranged=True)

    own = client is None
    http = client or make_client()
    reader = _RangeReader(url, http, retries, backoff)
    try:
        size = reader.open()
        members = read_central_directory(reader.read_at, size, source=url)
    finally:
        reader.close()
        if own:
            http.close()
    return size_from_members(
        url, size, members, top=top, requests=reader.requests, ranged=reader.full is None
    )
