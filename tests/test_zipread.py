"""torchwheel.zipread against zips written by the stdlib ``zipfile`` module."""

from __future__ import annotations

import io
import os
import stat
import zipfile
import zlib
from pathlib import Path

import pytest

from torchwheel.errors import ArchiveError
from torchwheel.zipread import (
    TAIL_READ,
    ZipReader,
    is_unsafe_name,
    read_central_directory,
)


def _write(
    path: Path,
    members: dict[str, bytes],
    *,
    compression: int = zipfile.ZIP_DEFLATED,
    force_zip64: bool = False,
    comment: bytes = b"",
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        zf.comment = comment
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            with zf.open(info, "w", force_zip64=force_zip64) as f:
                f.write(data)
    return path


def _payload(n: int, seed: int = 0) -> bytes:
    # compressible but not trivial
    return b"".join(f"{seed}:{i}:{i * i % 977}\n".encode() for i in range(n))


@pytest.fixture
def sample(tmp_path: Path) -> dict[str, bytes]:
    return {
        "a.txt": b"hello\n",
        "dir/b.bin": os.urandom(300_000),
        "dir/c.txt": _payload(200_000),
        "empty": b"",
    }


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
@pytest.mark.parametrize("force_zip64", [False, True])
def test_members_and_contents_match_zipfile(
    tmp_path: Path, sample: dict[str, bytes], compression: int, force_zip64: bool
) -> None:
    path = _write(tmp_path / "x.zip", sample, compression=compression, force_zip64=force_zip64)
    with ZipReader(path) as zr, zipfile.ZipFile(path) as zf:
        assert [m.name for m in zr.members] == zf.namelist()
        for m, info in zip(zr.members, zf.infolist(), strict=True):
            assert (m.file_size, m.compressed_size, m.crc, m.compress_type) == (
                info.file_size,
                info.compress_size,
                info.CRC,
                info.compress_type,
            )
            assert m.header_offset == info.header_offset
            assert zr.read(m) == sample[m.name]
            assert m.mode == stat.S_IFREG | 0o644
            assert not m.is_dir and not m.is_symlink


def test_read_limit_stream_seek_and_chunks(tmp_path: Path, sample: dict[str, bytes]) -> None:
    path = _write(tmp_path / "x.zip", sample)
    data = sample["dir/c.txt"]
    with ZipReader(path) as zr:
        m = next(m for m in zr.members if m.name == "dir/c.txt")
        assert zr.read(m, limit=10) == data[:10]
        with zr.open(m) as f:
            assert f.read(5) == data[:5]
            f.seek(1_000_000)
            assert f.tell() == 1_000_000
            assert f.read(7) == data[1_000_000:1_000_007]
            f.seek(3)  # backwards: restarts the inflater
            assert f.read(4) == data[3:7]
            f.seek(-10, io.SEEK_END)
            assert f.read() == data[-10:]
            assert f.read(1) == b""
        assert b"".join(zr.iter_chunks(m)) == data


def test_raw_copy_via_data_range(tmp_path: Path, sample: dict[str, bytes]) -> None:
    path = _write(tmp_path / "x.zip", sample)
    with ZipReader(path) as zr:
        m = next(m for m in zr.members if m.name == "dir/c.txt")
        off, length = zr.data_range(m)
        raw = path.read_bytes()[off : off + length]
        assert raw == zr.read_raw(m)
        assert zlib.decompress(raw, -15) == sample["dir/c.txt"]


def test_comment_and_prepended_data(tmp_path: Path, sample: dict[str, bytes]) -> None:
    # a comment longer than one tail read, and bytes before the zip (self-extractor style)
    comment = b"c" * 65_000
    path = _write(tmp_path / "x.zip", sample, comment=comment)
    prefixed = tmp_path / "sfx.zip"
    prefixed.write_bytes(b"#!/bin/sh\nexit 0\n" * 100 + path.read_bytes())
    for p in (path, prefixed):
        with ZipReader(p) as zr:
            assert {m.name: zr.read(m) for m in zr.members} == sample


def test_many_members_zip64(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    n = 65_536 + 10
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"f/{i}", b"")
    raw = path.read_bytes()
    assert b"PK\x06\x06" in raw[-200:]  # zipfile wrote a ZIP64 end record
    with ZipReader(path) as zr:
        assert len(zr.members) == n
        assert zr.members[-1].name == f"f/{n - 1}"


def test_one_tail_read_for_small_archives(tmp_path: Path, sample: dict[str, bytes]) -> None:
    path = _write(tmp_path / "x.zip", sample)
    data = path.read_bytes()
    calls: list[tuple[int, int]] = []

    def read_at(off: int, length: int) -> bytes:
        calls.append((off, length))
        return data[off : off + length]

    members = read_central_directory(read_at, len(data), source="mem")
    assert [m.name for m in members] == list(sample)
    assert len(calls) == 1 and calls[0][1] == min(TAIL_READ, len(data))


def test_truncated_and_non_zips(tmp_path: Path, sample: dict[str, bytes]) -> None:
    path = _write(tmp_path / "x.zip", sample)
    data = path.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match=r"cut\.zip: not a zip archive"):
        ZipReader(cut)
    # end records intact, but the front of the file missing
    front = tmp_path / "front.zip"
    front.write_bytes(data[-5000:])
    with pytest.raises(ArchiveError, match=r"front\.zip: .*(inconsistent|truncated)"):
        ZipReader(front)
    text = tmp_path / "notes.zip"
    text.write_text("not a zip at all\n" * 100)
    with pytest.raises(ArchiveError, match="not a zip archive"):
        ZipReader(text)
    tiny = tmp_path / "tiny.zip"
    tiny.write_bytes(b"PK")
    with pytest.raises(ArchiveError, match="too short"):
        ZipReader(tiny)
    with pytest.raises(ArchiveError, match="no such file"):
        ZipReader(tmp_path / "missing.zip")
    with pytest.raises(ArchiveError, match="directory"):
        ZipReader(tmp_path)


