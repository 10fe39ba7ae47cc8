"""The names and numbers of the ELF format: machines, file types, dynamic tags, and symbol
version names (the System V hash, known names, the validated numeric reading, and a table
scan that needs no dynamic section).

:func:`machine_name` names ``e_machine`` together with the file's class and byte order, so
an ELFCLASS32 or big-endian file whose ``e_machine`` says x86_64 is not taken for x86_64.

Version needs (``.gnu.version_r``) carry ``vna_hash``, the standard ELF hash of the version
name. :func:`elf_hash` and :data:`KNOWN_VERSION_NAMES` name versions from the hash alone;
:func:`version_tuple` is the one reading of a version name as numbers (anything that is not a
plain dotted number, ``GLIBC_2.28x`` or a 5,000-digit component, reads as None); and
:func:`scan_version_needs` finds the table in the first MB of a file without the dynamic
section at all (glibc / GLIBCXX needs of a 414 MB ``libtorch_cpu.so`` from its first
16 MB in 0.1 s instead of 1 s). Pure: bytes in, data out. :mod:`torchwheel.elf` re-exports
these names.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

__all__ = [
    "KNOWN_VERSION_NAMES",
    "MACHINES",
    "NATIVE_ABI",
    "TYPES",
    "HashedNeed",
    "elf_hash",
    "machine_name",
    "scan_version_needs",
    "version_tuple",
]


MACHINES: dict[int, str] = {
    2: "sparc",
    3: "i386",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    22: "s390x",
    40: "arm",
    43: "sparcv9",
    50: "ia64",
    62: "x86_64",
    183: "aarch64",
    243: "riscv",
    258: "loongarch",
}
TYPES: dict[int, str] = {0: "NONE", 1: "REL", 2: "EXEC", 3: "DYN", 4: "CORE"}

PT_LOAD = 1
PT_DYNAMIC = 2
DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_STRSZ = 10
DT_SONAME = 14
DT_RPATH = 15
DT_RUNPATH = 29
DT_VERDEF = 0x6FFFFFFC
DT_VERDEFNUM = 0x6FFFFFFD
DT_VERNEED = 0x6FFFFFFE
DT_VERNEEDNUM = 0x6FFFFFFF

#: The byte order and class of each machine's Linux ABI; a file of that machine in another
#: class or byte order (x32, aarch64_be) is named so (:func:`machine_name`).
NATIVE_ABI: dict[int, tuple[int, bool]] = {
    3: (32, True),
    40: (32, True),
    62: (64, True),
    183: (64, True),
    243: (64, True),
    258: (64, True),
}


def machine_name(code: int, bits: int, little_endian: bool) -> str:
    """``e_machine`` as a name, qualified when the class or byte order is not the machine's
    ABI: ``x86_64``, but ``x86_64 (32-bit, little-endian)`` for x32 and ``aarch64
    (64-bit, big-endian)`` for aarch64_be — code a 64-bit little-endian Lambda cannot load."""
    name = MACHINES.get(code, f"unknown({code})")
    abi = NATIVE_ABI.get(code)
    if abi is not None and abi != (bits, little_endian):
        return f"{name} ({bits}-bit, {'little' if little_endian else 'big'}-endian)"
    return name


def elf_hash(name: str | bytes) -> int:
    """The System V ELF hash (``vna_hash`` / ``vd_hash`` of a version name)."""
    data = name.encode() if isinstance(name, str) else name
    h = 0
    for c in data:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def _known_names() -> dict[int, str]:
    names = [
        "GLIBC_2.0",
        "GLIBC_2.1",
        "GLIBC_2.2.5",
        "GLIBC_2.2.6",
        "GLIBC_2.3.2",
        "GLIBC_2.3.3",
        "GLIBC_2.3.4",
        "GLIBC_2.1.3",
        "GLIBC_PRIVATE",
        "GLIBCXX_3.4",
        "CXXABI_1.3",
        "GCC_3.0",
        "GCC_3.3",
        "GCC_3.3.1",
        "GCC_3.4",
        "GCC_3.4.2",
        "GCC_4.0.0",
        "GCC_4.2.0",
        "GCC_4.3.0",
        "GCC_4.8.0",
        "GCC_7.0.0",
        "ZLIB_1.2.0",
        "ZLIB_1.2.2",
        "ZLIB_1.2.3.3",
        "ZLIB_1.2.9",
        "CXXABI_TM_1",
        "GOMP_1.0",
        "GOMP_4.0",
        "GOMP_4.5",
        "OMP_1.0",
        "OMP_3.0",
        "OMP_4.0",
        "OMP_4.5",
        "OMP_5.0",
        "OMP_5.1",
    ]
    names += [f"GLIBC_2.{i}" for i in range(1, 60)]
    names += [f"GLIBCXX_3.4.{i}" for i in range(1, 50)]
    names += [f"CXXABI_1.3.{i}" for i in range(1, 30)]
    names += [f"ZLIB_1.2.{i}" for i in range(0, 14)] + [f"ZLIB_1.3.{i}" for i in range(0, 3)]
    return {elf_hash(n): n for n in names}


#: ``elf_hash(name) → name`` for glibc, libstdc++, libgcc, zlib and OpenMP version names.
KNOWN_VERSION_NAMES: dict[int, str] = _known_names()


_NUMERIC_VERSION = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){0,7}")


def version_tuple(name: str, prefix: str) -> tuple[int, ...] | None:
    """``version_tuple("GLIBC_2.28", "GLIBC_")`` → ``(2, 28)``; None for other prefixes and
    for names that are not a plain dotted number after the prefix (``GLIBC_2.28x``, a
    5,000-digit component, ``GLIBC_PRIVATE``): the one validated reading of version names."""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    if not _NUMERIC_VERSION.fullmatch(rest):
        return None
    return tuple(int(p) for p in rest.split("."))


_VERNEED_LE = re.compile(rb"\x01\x00[\x01-\x40]\x00(?s:....)\x10\x00\x00\x00", re.DOTALL)
_VERNEED_BE = re.compile(rb"\x00\x01\x00[\x01-\x40](?s:....)\x00\x00\x00\x10", re.DOTALL)


@dataclass(frozen=True)
class HashedNeed:
    """A version need identified from its ``vna_hash`` alone (``name`` None when unknown)."""

    hash: int
    name: str | None
    file_offset: int  # where the Vernaux entry sits in the data scanned


def scan_version_needs(data: bytes, *, little_endian: bool = True) -> list[HashedNeed]:
    """Find the version-needs table (``.gnu.version_r``) in the first bytes of an ELF file.

    Needs no dynamic section and no string table: candidate ``Elf_Verneed`` records
    (``vn_version`` 1, ``vn_aux`` 16) are located by pattern, and a chain is accepted only
    when every record and every ``Vernaux`` entry is well formed, the chain ends with
    ``vn_next == 0`` inside ``data`` and at least one ``vna_hash`` is the ELF hash of a known
    version name (:data:`KNOWN_VERSION_NAMES`). Returns [] when no such table is found
    (then read the dynamic section). Linkers put ``.gnu.version_r`` near the start of the
    file, and ``patchelf`` leaves it there, so the first few MB usually suffice.
    """
    e = "<" if little_endian else ">"
    pattern = _VERNEED_LE if little_endian else _VERNEED_BE
    for m in pattern.finditer(data):
        start = m.start()
        if start % 4:
            continue
        needs = _walk_verneed(data, start, e)
        if needs and any(n.name is not None for n in needs):
            return needs
    return []


def _walk_verneed(data: bytes, pos: int, e: str) -> list[HashedNeed]:
    out: list[HashedNeed] = []
    seen_other: set[int] = set()
    for _ in range(256):
        if pos + 16 > len(data):
            return []
        vn_version, vn_cnt, _file, vn_aux, vn_next = struct.unpack_from(e + "HHIII", data, pos)
        if vn_version != 1 or not 1 <= vn_cnt <= 64 or vn_aux != 16:
            return []
        apos = pos + vn_aux
        for j in range(vn_cnt):
            if apos + 16 > len(data):
                return []
            vna_hash, vna_flags, vna_other, _name, vna_next = struct.unpack_from(
                e + "IHHII", data, apos
            )
            last = j == vn_cnt - 1
            if vna_flags & ~0x3 or vna_other < 2 or vna_other in seen_other:
                return []
            if (last and vna_next != 0) or (not last and vna_next != 16):
                return []
            seen_other.add(vna_other)
            out.append(HashedNeed(vna_hash, KNOWN_VERSION_NAMES.get(vna_hash), apos))
            apos += 16
        if vn_next == 0:
            return out
        if vn_next != 16 + 16 * vn_cnt:
            return []
        pos += vn_next
    return []
