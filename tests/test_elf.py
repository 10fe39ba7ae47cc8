"""torchwheel.elf on real gcc-built shared objects, checked against binutils' readelf."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.support.elves import Elves
from torchwheel.elf import (
    KNOWN_VERSION_NAMES,
    ELFScanner,
    elf_hash,
    is_elf,
    parse_elf,
    scan_version_needs,
    version_tuple,
)
from torchwheel.errors import ELFError

NAMES = ["plain", "fcntl64", "arc4random", "cxx_plain", "cxx_new", "dep", "uses_dep", "executable"]


def _readelf(path: Path, flag: str) -> str:
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    return subprocess.run(
        ["readelf", flag, "-W", str(path)], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("which", NAMES)
def test_matches_readelf(elves: Elves, which: str) -> None:
    path: Path = getattr(elves, which)
    info = parse_elf(path.read_bytes(), name=path.name)
    dyn = _readelf(path, "-d")
    assert list(info.needed) == re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
    assert list(info.runpath) == [
        p
        for m in re.findall(r"\(RUNPATH\)\s+Library runpath: \[(.+?)\]", dyn)
        for p in m.split(":")
    ]
    sonames = re.findall(r"\(SONAME\)\s+Library soname: \[(.+?)\]", dyn)
    assert info.soname == (sonames[0] if sonames else None)
    ver = _readelf(path, "-V")
    need_part = ver.split("Version needs section", 1)[1] if "Version needs" in ver else ""
    expected = re.findall(r"Name: (\S+)\s+Flags", need_part)
    assert [n.name for n in info.version_needs] == expected
    files = re.findall(r"File: (\S+)\s+Cnt", need_part)
    assert sorted({n.file for n in info.version_needs}) == sorted(set(files))
    assert all(elf_hash(n.name) == n.hash for n in info.version_needs)
    assert info.machine == "x86_64" and info.bits == 64 and info.little_endian


def test_symbol_versions(elves: Elves) -> None:
    def get(which: str, prefix: str) -> tuple[int, ...] | None:
        return parse_elf(elves.read(which)).max_version(prefix)

    assert get("plain", "GLIBC_") == (2, 2, 5)
    assert get("fcntl64", "GLIBC_") == (2, 28)
    assert get("arc4random", "GLIBC_") == (2, 36)
    assert get("cxx_new", "GLIBCXX_") == (3, 4, 30)
    plain_cxx = get("cxx_plain", "GLIBCXX_")
    assert plain_cxx is not None and plain_cxx < (3, 4, 30)
    assert get("plain", "GLIBCXX_") is None
    dep = parse_elf(elves.read("dep"))
    assert dep.soname == "libdep.so.1" and dep.type == "DYN"
    uses = parse_elf(elves.read("uses_dep"))
    assert "libdep.so.1" in uses.needed and uses.runpath == ("$ORIGIN",)
    exe = parse_elf(elves.read("executable"))
    assert exe.type in ("DYN", "EXEC") and "libc.so.6" in exe.needed


def test_aarch64_machine(elves: Elves) -> None:
    info = parse_elf(elves.read("aarch64"))
    assert info.machine == "aarch64" and info.machine_code == 183
    assert info.needed == ("libc.so.6",)


def test_stream_and_scanner_agree_with_bytes(elves: Elves) -> None:
    for which in NAMES:
        data = elves.read(which)
        want = parse_elf(data, name=which)
        assert parse_elf(io.BytesIO(data), name=which) == want
        # tiny prefix windows: the scanner must ask for ranges ahead and keep them
        for keep in (64, 4096, len(data)):
            sc = ELFScanner(len(data), name=which, keep_prefix=keep, keep_before_dynamic=0)
            for i in range(0, len(data), 1000):
                sc.feed(data[i : i + 1000])
            got = sc.result()
            if got is None:
                assert sc.missed  # a range went by unkept: the caller re-reads with seeks
            else:
                assert got == want


def test_scanner_stops_early_and_reports_misses(elves: Elves) -> None:
    data = elves.read("uses_dep")
    want = parse_elf(data)
    sc = ELFScanner(len(data), keep_prefix=len(data))
    for i in range(0, len(data), 256):
        sc.feed(data[i : i + 256])
        if sc.satisfied:
            break
    assert sc.result() == want
    assert sc.pos < len(data)  # the section headers at the end were not needed
    # keeping nothing but the header: the string table (before .dynamic) goes by unkept
    sc = ELFScanner(len(data), keep_prefix=64, keep_before_dynamic=0)
    for i in range(0, len(data), 256):
        sc.feed(data[i : i + 256])
    assert sc.result() is None and sc.missed


def test_elf_hash_and_names() -> None:
    assert elf_hash("GLIBC_2.2.5") == 0x09691A75
    assert KNOWN_VERSION_NAMES[elf_hash("GLIBC_2.28")] == "GLIBC_2.28"
    assert KNOWN_VERSION_NAMES[elf_hash("GLIBCXX_3.4.30")] == "GLIBCXX_3.4.30"
    assert version_tuple("GLIBCXX_3.4.30", "GLIBCXX_") == (3, 4, 30)
    assert version_tuple("GLIBC_PRIVATE", "GLIBC_") is None
    assert version_tuple("GLIBCXX_3.4", "GLIBC_") is None
    assert is_elf(b"\x7fELF\x02") and not is_elf(b"PK\x03\x04")


def test_malformed(elves: Elves) -> None:
    data = elves.read("plain")
    with pytest.raises(ELFError, match=r"^cut\.so: malformed ELF"):
        parse_elf(data[:40], name="cut.so")
    with pytest.raises(ELFError, match=r"^x\.so: not an ELF file"):
        parse_elf(b"\x00" * 100, name="x.so")
    with pytest.raises(ELFError, match="unknown class"):
        parse_elf(data[:4] + b"\x07" + data[5:], name="c.so")
    # program headers pointing past the end of the file
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 32, len(data) + 100)  # e_phoff
    with pytest.raises(ELFError, match=r"^p\.so: .*program headers .* outside the file"):
        parse_elf(bytes(bad), name="p.so")
    # truncated just after the program headers: the dynamic section is missing
    with pytest.raises(ELFError, match=r"^t\.so: malformed ELF: dynamic section"):
        parse_elf(data[:1024], name="t.so")


@pytest.mark.parametrize("which", ["plain", "fcntl64", "arc4random", "cxx_new", "executable"])
def test_scan_version_needs_from_hashes_alone(elves: Elves, which: str) -> None:
    data = elves.read(which)
    full = parse_elf(data)
    found = scan_version_needs(data)
    assert [n.hash for n in found] == [n.hash for n in full.version_needs]
    assert [n.name for n in found] == [n.name for n in full.version_needs]  # all known names
    # only the start of the file is needed: up to the end of .gnu.version_r
    end = max(n.file_offset for n in found) + 16
    assert scan_version_needs(data[:end]) == found
    assert scan_version_needs(data[: end - 8]) == []


def test_scan_version_needs_rejects_noise() -> None:
    import random

    rnd = random.Random(5)
    noise = bytes(rnd.getrandbits(8) for _ in range(200_000))
    # a lone record shape without a valid chain behind it
    fake = b"\x01\x00\x02\x00" + b"\x00" * 4 + b"\x10\x00\x00\x00" + b"\x00" * 4
    assert scan_version_needs(noise + fake + noise) == []
