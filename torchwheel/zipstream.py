"""Inflate one zip member as a stream, with its CRC-32 checked at the end.

:class:`MemberStream` reads a member's compressed bytes through a ``_pread(offset, length)``
callable (a :class:`~torchwheel.zipread.ZipReader`); :func:`inflate_whole` inflates a member
already in memory. Both inflate with ISA-L (python-isal's ``igzip_lib.IgzipDecompressor``,
which computes the CRC-32 while it writes the output) when ``isal`` is importable, and with
stdlib ``zlib`` (inflate, then ``zlib.crc32`` over the output) otherwise: on the torch layer
ISA-L inflates about 2.3x faster. Both release the GIL while they work, so members inflate in
parallel on threads. Memory per step is bounded (``_IN_STEP`` in, ``_OUT_STEP`` out), whatever
the member claims.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, Protocol

from .errors import ArchiveError

__all__ = [
    "CHUNK",
    "SUPPORTED_METHODS",
    "ZIP_DEFLATED",
    "ZIP_STORED",
    "Inflater",
    "MemberInfo",
    "MemberStream",
    "RandomAccess",
    "crc32",
    "decompressobj",
    "inflate_backend",
    "inflate_errors",
    "inflate_whole",
    "new_inflater",
]

ZIP_STORED = 0
ZIP_DEFLATED = 8
#: Compression methods :class:`MemberStream` can stream.
SUPPORTED_METHODS = frozenset({ZIP_STORED, ZIP_DEFLATED})
#: Size of uncompressed chunks produced for stored members.
CHUNK = 4 << 20

_zlib: ModuleType
_igzip: ModuleType | None
try:  # isal (a dependency where it has wheels): ISA-L's inflate, CRC-32 computed as it goes
    from isal import igzip_lib as _igzip_lib
    from isal import isal_zlib as _isal_zlib

    _zlib, _igzip = _isal_zlib, _igzip_lib
except ImportError:  # pragma: no cover - exercised only where isal is missing
    _zlib, _igzip = zlib, None

#: What a corrupt deflate stream raises, whichever inflater is in use.
inflate_errors: tuple[type[Exception], ...] = tuple({zlib.error, _zlib.error})


def inflate_backend() -> str:
    """The inflate implementation in use: ``"isal"`` or ``"zlib"``."""
    return "isal" if _igzip is not None else "zlib"


class RandomAccess(Protocol):
    """What a member stream reads from: a named source with positional reads."""

    source: str

    def _pread(self, offset: int, length: int) -> bytes: ...


class MemberInfo(Protocol):
    """The central-directory facts a member stream needs."""

    @property
    def name(self) -> str: ...
    @property
    def compress_type(self) -> int: ...
    @property
    def compressed_size(self) -> int: ...
    @property
    def file_size(self) -> int: ...
    @property
    def crc(self) -> int: ...
    @property
    def is_encrypted(self) -> bool: ...


def decompressobj() -> Any:
    """A raw-deflate decompressor with zlib's interface (isal when installed)."""
    return _zlib.decompressobj(-15)


crc32: Callable[[bytes, int], int] = _zlib.crc32


