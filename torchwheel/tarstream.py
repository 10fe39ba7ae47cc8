"""A bounded, streaming tar reader for container image layers (plain, gzip or zstd).

Layers of a container image are tar archives, usually gzip-compressed (OCI
``application/vnd.oci.image.layer.v1.tar+gzip``), sometimes zstd, uncompressed in ``docker
save`` output. :func:`open_layer_stream` picks the decompressor from the first bytes;
:class:`TarStream` walks the headers in one forward pass (ustar, GNU long names, POSIX pax
``path`` / ``linkpath`` / ``size``) and hands out each member's data as it goes by — nothing is
extracted, nothing is kept but the current header. Python's :mod:`tarfile` is not used: it
keeps every member it has seen (memory grows with the archive) and reads pax headers of any
declared size into memory.

Budgets (named, overridable per instance): an extended header (pax, GNU long name) over
:data:`MAX_EXTENDED_HEADER` bytes, a member over :data:`MAX_MEMBER_BYTES`, more than
:data:`MAX_MEMBERS` members, or a stream that inflates past ``max_bytes`` is an
:class:`~torchwheel.errors.ArchiveError` naming the source. Header checksums are verified.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from .errors import ArchiveError

_gzip: Any
try:  # ISA-L inflates gzip ~2x faster than zlib (a dependency where it has wheels)
    from isal import isal_zlib as _gzip
except ImportError:  # pragma: no cover - exercised only where isal is missing
    _gzip = zlib

__all__ = [
    "MAX_EXTENDED_HEADER",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "Decompressed",
    "TarMember",
    "TarStream",
    "gzip_backend",
    "looks_like_tar",
    "member_name",
    "open_layer_stream",
]

BLOCK = 512
#: Largest pax / GNU long-name header read into memory.
MAX_EXTENDED_HEADER = 1024 * 1024
#: Largest member accepted (Lambda images are at most 10 GB uncompressed in all).
MAX_MEMBER_BYTES = 16 * 1024**3
#: Most members in one layer.
MAX_MEMBERS = 2_000_000
#: Bytes read from the underlying stream per step (and most bytes one inflate call yields).
READ_STEP = 1024 * 1024
#: Compressed bytes fed to one inflate call.
FEED_STEP = 64 * 1024

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

REGULAR = "file"
DIRECTORY = "dir"
SYMLINK = "symlink"
HARDLINK = "hardlink"
OTHER = "other"

_TYPES = {
    b"0": REGULAR,
    b"\x00": REGULAR,
    b"7": REGULAR,
    b"1": HARDLINK,
    b"2": SYMLINK,
    b"5": DIRECTORY,
    b"3": OTHER,
    b"4": OTHER,
    b"6": OTHER,
}


@dataclass(frozen=True)
class TarMember:
    """One member: its name as stored, type, size, mode and link target."""

    name: str
    kind: str  # file / dir / symlink / hardlink / other
    size: int  # data bytes (0 for everything but regular files)
    mode: int
    linkname: str
    offset: int  # where its data starts in the (uncompressed) tar stream


def gzip_backend() -> str:
    """The gzip inflater in use: ``"isal"`` or ``"zlib"``."""
    return "zlib" if _gzip is zlib else "isal"


class Decompressed:
    """A forward-only reader over a gzip / zstd / plain stream, optionally hashing what it yields.

    ``read(n)`` returns up to ``n`` bytes (fewer only at the end); ``skip(n)`` discards, using
    ``seek`` on a plain seekable stream when nothing is being hashed. ``sha256`` (when asked for)
    covers every uncompressed byte read or skipped — a layer's ``diff_id``.
    """

    def __init__(
        self,
        raw: BinaryIO,
        *,
        source: str,
        hash_content: bool = False,
        max_bytes: int = MAX_MEMBER_BYTES * 4,
    ) -> None:
        self.source = source
        self.raw = raw
        self.max_bytes = max_bytes
        self.pos = 0  # uncompressed bytes consumed
        self.seeked = 0  # of which skipped by seeking (never read)
        self._hasher: Any = hashlib.sha256() if hash_content else None
        self._buf = b""  # the current chunk; self._off: how much of it was consumed
        self._off = 0
        head = raw.read(4)
        self.compression = (
            "gzip" if head[:2] == GZIP_MAGIC else "zstd" if head == ZSTD_MAGIC else "none"
        )
        self._chunks = self._chunk_iter(head)

    @property
    def digest(self) -> str | None:
        """``sha256:<hex>`` of the uncompressed bytes so far (when hashing)."""
        return None if self._hasher is None else "sha256:" + self._hasher.hexdigest()

    def _chunk_iter(self, head: bytes) -> Iterator[bytes]:
        if self.compression == "gzip":
            return self._gzip_chunks(head)
        if self.compression == "zstd":
            return self._zstd_chunks(head)
        return self._plain_chunks(head)

    def _plain_chunks(self, head: bytes) -> Iterator[bytes]:
        if head:
            yield head
        while True:
            data = self.raw.read(READ_STEP)
            if not data:
                return
            yield data

    def _gzip_chunks(self, head: bytes) -> Iterator[bytes]:
        """Inflate gzip members one after another (pigz and docker concatenate them).

        Input is fed :data:`FEED_STEP` bytes at a time with output capped at
        :data:`READ_STEP` per call: memory stays bounded whatever the ratio, and the
        ``unconsumed_tail`` copied between calls stays small.
        """
        d = _gzip.decompressobj(31)
        data = head
        while True:
            if not data:
                data = self.raw.read(READ_STEP)
                if not data:
                    if not d.eof:
                        raise ArchiveError(f"{self.source}: truncated gzip stream")
                    return
            rest: bytes | None = None
            pos = 0
            while pos < len(data) and rest is None:
                pending = data[pos : pos + FEED_STEP]
                pos += FEED_STEP
                while pending:
                    try:
                        out = d.decompress(pending, READ_STEP)
                    except _gzip.error as exc:
                        raise ArchiveError(f"{self.source}: corrupt gzip stream ({exc})") from None
                    pending = d.unconsumed_tail
                    if out:
                        yield out
                    if d.eof:
                        rest = d.unused_data + pending + data[pos:]
                        break
            data = b""
            if rest is None:
                continue
            if not rest:
                rest = self.raw.read(READ_STEP)
            if rest.strip(b"\x00") == b"":
                return  # the end, or zero padding after the last gzip member
            d = _gzip.decompressobj(31)  # the next concatenated member
            data = rest

    def _zstd_chunks(self, head: bytes) -> Iterator[bytes]:
        try:
            import zstandard
        except ImportError:  # pragma: no cover - zstandard is a dependency
            raise ArchiveError(
                f"{self.source}: zstd layer, and zstandard is not installed"
            ) from None

        class _Prefixed:
            def __init__(self, first: bytes, rest: BinaryIO) -> None:
                self.first, self.rest = first, rest

            def read(self, n: int = -1) -> bytes:
                if self.first:
                    out, self.first = self.first, b""
                    return out
                return self.rest.read(n)

        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, _Prefixed(head, self.raw)), read_across_frames=True
        )
        while True:
            try:
                out = reader.read(READ_STEP)
            except zstandard.ZstdError as exc:
                raise ArchiveError(f"{self.source}: corrupt zstd stream ({exc})") from None
            if not out:
                return
            yield out

    def _account(self, out: bytes) -> bytes:
        self.pos += len(out)
        if self.pos > self.max_bytes:
            raise ArchiveError(
                f"{self.source}: inflates past {self.max_bytes:,} bytes; refusing to read on"
            )
        if self._hasher is not None:
            self._hasher.update(out)
        return out

    def read_some(self, limit: int) -> bytes:
        """At least one byte unless at the end, at most ``limit``: whatever is at hand."""
        if self._off >= len(self._buf):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._buf, self._off = b"", 0
                return b""
            self._buf, self._off = chunk, 0
        if self._off == 0 and limit >= len(self._buf):
            out = self._buf  # the whole chunk: no copy
        else:
            out = self._buf[self._off : self._off + limit]
        self._off += len(out)
        return self._account(out)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the stream)."""
        parts = []
        while n > 0:
            got = self.read_some(n)
            if not got:
                break
            parts.append(got)
            n -= len(got)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def skip(self, n: int) -> None:
        """Discard ``n`` bytes (seek past them when the stream is plain and not hashed)."""
        buffered = len(self._buf) - self._off
        if (
            self.compression == "none"
            and self._hasher is None
            and n > buffered + READ_STEP
            and _seekable(self.raw)
        ):
            target = self.raw.tell() + n - buffered
            if target > self.raw.seek(0, io.SEEK_END):  # a seek past the end reads nothing
                raise ArchiveError(f"{self.source}: truncated tar data")
            self.raw.seek(target)
            self.pos += n
            self.seeked += n - buffered
            self._buf, self._off = b"", 0
            return
        while n > 0:
            got = self.read_some(min(n, READ_STEP))
            if not got:
                raise ArchiveError(f"{self.source}: truncated tar data")
            n -= len(got)

    def drain(self) -> None:
        """Read to the end (so that the digest covers the whole stream)."""
        while self.read_some(READ_STEP):
            pass


