"""The reproducible layer zip: a directory tree (plus members copied from wheels) → one zip.

The zip is reproducible: members sorted by name, one fixed timestamp (``SOURCE_DATE_EPOCH``
or 1980-01-01), modes 0644/0755 (symlinks stored as links), no extra fields, no comments.
Members whose bytes are exactly a wheel member's (:class:`RawSource`) are copied compressed,
straight from the wheel (``copy_file_range`` where the kernel has it); everything else is
deflated in parallel chunks (pigz-style, each chunk primed with the previous 32 KiB, so the
bytes depend on the chunking, never on the number of threads). ZIP64 records are written when
sizes, offsets or the member count need them. The zip goes to a temporary file next to the
output and is renamed into place (:mod:`torchwheel.atomic`).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import stat
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import BinaryIO

from .atomic import atomic_output
from .errors import ArchiveError, InputError
from .progress import Step
from .zipread import ZIP_DEFLATED, ZIP_STORED, ZipMember, ZipReader

_isal: ModuleType | None
try:  # ISA-L: an optional, several times faster deflate with the zlib API
    from isal import isal_zlib

    _isal = isal_zlib
except ImportError:  # pragma: no cover - isal is optional
    _isal = None

__all__ = [
    "DEFAULT_COMPRESSLEVEL",
    "RawSource",
    "ZipResult",
    "compress_backend",
    "write_layer_zip",
    "zip_date_time",
]

DEFAULT_COMPRESSLEVEL = 6
_CHUNK = 1 << 20
_DEFLATE_CHUNK = 4 << 20  # unit of parallel compression
_DICT = 32 * 1024  # deflate window: each chunk is primed with the previous 32 KiB

_LFH = struct.Struct("<4s5H3L2H")
_CDH = struct.Struct("<4s6H3L5H2L")
_EOCD = struct.Struct("<4s4H2LH")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_LOC64 = struct.Struct("<4sLQL")
_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class RawSource:
    """Where a file's compressed bytes can be copied from: one member of one wheel."""

    wheel: Path
    member: ZipMember


@dataclass(frozen=True)
class ZipResult:
    """What :func:`write_layer_zip` wrote."""

    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    members: int
    raw_copied: int
    compressed: int
    sha256: str