class Inflater(Protocol):
    """A raw-deflate inflater with the ``bz2``-style interface of ``IgzipDecompressor``.

    ``decompress(data, max_length)`` buffers what it cannot consume yet; ``needs_input`` is
    False while it can produce more without new input; ``crc`` is the CRC-32 of everything
    produced so far.
    """

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def crc(self) -> int: ...
    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class _ZlibInflater:
    """:class:`Inflater` over stdlib ``zlib`` (the CRC-32 computed over each output piece)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(-15)
        self._tail = b""
        self._full = False  # the last call filled max_length: more may be pending
        self.crc = 0
        self.eof = False

    @property
    def needs_input(self) -> bool:
        return not (self.eof or self._tail or self._full)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._tail:
            data = self._tail + data if data else self._tail
        out: bytes = self._d.decompress(data, max_length)
        self._tail = self._d.unconsumed_tail
        self._full = len(out) >= max_length
        self.eof = self._d.eof
        self.crc = zlib.crc32(out, self.crc)
        return out


def new_inflater() -> Inflater:
    """A fresh raw-deflate :class:`Inflater` (ISA-L when installed, else zlib)."""
    if _igzip is not None:
        return _igzip.IgzipDecompressor(flag=_igzip.DECOMP_GZIP_NO_HDR)  # type: ignore[no-any-return]
    return _ZlibInflater()


def inflate_whole(raw: bytes, member: MemberInfo, label: str) -> bytes:
    """The content of ``member`` from its complete compressed bytes ``raw``, CRC-checked.

    Inflates at most one byte more than the member's recorded size (a member that lies about
    its size costs no more than it claims). Raises :class:`ArchiveError` naming ``label``.
    """
    size = member.file_size
    if member.compress_type == ZIP_STORED:
        _stored_sizes_agree(len(raw), size, label)
        out = raw
        crc = crc32(out, 0)
    elif member.compress_type == ZIP_DEFLATED:
        d = new_inflater()
        try:
            out = d.decompress(raw, size + 1)
        except inflate_errors as exc:
            raise ArchiveError(f"{label}: corrupt deflate data ({exc})") from None
        crc = d.crc
    else:
        raise ArchiveError(f"{label}: unsupported compression method {member.compress_type}")
    if len(out) != size:
        raise ArchiveError(f"{label}: truncated or corrupt member ({len(out)} of {size} bytes)")
    if crc & 0xFFFFFFFF != member.crc:
        raise ArchiveError(
            f"{label}: CRC-32 mismatch (expected {member.crc:08x}, got {crc & 0xFFFFFFFF:08x})"
        )
    return out


def _stored_sizes_agree(stored: int, recorded: int, label: str) -> None:
    """A stored member's data is its content: a recorded size past its compressed size would
    read the next member's bytes as this one's (``zipfile`` reads only the stored bytes)."""
    if stored != recorded:
        raise ArchiveError(
            f"{label}: stored member of {stored:,} bytes records {recorded:,} uncompressed"
        )


#: Compressed bytes read per step (the inflater keeps what it cannot consume yet).
_IN_STEP = 1024 * 1024
#: Most bytes one inflate step may produce (bounds memory on highly compressible members;
#: large enough that an inflate call, which releases the GIL, outweighs the Python around it).
_OUT_STEP = 4 * 1024 * 1024


class MemberStream(io.BufferedIOBase):
    """Read-only stream over one member; seekable (forward by skipping, backward by restart).

    :meth:`chunks` yields the remaining bytes in the inflater's natural pieces (no copies),
    the fastest way to hash a whole member.
    """

    def __init__(self, reader: RandomAccess, member: MemberInfo, data_offset: int) -> None:
        super().__init__()
        self._reader = reader
        self._m = member
        self._start = data_offset
        self._label = f"{reader.source}: {member.name}"
        if member.is_encrypted:
            raise ArchiveError(f"{self._label}: encrypted members are not supported")
        if member.compress_type not in SUPPORTED_METHODS:
            raise ArchiveError(
                f"{self._label}: unsupported compression method {member.compress_type} "
                "(only stored and deflate)"
            )
        if member.compress_type == ZIP_STORED:
            _stored_sizes_agree(member.compressed_size, member.file_size, self._label)
        self._restart()

    def _restart(self) -> None:
        self._in_pos = 0  # compressed bytes consumed
        self._produced = 0  # uncompressed bytes produced so far
        self._crc = 0  # running CRC-32 (stored members); -1 once random access made it moot
        self._done = False
        self._buf = b""
        self._buf_pos = 0
        self._d = new_inflater() if self._m.compress_type == ZIP_DEFLATED else None

    # -- io protocol ------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._produced - (len(self._buf) - self._buf_pos)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.tell()
        elif whence == io.SEEK_END:
            offset += self._m.file_size
        elif whence != io.SEEK_SET:
            raise ValueError(f"bad whence {whence}")
        offset = max(0, min(offset, self._m.file_size))
        buf_start = self._produced - len(self._buf)
        if buf_start <= offset <= self._produced:
            self._buf_pos = offset - buf_start
            return offset
        if self._d is None:  # stored: random access (the CRC can no longer be checked)
            self._produced = offset
            self._buf = b""
            self._buf_pos = 0
            self._crc = -1
            self._done = False
            return offset
        if offset < buf_start:
            self._restart()
        self._buf = b""
        self._buf_pos = 0
        while self._produced < offset:
            chunk = self._next_chunk()
            if not chunk:
                break
            if self._produced > offset:
                self._buf = chunk
                self._buf_pos = len(chunk) - (self._produced - offset)
        return self.tell()

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(self.chunks())
        parts: list[bytes] = []
        got = 0
        while got < size:
            piece = self.read1(size - got)
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _OUT_STEP
        if size == 0:
            return b""
        if self._buf_pos >= len(self._buf):
            self._buf = self._next_chunk()
            self._buf_pos = 0
            if not self._buf:
                return b""
        start = self._buf_pos
        if start == 0 and size >= len(self._buf):
            piece = self._buf
        else:
            piece = self._buf[start : start + size]
        self._buf_pos = start + len(piece)
        return piece

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def chunks(self) -> Iterator[bytes]:
        """Yield the rest of the member in pieces; the CRC is checked after the last."""
        if self._buf_pos < len(self._buf):
            rest = self._buf[self._buf_pos :] if self._buf_pos else self._buf
            self._buf = b""
            self._buf_pos = 0
            yield rest
        self._buf = b""
        self._buf_pos = 0
        while True:
            chunk = self._next_chunk()
            if not chunk:
                return
            yield chunk

    # -- internals --------------------------------------------------------------------------
    def _next_chunk(self) -> bytes:
        """The next piece of uncompressed data (empty at the end of the member)."""
        if self._done:
            return b""
        return self._next_stored() if self._d is None else self._next_deflated(self._d)

    def _next_stored(self) -> bytes:
        m = self._m
        n = min(CHUNK, m.file_size - self._produced)
        if n <= 0:
            self._finish()
            return b""
        data = self._reader._pread(self._start + self._produced, n)
        if len(data) < n:
            raise ArchiveError(f"{self._label}: truncated member data")
        self._produced += n
        if self._crc >= 0:
            self._crc = crc32(data, self._crc)
        if self._produced >= m.file_size:
            self._finish()
        return data

    def _next_input(self) -> bytes:
        """The next compressed bytes to feed (empty when the member's data is used up)."""
        m = self._m
        if self._in_pos >= m.compressed_size:
            return b""
        n = min(_IN_STEP, m.compressed_size - self._in_pos)
        data = self._reader._pread(self._start + self._in_pos, n)
        if len(data) < n:
            raise ArchiveError(f"{self._label}: truncated member data")
        self._in_pos += n
        return data

    def _next_deflated(self, d: Inflater) -> bytes:
        starved = False  # a call without input gave nothing: feed it next time
        while not d.eof:
            data = b""
            if starved or d.needs_input:
                data = self._next_input()
                if not data:
                    break  # the data ran out before the deflate stream ended
            try:
                out = d.decompress(data, _OUT_STEP)
            except inflate_errors as exc:
                raise ArchiveError(f"{self._label}: corrupt deflate data ({exc})") from None
            if out:
                self._produced += len(out)
                if self._produced > self._m.file_size:
                    raise ArchiveError(
                        f"{self._label}: inflates to more than its recorded size "
                        f"{self._m.file_size}"
                    )
                if d.eof:
                    self._finish()
                return out
            starved = not data
        self._finish()
        return b""

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        m = self._m
        if self._produced != m.file_size:
            raise ArchiveError(
                f"{self._label}: truncated or corrupt member ({self._produced} of "
                f"{m.file_size} bytes)"
            )
        crc = self._crc if self._d is None else self._d.crc
        if crc >= 0 and (crc & 0xFFFFFFFF) != m.crc:
            raise ArchiveError(
                f"{self._label}: CRC-32 mismatch (expected {m.crc:08x}, got {crc & 0xFFFFFFFF:08x})"
            )
