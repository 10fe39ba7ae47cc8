"""Every zip member is inflated once and CRC-checked by ``check``: a corrupt member never passes.

Issue 13: a corrupt deflate stream or CRC-32 inside a ``.so`` over 256 KB that RECORD does not
list used to pass, because only the ELF headers of such a file were read. These layers hold a
real shared object (gcc) followed by 400 KB of random bytes (so that it deflates to more than
256 KB and its dynamic section is far from its end), and are corrupted after the part an ELF
parse needs. Both inflaters are exercised: ISA-L (python-isal) and, with isal hidden, zlib.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from tests.support.elves import Elves
from tests.support.layers import SITE311, install_wheel, make_layer
from tests.support.wheels import make_wheel
from torchwheel.checks import check
from torchwheel.errors import ArchiveError
from torchwheel.zipread import ZipReader
from torchwheel.zipstream import _ZlibInflater, inflate_backend, inflate_whole, new_inflater

BIG_SO = SITE311 + "native/_big.so"
DATA = SITE311 + "native/table.bin"
#: Run the CLI with ISA-L and with stdlib zlib (isal made unimportable).
BACKENDS = ["isal", "zlib"] if inflate_backend() == "isal" else ["zlib"]


def big_elf(elves: Elves, extra: int = 400_000) -> bytes:
    """A real shared object plus ``extra`` incompressible bytes after its section headers."""
    return elves.read("plain") + random.Random(13).randbytes(extra)


def layer_with(path: Path, elves: Elves, *, stored: bool = False, extra: int = 400_000) -> Path:
    """A layer with an installed wheel (RECORD) and a big .so and a data file it does not list."""
    wheel = make_wheel(path.parent / "wheels", "good", "1.0")
    files = install_wheel(wheel)
    files[BIG_SO] = big_elf(elves, extra)
    files[DATA] = random.Random(7).randbytes(300_000)
    compression = 0 if stored else 8
    return make_layer(path, files, compression=compression)


def flip_byte(zip_path: Path, name: str, fraction: float) -> None:
    """Flip one byte of member ``name``'s stored data, ``fraction`` of the way through it."""
    with ZipReader(zip_path) as zr:
        m = next(m for m in zr.members if m.name == name)
        off, length = zr.data_range(m)
    where = off + int(length * fraction)
    with open(zip_path, "r+b") as f:
        f.seek(where)
        b = f.read(1)
        f.seek(where)
        f.write(bytes([b[0] ^ 0x5A]))


def set_crc(zip_path: Path, name: str, crc: int) -> None:
    """Write ``crc`` into member ``name``'s local header and central-directory entry."""
    data = bytearray(zip_path.read_bytes())
    encoded = name.encode()
    with ZipReader(zip_path) as zr:
        m = next(m for m in zr.members if m.name == name)
    struct.pack_into("<L", data, m.header_offset + 14, crc)
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        nlen = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46 : pos + 46 + nlen]) == encoded:
            struct.pack_into("<L", data, pos + 16, crc)
            break
        pos = data.find(b"PK\x01\x02", pos + 4)
    else:
        raise AssertionError(f"{name} not in the central directory")
    zip_path.write_bytes(bytes(data))


