"""LayerTree (installer-correct install), slim, strip and the reproducible layer zip."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.wheels import check_records, make_wheel, raw_wheel, record_hash
from torchwheel.errors import ArchiveError
from torchwheel.layer import (
    LayerTree,
    compress_backend,
    layer_prefix,
    slim,
    strip,
    write_layer_zip,
    zip_date_time,
)
from torchwheel.targets import make_target
from torchwheel.zipread import ZipReader

TARGET = make_target("x86_64", "3.11", runtime="provided.al2023")
SITE = "python/lib/python3.11/site-packages"


def _rh(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def fancy_wheel(tmp_path: Path, native_so: bytes) -> Path:
    return make_wheel(
        tmp_path / "wheels",
        "fastmath",
        "1.0",
        tags="cp311-cp311-manylinux_2_17_x86_64",
        files={
            "fastmath/__init__.py": b"from ._plat import VALUE\n",
            "fastmath/_native.so": native_so,
        },
        data={
            "purelib": {"fastmath_extra/__init__.py": b"EXTRA = 1\n"},
            "platlib": {"fastmath/_plat.py": b"VALUE = 42\n"},
            "scripts": {"fm-cli": b"#!python\nprint('hi')\n"},
            "headers": {"fastmath.h": b"int fastmath(void);\n"},
            "data": {"share/doc/fastmath.txt": b"docs\n"},
        },
        entry_points="[console_scripts]\nfm = fastmath:main\n",
    )


def test_install_like_installer(tmp_path: Path, fancy_wheel: Path) -> None:
    tree = LayerTree(tmp_path / "tree", layer_prefix(TARGET))
    dist = tree.install(fancy_wheel)
    tree.finalize()
    site = tmp_path / "tree" / SITE
    assert (site / "fastmath/__init__.py").read_bytes() == b"from ._plat import VALUE\n"
    assert (site / "fastmath/_plat.py").read_bytes() == b"VALUE = 42\n"  # .data/platlib merged
    assert (site / "fastmath_extra/__init__.py").is_file()  # .data/purelib merged
    assert not list(site.glob("*.data"))
    assert not (tmp_path / "tree" / "bin").exists()
    assert (site / "fastmath-1.0.dist-info/INSTALLER").read_bytes() == b"torchwheel\n"
    assert not [p for p in site.rglob("*") if p.suffix == ".pyc" or p.name == "__pycache__"]
    assert not [p for p in site.rglob("*.whl")]
    check_records(site)
    notes = " | ".join(dist.notes)
    assert "1 scripts (.data/scripts) not installed" in notes
    assert "1 C headers" in notes and "1 data files" in notes
    assert "console script(s) not generated (fm)" in notes
    assert dist.version == "1.0" and dist.name == "fastmath"
    # the tree's files are the wheel's bytes: raw-copyable
    assert set(tree.raw_sources()) >= {f"{SITE}/fastmath/_native.so", f"{SITE}/fastmath/_plat.py"}


def test_layout_python(tmp_path: Path, fancy_wheel: Path) -> None:
    assert layer_prefix(TARGET, "python") == "python"
    tree = LayerTree(tmp_path / "t", layer_prefix(TARGET, "python"))
    tree.install(fancy_wheel)
    tree.finalize()
    assert (tmp_path / "t/python/fastmath/_plat.py").is_file()
    check_records(tmp_path / "t/python")


def test_executable_bit_kept_and_normalized(tmp_path: Path) -> None:
    w = raw_wheel(
        tmp_path,
        "tool-1.0-py3-none-any.whl",
        [
            ("tool/run", b"#!/bin/sh\necho hi\n", 0o100775),
            ("tool/data.txt", b"x", 0o100600),
        ],
    )
    tree = LayerTree(tmp_path / "t", SITE)
    tree.install(w)
    site = tmp_path / "t" / SITE
    assert stat.S_IMODE(os.stat(site / "tool/run").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(site / "tool/data.txt").st_mode) == 0o644


@pytest.mark.parametrize(
    "bad", ["../evil.py", "/abs/evil.py", "pkg/../../evil.py", "pkg\\..\\..\\evil.py"]
)
def test_unsafe_member_paths_are_refused(tmp_path: Path, bad: str) -> None:
    w = raw_wheel(tmp_path, "evil-1.0-py3-none-any.whl", [(bad, b"x", 0o100644)])
    with pytest.raises(ArchiveError, match="unsafe member path") as info:
        LayerTree(tmp_path / "t", SITE).install(w)
    assert "evil-1.0-py3-none-any.whl" in str(info.value)
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "t" / "evil.py").exists()


def test_a_member_path_twice_is_refused_before_writing(tmp_path: Path) -> None:
    """A symlink and a file of one name raced: the file could be written through the link
    (to ``a/../outside.txt``, outside the tree) before the link was checked and removed."""
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile writes it all the same
        w = raw_wheel(
            tmp_path,
            "dup-1.0-py3-none-any.whl",
            [
                ("dup/a", b"../../../../..", 0o120777),
                ("dup/b", b"a/../outside.txt", 0o120777),
                ("dup/b", b"written through the link", 0o100644),
            ],
            record={"dup/b": record_hash(b"a/../outside.txt")},  # the link's rows match
        )
    with pytest.raises(ArchiveError, match="member path 'dup/b' appears twice"):
        LayerTree(tmp_path / "t", SITE).install(w)
    assert not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "t" / SITE / "dup").exists()


def test_symlinks(tmp_path: Path) -> None:
    out = raw_wheel(
        tmp_path / "a",
        "lnk-1.0-py3-none-any.whl",
        [
            ("lnk/real.py", b"X = 1\n", 0o100644),
            ("lnk/alias.py", b"real.py", 0o120777),
        ],
    )
    tree = LayerTree(tmp_path / "t", SITE)
    tree.install(out)
    alias = tmp_path / "t" / SITE / "lnk/alias.py"
    assert alias.is_symlink() and alias.read_bytes() == b"X = 1\n"
    escape = raw_wheel(
        tmp_path / "b",
        "esc-1.0-py3-none-any.whl",
        [
            ("esc/passwd", b"../../../../../../../etc/passwd", 0o120777),
        ],
    )
    with pytest.raises(ArchiveError, match="outside the layer tree"):
        LayerTree(tmp_path / "t2", SITE).install(escape)
    absolute = raw_wheel(
        tmp_path / "c",
        "abs-1.0-py3-none-any.whl",
        [
            ("abs/passwd", b"/etc/passwd", 0o120777),
        ],
    )
    with pytest.raises(ArchiveError, match="outside the layer tree"):
        LayerTree(tmp_path / "t3", SITE).install(absolute)
    # the symlink is zipped as a symlink, not as the file it points to
    res = write_layer_zip(tmp_path / "t", tmp_path / "l.zip")
    with zipfile.ZipFile(res.path) as zf:
        info = zf.getinfo(f"{SITE}/lnk/alias.py")
        assert stat.S_ISLNK(info.external_attr >> 16) and zf.read(info) == b"real.py"


def test_record_mismatch_and_missing_rows(tmp_path: Path) -> None:
    bad_hash = raw_wheel(
        tmp_path / "a",
        "bad-1.0-py3-none-any.whl",
        [("bad/__init__.py", b"print(1)\n", 0o100644)],
        record={"bad/__init__.py": _rh(b"something else")},
    )
    with pytest.raises(ArchiveError, match="does not match RECORD"):
        LayerTree(tmp_path / "t", SITE).install(bad_hash)
    assert not (tmp_path / "t" / SITE / "bad/__init__.py").exists()
    unlisted = raw_wheel(
        tmp_path / "b",
        "unl-1.0-py3-none-any.whl",
        [("unl/__init__.py", b"", 0o100644)],
        skip_record={"unl/__init__.py"},
    )
    with pytest.raises(ArchiveError, match="not listed in RECORD"):
        LayerTree(tmp_path / "t2", SITE).install(unlisted)


def test_corrupt_and_non_zip_wheels(tmp_path: Path, fancy_wheel: Path) -> None:
    data = fancy_wheel.read_bytes()
    trunc = tmp_path / "x" / fancy_wheel.name
    trunc.parent.mkdir()
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match=fancy_wheel.name):
        LayerTree(tmp_path / "t", SITE).install(trunc)
    # flip bytes inside the native library's compressed data: CRC or deflate error
    with ZipReader(fancy_wheel) as zr:
        m = next(m for m in zr.members if m.name.endswith("_native.so"))
        off, length = zr.data_range(m)
    flipped = bytearray(data)
    for i in range(off + length // 3, off + length // 3 + 64):
        flipped[i] ^= 0xFF
    bad = tmp_path / "y" / fancy_wheel.name
    bad.parent.mkdir()
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ArchiveError, match=r"_native\.so"):
        LayerTree(tmp_path / "t2", SITE).install(bad)
    notzip = tmp_path / "z" / fancy_wheel.name
    notzip.parent.mkdir()
    notzip.write_bytes(b"<html>not a wheel</html>" * 10)
    with pytest.raises(ArchiveError, match="not a zip"):
        LayerTree(tmp_path / "t3", SITE).install(notzip)


def test_two_dist_info_dirs_refused(tmp_path: Path) -> None:
    w = raw_wheel(
        tmp_path,
        "two-1.0-py3-none-any.whl",
        [("other-2.0.dist-info/METADATA", b"Name: other\n", 0o100644)],
    )
    with pytest.raises(ArchiveError, match=r"exactly one \.dist-info"):
        LayerTree(tmp_path / "t", SITE).install(w)


# -- slim and strip ------------------------------------------------------------------------------


@pytest.fixture
def fake_torch(tmp_path: Path, native_so: bytes) -> Path:
    files = {
        "torch/__init__.py": b"import ctypes, os\n",
        "torch/lib/libtorch_small.so": native_so,
        "torch/lib/libjit_test.so": native_so,
        "torch/lib/fake.so": b"this is not an ELF file\n" * 10,
        "torch/lib/libstatic.a": b"!<arch>\n" + b"0" * 100,
        "torch/test/op_registration_test": b"T" * 1000,
        "torch/include/ATen/ATen.h": b"#pragma once\n" * 50,
        "torch/include/caffe2/core/common.h": b"// c\n" * 20,
        "torch/bin/test_api": b"B" * 2000,
        "torch/bin/protoc": b"P" * 300,
        "torch/bin/torch_shm_manager": native_so,
        "torch/share/cmake/Caffe2/Caffe2Config.cmake": b"set(x)\n" * 10,
        "torch/_C/__init__.pyi": b"def f() -> int: ...\n" * 10,
        "torch/csrc/api.hpp": b"// hpp\n" * 10,
        "functorch/__init__.py": b"",
    }
    return make_wheel(
        tmp_path / "w", "torch", "2.13.0+cpu", tags="cp311-cp311-manylinux_2_28_x86_64", files=files
    )


EXPECTED_SLIM = {
    "slim: torch/test": (1, 1000),
    "slim: torch/include": (2, 13 * 50 + 5 * 20),
    "slim: torch/bin": (2, 2300),
    "slim: caffe2 leftovers": (1, 70),
    "slim: static libraries": (1, 108),
    "slim: headers": (1, 70),
    "slim: type stubs": (1, 200),
    "slim: __pycache__": (0, 0),
}


@pytest.mark.parametrize("on_install", [False, True])
def test_slim_steps_and_record(
    tmp_path: Path, fake_torch: Path, native_so: bytes, on_install: bool
) -> None:
    tree = LayerTree(tmp_path / "t", SITE, slim=on_install)
    tree.install(fake_torch)
    steps = {s.step: (s.files, s.bytes_saved) for s in slim(tree)}
    expected = dict(EXPECTED_SLIM, **{"slim: torch test libraries": (1, len(native_so))})
    assert steps == expected
    tree.finalize()
    site = tmp_path / "t" / SITE
    left = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert [p for p in left if ".dist-info" not in p] == [
        "functorch/__init__.py",
        "torch/__init__.py",
        "torch/bin/torch_shm_manager",
        "torch/lib/fake.so",
        "torch/lib/libtorch_small.so",
    ]
    assert not (site / "torch/include").exists() and not (site / "torch/test").exists()
    assert {p.split("/", 1)[1] for p in left if ".dist-info" in p} == {
        "METADATA",
        "WHEEL",
        "RECORD",
        "INSTALLER",
    }
    check_records(site)


def test_slim_dry_run_changes_nothing(tmp_path: Path, fake_torch: Path) -> None:
    tree = LayerTree(tmp_path / "t", SITE)
    tree.install(fake_torch)
    before = tree.unzipped_bytes()
    steps = slim(tree, dry_run=True)
    assert sum(s.bytes_saved for s in steps) > 0 and not any(s.applied for s in steps)
    assert tree.unzipped_bytes() == before
    assert (tmp_path / "t" / SITE / "torch/test/op_registration_test").exists()


def test_strip_shrinks_real_elf_and_updates_record(
    tmp_path: Path, fake_torch: Path, native_so: bytes
) -> None:
    if shutil.which("strip") is None:
        pytest.skip("no strip program")
    tree = LayerTree(tmp_path / "t", SITE)
    tree.install(fake_torch)
    slim(tree)
    res = strip(tree)
    site = tmp_path / "t" / SITE
    small = (site / "torch/lib/libtorch_small.so").read_bytes()
    shm = (site / "torch/bin/torch_shm_manager").read_bytes()
    assert len(small) < len(native_so)
    assert shm == native_so  # only shared objects (*.so) are stripped
    assert res.files == 1
    assert res.bytes_saved == len(native_so) - len(small)
    assert res.note is not None and "1 file(s) not parsed as ELF" in res.note
    assert (site / "torch/lib/fake.so").read_bytes() == b"this is not an ELF file\n" * 10
    # the stripped library still works
    import ctypes

    lib = ctypes.CDLL(str(site / "torch/lib/libtorch_small.so"))
    lib.native_answer.restype = ctypes.c_double
    assert lib.native_answer(3) == 42.0
    tree.finalize()
    check_records(site)
    # stripped files are no longer raw copies of the wheel
    raw = tree.raw_sources()
    assert f"{SITE}/torch/lib/libtorch_small.so" not in raw
    assert f"{SITE}/torch/lib/fake.so" in raw


def test_strip_without_strip_program(
    tmp_path: Path, fake_torch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = LayerTree(tmp_path / "t", SITE)
    tree.install(fake_torch)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    res = strip(tree)
    assert not res.applied and res.bytes_saved == 0
    assert res.note is not None and "no strip program" in res.note


# -- the zip --------------------------------------------------------------------------------------


def _tree(tmp: Path, wheel: Path, *, slim_it: bool = False) -> LayerTree:
    t = LayerTree(tmp, SITE)
    t.install(wheel)
    if slim_it:
        slim(t)
    t.finalize()
    return t


def test_zip_is_reproducible_and_normalized(
    tmp_path: Path, fake_torch: Path, fancy_wheel: Path
) -> None:
    a = _tree(tmp_path / "a", fake_torch)
    a.install(fancy_wheel)
    a.finalize()
    b = _tree(tmp_path / "b", fake_torch)
    b.install(fancy_wheel)
    b.finalize()
    # different mtimes and permissions on disk must not matter
    for p in (tmp_path / "b").rglob("*"):
        if p.is_file():
            os.utime(p, (1_800_000_000, 1_800_000_000))
    os.chmod(tmp_path / "b" / SITE / "functorch/__init__.py", 0o600)
    za = write_layer_zip(tmp_path / "a", tmp_path / "a.zip", raw_sources=a.raw_sources())
    zb = write_layer_zip(tmp_path / "b", tmp_path / "b.zip", raw_sources=b.raw_sources())
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert za.sha256 == zb.sha256 == hashlib.sha256((tmp_path / "a.zip").read_bytes()).hexdigest()
    assert za.zipped_bytes == (tmp_path / "a.zip").stat().st_size
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert za.members == len(infos) and za.unzipped_bytes == sum(i.file_size for i in infos)
        for i in infos:
            assert i.date_time == (1980, 1, 1, 0, 0, 0)
            assert i.extra == b"" and i.comment == b""
            mode = i.external_attr >> 16
            assert stat.S_IMODE(mode) in (0o644, 0o755) and stat.S_ISREG(mode)
            assert zf.read(i) == (tmp_path / "a" / i.filename).read_bytes()
        assert (
            stat.S_IMODE(zf.getinfo(f"{SITE}/torch/bin/torch_shm_manager").external_attr >> 16)
            == 0o644
        )  # make_wheel writes 0644 for it
    assert za.raw_copied + za.compressed == za.members
    assert za.compressed == 4  # two INSTALLER + two RECORD files
    assert not list(tmp_path.glob(".a.zip*"))  # no temp file left


def test_raw_copy_keeps_the_wheels_compressed_bytes(tmp_path: Path, fancy_wheel: Path) -> None:
    t = _tree(tmp_path / "t", fancy_wheel)
    write_layer_zip(tmp_path / "t", tmp_path / "l.zip", raw_sources=t.raw_sources())
    with ZipReader(fancy_wheel) as w, ZipReader(tmp_path / "l.zip") as lz:
        wm = {m.name: m for m in w.members}
        lm = {m.name: m for m in lz.members}
        src = wm["fastmath/_native.so"]
        dst = lm[f"{SITE}/fastmath/_native.so"]
        assert w.read_raw(src) == lz.read_raw(dst)
        assert (dst.crc, dst.compress_type) == (src.crc, src.compress_type)
        # .data/platlib members are raw-copied too, under their installed name
        assert w.read_raw(wm["fastmath-1.0.data/platlib/fastmath/_plat.py"]) == lz.read_raw(
            lm[f"{SITE}/fastmath/_plat.py"]
        )


def test_zip_without_raw_sources_and_levels(tmp_path: Path, fancy_wheel: Path) -> None:
    _tree(tmp_path / "t", fancy_wheel)
    results = {}
    for level in (0, 1, 6, 9):
        r = write_layer_zip(tmp_path / "t", tmp_path / f"l{level}.zip", compresslevel=level)
        results[level] = r
        assert r.raw_copied == 0
        with zipfile.ZipFile(r.path) as zf:
            assert zf.testzip() is None
            kinds = {i.compress_type for i in zf.infolist()}
            assert kinds == ({zipfile.ZIP_STORED} if level == 0 else {zipfile.ZIP_DEFLATED})
    assert results[0].zipped_bytes > results[1].zipped_bytes >= results[9].zipped_bytes
    assert compress_backend(0) == "stored" and compress_backend(6) == "zlib"
    assert compress_backend(2) in ("isal", "zlib")


def test_multi_chunk_deflate_roundtrip(tmp_path: Path) -> None:
    # > 2 parallel chunks of semi-compressible data, then an empty file
    root = tmp_path / "t"
    (root / "d").mkdir(parents=True)
    block = b"".join(
        hashlib.sha256(i.to_bytes(4, "big")).digest()[:8] + b"torch" * 4 for i in range(400_000)
    )
    (root / "d/big.bin").write_bytes(block)
    (root / "d/empty").write_bytes(b"")
    r = write_layer_zip(root, tmp_path / "x.zip", compresslevel=6)
    with zipfile.ZipFile(r.path) as zf:
        assert zf.read("d/big.bin") == block and zf.read("d/empty") == b""
    r2 = write_layer_zip(root, tmp_path / "y.zip", compresslevel=6, workers=1)
    assert r2.sha256 == r.sha256  # the chunking, not the thread count, fixes the bytes


def test_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t/f").write_bytes(b"x")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    write_layer_zip(tmp_path / "t", tmp_path / "e.zip")
    with zipfile.ZipFile(tmp_path / "e.zip") as zf:
        assert zf.infolist()[0].date_time == (2023, 11, 14, 22, 13, 20)
    assert zip_date_time(0) == zip_date_time("")  # before 1980 → 1980-01-01
    with pytest.raises(Exception, match="SOURCE_DATE_EPOCH"):
        zip_date_time("yesterday")


def test_zip64_end_records_for_many_members(tmp_path: Path) -> None:
    root = tmp_path / "t"
    n = 0xFFFF + 5  # more members than the classic end record can count
    for d in range(n // 4096 + 1):
        (root / f"d{d:02d}").mkdir(parents=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for i in range(n):
        os.close(os.open(f"{root}/d{i // 4096:02d}/f{i:05d}", flags, 0o644))
    r = write_layer_zip(root, tmp_path / "many.zip", compresslevel=0)
    assert r.members == n
    with ZipReader(r.path) as zr:  # torchwheel's reader: ZIP64 end records parsed
        assert len(zr.members) == n
        assert zr.members[-1].name == f"d{(n - 1) // 4096:02d}/f{n - 1:05d}"
    with zipfile.ZipFile(r.path) as zf:  # and the stdlib's
        assert len(zf.infolist()) == n and zf.read("d00/f00000") == b""


def test_raw_copy_checks_the_wheels_local_header(tmp_path: Path, fancy_wheel: Path) -> None:
    t = _tree(tmp_path / "t", fancy_wheel)
    raw = t.raw_sources()
    # the wheel changes after the install: a member's local header is no longer one
    with ZipReader(fancy_wheel) as zr:
        m = next(m for m in zr.members if m.name.endswith("_native.so"))
    data = bytearray(fancy_wheel.read_bytes())
    data[m.header_offset : m.header_offset + 4] = b"XXXX"
    fancy_wheel.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"_native\.so: bad local header") as info:
        write_layer_zip(tmp_path / "t", tmp_path / "l.zip", raw_sources=raw)
    assert fancy_wheel.name in str(info.value)
    assert not (tmp_path / "l.zip").exists() and not list(tmp_path.glob(".l.zip*"))


def test_layer_imports_without_the_build_pipeline() -> None:
    # packed and check import the layer's steps; that must not load the resolver, httpx or
    # layer.build (which imports packed: no cycle); build_layer comes from torchwheel
    code = (
        "import sys, torchwheel.packed, torchwheel.layer\n"
        "heavy = ('httpx', 'resolvelib', 'torchwheel.deps', 'torchwheel.layer.build')\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "import torchwheel\n"
        "print(torchwheel.build_layer.__module__, 'torchwheel.layer.build' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", "torchwheel.layer.build True"]