def _seekable(raw: BinaryIO) -> bool:
    try:
        return bool(raw.seekable())
    except (AttributeError, OSError):
        return False


def open_layer_stream(
    raw: BinaryIO, *, source: str, hash_content: bool = False, max_bytes: int | None = None
) -> Decompressed:
    """A :class:`Decompressed` reader of a layer blob, compression told from its first bytes."""
    if max_bytes is None:
        return Decompressed(raw, source=source, hash_content=hash_content)
    return Decompressed(raw, source=source, hash_content=hash_content, max_bytes=max_bytes)


def _number(field: bytes, what: str, source: str) -> int:
    """A tar numeric field: octal text, or GNU base-256 when the top bit is set."""
    if field and field[0] & 0x80:
        value = field[0] & 0x7F
        for b in field[1:]:
            value = (value << 8) | b
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ArchiveError(f"{source}: corrupt tar header ({what} {text[:20]!r})") from None


def _checksum_ok(block: bytes) -> bool:
    stored = block[148:156].split(b"\x00", 1)[0].strip(b" ")
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    rest = block[:148] + block[156:]
    unsigned = sum(rest) + 8 * 32
    if want == unsigned:
        return True
    high = sum(1 for b in rest if b > 127)  # old writers summed signed chars
    return want == unsigned - 256 * high


