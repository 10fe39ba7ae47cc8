"""A small struct-based ELF reader: machine, type, NEEDED, SONAME, RPATH/RUNPATH, symbol versions.

Written for reading native libraries straight out of zip members (see ``check``), where
moving backwards in a deflated stream means inflating it again from the start. The parser
is therefore driven by byte ranges: :func:`_parse` asks a ``get(offset, length)`` callable
for what it needs, in the order the ELF format dictates (header → program headers →
``PT_DYNAMIC`` → string table / ``DT_VERNEED`` / ``DT_VERDEF``), and three front ends serve
those ranges:

* :func:`parse_elf` on ``bytes`` (everything in memory) or on a seekable binary stream;
* :class:`ELFScanner`, fed the member's bytes in order (e.g. while they are hashed for
  RECORD). It keeps only small windows — the first :data:`KEEP_PREFIX` bytes (headers; all
  of a small library), :data:`KEEP_BEFORE_DYNAMIC` bytes before the dynamic section (where
  ``patchelf`` puts a moved ``.dynstr``) and every range asked for ahead of the current
  position — and reports :attr:`ELFScanner.satisfied` as soon as the parse has what it needs
  or knows what went by unkept, so a caller that is not hashing can stop inflating. Ranges
  that went by (in big libraries: the string and version tables, a few MB into the file,
  only locatable once the dynamic section near the end has been read) are then read again
  through a fresh stream (:meth:`ELFScanner.result`), which for a deflated member means
  inflating just those first MB again — cheaper in memory than keeping them, and in time
  than a full second pass.

Names and numbers (machines, dynamic tags, version names and their hash, the hash-only
:func:`scan_version_needs`) live in :mod:`torchwheel.elfnames` and are re-exported here.

Budgets (docs/security.md): the walk of the version tables visits every record and entry at
most once and no more of them than the bytes from the table to the end of the file can hold
(a shared 65,535-entry chain was 6.5e9 entries); the dynamic section, string table and each
string read have named size limits (:data:`MAX_DYNAMIC`, :data:`MAX_STRTAB`,
:data:`MAX_STRING`).

Malformed files raise :class:`~torchwheel.errors.ELFError` naming the file.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .elfnames import (
    DT_NEEDED,
    DT_NULL,
    DT_RPATH,
    DT_RUNPATH,
    DT_SONAME,
    DT_STRSZ,
    DT_STRTAB,
    DT_VERDEF,
    DT_VERDEFNUM,
    DT_VERNEED,
    DT_VERNEEDNUM,
    KNOWN_VERSION_NAMES,
    MACHINES,
    PT_DYNAMIC,
    PT_LOAD,
    TYPES,
    HashedNeed,
    elf_hash,
    machine_name,
    scan_version_needs,
    version_tuple,
)
from .errors import ELFError

__all__ = [
    "KEEP_PREFIX",
    "KNOWN_VERSION_NAMES",
    "MACHINES",
    "ELFInfo",
    "ELFScanner",
    "HashedNeed",
    "VersionNeed",
    "elf_hash",
    "is_elf",
    "machine_name",
    "parse_elf",
    "scan_version_needs",
    "version_tuple",
]

ELF_MAGIC = b"\x7fELF"

#: Bytes from the start of an ELF file that :class:`ELFScanner` always keeps.
KEEP_PREFIX = 2 * 1024 * 1024
#: Bytes before the dynamic section that :class:`ELFScanner` keeps (patchelf's new segment).
KEEP_BEFORE_DYNAMIC = 4 * 1024 * 1024

# Budgets (docs/security.md): limits that do not follow from the file's own size.
#: Largest program-header entry accepted (real ones are 56 or 32 bytes).
MAX_PHENTSIZE = 256
#: Largest dynamic section read (libtorch_cpu.so's is 672 bytes).
MAX_DYNAMIC = 1024 * 1024
#: Largest dynamic string table read (libtorch_cpu.so's .dynstr is 5 MB).
MAX_STRTAB = 64 * 1024 * 1024
#: Longest string read from it (NEEDED, RPATH, a version name).
MAX_STRING = 8192
#: Longest version name accepted (``GLIBCXX_3.4.30`` is 14; a longer one is malformed).
MAX_VERSION_NAME = 256
#: Version-table records walked when the dynamic section does not say how many.
MAX_VERSION_ENTRIES = 100_000


@dataclass(frozen=True)
class VersionNeed:
    """One ``Vernaux`` entry: symbol version ``name`` required from library ``file``."""

    file: str
    name: str
    hash: int
    flags: int = 0
    weak: bool = False


@dataclass(frozen=True)
class ELFInfo:
    """What torchwheel reads from one ELF file."""

    name: str
    bits: int  # 32 or 64
    little_endian: bool
    machine: str  # x86_64, aarch64, ... or "unknown(N)"
    machine_code: int
    type: str  # DYN, EXEC, REL, CORE
    osabi: int
    needed: tuple[str, ...] = ()
    soname: str | None = None
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    version_needs: tuple[VersionNeed, ...] = ()
    version_defs: tuple[str, ...] = ()
    has_dynamic: bool = False
    notes: tuple[str, ...] = field(default=())

    def max_version(self, prefix: str) -> tuple[int, ...] | None:
        """Highest required version with ``prefix`` (``"GLIBC_"`` → ``(2, 28)``), or None."""
        best: tuple[int, ...] | None = None
        for need in self.version_needs:
            v = version_tuple(need.name, prefix)
            if v is not None and (best is None or v > best):
                best = v
        return best

    def needs_with_prefix(self, prefix: str) -> list[VersionNeed]:
        """Version needs whose name starts with ``prefix``."""
        return [n for n in self.version_needs if n.name.startswith(prefix)]


def is_elf(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) starts with the ELF magic."""
    return head[:4] == ELF_MAGIC