def zip_date_time(epoch: int | str | None = None) -> tuple[int, int]:
    """DOS (date, time) for ``epoch`` (default ``$SOURCE_DATE_EPOCH``, else 1980-01-01 00:00)."""
    if epoch is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch in (None, ""):
        y, mo, d, h, mi, s = 1980, 1, 1, 0, 0, 0
    else:
        try:
            t = time.gmtime(int(str(epoch).strip()))
        except (ValueError, OverflowError, OSError):
            raise InputError(f"SOURCE_DATE_EPOCH {epoch!r} is not a Unix timestamp") from None
        y, mo, d, h, mi, s = t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec
        if y < 1980:
            y, mo, d, h, mi, s = 1980, 1, 1, 0, 0, 0
        elif y > 2107:
            y, mo, d, h, mi, s = 2107, 12, 31, 23, 59, 58
    return ((y - 1980) << 9) | (mo << 5) | d, (h << 11) | (mi << 5) | (s // 2)


def compress_backend(level: int) -> str:
    """Which deflate implementation writes members at ``level``: levels 1–3 use ISA-L
    (``isal``, several times faster) when it is installed, everything else stdlib zlib."""
    if level == 0:
        return "stored"
    return "isal" if 1 <= level <= 3 and _isal is not None else "zlib"


# -- what goes into the zip ----------------------------------------------------------------------


@dataclass
class _Entry:
    name: str
    path: str
    size: int
    mode: int  # full st_mode for the central directory
    symlink: str | None
    raw: RawSource | None


def _walk(tree_root: Path) -> list[_Entry]:
    """Every file and symlink under ``tree_root``, sorted by zip name (os.scandir: fast)."""
    out: list[_Entry] = []
    stack = [(os.fspath(tree_root), "")]
    while stack:
        dirpath, prefix = stack.pop()
        with os.scandir(dirpath) as it:
            for de in it:
                rel = prefix + de.name
                if de.is_symlink():  # files and directories alike: stored as links
                    target = os.readlink(de.path)
                    out.append(
                        _Entry(
                            rel, de.path, len(target.encode()), stat.S_IFLNK | 0o777, target, None
                        )
                    )
                elif de.is_dir(follow_symlinks=False):
                    stack.append((de.path, rel + "/"))
                elif de.is_file(follow_symlinks=False):
                    st = de.stat(follow_symlinks=False)
                    mode = 0o755 if st.st_mode & 0o111 else 0o644
                    out.append(_Entry(rel, de.path, st.st_size, stat.S_IFREG | mode, None, None))
    out.sort(key=lambda e: e.name)
    return out


def _entries(
    tree_root: Path,
    raw_sources: Mapping[str, RawSource] | None,
    virtual: Mapping[str, tuple[RawSource, bool]] | None,
) -> list[_Entry]:
    """The tree's files plus the virtual ones, sorted, each with its raw source if any."""
    entries = _walk(tree_root)
    if virtual:
        by_name = {e.name: e for e in entries}
        for rel, (vsrc, executable) in virtual.items():
            by_name[rel] = _Entry(
                rel,
                "",
                vsrc.member.file_size,
                stat.S_IFREG | (0o755 if executable else 0o644),
                None,
                vsrc,
            )
        entries = sorted(by_name.values(), key=lambda e: e.name)
    raw_map = raw_sources or {}
    for e in entries:
        src = raw_map.get(e.name)
        if src is not None and e.symlink is None and src.member.file_size == e.size:
            e.raw = src
    return entries


# -- headers -------------------------------------------------------------------------------------


def _local_header(
    name: bytes,
    flags: int,
    method: int,
    ddate: int,
    dtime: int,
    crc: int,
    csize: int,
    size: int,
    zip64: bool,
) -> bytes:
    if zip64:
        extra = struct.pack("<2H2Q", 1, 16, size, csize)
        return (
            _LFH.pack(
                b"PK\x03\x04",
                45,
                flags,
                method,
                dtime,
                ddate,
                crc,
                _U32,
                _U32,
                len(name),
                len(extra),
            )
            + name
            + extra
        )
    version = 20 if method == ZIP_DEFLATED else 10
    return (
        _LFH.pack(
            b"PK\x03\x04", version, flags, method, dtime, ddate, crc, csize, size, len(name), 0
        )
        + name
    )


def _central_header(
    name: bytes,
    flags: int,
    method: int,
    ddate: int,
    dtime: int,
    crc: int,
    csize: int,
    size: int,
    offset: int,
    mode: int,
) -> bytes:
    extra = b""
    fields: list[int] = []
    if size >= _U32:
        fields.append(size)
    if csize >= _U32:
        fields.append(csize)
    if offset >= _U32:
        fields.append(offset)
    if fields:
        extra = struct.pack("<2H", 1, 8 * len(fields)) + struct.pack(f"<{len(fields)}Q", *fields)
    needed = 45 if fields else (20 if method == ZIP_DEFLATED else 10)
    return (
        _CDH.pack(
            b"PK\x01\x02",
            (3 << 8) | needed,
            needed,
            flags,
            method,
            dtime,
            ddate,
            crc,
            min(csize, _U32),
            min(size, _U32),
            len(name),
            len(extra),
            0,
            0,
            0,
            (mode & 0xFFFF) << 16,
            min(offset, _U32),
        )
        + name
        + extra
    )


def _end_records(count: int, cd_offset: int, cd_size: int, eocd64_at: int) -> bytes:
    """The end of central directory record, preceded by the ZIP64 ones when needed."""
    out = b""
    if count >= 0xFFFF or cd_offset >= _U32 or cd_size >= _U32:
        out += _EOCD64.pack(
            b"PK\x06\x06", 44, (3 << 8) | 45, 45, 0, 0, count, count, cd_size, cd_offset
        )
        out += _LOC64.pack(b"PK\x06\x07", 0, eocd64_at, 1)
    n16 = min(count, 0xFFFF)
    return out + _EOCD.pack(
        b"PK\x05\x06", 0, 0, n16, n16, min(cd_size, _U32), min(cd_offset, _U32), 0
    )


# -- member data ---------------------------------------------------------------------------------


def _deflate_chunk(data: bytes, zdict: bytes, level: int, last: bool) -> bytes:
    mod = _isal if compress_backend(level) == "isal" and _isal is not None else zlib
    if zdict:
        c = mod.compressobj(level, mod.DEFLATED, -15, 9, 0, zdict)
    else:
        c = mod.compressobj(level, mod.DEFLATED, -15, 9)
    out: bytes = c.compress(data)
    tail: bytes = c.flush(mod.Z_FINISH if last else mod.Z_SYNC_FLUSH)
    return out + tail


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _copy_range(src_fd: int, dst: BinaryIO, offset: int, length: int) -> None:
    """Append ``length`` bytes at ``offset`` of ``src_fd`` to ``dst`` (kernel copy if possible)."""
    dst.flush()
    out_fd = dst.fileno()
    done = 0
    use_kernel = hasattr(os, "copy_file_range")
    while done < length:
        if use_kernel:
            try:
                n = os.copy_file_range(src_fd, out_fd, length - done, offset + done)
            except OSError:
                use_kernel = False
                continue
            if n <= 0:
                use_kernel = False
                continue
            os.lseek(out_fd, 0, os.SEEK_END)
        else:
            piece = os.pread(src_fd, min(_CHUNK * 8, length - done), offset + done)
            if not piece:
                raise ArchiveError(f"unexpected end of file while copying {length} bytes")
            _write_all(out_fd, piece)
            n = len(piece)
        done += n
    dst.seek(0, os.SEEK_END)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK * 4):
            h.update(chunk)
    return h.hexdigest()


