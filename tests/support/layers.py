"""Real layer zips for check tests: a layer writer, a raw re-zipper and the torch layer fixture.

* :func:`make_layer` writes a zip from ``{member name: bytes}`` (with Unix modes, symlinks and
  deliberately unsafe names when asked), the way SAM, CDK or ``zip -r`` would.
* :func:`install_wheel` places a wheel's members under a prefix (``python/lib/python3.11/
  site-packages/``) as ``pip install --target`` would, RECORD unchanged.
* :func:`rezip_raw` builds a layer from a wheel by copying each member's compressed bytes as
  they are (``ZipReader.data_range``): re-zipping torch's 700 MB costs seconds, not minutes.
* Fixture ``torch_layer`` (session): the real torch wheel (``torch_wheel`` from
  tests/support/torch.py: ``pip download torch==2.13.0 --no-deps``, skipped when that fails)
  re-zipped as-is under ``python/lib/python3.11/site-packages/``.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from torchwheel.zipread import ZipReader

DATE_TIME = (2024, 1, 1, 0, 0, 0)
SITE311 = "python/lib/python3.11/site-packages/"


def make_layer(
    path: Path,
    files: Mapping[str, bytes],
    *,
    modes: Mapping[str, int] | None = None,
    symlinks: Mapping[str, str] | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Write a zip with ``files`` (and ``symlinks``: name -> link target); return its path."""
    modes = modes or {}
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=DATE_TIME)
            info.compress_type = compression
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | modes.get(name, 0o644)) << 16
            zf.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name, date_time=DATE_TIME)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target.encode())
    return path


def libz_so(tmp_path: Path) -> bytes:
    """A shared object built with gcc that needs libz.so.1 (skips without gcc or zlib)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = tmp_path / "usez.c"
    src.write_text("#include <zlib.h>\nconst char *v(void){return zlibVersion();}\n")
    so = tmp_path / "libusez.so"
    done = subprocess.run(
        ["gcc", "-shared", "-fPIC", str(src), "-o", str(so), "-lz"], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot link against zlib here: {done.stderr.strip()[:200]}")
    return so.read_bytes()


def wheel_members(wheel: Path) -> dict[str, bytes]:
    """All members of a (small) wheel, by name."""
    with zipfile.ZipFile(wheel) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def install_wheel(wheel: Path, prefix: str = SITE311) -> dict[str, bytes]:
    """The layer files of ``wheel`` installed under ``prefix`` (RECORD unchanged)."""
    return {prefix + name: data for name, data in wheel_members(wheel).items()}


def rezip_raw(src: Path, dest: Path, prefix: str) -> Path:
    """Copy every member of ``src`` into ``dest`` under ``prefix``, compressed bytes as-is."""
    lfh = struct.Struct("<4s2B4HL2L2H")
    cdh = struct.Struct("<4s4B4HL2L5H2L")
    tmp = dest.with_name(dest.name + ".tmp")
    dos_time = (DATE_TIME[3] << 11) | (DATE_TIME[4] << 5) | (DATE_TIME[5] // 2)
    dos_date = ((DATE_TIME[0] - 1980) << 9) | (DATE_TIME[1] << 5) | DATE_TIME[2]
    central: list[bytes] = []
    with ZipReader(src) as zr, open(tmp, "wb") as out:
        for m in zr.members:
            name = (prefix + m.name).encode()
            off, length = zr.data_range(m)
            if out.tell() > 0xFFFFFFFF or length > 0xFFFFFFFF:
                raise ValueError("rezip_raw writes no ZIP64 records")
            header_offset = out.tell()
            flags = 0x800 if m.flag_bits & 0x800 else 0
            out.write(
                lfh.pack(
                    b"PK\x03\x04",
                    20,
                    0,
                    flags,
                    m.compress_type,
                    dos_time,
                    dos_date,
                    m.crc,
                    m.compressed_size,
                    m.file_size,
                    len(name),
                    0,
                )
            )
            out.write(name)
            done = 0
            while done < length:
                n = min(1 << 22, length - done)
                out.write(os.pread(zr._fd, n, off + done))
                done += n
            mode = m.mode or (stat.S_IFREG | 0o644)
            central.append(
                cdh.pack(
                    b"PK\x01\x02",
                    20,
                    3,
                    20,
                    0,
                    flags,
                    m.compress_type,
                    dos_time,
                    dos_date,
                    m.crc,
                    m.compressed_size,
                    m.file_size,
                    len(name),
                    0,
                    0,
                    0,
                    0,
                    mode << 16,
                    header_offset,
                )
                + name
            )
        cd_offset = out.tell()
        cd = b"".join(central)
        out.write(cd)
        out.write(
            struct.pack(
                "<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), len(cd), cd_offset, 0
            )
        )
    tmp.replace(dest)
    return dest


@pytest.fixture(scope="session")
def torch_layer(torch_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The torch wheel as a layer under python/lib/python3.11/site-packages/."""
    return rezip_raw(
        torch_wheel, tmp_path_factory.mktemp("torch-layer") / "torch-layer.zip", SITE311
    )
