"""Inflate one zip member as a stream, with its CRC-32 checked at the end.

:class:`MemberStream` reads a member's compressed bytes through a ``_pread(offset, length)``
callable (a :class:`~torchwheel.zipread.ZipReader`), inflating with ``isal.isal_zlib`` when it
is importable (several times faster than zlib) and stdlib ``zlib`` otherwise. Memory per step
is bounded (``_IN_STEP`` in, ``_OUT_STEP`` out), whatever the member claims.
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
    "MemberInfo",
    "MemberStream",
    "RandomAccess",
    "crc32",
    "decompressobj",
    "inflate_backend",
    "inflate_errors",
]

ZIP_STORED = 0
ZIP_DEFLATED = 8
#: Compression methods :class:`MemberStream` can stream.
SUPPORTED_METHODS = frozenset({ZIP_STORED, ZIP_DEFLATED})
#: Size of uncompressed chunks produced for stored members.
CHUNK = 1 << 20

_zlib: ModuleType
try:  # isal is an optional, much faster inflate with the zlib API
    from isal import isal_zlib as _isal_zlib

    _zlib = _isal_zlib
except ImportError:  # pragma: no cover - exercised only where isal is missing
    _zlib = zlib

#: What a corrupt deflate stream raises, whichever inflater is in use.
inflate_errors: tuple[type[Exception], ...] = tuple({zlib.error, _zlib.error})


def inflate_backend() -> str:
    """The inflate implementation in use: ``"isal"`` or ``"zlib"``."""
    return "isal" if _zlib is not zlib else "zlib"


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
    """A raw-deflate decompressor (isal when installed)."""
    return _zlib.decompressobj(-15)


crc32: Callable[[bytes, int], int] = _zlib.crc32

#: Compressed bytes fed to the inflater per step (small: ``unconsumed_tail`` is copied).
_IN_STEP = 256 * 1024
#: Most bytes one inflate step may produce (bounds memory on highly compressible members).
_OUT_STEP = 2 * 1024 * 1024


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
        self._restart()

    def _restart(self) -> None:
        self._in_pos = 0  # compressed bytes consumed
        self._produced = 0  # uncompressed bytes produced so far
        self._crc = 0  # running CRC-32; -1 once random access made it meaningless
        self._tail = b""
        self._done = False
        self._buf = b""
        self._buf_pos = 0
        self._d = decompressobj() if self._m.compress_type == ZIP_DEFLATED else None

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
        """Compressed bytes to feed next: the inflater's leftover, or a fresh read."""
        if self._tail:
            return self._tail
        m = self._m
        if self._in_pos >= m.compressed_size:
            return b""
        n = min(_IN_STEP, m.compressed_size - self._in_pos)
        data = self._reader._pread(self._start + self._in_pos, n)
        if len(data) < n:
            raise ArchiveError(f"{self._label}: truncated member data")
        self._in_pos += n
        return data

    def _next_deflated(self, d: Any) -> bytes:
        while True:
            data = self._next_input()
            try:
                if data:
                    out: bytes = d.decompress(data, _OUT_STEP)
                    self._tail = d.unconsumed_tail
                else:
                    out = d.flush()
                    self._tail = b""
            except inflate_errors as exc:
                raise ArchiveError(f"{self._label}: corrupt deflate data ({exc})") from None
            if out:
                self._produced += len(out)
                self._crc = crc32(out, self._crc)
                if self._produced > self._m.file_size:
                    raise ArchiveError(
                        f"{self._label}: inflates to more than its recorded size "
                        f"{self._m.file_size}"
                    )
                if d.eof and not self._tail:
                    self._finish()
                return out
            if d.eof or not data:
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
        if self._crc >= 0 and (self._crc & 0xFFFFFFFF) != m.crc:
            raise ArchiveError(
                f"{self._label}: CRC-32 mismatch (expected {m.crc:08x}, got "
                f"{self._crc & 0xFFFFFFFF:08x})"
            )