class _Writer:
    """Writes members one after the other into ``out``; keeps their central headers."""

    def __init__(
        self,
        out: BinaryIO,
        date_time: tuple[int, int],
        level: int,
        pool: cf.ThreadPoolExecutor,
        nworkers: int,
    ) -> None:
        self.out = out
        self.ddate, self.dtime = date_time
        self.level = level
        self.pool = pool
        self.nworkers = nworkers
        self.central: list[bytes] = []
        self.raw_copied = 0
        self.compressed = 0
        self._readers: dict[Path, ZipReader] = {}

    def __enter__(self) -> _Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for zr in self._readers.values():
            zr.close()

    def add(self, e: _Entry) -> None:
        """Write one member (local header + data) and remember its central header."""
        name = e.name.encode("utf-8")
        flags = 0x800 if not e.name.isascii() else 0
        offset = self.out.tell()
        if e.raw is not None:
            method, crc, csize = self._copy_raw(e, e.raw, name, flags)
            self.raw_copied += 1
        else:
            method, crc, csize = self._compress(e, name, flags)
            self.compressed += 1
        self.central.append(
            _central_header(
                name, flags, method, self.ddate, self.dtime, crc, csize, e.size, offset, e.mode
            )
        )

    def finish(self) -> None:
        """The central directory and the end records."""
        cd_offset = self.out.tell()
        for c in self.central:
            self.out.write(c)
        cd_end = self.out.tell()
        self.out.write(_end_records(len(self.central), cd_offset, cd_end - cd_offset, cd_end))

    def _copy_raw(self, e: _Entry, src: RawSource, name: bytes, flags: int) -> tuple[int, int, int]:
        zr = self._readers.get(src.wheel)
        if zr is None:
            zr = self._readers[src.wheel] = ZipReader(src.wheel)
        m = src.member
        data_off, csize = zr.data_range(m)  # the reader checks the local header
        zip64 = e.size >= _U32 or csize >= _U32
        self.out.write(
            _local_header(
                name, flags, m.compress_type, self.ddate, self.dtime, m.crc, csize, e.size, zip64
            )
        )
        _copy_range(zr.fileno(), self.out, data_off, csize)
        return m.compress_type, m.crc, csize

    def _compress(self, e: _Entry, name: bytes, flags: int) -> tuple[int, int, int]:
        method = ZIP_DEFLATED if self.level > 0 and e.symlink is None else ZIP_STORED
        zip64 = e.size >= 0xF0000000
        header_at = self.out.tell()
        self.out.write(
            _local_header(name, flags, method, self.ddate, self.dtime, 0, 0, e.size, zip64)
        )
        data_start = self.out.tell()
        crc = self._write_data(e, method)
        csize = self.out.tell() - data_start
        # patch the local header with the real CRC and sizes
        self.out.seek(header_at)
        self.out.write(
            _local_header(name, flags, method, self.ddate, self.dtime, crc, csize, e.size, zip64)
        )
        self.out.seek(0, os.SEEK_END)
        return method, crc, csize

    def _write_data(self, e: _Entry, method: int) -> int:
        if e.symlink is not None:
            data = e.symlink.encode()
            self.out.write(data)
            return zlib.crc32(data)
        with open(e.path, "rb") as f:
            if method == ZIP_STORED:
                crc = 0
                while chunk := f.read(_CHUNK * 4):
                    crc = zlib.crc32(chunk, crc)
                    self.out.write(chunk)
                return crc
            if e.size == 0:
                self.out.write(_deflate_chunk(b"", b"", self.level, True))
                return 0
            return self._deflate(e, f)

    def _deflate(self, e: _Entry, f: BinaryIO) -> int:
        """Deflate ``f`` in parallel chunks, written in order; returns the CRC-32."""
        pending: list[cf.Future[bytes]] = []
        prev = b""
        done = crc = 0
        window = self.nworkers * 2
        while done < e.size:
            data = f.read(_DEFLATE_CHUNK)
            if not data:
                raise InputError(f"{e.path}: file shrank while zipping")
            done += len(data)
            crc = zlib.crc32(data, crc)
            last = done >= e.size
            pending.append(self.pool.submit(_deflate_chunk, data, prev[-_DICT:], self.level, last))
            prev = data
            while len(pending) >= window:
                self.out.write(pending.pop(0).result())
        for fut in pending:
            self.out.write(fut.result())
        return crc


