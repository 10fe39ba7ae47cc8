"""A small streaming zip reader shared by ``check``, remote range reads and layer building.

Two entry points:

* :func:`read_central_directory` parses the end-of-central-directory records (ZIP64
  included) and the central directory through a ``read_at(offset, length)`` callable, so the
  same code serves a local file (``os.pread``) and a remote one (HTTP ``Range`` requests). It
  tries to need a single read: the last 64 KiB of the archive hold the end records and, for
  most archives, the whole central directory.
* :class:`ZipReader` opens a local zip file and streams members (:mod:`torchwheel.zipstream`
  inflates them and checks their CRC-32). Memory is bounded by what the caller asks for,
  never the archive.

Budgets (:class:`ZipLimits`, see docs/security.md): the central directory must describe
members that do not overlap (each member's local header and data end before the next one
starts: one stream shared by many entries is refused); a member whose declared size is more
than :data:`MAX_RATIO` times its compressed size (above :data:`RATIO_FLOOR` bytes) or more
than :data:`MAX_MEMBER` bytes is not opened; and one reader inflates at most
:data:`MAX_TOTAL_INFLATE` bytes over its life (every open of a member counts its declared
size). ``TORCHWHEEL_MAX_INFLATE`` and ``TORCHWHEEL_MAX_RATIO`` override the defaults.
:class:`ZipReader` opens regular files only, without blocking (a FIFO is refused, not read).

Member names are reported as they are: ``../x`` or ``/etc/passwd`` are not rejected here (the
``check`` command reports them); :func:`is_unsafe_name` says whether a name would escape the
extraction directory. Errors are :class:`~torchwheel.errors.ArchiveError` with a one-line
message starting with the source's name.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

from .errors import ArchiveError
from .limits import (
    MAX_MEMBER,
    MAX_RATIO,
    MAX_TOTAL_INFLATE,
    RATIO_FLOOR,
    ZipLimits,
    open_regular,
)
from .zipstream import (
    CHUNK,
    SUPPORTED_METHODS,
    ZIP_DEFLATED,
    ZIP_STORED,
    MemberStream,
    inflate_backend,
    inflate_whole,
)

__all__ = [
    "CHUNK",
    "MAX_MEMBER",
    "MAX_RATIO",
    "MAX_TOTAL_INFLATE",
    "RATIO_FLOOR",
    "SUPPORTED_METHODS",
    "ZIP_DEFLATED",
    "ZIP_STORED",
    "ZipLimits",
    "ZipMember",
    "ZipReader",
    "inflate_backend",
    "is_unsafe_name",
    "open_regular",
    "read_central_directory",
]


#: Bytes read from the end of an archive in the first request (EOCD + most central directories).
TAIL_READ = 64 * 1024

# sig, disk, cd disk, entries here, entries, cd size, cd offset, comment length
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_LOC64 = struct.Struct("<4sLQL")  # sig, disk with eocd64, eocd64 offset, disks
_LOC64_SIG = b"PK\x06\x07"
# sig, size, made by, needed, disk, cd disk, entries here, entries, cd size, cd offset
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIG = b"PK\x06\x06"
_CDH = struct.Struct("<4s4B4HL2L5H2L")
_CDH_SIG = b"PK\x01\x02"
_LFH = struct.Struct("<4s2B4HL2L2H")
_LFH_SIG = b"PK\x03\x04"
_U32_MAX = 0xFFFFFFFF
_U16_MAX = 0xFFFF


@dataclass(frozen=True)
class ZipMember:
    """One central-directory entry (sizes and offsets already resolved from ZIP64 extras)."""

    name: str
    compress_type: int
    compressed_size: int
    file_size: int
    crc: int
    header_offset: int
    external_attr: int
    create_system: int
    flag_bits: int

    @property
    def mode(self) -> int | None:
        """Unix mode bits (file type + permissions) when the archive recorded them, else None."""
        if self.create_system != 3:  # 3 = Unix
            return None
        mode = (self.external_attr >> 16) & 0xFFFF
        return mode or None

    @property
    def is_dir(self) -> bool:
        """True for directory entries (trailing ``/`` or a directory mode)."""
        if self.name.endswith("/"):
            return True
        mode = self.mode
        return mode is not None and stat.S_ISDIR(mode)

    @property
    def is_symlink(self) -> bool:
        """True when the entry is a Unix symbolic link (its data is the link target)."""
        mode = self.mode
        return mode is not None and stat.S_ISLNK(mode)

    @property
    def is_encrypted(self) -> bool:
        """True when the entry is encrypted (general-purpose flag bit 0)."""
        return bool(self.flag_bits & 0x1)


def is_unsafe_name(name: str) -> bool:
    """True when extracting ``name`` could write outside the target directory.

    Absolute paths (``/x``, ``\\x``), Windows drives (``C:``), ``..`` components (with ``/`` or
    ``\\`` separators) and NUL bytes are unsafe.
    """
    if not name or "\x00" in name:
        return True
    if name.startswith(("/", "\\")):
        return True
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        return True
    parts = name.replace("\\", "/").split("/")
    return any(p == ".." for p in parts)


def _find_eocd(tail: bytes, tail_start: int, size: int) -> int:
    """Index in ``tail`` of the EOCD record whose comment reaches the end of file; -1 if none."""
    pos = tail.rfind(_EOCD_SIG)
    fallback = -1
    while pos >= 0:
        if pos + _EOCD.size <= len(tail):
            comment_len = struct.unpack_from("<H", tail, pos + 20)[0]
            end = tail_start + pos + _EOCD.size + comment_len
            if end == size:
                return pos
            if end < size and fallback < 0:
                fallback = pos  # trailing garbage after the comment: accept like zipfile does
        pos = tail.rfind(_EOCD_SIG, 0, pos)
    return fallback


def _zip64_end(
    read: Callable[[int, int], bytes], tail: bytes, tail_start: int, eocd_abs: int, label: str
) -> tuple[tuple[int, int, int, int, int, int], int] | None:
    """The ZIP64 end record's (disk, cd disk, entries here, entries, cd size, cd offset) and
    its absolute position, or None when the archive has no ZIP64 locator."""

    def at(offset: int, length: int) -> bytes:
        if offset >= tail_start:
            return tail[offset - tail_start : offset - tail_start + length]
        return read(offset, length)

    loc_abs = eocd_abs - _LOC64.size
    if loc_abs < 0:
        return None
    loc = at(loc_abs, _LOC64.size)
    if loc[:4] != _LOC64_SIG:
        return None
    _s, _d, eocd64_rel, _disks = _LOC64.unpack(loc)
    # the EOCD64 record sits right before the locator (prepended data shifts offsets)
    eocd64_abs = loc_abs - _EOCD64.size
    if eocd64_abs < 0:
        raise ArchiveError(f"{label}: truncated archive (ZIP64 end record missing)")
    rec = at(eocd64_abs, _EOCD64.size)
    if rec[:4] != _EOCD64_SIG:
        # non-standard: an EOCD64 with extensible data; trust the locator's offset
        rec = read(eocd64_rel, _EOCD64.size)
        eocd64_abs = eocd64_rel
        if rec[:4] != _EOCD64_SIG:
            raise ArchiveError(f"{label}: corrupt ZIP64 end of central directory")
    (_s, _rs, _mb, _ne, disk, cd_disk, n_here, n_total, cd_size, cd_offset) = _EOCD64.unpack(rec)
    return (disk, cd_disk, n_here, n_total, cd_size, cd_offset), eocd64_abs


def read_central_directory(
    read_at: Callable[[int, int], bytes], size: int, *, source: str = ""
) -> list[ZipMember]:
    """Parse the central directory of a zip archive of ``size`` bytes.

    ``read_at(offset, length)`` returns the bytes at ``offset`` (fewer only at end of file).
    ZIP64 end records and extra fields, archive comments and data prepended before the zip
    (self-extracting archives) are handled. Raises :class:`ArchiveError` naming ``source`` for
    truncated archives, non-zips and inconsistent offsets.
    """
    label = source or "<zip>"
    if size < _EOCD.size:
        raise ArchiveError(f"{label}: not a zip archive ({size} bytes, too short)")

    def read(offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > size:
            raise ArchiveError(
                f"{label}: corrupt archive (a record points at {offset}+{length}, outside the "
                f"{size}-byte file)"
            )
        data = read_at(offset, length)
        if len(data) < length:
            raise ArchiveError(
                f"{label}: truncated archive (wanted {length} bytes at offset {offset}, "
                f"got {len(data)})"
            )
        return data

    tail_start = max(0, size - TAIL_READ)
    tail = read(tail_start, size - tail_start)
    pos = _find_eocd(tail, tail_start, size)
    if pos < 0 and tail_start > 0:
        # a comment longer than the first read: the EOCD is within 64 KiB + 22 bytes of the end
        wider_start = max(0, size - (_U16_MAX + _EOCD.size + _LOC64.size + _EOCD64.size))
        if wider_start < tail_start:
            tail = read(wider_start, tail_start - wider_start) + tail
            tail_start = wider_start
            pos = _find_eocd(tail, tail_start, size)
    if pos < 0:
        raise ArchiveError(f"{label}: not a zip archive (no end of central directory record)")

    (_sig, disk, cd_disk, n_here, n_total, cd_size, cd_offset, _clen) = _EOCD.unpack_from(tail, pos)
    eocd_abs = tail_start + pos
    cd_end_abs = eocd_abs  # where the central directory should end (before the end records)
    z64 = _zip64_end(read, tail, tail_start, eocd_abs, label)
    zip64 = z64 is not None
    if z64 is not None:
        (disk, cd_disk, n_here, n_total, cd_size, cd_offset), cd_end_abs = z64
    if disk != 0 or cd_disk != 0 or n_here != n_total:
        raise ArchiveError(f"{label}: multi-disk (split) archives are not supported")
    concat = cd_end_abs - cd_size - cd_offset
    if concat < 0:
        raise ArchiveError(
            f"{label}: inconsistent central directory (offset {cd_offset} + size {cd_size} "
            f"is past its end record at {cd_end_abs}; truncated?)"
        )
    cd_abs = cd_offset + concat
    if cd_abs >= tail_start and cd_abs + cd_size <= tail_start + len(tail):
        cd = tail[cd_abs - tail_start : cd_abs - tail_start + cd_size]
    else:
        cd = read(cd_abs, cd_size)
    members = _parse_cd(cd, n_total, concat, cd_abs, label, zip64)
    return members


def _zip64_extra(
    extra: bytes, file_size: int, csize: int, offset: int, label: str, name: str
) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, ln = struct.unpack_from("<2H", extra, i)
        body = extra[i + 4 : i + 4 + ln]
        if tag == 0x0001:
            j = 0
            try:
                if file_size == _U32_MAX:
                    (file_size,) = struct.unpack_from("<Q", body, j)
                    j += 8
                if csize == _U32_MAX:
                    (csize,) = struct.unpack_from("<Q", body, j)
                    j += 8
                if offset == _U32_MAX:
                    (offset,) = struct.unpack_from("<Q", body, j)
                    j += 8
            except struct.error:
                raise ArchiveError(f"{label}: {name}: corrupt ZIP64 extra field") from None
            break
        i += 4 + ln
    return file_size, csize, offset


def _parse_cd(
    cd: bytes, count: int, concat: int, cd_abs: int, label: str, zip64: bool
) -> list[ZipMember]:
    members: list[ZipMember] = []
    spans: list[tuple[int, int, str]] = []  # (local header offset, least end, name)
    pos = 0
    n = len(cd)
    unpack = _CDH.unpack_from
    hsize = _CDH.size
    while pos < n:
        if pos + hsize > n:
            raise ArchiveError(f"{label}: corrupt central directory (entry {len(members)} cut)")
        (
            sig,
            _cv,
            create_system,
            _ev,
            _r,
            flags,
            method,
            _t,
            _d,
            crc,
            csize,
            fsize,
            nlen,
            xlen,
            clen,
            _disk,
            _iattr,
            eattr,
            offset,
        ) = unpack(cd, pos)
        if sig != _CDH_SIG:
            raise ArchiveError(
                f"{label}: corrupt central directory (bad signature at entry {len(members)})"
            )
        start = pos + hsize
        end = start + nlen + xlen + clen
        if end > n:
            raise ArchiveError(f"{label}: corrupt central directory (entry {len(members)} cut)")
        raw_name = cd[start : start + nlen]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if _U32_MAX in (fsize, csize, offset):
            fsize, csize, offset = _zip64_extra(
                cd[start + nlen : start + nlen + xlen], fsize, csize, offset, label, name
            )
        offset += concat
        if offset + _LFH.size + csize > cd_abs:
            raise ArchiveError(
                f"{label}: {name}: inconsistent offsets (data at {offset} + {csize} bytes runs "
                f"into the central directory at {cd_abs})"
            )
        spans.append((offset, offset + _LFH.size + nlen + csize, name))
        members.append(
            ZipMember(
                name=name,
                compress_type=method,
                compressed_size=csize,
                file_size=fsize,
                crc=crc,
                header_offset=offset,
                external_attr=eattr,
                create_system=create_system,
                flag_bits=flags,
            )
        )
        pos = end
    # writers that skip ZIP64 for > 65535 entries let the 16-bit count wrap around
    if len(members) != count and (zip64 or count != len(members) & _U16_MAX):
        raise ArchiveError(
            f"{label}: corrupt central directory ({len(members)} entries, end record says {count})"
        )
    _check_overlaps(spans, label)
    return members


def _check_overlaps(spans: list[tuple[int, int, str]], label: str) -> None:
    """Refuse members whose local header + data run into the next member's (a zip bomb that
    inflates one stream through many entries, or a corrupt directory)."""
    spans.sort()
    for (start, end, name), (nxt, _e, other) in itertools.pairwise(spans):
        if end > nxt:
            raise ArchiveError(
                f"{label}: overlapping members: {name} (at {start}, through {end}) runs into "
                f"{other} (at {nxt}); refusing an archive whose entries share data"
            )


class ZipReader:
    """A local zip file: its central directory and streaming access to members.

    Thread-safe for concurrent :meth:`open` / :meth:`read` calls (reads use ``os.pread``).
    """

    def __init__(self, path: Path | str, *, limits: ZipLimits | None = None) -> None:
        self.path = Path(path)
        self.source = str(path)
        self.limits = limits if limits is not None else ZipLimits.from_env()
        self.inflated = 0  # declared bytes of every member opened so far (the budget)
        self._fd = open_regular(self.path, self.source)
        try:
            self.size = os.fstat(self._fd).st_size
            self.members: list[ZipMember] = read_central_directory(
                self._pread, self.size, source=self.source
            )
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._data_offsets: dict[int, int] = {}
        self._lock = threading.Lock()

    def _charge(self, m: ZipMember, amount: int | None = None) -> None:
        """Count ``m`` against the budgets before inflating it (see :class:`ZipLimits`)."""
        why = self.limits.refusal(m.file_size, m.compressed_size)
        if why is not None:
            raise ArchiveError(f"{self.source}: {m.name}: {why}")
        amount = m.file_size if amount is None else min(amount, m.file_size)
        with self._lock:
            self.inflated += amount
            total = self.inflated
        if total > self.limits.max_total:
            raise ArchiveError(
                f"{self.source}: reading {m.name} would inflate more than "
                f"{self.limits.max_total:,} bytes in total (TORCHWHEEL_MAX_INFLATE raises it)"
            )

    def _pread(self, offset: int, length: int) -> bytes:
        if self._fd < 0:
            raise ArchiveError(f"{self.source}: reader is closed")
        try:
            return os.pread(self._fd, length, offset)
        except OSError as exc:
            raise ArchiveError(f"{self.source}: read failed ({exc.strerror})") from None

    def fileno(self) -> int:
        """The open file descriptor (for kernel copies of raw member data, see zipwrite)."""
        if self._fd < 0:
            raise ArchiveError(f"{self.source}: reader is closed")
        return self._fd

    def data_offset(self, m: ZipMember) -> int:
        """Absolute offset of ``m``'s compressed bytes (reads its local header once)."""
        off = self._data_offsets.get(m.header_offset)
        if off is not None:
            return off
        head = self._pread(m.header_offset, _LFH.size)
        if len(head) < _LFH.size or head[:4] != _LFH_SIG:
            raise ArchiveError(
                f"{self.source}: {m.name}: bad local header at offset {m.header_offset}"
            )
        nlen, xlen = cast(tuple[int, int], struct.unpack_from("<2H", head, 26))
        off = m.header_offset + _LFH.size + nlen + xlen
        if off + m.compressed_size > self.size:
            raise ArchiveError(f"{self.source}: {m.name}: truncated member data")
        with self._lock:
            self._data_offsets[m.header_offset] = off
        return off

    def data_range(self, m: ZipMember) -> tuple[int, int]:
        """``(offset, length)`` of ``m``'s compressed bytes in the file (for raw copies)."""
        return self.data_offset(m), m.compressed_size

    def read_raw(self, m: ZipMember) -> bytes:
        """The compressed bytes of ``m`` as stored (no inflate, no CRC check)."""
        off, length = self.data_range(m)
        data = self._pread(off, length)
        if len(data) < length:
            raise ArchiveError(f"{self.source}: {m.name}: truncated member data")
        return data

    def open(self, m: ZipMember) -> BinaryIO:
        """A stream of ``m``'s uncompressed bytes; CRC-32 is checked when it reaches the end."""
        self._charge(m)
        return cast(BinaryIO, MemberStream(self, m, self.data_offset(m)))

    def iter_chunks(self, m: ZipMember) -> Iterator[bytes]:
        """Yield all of ``m``'s uncompressed bytes in pieces (CRC checked at the end)."""
        self._charge(m)
        stream = MemberStream(self, m, self.data_offset(m))
        yield from stream.chunks()

    def read_many(
        self, members: Iterable[ZipMember], *, span: int = 4 * 1024 * 1024
    ) -> Iterator[tuple[ZipMember, bytes]]:
        """Yield ``(member, content)`` for small members, reading neighbours in one ``pread``.

        Members are visited in file order and grouped into reads of about ``span`` bytes, so
        thousands of small files cost a handful of system calls. Each content is inflated in
        one call and CRC-checked. Meant for members whose compressed size is well under
        ``span``; larger ones are read on their own.
        """
        todo = sorted(members, key=lambda m: m.header_offset)
        slack = 1024  # room for the local header's name + extra field, unknown until read
        i = 0
        while i < len(todo):
            start = todo[i].header_offset
            j = i
            end = start
            while j < len(todo):
                m = todo[j]
                m_end = (
                    m.header_offset + _LFH.size + len(m.name.encode()) + slack + (m.compressed_size)
                )
                if j > i and m_end - start > span:
                    break
                end = max(end, m_end)
                j += 1
            buf = self._pread(start, min(end, self.size) - start)
            for m in todo[i:j]:
                yield m, self._content_from(buf, start, m)
            i = j

    def _content_from(self, buf: bytes, base: int, m: ZipMember) -> bytes:
        label = f"{self.source}: {m.name}"
        if m.is_encrypted or m.compress_type not in SUPPORTED_METHODS:
            return self.read(m)  # raises the usual error
        pos = m.header_offset - base
        head = buf[pos : pos + _LFH.size]
        if len(head) < _LFH.size or head[:4] != _LFH_SIG:
            raise ArchiveError(f"{label}: bad local header at offset {m.header_offset}")
        nlen, xlen = cast(tuple[int, int], struct.unpack_from("<2H", head, 26))
        dpos = pos + _LFH.size + nlen + xlen
        raw = buf[dpos : dpos + m.compressed_size]
        if len(raw) < m.compressed_size:
            if m.header_offset + _LFH.size + nlen + xlen + m.compressed_size > self.size:
                raise ArchiveError(f"{label}: truncated member data")
            return self.read(m)  # a long extra field pushed it past the batch
        self._charge(m)
        return inflate_whole(raw, m, label)

    def read(self, m: ZipMember, limit: int | None = None) -> bytes:
        """``m``'s bytes (the first ``limit`` bytes when given; CRC checked on full reads)."""
        with self.open(m) as f:
            if limit is None:
                return f.read()
            return f.read(limit)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ZipReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()