class _NeedRange(Exception):
    """Raised by a ``get`` callable that does not (yet) hold the requested range."""

    def __init__(self, offset: int, length: int) -> None:
        super().__init__(offset, length)
        self.offset = offset
        self.length = length


Getter = Callable[[int, int], bytes]


@dataclass
class _Source:
    """Bounded reads of one ELF file: every range is checked against the file's size."""

    get: Getter
    size: int
    name: str

    def error(self, message: str) -> ELFError:
        return ELFError(f"{self.name}: malformed ELF: {message}")

    def need(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise self.error(f"{what} at {offset}+{length} is outside the file ({self.size} bytes)")
        data = self.get(offset, length)
        if len(data) < length:
            raise self.error(f"{what} truncated")
        return data


@dataclass(frozen=True)
class _Layout:
    """The structs of one ELF class and byte order."""

    bits: int
    e: str  # struct byte-order character

    @property
    def header(self) -> struct.Struct:
        return struct.Struct(self.e + ("HHIQQQIHHHHHH" if self.bits == 64 else "HHIIIIIHHHHHH"))

    @property
    def phdr(self) -> struct.Struct:
        return struct.Struct(self.e + ("IIQQQQQQ" if self.bits == 64 else "IIIIIIII"))

    @property
    def dyn(self) -> struct.Struct:
        return struct.Struct(self.e + ("qQ" if self.bits == 64 else "iI"))


@dataclass
class _Dynamic:
    """The dynamic section: its entries in order, the first value of each tag, the loads."""

    entries: list[tuple[int, int]]
    tags: dict[int, int]
    loads: list[tuple[int, int, int]]  # (vaddr, filesz, offset)

    def offset(self, src: _Source, tag: int, what: str) -> int:
        vaddr = self.tags[tag]
        for v, sz, off in self.loads:
            if v <= vaddr < v + sz:
                return vaddr - v + off
        raise src.error(f"{what} address {vaddr:#x} is in no loaded segment")


@dataclass
class _Strings:
    """The dynamic string table; each string is at most :data:`MAX_STRING` bytes."""

    src: _Source
    table: bytes
    cache: dict[int, str] = field(default_factory=dict)

    def __call__(self, idx: int, what: str) -> str:
        text = self.cache.get(idx)
        if text is not None:
            return text
        if not 0 <= idx < len(self.table):
            raise self.src.error(f"{what} string index {idx} out of range")
        end = self.table.find(b"\x00", idx, idx + MAX_STRING + 1)
        if end < 0:
            if len(self.table) - idx > MAX_STRING:
                raise self.src.error(f"{what} string at {idx} is longer than {MAX_STRING} bytes")
            end = len(self.table)
        text = self.table[idx:end].decode("utf-8", "replace")
        self.cache[idx] = text
        return text


def _header(src: _Source) -> tuple[_Layout, dict[str, Any], tuple[int, int, int]]:
    """Identification and ELF header → the layout, the base facts, (phoff, phentsize, phnum)."""
    if src.size < 16:
        raise src.error(f"{src.size} bytes is too short for a header")
    ident = src.need(0, 16, "identification")
    if ident[:4] != ELF_MAGIC:
        raise ELFError(f"{src.name}: not an ELF file")
    ei_class, ei_data, osabi = ident[4], ident[5], ident[7]
    if ei_class not in (1, 2):
        raise src.error(f"unknown class {ei_class}")
    if ei_data not in (1, 2):
        raise src.error(f"unknown data encoding {ei_data}")
    layout = _Layout(64 if ei_class == 2 else 32, "<" if ei_data == 1 else ">")
    fields = layout.header.unpack(src.need(16, layout.header.size, "ELF header"))
    e_type, e_machine, phoff, phentsize, phnum = (fields[i] for i in (0, 1, 4, 8, 9))
    info: dict[str, Any] = {
        "name": src.name,
        "bits": layout.bits,
        "little_endian": ei_data == 1,
        "machine": machine_name(e_machine, layout.bits, ei_data == 1),
        "machine_code": e_machine,
        "type": TYPES.get(e_type, f"unknown({e_type})"),
        "osabi": osabi,
    }
    return layout, info, (phoff, phentsize, phnum)


def _program_headers(
    src: _Source, layout: _Layout, phoff: int, phentsize: int, phnum: int
) -> tuple[list[tuple[int, int, int]], tuple[int, int] | None]:
    """The PT_LOAD segments (vaddr, filesz, offset) and the PT_DYNAMIC (offset, size)."""
    phdr = layout.phdr
    if not phdr.size <= phentsize <= MAX_PHENTSIZE:
        raise src.error(f"program header size {phentsize}")
    if phnum == 0xFFFF:
        raise ELFError(f"{src.name}: unsupported ELF: more than 65534 program headers")
    table = src.need(phoff, phentsize * phnum, "program headers")
    loads: list[tuple[int, int, int]] = []
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        fields = phdr.unpack_from(table, i * phentsize)
        if layout.bits == 64:
            p_type, _pf, p_offset, p_vaddr, _pa, p_filesz, _pm, _al = fields
        else:
            p_type, p_offset, p_vaddr, _pa, p_filesz, _pm, _pf, _al = fields
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    return loads, dynamic


def _dynamic(
    src: _Source, layout: _Layout, where: tuple[int, int], loads: list[tuple[int, int, int]]
) -> _Dynamic:
    """The dynamic section's entries up to DT_NULL (at most :data:`MAX_DYNAMIC` bytes)."""
    dyn = layout.dyn
    dyn_off, dyn_size = where
    dyn_size -= dyn_size % dyn.size
    if dyn_size > MAX_DYNAMIC:
        raise src.error(
            f"dynamic section of {dyn_size:,} bytes (the reader's limit is {MAX_DYNAMIC:,})"
        )
    raw = src.need(dyn_off, dyn_size, "dynamic section")
    entries: list[tuple[int, int]] = []
    for tag, val in dyn.iter_unpack(raw):
        if tag == DT_NULL:
            break
        entries.append((tag, val))
    tags: dict[int, int] = {}
    for tag, val in entries:
        tags.setdefault(tag, val)
    return _Dynamic(entries, tags, loads)


def _string_table(src: _Source, dyn: _Dynamic) -> _Strings | None:
    """The dynamic string table (None when there is none and nothing needs one)."""
    if DT_STRTAB not in dyn.tags:
        if any(t in dyn.tags for t in (DT_NEEDED, DT_SONAME, DT_VERNEED, DT_RPATH, DT_RUNPATH)):
            raise src.error("dynamic section without a string table")
        return None
    str_off = dyn.offset(src, DT_STRTAB, "string table")
    str_size = dyn.tags.get(DT_STRSZ, 0)
    if str_size <= 0 or str_off + str_size > src.size:
        raise src.error(f"string table size {str_size} at {str_off}")
    if str_size > MAX_STRTAB:
        raise src.error(
            f"string table of {str_size:,} bytes (the reader's limit is {MAX_STRTAB:,})"
        )
    return _Strings(src, src.need(str_off, str_size, "string table"))


def _dynamic_strings(dyn: _Dynamic, string: _Strings) -> dict[str, Any]:
    """NEEDED, RPATH, RUNPATH and SONAME."""
    needed: list[str] = []
    rpath: list[str] = []
    runpath: list[str] = []
    for tag, val in dyn.entries:
        if tag == DT_NEEDED:
            needed.append(string(val, "NEEDED"))
        elif tag == DT_RPATH:
            rpath.extend(p for p in string(val, "RPATH").split(":") if p)
        elif tag == DT_RUNPATH:
            runpath.extend(p for p in string(val, "RUNPATH").split(":") if p)
    out: dict[str, Any] = {
        "needed": tuple(needed),
        "rpath": tuple(rpath),
        "runpath": tuple(runpath),
    }
    if DT_SONAME in dyn.tags:
        out["soname"] = string(dyn.tags[DT_SONAME], "SONAME")
    return out


class _Walk:
    """The budget of one version-table walk: every record and entry at its own aligned
    offset, never one seen before (no chain shared between records), and at most as many
    as the bytes from the table's start to the end of the file can hold."""

    def __init__(self, src: _Source, start: int, what: str) -> None:
        self.src = src
        self.what = what
        self.left = max(1, (src.size - start) // 16)
        self.seen: set[int] = set()

    def visit(self, offset: int, length: int, kind: str) -> bytes:
        if offset in self.seen:
            raise self.src.error(
                f"{self.what}: {kind} at {offset} is reached twice (entries shared between "
                "records: corrupt or hostile)"
            )
        if offset % 4:
            raise self.src.error(f"{self.what}: {kind} at {offset} is not 4-byte aligned")
        self.left -= 1
        if self.left < 0:
            raise self.src.error(f"{self.what}: more entries than the table's bytes can hold")
        self.seen.add(offset)
        return self.src.need(offset, length, kind)


def _step(src: _Source, pos: int, delta: int, what: str) -> int:
    """The next record or entry ``delta`` bytes on; chains only move forward."""
    if delta < 16:
        raise src.error(f"{what}: next offset {delta} (entries must not overlap)")
    return pos + delta


def _version_needs(
    src: _Source, e: str, dyn: _Dynamic, string: _Strings
) -> tuple[tuple[VersionNeed, ...], list[str]]:
    """``.gnu.version_r``: every (file, version name) needed, and notes on bad hashes."""
    pos = dyn.offset(src, DT_VERNEED, "version needs")
    walk = _Walk(src, pos, "version needs")
    needs: list[VersionNeed] = []
    notes: list[str] = []
    for _ in range(dyn.tags.get(DT_VERNEEDNUM, MAX_VERSION_ENTRIES)):
        vn_version, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack(
            e + "HHIII", walk.visit(pos, 16, "version need")
        )
        if vn_version != 1:
            raise src.error(f"version need revision {vn_version}")
        file = string(vn_file, "version need file")
        apos = _step(src, pos, vn_aux, "version need") if vn_cnt else pos
        for j in range(vn_cnt):
            vna_hash, vna_flags, _other, vna_name, vna_next = struct.unpack(
                e + "IHHII", walk.visit(apos, 16, "version need aux")
            )
            vname = string(vna_name, "version name")
            if len(vname) > MAX_VERSION_NAME:
                raise src.error(f"version name of {len(vname):,} bytes ({vname[:24]}…)")
            if elf_hash(vname) != vna_hash:
                notes.append(f"version {vname!r} does not match its hash {vna_hash:#x}")
            needs.append(VersionNeed(file, vname, vna_hash, vna_flags, bool(vna_flags & 0x2)))
            if vna_next == 0 or j == vn_cnt - 1:
                break
            apos = _step(src, apos, vna_next, "version need aux")
        if vn_next == 0:
            break
        pos = _step(src, pos, vn_next, "version need")
    return tuple(needs), notes


def _version_defs(src: _Source, e: str, dyn: _Dynamic, string: _Strings) -> tuple[str, ...]:
    """``.gnu.version_d``: the version names this file defines."""
    pos = dyn.offset(src, DT_VERDEF, "version definitions")
    walk = _Walk(src, pos, "version definitions")
    defs: list[str] = []
    for _ in range(dyn.tags.get(DT_VERDEFNUM, MAX_VERSION_ENTRIES)):
        vd_version, _vf, _ndx, vd_cnt, _vh, vd_aux, vd_next = struct.unpack(
            e + "HHHHIII", walk.visit(pos, 20, "version definition")
        )
        if vd_version != 1:
            raise src.error(f"version definition revision {vd_version}")
        if vd_cnt:
            (vda_name, _n) = struct.unpack(e + "II", src.need(pos + vd_aux, 8, "verdaux"))
            defs.append(string(vda_name, "version definition"))
        if vd_next == 0:
            break
        pos = _step(src, pos, vd_next, "version definition")
    return tuple(defs)


def _parse(get: Getter, size: int, name: str) -> ELFInfo:
    """Parse an ELF file of ``size`` bytes whose bytes come from ``get(offset, length)``."""
    src = _Source(get, size, name)
    layout, info, (phoff, phentsize, phnum) = _header(src)
    if phnum == 0:
        return ELFInfo(**info)
    loads, where = _program_headers(src, layout, phoff, phentsize, phnum)
    if where is None:
        return ELFInfo(**info)
    dyn = _dynamic(src, layout, where, loads)
    info["has_dynamic"] = True
    string = _string_table(src, dyn)
    if string is None:
        return ELFInfo(**info)
    info.update(_dynamic_strings(dyn, string))
    if DT_VERNEED in dyn.tags:
        info["version_needs"], notes = _version_needs(src, layout.e, dyn, string)
        info["notes"] = tuple(notes)
    if DT_VERDEF in dyn.tags:
        info["version_defs"] = _version_defs(src, layout.e, dyn, string)
    return ELFInfo(**info)


def parse_elf(source: bytes | BinaryIO, *, name: str = "<elf>", size: int | None = None) -> ELFInfo:
    """Parse an ELF file held in ``bytes`` or readable from a seekable binary stream.

    For streams, ``size`` defaults to the stream's length (``seek(0, SEEK_END)``); only the
    ranges the parse needs are read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _parse(lambda off, ln: data[off : off + ln], len(data), name)
    stream = source
    if size is None:
        size = stream.seek(0, 2)

    def get(off: int, ln: int) -> bytes:
        stream.seek(off)
        return stream.read(ln)

    return _parse(get, size, name)


@dataclass
class _Window:
    start: int
    end: int
    buf: bytearray = field(default_factory=bytearray)

    @property
    def filled_to(self) -> int:
        return self.start + len(self.buf)


class ELFScanner:
    """Parse an ELF file from its bytes fed in order, keeping only the windows the parse needs.

    Usage::

        scanner = ELFScanner(size, name=path)
        for chunk in chunks:
            scanner.feed(chunk)
            if scanner.satisfied and not hashing:
                break
        info = scanner.result()          # ELFInfo, or None when a range went by unkept
        if info is None:
            info = parse_elf(seekable_stream, name=path, size=size)

    Memory: ``keep_prefix`` + ``keep_before_dynamic`` + the ranges asked for ahead.
    """

    def __init__(
        self,
        size: int,
        *,
        name: str = "<elf>",
        keep_prefix: int = KEEP_PREFIX,
        keep_before_dynamic: int = KEEP_BEFORE_DYNAMIC,
    ) -> None:
        self.size = size
        self.name = name
        self.pos = 0
        self._windows: list[_Window] = []
        self._keep_prefix = keep_prefix
        self._add_window(0, min(size, keep_prefix))
        self._keep_before_dynamic = keep_before_dynamic
        self._next_try = min(size, 64)
        self._dynamic_window_added = False
        self._info: ELFInfo | None = None
        self._missed = False
        self.bytes_kept = 0

    @property
    def satisfied(self) -> bool:
        """True when the parse has everything it needs (or knows it must re-read)."""
        return self._info is not None or self._missed

    @property
    def missed(self) -> bool:
        """True when a needed range went by without being kept (re-read with seeks)."""
        return self._missed

    def _add_window(self, start: int, end: int) -> None:
        start = max(start, self.pos)
        end = min(end, self.size)
        if end <= start:
            return
        for w in self._windows:
            if w.start <= start and end <= w.end:
                return
            if w.start <= start <= w.end and w.filled_to == self.pos:
                w.end = max(w.end, end)  # extend a window that is still being filled
                return
        self._windows.append(_Window(start, end))

    def feed(self, chunk: bytes) -> None:
        """Hand the next bytes of the file (in order, no gaps)."""
        start = self.pos
        end = start + len(chunk)
        for w in self._windows:
            if w.end <= start or w.start >= end:
                continue
            lo = max(w.start, start)
            hi = min(w.end, end)
            if w.filled_to == lo:
                w.buf += chunk[lo - start : hi - start]
                self.bytes_kept += hi - lo
        self.pos = end
        if not self.satisfied and self.pos >= self._next_try:
            self._try()

    def _get(self, off: int, ln: int) -> bytes:
        for w in self._windows:
            if w.start <= off and off + ln <= w.filled_to:
                return bytes(w.buf[off - w.start : off - w.start + ln])
        raise _NeedRange(off, ln)

    def _try(self) -> None:
        try:
            self._info = _parse(self._get, self.size, self.name)
        except _NeedRange as miss:
            end = miss.offset + miss.length
            if miss.offset < self.pos:
                # it went by unkept, unless a window that is still filling covers it
                for w in self._windows:
                    if w.start <= miss.offset and end <= w.end and w.filled_to == self.pos:
                        self._next_try = end
                        return
                self._missed = True
                return
            self._add_window(miss.offset, end)
            self._next_try = end
            if not self._dynamic_window_added and miss.offset > self._keep_prefix:
                # the first range far ahead is the dynamic section: keep what precedes it,
                # where patchelf puts a moved .dynstr / .gnu.version_r
                self._dynamic_window_added = True
                self._add_window(miss.offset - self._keep_before_dynamic, miss.offset)

    def result(self, reopen: Callable[[], BinaryIO] | None = None) -> ELFInfo | None:
        """The parsed info.

        When a needed range went by unkept (normally the string and version tables near the
        start of a big library, read before the dynamic section told where they are),
        ``reopen`` is called for a fresh seekable stream and only the missing ranges are
        read from it (for a deflated member: inflating again up to them, typically a few
        MB), the kept windows serving the rest. Without ``reopen`` the result is None then.
        """
        if self._info is None and not self._missed:
            self._try()
        if self._info is None and reopen is not None:
            with reopen() as stream:

                def get(off: int, ln: int) -> bytes:
                    try:
                        return self._get(off, ln)
                    except _NeedRange:
                        stream.seek(off)
                        return stream.read(ln)

                self._info = _parse(get, self.size, self.name)
        return self._info