def member_name(name: str) -> str | None:
    """A tar member name as a relative path (``./a/b/`` → ``a/b``); None for the root or ``..``."""
    clean = posixpath.normpath("/" + name.replace("\\", "/")).lstrip("/")
    if not clean or clean == ".":
        return None
    if ".." in name.split("/"):
        return None
    return clean


def looks_like_tar(head: bytes) -> bool:
    """True when ``head`` (a file's first 512 bytes) is a tar header with a valid checksum."""
    return len(head) >= BLOCK and head[:BLOCK] != bytes(BLOCK) and _checksum_ok(head[:BLOCK])


def _cstr(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes, source: str) -> dict[str, str]:
    """``"LEN key=value\\n"`` records of a pax extended header."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ArchiveError(f"{source}: corrupt pax header") from None
        if length <= 0 or pos + length > len(data):
            raise ArchiveError(f"{source}: corrupt pax header (record length {length})")
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class TarStream:
    """Iterate a tar stream's members; read each member's data before asking for the next.

    Usage::

        tar = TarStream(stream, source="layer sha256:…")
        for m in tar:
            if m.kind == "file" and wanted(m):
                for chunk in tar.chunks():
                    ...
    """

    def __init__(
        self,
        stream: Decompressed,
        *,
        source: str,
        max_members: int = MAX_MEMBERS,
        max_member_bytes: int = MAX_MEMBER_BYTES,
        max_extended: int = MAX_EXTENDED_HEADER,
    ) -> None:
        self.stream = stream
        self.source = source
        self.max_members = max_members
        self.max_member_bytes = max_member_bytes
        self.max_extended = max_extended
        self.members = 0
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0  # padding after the current member's data

    def _block(self) -> bytes | None:
        block = self.stream.read(BLOCK)
        if not block:
            return None
        if len(block) < BLOCK:
            raise ArchiveError(f"{self.source}: truncated tar header")
        return block

    def _extended(self, size: int, what: str) -> bytes:
        if size > self.max_extended:
            raise ArchiveError(
                f"{self.source}: {what} header of {size:,} bytes is over the "
                f"{self.max_extended:,}-byte limit"
            )
        data = self.stream.read(size)
        if len(data) < size:
            raise ArchiveError(f"{self.source}: truncated {what} header")
        self.stream.skip(-size % BLOCK)
        return data

    def _finish_member(self) -> None:
        self.stream.skip(self._left + self._pad)
        self._left = self._pad = 0

    def __iter__(self) -> Iterator[TarMember]:
        pax: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        while True:
            self._finish_member()
            block = self._block()
            if block is None or block == bytes(BLOCK):
                return  # end of archive (two zero blocks, or a writer that stopped short)
            if not _checksum_ok(block):
                raise ArchiveError(
                    f"{self.source}: corrupt tar header at byte {self.stream.pos - BLOCK:,}"
                )
            size = _number(block[124:136], "size", self.source)
            typeflag = block[156:157]
            if typeflag in (b"x", b"g"):
                records = _pax_records(self._extended(size, "pax"), self.source)
                if typeflag == b"x":
                    pax = records
                continue
            if typeflag in (b"L", b"K"):
                text = _cstr(self._extended(size, "GNU long name"))
                if typeflag == b"L":
                    long_name = text
                else:
                    long_link = text
                continue
            yield self._member(block, size, typeflag, pax, long_name, long_link)
            pax, long_name, long_link = {}, None, None

    def _member(
        self,
        block: bytes,
        size: int,
        typeflag: bytes,
        pax: dict[str, str],
        long_name: str | None,
        long_link: str | None,
    ) -> TarMember:
        self.members += 1
        if self.members > self.max_members:
            raise ArchiveError(f"{self.source}: more than {self.max_members:,} members")
        name = _cstr(block[0:100])
        if block[257:263] == b"ustar\x00" and block[345]:  # POSIX prefix (not GNU's ustar  )
            name = _cstr(block[345:500]) + "/" + name
        name = pax.get("path", long_name if long_name is not None else name)
        linkname = pax.get(
            "linkpath", long_link if long_link is not None else _cstr(block[157:257])
        )
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise ArchiveError(f"{self.source}: corrupt pax size for {name!r}") from None
        if typeflag == b"S" or size < 0:
            raise ArchiveError(f"{self.source}: {name}: sparse or negative-size member")
        if size > self.max_member_bytes:
            raise ArchiveError(
                f"{self.source}: {name}: {size:,} bytes is over the "
                f"{self.max_member_bytes:,}-byte member limit"
            )
        kind = _TYPES.get(typeflag, OTHER)
        self._left = size
        self._pad = -size % BLOCK
        return TarMember(
            name=name,
            kind=kind,
            size=size if kind == REGULAR else 0,
            mode=_number(block[100:108], "mode", self.source) & 0o7777,
            linkname=linkname,
            offset=self.stream.pos,
        )

    def chunks(self, step: int = READ_STEP) -> Iterator[bytes]:
        """The current member's data, in pieces (stops early if the caller stops)."""
        while self._left > 0:
            data = self.stream.read_some(min(step, self._left))
            if not data:
                raise ArchiveError(f"{self.source}: truncated tar data")
            self._left -= len(data)
            yield data

    def read_all(self, limit: int) -> bytes:
        """The whole current member (refusing one over ``limit`` bytes)."""
        if self._left > limit:
            raise ArchiveError(f"{self.source}: member of {self._left:,} bytes is over {limit:,}")
        return b"".join(self.chunks())