def write_layer_zip(
    tree_root: Path,
    output: Path,
    *,
    raw_sources: Mapping[str, RawSource] | None = None,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    date_time: tuple[int, int] | None = None,
    workers: int | None = None,
    virtual: Mapping[str, tuple[RawSource, bool]] | None = None,
    progress: Step | None = None,
) -> ZipResult:
    """Zip the tree at ``tree_root`` into ``output`` reproducibly (see the module docstring).

    ``raw_sources`` maps tree-relative paths to wheel members holding exactly those bytes;
    their compressed data is copied without inflating. ``virtual`` adds files that are not on
    disk (tree-relative path → (wheel member, executable); see
    :meth:`torchwheel.layer.LayerTree.virtual_files`), copied the same way. ``compresslevel``
    0 stores, 1–9 deflate. The zip is written to a temporary file next to ``output`` and
    renamed into place. ``progress`` counts the members written and their unzipped bytes.
    """
    if not 0 <= compresslevel <= 9:
        raise InputError(f"compression level {compresslevel} is not between 0 and 9")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    entries = _entries(Path(tree_root), raw_sources, virtual)
    nworkers = workers or max(2, os.cpu_count() or 2)
    with (
        atomic_output(output, mode=0o644, fsync=True) as out,
        cf.ThreadPoolExecutor(nworkers) as pool,
        _Writer(out, date_time or zip_date_time(), compresslevel, pool, nworkers) as w,
    ):
        if progress is not None:
            progress.update(files_total=len(entries), bytes_total=sum(e.size for e in entries))
        for e in entries:
            w.add(e)
            if progress is not None:
                progress.advance(files=1, bytes=e.size)
        w.finish()
        zipped = out.tell()
    return ZipResult(
        output,
        zipped,
        sum(e.size for e in entries),
        len(entries),
        w.raw_copied,
        w.compressed,
        _sha256_file(output),
    )
