"""Budgets of the packed-archive expander (issue 13), each just under and just over, and the
manifest validated the loader's way when checking and building."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from tests.support.hostile import tar_zst
from torchwheel.checks import packed as checks_packed
from torchwheel.checks.model import LayerEntry
from torchwheel.errors import ArchiveError, InputError
from torchwheel.packed import read_manifest

ARCHIVE_PATH = "python/torchwheel_packed/site-packages.tar.zst"


def _entry(archive: bytes) -> LayerEntry:
    return LayerEntry(
        path=ARCHIVE_PATH,
        size=len(archive),
        mode=0o644,
        is_symlink=False,
        is_dir=False,
        origin="layer.zip",
        mount="/opt",
        open=lambda: io.BytesIO(archive),
    )


def _files(entries: list[LayerEntry]) -> dict[str, bytes]:
    out = {}
    for e in entries:
        if not e.is_dir:
            with e.open() as f:
                out[e.path] = f.read()
    return out


def test_members_are_served_back_exactly() -> None:
    members = {"pkg/small.py": b"x = 1\n", "pkg/big.bin": bytes(range(256)) * 40, "pkg/e": b""}
    archive = tar_zst(list(members.items()), level=3)
    expansion = checks_packed.expand_packed_archive(_entry(archive))
    assert expansion is not None
    assert _files(list(expansion.entries)) == members


def test_member_count_just_under_and_over(monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tar_zst([(f"m{i}", b"") for i in range(10)], level=3)
    monkeypatch.setattr(checks_packed, "MAX_MEMBERS", 10)
    assert checks_packed.expand_packed_archive(_entry(archive)) is not None
    monkeypatch.setattr(checks_packed, "MAX_MEMBERS", 9)
    with pytest.raises(ArchiveError, match=r"layer\.zip:.*: packed archive holds more than 9 "):
        checks_packed.expand_packed_archive(_entry(archive))


@dataclass(frozen=True)
class _Quotas:
    ephemeral_storage_max_mb: int


def test_unpacked_size_just_under_and_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks_packed, "quotas", lambda: _Quotas(1))  # 1 MiB of /tmp at most
    fits = tar_zst([("a", 1 << 19), ("b", 1 << 19)], level=3)
    assert checks_packed.expand_packed_archive(_entry(fits)) is not None
    over = tar_zst([("a", 1 << 19), ("b", (1 << 19) + 1)], level=3)
    with pytest.raises(ArchiveError, match="unpacks to more than 1,048,576 bytes"):
        checks_packed.expand_packed_archive(_entry(over))


def test_held_bytes_just_under_and_over(monkeypatch: pytest.MonkeyPatch) -> None:
    members = [(f"f{i}", bytes([i]) * 100) for i in range(20)]  # 2,000 raw bytes held
    archive = tar_zst(members, level=3)
    per_byte = 0
    monkeypatch.setattr(checks_packed, "HELD_PER_ARCHIVE_BYTE", per_byte)
    monkeypatch.setattr(checks_packed, "HELD_FLOOR", 2000)
    assert checks_packed.expand_packed_archive(_entry(archive)) is not None
    monkeypatch.setattr(checks_packed, "HELD_FLOOR", 1999)
    with pytest.raises(ArchiveError, match="more than 1,999 bytes held"):
        checks_packed.expand_packed_archive(_entry(archive))


def test_many_large_zero_members_are_held_as_small_frames() -> None:
    archive = tar_zst([(f"z{i}", 1 << 20) for i in range(200)], level=3)
    expansion = checks_packed.expand_packed_archive(_entry(archive))
    assert expansion is not None
    assert len(expansion.entries) == 200
    # the default budget for a small archive is HELD_FLOOR: 200 MiB of zeros fit as frames
    assert len(archive) * checks_packed.HELD_PER_ARCHIVE_BYTE < checks_packed.HELD_FLOOR


def test_read_manifest_validates_like_the_loader(tmp_path: Path) -> None:
    d = tmp_path / "torchwheel_packed"
    d.mkdir()
    good = {"format": 1, "archive": "site-packages.tar.zst", "sha256": "0" * 64, "files": 3}
    (d / "manifest.json").write_text(json.dumps(good))
    assert read_manifest(tmp_path) == good
    for bad, says in (
        ({**good, "sha256": "../x"}, "sha256 is not 64 lowercase hex digits"),
        ({**good, "archive": "../../x"}, "is not a plain file name"),
        ([good], "not a JSON object"),
    ):
        (d / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=says):
            read_manifest(tmp_path)
    (d / "manifest.json").write_bytes(b"[" * 100_000)
    with pytest.raises(InputError, match="not readable JSON"):
        read_manifest(tmp_path)


def test_sha_of_hostile_archive_is_still_the_archives() -> None:
    archive = tar_zst([("a", b"1")], level=3)
    expansion = checks_packed.expand_packed_archive(_entry(archive))
    assert expansion is not None
    assert expansion.sys_path == (f"/tmp/torchwheel-{hashlib.sha256(archive).hexdigest()[:16]}",)


def test_a_negative_pax_size_is_refused_before_reading() -> None:
    # size=-1 in a PAX header made the expander (and the loader) call read(-1): the whole
    # rest of the decompressed stream read into memory as one member
    pax = tarfile.TarInfo("pkg/a.py")
    pax.pax_headers = {"size": "-1"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(pax, io.BytesIO(b""))
        big = tarfile.TarInfo("pkg/zeros")
        big.size = 8 << 20
        tf.addfile(big, io.BytesIO(bytes(big.size)))
    archive = zstandard.ZstdCompressor(level=3).compress(buf.getvalue())
    with pytest.raises(ArchiveError, match=r"'pkg/a\.py' has a negative size"):
        checks_packed.expand_packed_archive(_entry(archive))