def test_corrupt_member_data_is_detected(tmp_path: Path, sample: dict[str, bytes]) -> None:
    path = _write(tmp_path / "x.zip", {"s.txt": b"A" * 1000}, compression=zipfile.ZIP_STORED)
    with ZipReader(path) as zr:
        off, _ = zr.data_range(zr.members[0])
    data = bytearray(path.read_bytes())
    data[off + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    with ZipReader(path) as zr, pytest.raises(ArchiveError, match="CRC-32 mismatch"):
        zr.read(zr.members[0])
    path2 = _write(tmp_path / "y.zip", {"d.txt": _payload(5000)})
    with ZipReader(path2) as zr:
        off, length = zr.data_range(zr.members[0])
    data = bytearray(path2.read_bytes())
    for i in range(off + 20, off + length - 5):
        data[i] = 0xAA
    path2.write_bytes(bytes(data))
    with ZipReader(path2) as zr, pytest.raises(ArchiveError, match=r"y\.zip: d\.txt: "):
        zr.read(zr.members[0])


def test_unsupported_method_and_symlink_mode(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("b.bz2"), b"data" * 100, compress_type=zipfile.ZIP_BZIP2)
        link = zipfile.ZipInfo("lnk")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, b"../../etc/passwd")
        zf.writestr(zipfile.ZipInfo("d/"), b"")
    with ZipReader(path) as zr:
        bz, lnk, d = zr.members
        with pytest.raises(ArchiveError, match="unsupported compression method 12"):
            zr.read(bz)
        assert lnk.is_symlink and zr.read(lnk) == b"../../etc/passwd"
        assert d.is_dir


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("python/x.py", False),
        ("a/..b/c", False),
        ("../x", True),
        ("a/../../x", True),
        ("/etc/passwd", True),
        ("\\windows\\x", True),
        ("C:/x", True),
        ("a\\..\\..\\x", True),
        ("", True),
        ("a\x00b", True),
    ],
)
def test_is_unsafe_name(name: str, unsafe: bool) -> None:
    assert is_unsafe_name(name) is unsafe


def test_a_stored_member_cannot_claim_more_than_its_data(tmp_path: Path) -> None:
    # a stored member recording 40 uncompressed bytes over 10 of data was read through into
    # the next member's local header and data (with a CRC made to match): a different file
    # from the one unzip sees
    path = _write(tmp_path / "x.zip", {"a": b"A" * 10, "b": b"B" * 100}, compression=0)
    with ZipReader(path) as zr:
        off, _ = zr.data_range(zr.members[0])
    data = bytearray(path.read_bytes())
    stolen = bytes(data[off : off + 40])
    cd = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x01\x02"))  # member a's entry
    data[cd + 16 : cd + 20] = zlib.crc32(stolen).to_bytes(4, "little")
    data[cd + 24 : cd + 28] = (40).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with ZipReader(path) as zr:
        a, b = zr.members
        assert a.file_size == 40
        for read in (lambda: zr.read(a), lambda: dict(zr.read_many([a, b]))):
            with pytest.raises(ArchiveError, match=r"x\.zip: a: stored member of 10 bytes"):
                read()
        assert zr.read(b) == b"B" * 100
