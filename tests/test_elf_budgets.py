"""Budgets and hostile inputs of the ELF reader (issue 13): the version-table walk, the size
limits (each just under and just over), machine names that state class and byte order, and the
one validated reading of version names."""

from __future__ import annotations

import struct
import time

import pytest

from tests.support.hostile import EM_AARCH64, build_elf, elf_hash, verneed_chain_bomb
from torchwheel import elf
from torchwheel.elf import ELFScanner, machine_name, parse_elf, version_tuple
from torchwheel.errors import ELFError


def _strtab_size(*strings: str) -> int:
    return 1 + sum(len(s) + 1 for s in dict.fromkeys(strings))


def test_a_well_formed_file_reads() -> None:
    data = build_elf(
        needed=("libc.so.6", "libstdc++.so.6"),
        version_needs=(
            ("libc.so.6", ("GLIBC_2.2.5", "GLIBC_2.17")),
            ("libstdc++.so.6", ("GLIBCXX_3.4",)),
        ),
    )
    info = parse_elf(data, name="x.so")
    assert info.machine == "x86_64" and info.needed == ("libc.so.6", "libstdc++.so.6")
    assert [(n.file, n.name) for n in info.version_needs] == [
        ("libc.so.6", "GLIBC_2.2.5"),
        ("libc.so.6", "GLIBC_2.17"),
        ("libstdc++.so.6", "GLIBCXX_3.4"),
    ]
    assert info.notes == ()


def test_verneed_chain_shared_by_records_is_refused_fast() -> None:
    data = verneed_chain_bomb(records=4096, chain=65_535)
    start = time.perf_counter()
    with pytest.raises(ELFError, match="reached twice"):
        parse_elf(data, name="bomb.so")
    assert time.perf_counter() - start < 5


def test_the_streaming_scanner_refuses_the_chain_bomb_too() -> None:
    data = verneed_chain_bomb(records=64, chain=4096)
    sc = ELFScanner(len(data), name="bomb.so")
    with pytest.raises(ELFError, match="reached twice"):
        for i in range(0, len(data), 1 << 16):
            sc.feed(data[i : i + (1 << 16)])
        sc.result()


def _records_into_zeros(n: int, tail: int) -> bytes:
    """``n`` Verneed records, each with one aux entry in a run of zero bytes (an all-zero
    entry is valid: hash 0 of the empty name, next 0), the entries 4 bytes apart, overlapping;
    ``tail`` bytes from the end of the records to the end of the file."""

    def table(offset: int, index: dict[str, int]) -> tuple[bytes, int]:
        out = b""
        for i in range(n):
            aux = 16 * n + 4 * i - 16 * i  # from record i to its entry in the zero run
            out += struct.pack("<HHIII", 1, 1, index["libc.so.6"], aux, 0 if i == n - 1 else 16)
        return out + bytes(tail), n

    return build_elf(verneed_override=table)


def test_entry_budget_just_under_and_over() -> None:
    n = 64  # 2n records + entries: the budget holds them when the table spans 32n bytes
    info = parse_elf(_records_into_zeros(n, tail=16 * n), name="x.so")
    assert len(info.version_needs) == n
    with pytest.raises(ELFError, match="more entries than the table's bytes can hold"):
        parse_elf(_records_into_zeros(n, tail=16 * n - 1), name="x.so")


def test_a_backward_or_overlapping_next_pointer_is_refused() -> None:
    def table(offset: int, index: dict[str, int]) -> tuple[bytes, int]:
        h = elf_hash(b"GLIBC_2.2.5")
        rec = struct.pack("<HHIII", 1, 2, index["libc.so.6"], 16, 0)
        aux = struct.pack("<IHHII", h, 0, 2, index["GLIBC_2.2.5"], 8)  # next entry overlaps
        return rec + aux + bytes(32), 1

    with pytest.raises(ELFError, match="must not overlap"):
        parse_elf(build_elf(verneed_override=table), name="x.so")


