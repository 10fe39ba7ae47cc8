"""Budgets of the zip reader (issue 13): overlap, per-member ratio, member size, total inflate,
regular files only; each just under and just over its limit."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.support.hostile import overlapping_members, zip64_locator_overflow, zip_of
from torchwheel.errors import ArchiveError, InputError
from torchwheel.limits import MAX_RATIO, RATIO_FLOOR, ZipLimits
from torchwheel.zipread import ZipReader, open_regular, read_central_directory


def _reader_of(data: bytes, tmp_path: Path, **limits: float) -> ZipReader:
    path = tmp_path / "x.zip"
    path.write_bytes(data)
    return ZipReader(path, limits=ZipLimits(**limits))  # type: ignore[arg-type]


def test_overlapping_members_are_refused(tmp_path: Path) -> None:
    data = overlapping_members(count=3, size=1 << 20)
    path = tmp_path / "o.zip"
    path.write_bytes(data)
    with pytest.raises(ArchiveError, match=r"overlapping members: python/bomb0000\.bin"):
        ZipReader(path)


def test_adjacent_members_are_not_overlapping(tmp_path: Path) -> None:
    # empty members back to back: each local header ends exactly where the next begins
    data = zip_of({"a": b"", "b": b"", "c": b"x" * 10})
    with _reader_of(data, tmp_path) as zr:
        assert [zr.read(m) for m in zr.members] == [b"", b"", b"x" * 10]


def test_one_byte_of_overlap_is_refused(tmp_path: Path) -> None:
    data = bytearray(zip_of({"a": b"hello", "b": b"world"}))
    # move b's local header offset one byte back, into a's data
    cd = data.rindex(b"PK\x01\x02")
    (offset,) = struct.unpack_from("<L", data, cd + 42)
    struct.pack_into("<L", data, cd + 42, offset - 1)
    (tmp_path / "x.zip").write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="overlapping members: a "):
        ZipReader(tmp_path / "x.zip")


def test_zip64_locator_past_2_63_is_an_archive_error() -> None:
    data = zip64_locator_overflow()
    with pytest.raises(ArchiveError, match="outside the 106-byte file"):
        read_central_directory(lambda o, n: data[o : o + n], len(data), source="z.zip")


def _zeros_member(size: int) -> tuple[bytes, int]:
    """A zip with one deflated member of ``size`` zero bytes, and its compressed size."""
    data = zip_of({"zeros.bin": bytes(size)})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return data, zf.getinfo("zeros.bin").compress_size


def test_ratio_limit_just_under_and_over(tmp_path: Path) -> None:
    size = 4 * RATIO_FLOOR
    data, csize = _zeros_member(size)
    ratio = size / csize
    with _reader_of(data, tmp_path, max_ratio=ratio, ratio_floor=RATIO_FLOOR) as zr:
        assert zr.read(zr.members[0]) == bytes(size)
    with (
        _reader_of(data, tmp_path, max_ratio=ratio * 0.999, ratio_floor=RATIO_FLOOR) as zr,
        pytest.raises(ArchiveError, match="ratio limit"),
    ):
        zr.read(zr.members[0])


def test_ratio_floor_exempts_small_members(tmp_path: Path) -> None:
    data, _csize = _zeros_member(RATIO_FLOOR)
    with _reader_of(data, tmp_path, max_ratio=2.0) as zr:  # floor: exactly RATIO_FLOOR passes
        assert len(zr.read(zr.members[0])) == RATIO_FLOOR
    data, _csize = _zeros_member(RATIO_FLOOR + 1)
    with _reader_of(data, tmp_path, max_ratio=2.0) as zr, pytest.raises(ArchiveError):
        zr.read(zr.members[0])


def test_declared_size_over_deflate_maximum_is_refused_by_default(tmp_path: Path) -> None:
    # a member claiming 1101 bytes per compressed byte lies: deflate cannot do it
    body = zlib.compress(b"abc")[2:-4]
    size = int(MAX_RATIO * len(body)) + RATIO_FLOOR
    data = bytearray(zip_of({"lie.bin": b"abc"}))
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = data.index(sig)
        struct.pack_into("<L", data, pos + off, size)
    (tmp_path / "x.zip").write_bytes(bytes(data))
    with ZipReader(tmp_path / "x.zip") as zr, pytest.raises(ArchiveError, match="ratio limit"):
        zr.read(zr.members[0])


def test_member_size_limit(tmp_path: Path) -> None:
    data = zip_of({"a.bin": b"x" * 1000})
    with _reader_of(data, tmp_path, max_member=1000) as zr:
        assert len(zr.read(zr.members[0])) == 1000
    with (
        _reader_of(data, tmp_path, max_member=999) as zr,
        pytest.raises(ArchiveError, match="member limit"),
    ):
        zr.read(zr.members[0])


def test_total_inflate_limit_counts_every_open(tmp_path: Path) -> None:
    data = zip_of({"a.bin": b"a" * 600, "b.bin": b"b" * 400})
    with _reader_of(data, tmp_path, max_total=1000) as zr:
        assert [len(zr.read(m)) for m in zr.members] == [600, 400]
        assert zr.inflated == 1000
        with pytest.raises(ArchiveError, match="more than 1,000 bytes in total"):
            zr.read(zr.members[0])  # a second open counts again
    with _reader_of(data, tmp_path, max_total=999) as zr:
        zr.read(zr.members[0])
        with pytest.raises(ArchiveError, match="in total"):
            zr.read(zr.members[1])


def test_total_inflate_limit_in_read_many(tmp_path: Path) -> None:
    data = zip_of({f"m{i}": b"z" * 100 for i in range(10)})
    with _reader_of(data, tmp_path, max_total=1000) as zr:
        assert len(list(zr.read_many(zr.members))) == 10
    with _reader_of(data, tmp_path, max_total=999) as zr, pytest.raises(ArchiveError):
        list(zr.read_many(zr.members))


def test_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHWHEEL_MAX_INFLATE", "5000")
    monkeypatch.setenv("TORCHWHEEL_MAX_RATIO", "50")
    limits = ZipLimits.from_env()
    assert (limits.max_total, limits.max_member, limits.max_ratio) == (5000, 5000, 50.0)
    monkeypatch.setenv("TORCHWHEEL_MAX_INFLATE", "lots")
    with pytest.raises(InputError, match="TORCHWHEEL_MAX_INFLATE='lots'"):
        ZipLimits.from_env()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "layer.zip"
    os.mkfifo(fifo)
    with pytest.raises(ArchiveError, match="not a regular file \\(a FIFO\\)"):
        ZipReader(fifo)


def test_a_device_is_refused() -> None:
    with pytest.raises(ArchiveError, match="character device"):
        open_regular("/dev/null")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="is a directory"):
        ZipReader(tmp_path)
