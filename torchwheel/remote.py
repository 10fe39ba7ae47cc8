"""Read a wheel without downloading it: its central directory and a few members, by HTTP ranges.

:class:`RemoteWheel` opens a wheel at a URL (or a local path / ``file://`` URL, read in place)
with one ``Range`` request for the last 64 KiB of the file, which holds the end-of-central-
directory record and, for most wheels, the whole central directory; torch's (13,000+ members,
~1.5 MB) costs one request more. From there it reads, each with one more request, small
members whole (``METADATA``, ``torch/version.py``) and, through :mod:`torchwheel.elfneeds`,
the version-need tables of the wheel's ELF files from a prefix of each member.

:func:`remote_wheel_size` (the wheel's zipped and unzipped size, its largest members) and
:func:`read_remote_metadata` (its ``METADATA``) are the one-call forms. When a server ignores
``Range`` (answers 200 with the whole file), :func:`remote_wheel_size` streams the body to a
temporary file and reads it from there (correct, just not cheap); everything else gives up
instead (:class:`RangesIgnored`), so the caller can download the wheel, verified and cached.

Every :class:`RemoteWheel` counts its requests and the bytes it received (``requests``,
``bytes_received``) and refuses to make more than ``max_requests`` requests.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from dataclasses import dataclass
from types import TracebackType
from typing import IO

import httpx

from .errors import ArchiveError, NetworkError
from .http import get_with_retries, local_path, make_client
from .zipread import TAIL_READ, ZIP_DEFLATED, ZIP_STORED, ZipMember, read_central_directory
from .zipstream import inflate_whole

__all__ = [
    "MAX_REQUESTS",
    "RangesIgnored",
    "RemoteSize",
    "RemoteWheel",
    "read_remote_metadata",
    "remote_wheel_size",
    "size_from_members",
]

#: Upper bound on HTTP requests of :func:`remote_wheel_size` / :func:`read_remote_metadata`.
MAX_REQUESTS = 6
#: Size of a zip local file header before its name and extra field.
LFH_SIZE = 30
#: Bytes asked for beyond a local header's fixed part, for its name and extra field.
LFH_SLACK = 1024
#: Largest member :meth:`RemoteWheel.read_member` reads whole (METADATA is a few KB).
SMALL_MEMBER_LIMIT = 4 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class RangesIgnored(Exception):
    """The server ignores ``Range`` and the caller did not want the whole file."""

    def __init__(self, url: str) -> None:
        super().__init__(f"{url}: the server ignores HTTP Range requests")
        self.url = url


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
    bytes_received: int = 0  # body bytes received over HTTP


def size_from_members(
    url: str,
    zipped: int,
    members: list[ZipMember],
    *,
    top: int,
    requests: int,
    ranged: bool,
    bytes_received: int = 0,
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
        bytes_received=bytes_received,
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
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        self.url = url
        self.allow_full = allow_full  # False: RangesIgnored instead of downloading it all
        self.client = client
        self.retries = retries
        self.backoff = backoff
        self.max_requests = max_requests
        self.requests = 0
        self.bytes_received = 0
        self.size = -1
        self.spans: list[tuple[int, bytes]] = []
        self.full: IO[bytes] | None = None  # the whole file when Range was ignored

    def close(self) -> None:
        if self.full is not None:
            self.full.close()

    def _count(self) -> None:
        if self.requests >= self.max_requests:
            raise NetworkError(f"{self.url}: more than {self.max_requests} requests needed")
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

    def _read_body(self, resp: httpx.Response, limit: int) -> bytes:
        """The body of a 206 answer, refusing more than ``limit`` bytes."""
        parts: list[bytes] = []
        got = 0
        for chunk in resp.iter_bytes(1 << 20):
            got += len(chunk)
            if got > limit:
                raise NetworkError(f"{self.url}: the server sent more than the range asked for")
            parts.append(chunk)
        self.bytes_received += got
        return b"".join(parts)

    def _take(self, resp: httpx.Response, asked: int) -> None:
        """Store a 206 span, or the whole 200 body in a temporary file."""
        try:
            if resp.status_code == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                if not m:
                    raise NetworkError(f"{self.url}: 206 answer without a usable Content-Range")
                start = int(m.group(1))
                if m.group(3) != "*":
                    self.size = int(m.group(3))
                self.spans.append((start, self._read_body(resp, asked)))
                return
            if not self.allow_full:
                raise RangesIgnored(self.url)
            full = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for read_at, closed in close()
            try:
                for chunk in resp.iter_bytes(1 << 20):
                    full.write(chunk)
                    self.bytes_received += len(chunk)
            except BaseException:
                full.close()
                raise
            self.size = full.tell()
            self.full = full
        except httpx.HTTPError as exc:
            raise NetworkError(f"{self.url}: download interrupted ({exc})") from None
        finally:
            resp.close()

    def open(self, tail: int = TAIL_READ) -> int:
        """First request: the last ``tail`` bytes of the file; returns the file size."""
        self._take(self._get(f"bytes=-{tail}"), tail)
        if self.size < 0:
            raise NetworkError(f"{self.url}: server did not say how large the file is")
        return self.size

    def available(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` from what was fetched (no request)."""
        if self.full is not None:
            self.full.seek(offset)
            return self.full.read(length)
        best = b""
        for start, data in self.spans:
            if start <= offset < start + len(data):
                piece = data[offset - start : offset - start + length]
                if len(piece) > len(best):
                    best = piece
        return best

    def fetch(self, start: int, end: int) -> None:
        """Fetch bytes ``start`` to ``end`` (exclusive) with one request."""
        end = min(end, self.size)
        if end <= start or self.full is not None:
            return
        self._take(self._get(f"bytes={start}-{end - 1}"), end - start)

    def read_at(self, offset: int, length: int) -> bytes:
        have = self.available(offset, length)
        if len(have) >= min(length, max(0, self.size - offset)):
            return have
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        self.fetch(offset, end)
        if self.full is not None:  # the server stopped honouring Range
            return self.available(offset, length)
        start, data = self.spans[-1]
        if start > offset or start + len(data) < end:
            raise NetworkError(f"{self.url}: server answered a different byte range")
        return data[offset - start : offset - start + length]