@pytest.mark.parametrize(
    ("limit", "value", "build"),
    [
        ("MAX_STRTAB", _strtab_size("libc.so.6", "GLIBC_2.2.5"), {}),
        ("MAX_STRING", len("libc.so.6"), {"version_needs": ()}),
        ("MAX_VERSION_NAME", len("GLIBC_2.2.5"), {}),
    ],
)
def test_size_limits_just_under_and_over(
    monkeypatch: pytest.MonkeyPatch, limit: str, value: int, build: dict[str, object]
) -> None:
    data = build_elf(**build)  # type: ignore[arg-type]
    monkeypatch.setattr(elf, limit, value)
    assert parse_elf(data, name="x.so").needed == ("libc.so.6",)
    monkeypatch.setattr(elf, limit, value - 1)
    with pytest.raises(ELFError, match=r"x\.so: malformed ELF"):
        parse_elf(data, name="x.so")


def test_dynamic_section_limit_just_under_and_over(monkeypatch: pytest.MonkeyPatch) -> None:
    data = build_elf()
    dyn_size = 16 * 5  # NEEDED, STRTAB, STRSZ, VERNEED, VERNEEDNUM + NULL (the last cut)
    monkeypatch.setattr(elf, "MAX_DYNAMIC", dyn_size + 16)
    assert parse_elf(data).has_dynamic
    monkeypatch.setattr(elf, "MAX_DYNAMIC", dyn_size + 15)
    with pytest.raises(ELFError, match="dynamic section of 96 bytes"):
        parse_elf(data)


def test_program_header_entry_size_limit() -> None:
    data = bytearray(build_elf())
    struct.pack_into("<H", data, 54, elf.MAX_PHENTSIZE + 1)  # e_phentsize
    with pytest.raises(ELFError, match="program header size 257"):
        parse_elf(bytes(data))


def test_an_overlong_version_name_is_malformed_not_a_crash() -> None:
    data = build_elf(version_needs=(("libc.so.6", ("GLIBC_2." + "9" * 5000,)),))
    with pytest.raises(ELFError, match="version name of 5,008 bytes"):
        parse_elf(data, name="x.so")


@pytest.mark.parametrize(
    ("bits", "little", "machine", "expected"),
    [
        (64, True, 62, "x86_64"),
        (32, True, 62, "x86_64 (32-bit, little-endian)"),
        (64, False, 62, "x86_64 (64-bit, big-endian)"),
        (64, True, EM_AARCH64, "aarch64"),
        (64, False, EM_AARCH64, "aarch64 (64-bit, big-endian)"),
        (32, True, EM_AARCH64, "aarch64 (32-bit, little-endian)"),
        (32, True, 3, "i386"),
    ],
)
def test_machine_names_state_class_and_byte_order(
    bits: int, little: bool, machine: int, expected: str
) -> None:
    assert machine_name(machine, bits, little) == expected
    info = parse_elf(build_elf(bits=bits, little=little, machine=machine))
    assert info.machine == expected
    assert info.needed == ("libc.so.6",)  # the rest of the file reads in either layout


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("GLIBC_2.28", (2, 28)),
        ("GLIBCXX_3.4.30", (3, 4, 30)),
        ("GLIBC_2.28x", None),
        ("GLIBCXX_3.4.x", None),
        ("GLIBC_2." + "9" * 5000, None),
        ("GLIBC_2.1234567890", None),
        ("GLIBC_PRIVATE", None),
        ("GLIBC_", None),
        ("GLIBC_2..3", None),
        ("GLIBC_２.28", None),  # fullwidth digit: str.isdigit() says yes, int() would too
    ],
)
def test_version_tuple_is_the_validated_reading(name: str, expected: tuple[int, ...]) -> None:
    assert version_tuple(name, name.split("_", 1)[0] + "_") == expected