def run_check(backend: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``torchwheel check ARGS`` in a child process, with isal hidden for ``zlib``."""
    code = "import sys\n"
    if backend == "zlib":
        code += "sys.modules['isal'] = None\n"
    code += "from torchwheel.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, "check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- the command -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_intact_layer_passes(tmp_path: Path, elves: Elves, backend: str) -> None:
    layer = layer_with(tmp_path / "layer.zip", elves)
    proc = run_check(backend, layer, "--runtime", "python3.11", "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)["stats"]
    assert stats["inflate"] == backend
    with ZipReader(layer) as zr:  # every member inflated exactly once
        assert stats["bytes_read"] == sum(m.file_size for m in zr.members)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["deflate", "crc"])
def test_a_corrupt_big_so_that_record_does_not_list_fails(
    tmp_path: Path, elves: Elves, backend: str, how: str
) -> None:
    layer = layer_with(tmp_path / "layer.zip", elves)
    if how == "deflate":
        flip_byte(layer, BIG_SO, 0.9)  # far past the ELF headers and the dynamic section
    else:
        set_crc(layer, BIG_SO, zlib.crc32(big_elf(elves)) ^ 1)
    proc = run_check(backend, layer, "--runtime", "python3.11")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "native/_big.so" in lines[0], proc.stderr
    assert any(w in lines[0] for w in ("CRC-32 mismatch", "corrupt", "truncated")), lines[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_corrupt_stored_member_fails(tmp_path: Path, elves: Elves, backend: str) -> None:
    layer = layer_with(tmp_path / "layer.zip", elves, stored=True)
    flip_byte(layer, BIG_SO, 0.95)
    proc = run_check(backend, layer, "--runtime", "python3.11")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "CRC-32 mismatch" in proc.stderr and "native/_big.so" in proc.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_record_says_what_it_did_not_check(tmp_path: Path, elves: Elves, backend: str) -> None:
    # over the 4 MiB one inflate step gives: --no-record stops after the ELF headers
    layer = layer_with(tmp_path / "layer.zip", elves, extra=9_000_000)
    flip_byte(layer, BIG_SO, 0.9)
    proc = run_check(backend, layer, "--runtime", "python3.11", "--no-record", "--json")
    assert proc.returncode == 0, proc.stderr  # not read, so not found corrupt: but said so
    report = json.loads(proc.stdout)
    notes = [f for f in report["findings"] if f["code"] == "crc-not-checked"]
    assert len(notes) == 1 and notes[0]["severity"] == "info"
    assert notes[0]["path"] == str(layer)
    big = len(big_elf(elves, 9_000_000))
    assert notes[0]["detail"]["bytes"] >= big + 300_000  # the .so and table.bin at least
    assert report["stats"]["bytes_read"] < big  # the .so read in part
    proc = run_check(backend, layer, "--runtime", "python3.11")  # the default reads it all
    assert proc.returncode == 2 and "native/_big.so" in proc.stderr, proc.stderr


# -- the library -------------------------------------------------------------------------------


def test_a_corrupt_data_file_no_record_lists_fails(tmp_path: Path, elves: Elves) -> None:
    layer = layer_with(tmp_path / "layer.zip", elves)
    flip_byte(layer, DATA, 0.8)
    with pytest.raises(ArchiveError, match=r"native/table\.bin"):
        check([layer], runtime="python3.11")
    check([layer], runtime="python3.11", record=False)  # --no-record does not read it


def test_a_hidden_member_of_an_earlier_layer_is_checked_too(tmp_path: Path, elves: Elves) -> None:
    first = layer_with(tmp_path / "first.zip", elves)
    second = make_layer(tmp_path / "second.zip", {BIG_SO: big_elf(elves)})
    flip_byte(first, BIG_SO, 0.9)  # the second layer's copy is the one Lambda keeps
    with pytest.raises(ArchiveError, match=r"first\.zip: .*native/_big\.so"):
        check([first, second], runtime="python3.11")
    flip_byte(first, BIG_SO, 0.9)  # flipped back
    assert check([first, second], runtime="python3.11").ok


def test_an_error_while_gathering_stops_the_early_reads(tmp_path: Path, elves: Elves) -> None:
    # the big .so starts inflating before the dist-info are read; a METADATA over the
    # metadata limit then fails the check: no thread may be left reading
    files = {BIG_SO: big_elf(elves, 9_000_000)}
    files[SITE311 + "huge-1.0.dist-info/METADATA"] = b"Name: huge\n" + b"x" * (17 << 20)
    layer = make_layer(tmp_path / "layer.zip", files)
    before = threading.active_count()
    with pytest.raises(ArchiveError, match="too large for a metadata file"):
        check([layer], runtime="python3.11", workers=2)
    assert threading.active_count() == before


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_workers_do_not_change_the_report(tmp_path: Path, elves: Elves, workers: int) -> None:
    layer = layer_with(tmp_path / "layer.zip", elves)
    one = check([layer], runtime="python3.11", workers=1).to_dict()
    many = check([layer], runtime="python3.11", workers=workers).to_dict()
    for r in (one, many):
        r["stats"].pop("seconds")
    assert one == many


# -- the inflaters -----------------------------------------------------------------------------


def _deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("step", [1, 1000, 1 << 20])
def test_both_inflaters_give_the_bytes_and_crc(step: int) -> None:
    rng = random.Random(step)
    data = rng.randbytes(50_000) + b"abc" * 100_000 + rng.randbytes(1000)
    raw = _deflate(data)
    for d in (new_inflater(), _ZlibInflater()):
        out = []
        pos = 0
        while not d.eof:
            chunk = b""
            if d.needs_input:
                chunk, pos = raw[pos : pos + 4096], pos + 4096
                assert chunk, "ran out of input before the end of the stream"
            out.append(d.decompress(chunk, step))
        assert b"".join(out) == data
        assert d.crc & 0xFFFFFFFF == zlib.crc32(data)


class _Member:
    def __init__(self, data: bytes, method: int = 8, size: int | None = None) -> None:
        self.name = "m"
        self.compress_type = method
        self.file_size = len(data) if size is None else size
        self.crc = zlib.crc32(data)
        self.compressed_size = 0
        self.is_encrypted = False


def test_inflate_whole_checks_size_and_crc() -> None:
    data = os.urandom(3000) + b"x" * 5000
    raw = _deflate(data)
    assert inflate_whole(raw, _Member(data), "t") == data
    assert inflate_whole(data, _Member(data, method=0), "t") == data
    bad = _Member(data)
    bad.crc ^= 1
    with pytest.raises(ArchiveError, match="CRC-32 mismatch"):
        inflate_whole(raw, bad, "t")
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        inflate_whole(raw, _Member(data, size=len(data) - 1), "t")  # inflates past its size
    with pytest.raises(ArchiveError, match=r"corrupt deflate|truncated or corrupt|CRC"):
        inflate_whole(b"\xff" * 64, _Member(data), "t")