class _LocalReader:
    """The :class:`_RangeReader` interface over a local file (no requests)."""

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise NetworkError(f"{url}: cannot read ({exc.strerror})") from None
        self.size = os.fstat(self.fd).st_size
        self.requests = 0
        self.bytes_received = 0
        self.full: IO[bytes] | None = None

    def close(self) -> None:
        if self.fd >= 0:  # idempotent: a second close must not hit a reused descriptor
            os.close(self.fd)
            self.fd = -1

    def open(self, tail: int = TAIL_READ) -> int:
        return self.size

    def available(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def fetch(self, start: int, end: int) -> None:
        """Nothing to fetch: the file is here."""

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)


class RemoteWheel:
    """A wheel at ``url`` whose central directory has been read by HTTP ranges.

    ``client`` is the ``httpx.Client`` to use (one is made and owned otherwise); local paths
    and ``file://`` URLs are read in place (no requests). ``max_requests`` bounds the requests
    this object may make in all (retries included); ``allow_full`` lets a server that ignores
    ``Range`` send the whole file (spooled to a temporary file) instead of raising
    :class:`RangesIgnored`. ``tail`` is what the first request asks for (64 KiB: a small
    wheel's central directory, or the end of a big one's). Raises
    :class:`~torchwheel.errors.NetworkError` when the URL cannot be read and
    :class:`~torchwheel.errors.ArchiveError` when it is not a readable zip. Use as a context
    manager (or call :meth:`close`).
    """

    def __init__(
        self,
        url: str,
        client: httpx.Client | None = None,
        *,
        max_requests: int = MAX_REQUESTS,
        allow_full: bool = False,
        retries: int = 2,
        backoff: float = 0.2,
        tail: int = TAIL_READ,
    ) -> None:
        self.url = url
        self._own_client = False
        local = local_path(url)
        self._reader: _RangeReader | _LocalReader
        if local is not None:
            self._reader = _LocalReader(url, str(local))
        else:
            self._own_client = client is None
            http = client or make_client()
            self._reader = _RangeReader(
                url, http, retries, backoff, allow_full=allow_full, max_requests=max_requests
            )
        try:
            self.size = self._reader.open(tail)
            self.members = read_central_directory(self._reader.read_at, self.size, source=url)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release the temporary file / descriptor and an owned client."""
        self._reader.close()
        if self._own_client and isinstance(self._reader, _RangeReader):
            self._reader.client.close()

    def __enter__(self) -> RemoteWheel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- counters ----------------------------------------------------------------------------

    @property
    def local(self) -> bool:
        """True when the wheel is a local file (read in place, no requests)."""
        return isinstance(self._reader, _LocalReader)

    @property
    def requests(self) -> int:
        """HTTP requests made so far (retries included; 0 for local files)."""
        return self._reader.requests

    @property
    def bytes_received(self) -> int:
        """Body bytes received over HTTP so far."""
        return self._reader.bytes_received

    @property
    def ranged(self) -> bool:
        """False when the server ignored ``Range`` and the whole file was downloaded."""
        return self._reader.full is None

    @property
    def requests_left(self) -> int:
        """How many more requests this object may make."""
        if isinstance(self._reader, _LocalReader):
            return 1 << 30
        return self._reader.max_requests - self._reader.requests

    # -- reading -----------------------------------------------------------------------------

    def size_report(self, *, top: int = 10) -> RemoteSize:
        """Zipped and unzipped size and the ``top`` largest members."""
        return size_from_members(
            self.url,
            self.size,
            self.members,
            top=top,
            requests=self.requests,
            ranged=self.ranged,
            bytes_received=self.bytes_received,
        )

    def member(self, name: str) -> ZipMember | None:
        """The central-directory entry called ``name``, or None."""
        return next((m for m in self.members if m.name == name), None)

    def metadata_member(self) -> ZipMember | None:
        """The wheel's ``*.dist-info/METADATA`` entry (None unless there is exactly one)."""
        meta = [
            m
            for m in self.members
            if m.name.count("/") == 1
            and m.name.split("/")[0].endswith(".dist-info")
            and m.name.endswith("/METADATA")
        ]
        return meta[0] if len(meta) == 1 else None

    def fetch(self, start: int, end: int) -> None:
        """Fetch the bytes ``start`` to ``end`` (exclusive) with one request (local: nothing)."""
        self._reader.fetch(start, end)

    def available(self, offset: int, length: int) -> bytes:
        """Up to ``length`` fetched bytes at ``offset`` (no request)."""
        return self._reader.available(offset, length)

    def data_offset(self, member: ZipMember) -> int | None:
        """Where ``member``'s data starts, from its local header if that was fetched."""
        head = self.available(member.header_offset, LFH_SIZE)
        if len(head) < LFH_SIZE:
            return None
        if head[:4] != b"PK\x03\x04":
            raise ArchiveError(f"{self.url}: {member.name}: bad local header")
        nlen, xlen = struct.unpack_from("<2H", head, 26)
        return member.header_offset + LFH_SIZE + int(nlen) + int(xlen)

    def read_member(self, member: ZipMember, *, limit: int = SMALL_MEMBER_LIMIT) -> bytes:
        """The whole (small) member, inflated and CRC-checked: one request for header + data.

        Raises :class:`ArchiveError` for a member over ``limit`` bytes, an unsupported
        compression method or corrupt data.
        """
        label = f"{self.url}: {member.name}"
        if member.file_size > limit or member.compressed_size > limit:
            raise ArchiveError(f"{label}: {member.file_size:,} bytes, more than {limit:,}")
        if member.compress_type not in (ZIP_STORED, ZIP_DEFLATED):
            raise ArchiveError(f"{label}: unsupported compression method {member.compress_type}")
        end = member.header_offset + LFH_SIZE + LFH_SLACK + member.compressed_size
        if self.data_offset(member) is None:
            self.fetch(member.header_offset, end)
        start = self.data_offset(member)
        if start is None:
            raise NetworkError(f"{label}: local header not received")
        raw = self._reader.read_at(start, member.compressed_size)
        if len(raw) < member.compressed_size:
            raise ArchiveError(f"{label}: truncated member")
        # at most one byte more than the recorded size is inflated (a deflate bomb whose
        # central directory claims a few bytes costs no more than it claims)
        return inflate_whole(raw, member, label)


def read_remote_metadata(
    client: httpx.Client, url: str, *, retries: int = 2, backoff: float = 0.2
) -> bytes | None:
    """``*.dist-info/METADATA`` of the wheel at ``url``, read with HTTP range requests.

    Typically 2 requests: the archive tail (central directory), then the member. Returns None
    when the server ignores ``Range`` (the caller then downloads the wheel, verified and
    cached) or the wheel has no single METADATA; raises :class:`ArchiveError` for a corrupt
    member and :class:`NetworkError` when the URL cannot be read.
    """
    try:
        with RemoteWheel(url, client, retries=retries, backoff=backoff) as rw:
            member = rw.metadata_member()
            if member is None or member.compress_type not in (ZIP_STORED, ZIP_DEFLATED):
                return None
            return rw.read_member(member)
    except RangesIgnored:
        return None


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
    with RemoteWheel(url, client, allow_full=True, retries=retries, backoff=backoff) as rw:
        return rw.size_report(top=top)
