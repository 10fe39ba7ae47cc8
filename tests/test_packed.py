"""torchwheel.packed: reproducible archive, packed-layer layout, and simulated Lambda starts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.support.packed import PY, lambda_start, unzip_layer, zip_tree
from tests.support.wheels import make_wheel
from torchwheel.errors import ArchiveError, InputError
from torchwheel.packed import (
    ARCHIVE_NAME,
    DEFAULT_LEVEL,
    LOADER_NAME,
    MANIFEST_DIR,
    PackInfo,
    install_wheel_flat,
    loader_source,
    make_packed_tree,
    pack_tree,
    read_manifest,
    tree_stats,
)
from torchwheel.targets import make_target, quotas

HOST_TARGET_OK = sys.version_info[:2] == (3, 11) and os.uname().machine == "x86_64"
needs_host_target = pytest.mark.skipif(
    not HOST_TARGET_OK, reason="simulated starts run the host interpreter as CPython 3.11 x86_64"
)


def _tar_members(archive: Path) -> list[tarfile.TarInfo]:
    data = zstandard.ZstdDecompressor().stream_reader(archive.read_bytes()).read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "site-packages"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("X = 1\n")
    (root / "pkg" / "sub" / "data.bin").write_bytes(os.urandom(5000))
    (root / "pkg" / "tool").write_text("#!/bin/sh\n")
    os.chmod(root / "pkg" / "tool", 0o700)
    os.chmod(root / "pkg" / "__init__.py", 0o600)
    (root / "a_first.py").write_text("")
    (root / "empty").mkdir()
    long_dir = root / ("d" * 120)
    long_dir.mkdir()
    (long_dir / ("f" * 120 + ".py")).write_text("LONG = True\n")
    return root


def test_pack_tree_is_reproducible_sorted_and_normalized(tree: Path, tmp_path: Path) -> None:
    a = pack_tree(tree, tmp_path / "a.tar.zst", level=3)
    # Touch mtimes and owners' view: a second pack must give the same bytes.
    os.utime(tree / "pkg" / "__init__.py", (1_700_000_000, 1_700_000_000))
    b = pack_tree(tree, tmp_path / "b.tar.zst", level=3)
    assert a.archive.read_bytes() == b.archive.read_bytes()
    assert a.sha256 == b.sha256 == hashlib.sha256(a.archive.read_bytes()).hexdigest()
    assert a.archive_size == a.archive.stat().st_size

    members = _tar_members(a.archive)
    names = [m.name for m in members]
    assert names[0] == "a_first.py"
    assert names.index("pkg") < names.index("pkg/__init__.py") < names.index("pkg/sub")
    assert ("d" * 120) + "/" + ("f" * 120) + ".py" in names  # long names survive (PAX)
    assert "empty" in names
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        assert m.mtime == 315532800
    modes = {m.name: m.mode for m in members}
    assert modes["pkg/tool"] == 0o755
    assert modes["pkg/__init__.py"] == 0o644
    assert modes["pkg"] == 0o755
    stats = tree_stats(tree)
    assert (a.files, a.dirs, a.unpacked_size) == (stats.files, stats.dirs, stats.bytes)
    assert a.files == 5
    assert a.unpacked_size == sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())


def test_source_date_epoch_changes_mtime(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    info = pack_tree(tree, tmp_path / "x.tar.zst", level=1)
    assert {m.mtime for m in _tar_members(info.archive)} == {1700000000}


def test_level_changes_bytes_not_content(tree: Path, tmp_path: Path) -> None:
    (tree / "big.txt").write_text("torch " * 200_000)
    low = pack_tree(tree, tmp_path / "1.tar.zst", level=1)
    high = pack_tree(tree, tmp_path / "19.tar.zst", level=19)
    assert high.archive_size < low.archive_size
    assert [m.name for m in _tar_members(low.archive)] == [
        m.name for m in _tar_members(high.archive)
    ]


def test_pack_tree_refuses_symlinks_and_leaves_nothing(tree: Path, tmp_path: Path) -> None:
    (tree / "pkg" / "link").symlink_to("/etc/passwd")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"pkg/link: symbolic link"):
        pack_tree(tree, out / "x.tar.zst", level=3)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("level", [0, 23])
def test_pack_tree_rejects_bad_level(tree: Path, tmp_path: Path, level: int) -> None:
    with pytest.raises(InputError, match="out of range"):
        pack_tree(tree, tmp_path / "x.tar.zst", level=level)


def test_pack_tree_rejects_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        pack_tree(tmp_path / "nope", tmp_path / "x.tar.zst")


def test_install_wheel_flat_merges_data_and_rewrites_record(tmp_path: Path) -> None:
    whl = make_wheel(
        tmp_path / "w",
        "demo",
        "1.0",
        files={"demo/__init__.py": b"A = 1\n", "demo/_x.so": b"\x7fELF fake"},
        data={
            "purelib": {"demo_extra.py": b"B = 2\n"},
            "scripts": {"demo-cli": b"#!x\n"},
            "headers": {"demo.h": b"int x;\n"},
        },
    )
    dest = tmp_path / "python"
    written = install_wheel_flat(whl, dest, exclude=lambda rel: rel.endswith(".so"))
    assert (dest / "demo_extra.py").read_text() == "B = 2\n"
    assert not (dest / "demo" / "_x.so").exists()
    assert not any("scripts" in w or w.endswith(".h") for w in written)
    record = (dest / "demo-1.0.dist-info" / "RECORD").read_text().splitlines()
    listed = {line.split(",")[0] for line in record}
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert listed == on_disk
    for line in record:
        path, digest, size = line.split(",")
        if digest:
            assert int(size) == (dest / path).stat().st_size


def test_install_wheel_flat_refuses_unsafe_member(tmp_path: Path) -> None:
    whl = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("evil-1.0.dist-info/METADATA", "Name: evil\n")
        zf.writestr("../escape.py", "x")
    with pytest.raises(ArchiveError, match=r"unsafe member path '\.\./escape\.py'"):
        install_wheel_flat(whl, tmp_path / "python")
    assert not (tmp_path / "escape.py").exists()


def test_install_wheel_flat_not_a_wheel(tmp_path: Path) -> None:
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match=r"bad-1\.0-py3-none-any\.whl: not a readable wheel"):
        install_wheel_flat(bad, tmp_path / "python")


def _site_packages(tmp_path: Path, wheels: list[Path]) -> Path:
    sp = tmp_path / "sp"
    for whl in wheels:
        install_wheel_flat(whl, sp)
    return sp


@pytest.fixture
def pure_wheel(tmp_path: Path) -> Path:
    return make_wheel(
        tmp_path / "wheels",
        "purepkg",
        "2.0",
        files={
            "purepkg/__init__.py": b"def answer():\n    return 42\n",
            "purepkg/data/table.txt": b"x" * 100_000,
        },
    )


@needs_host_target
def test_make_packed_tree_layout(
    tmp_path: Path, pure_wheel: Path, native_wheel: Path, zstandard_wheel: Path
) -> None:
    sp = _site_packages(tmp_path, [pure_wheel, native_wheel])
    target = make_target("x86_64", PY, runtime="provided.al2023")
    layer = tmp_path / "layer"
    info = make_packed_tree(sp, layer, target, level=3, zstandard_wheel=zstandard_wheel)
    py = layer / "python"
    assert (py / LOADER_NAME).read_bytes() == loader_source()
    archive = py / MANIFEST_DIR / ARCHIVE_NAME
    assert info.archive == archive
    manifest = read_manifest(py)
    assert manifest["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest() == info.sha256
    stats = tree_stats(sp)
    assert manifest["files"] == stats.files == info.files
    assert manifest["unpacked_size"] == stats.bytes
    assert manifest["python"] == PY
    assert manifest["archive"] == ARCHIVE_NAME
    # zstandard for the target, uncompressed, C backend only (cffi needs a package Lambda lacks)
    assert (py / "zstandard" / "__init__.py").is_file()
    assert list((py / "zstandard").glob("backend_c*.so"))
    assert not list((py / "zstandard").glob("_cffi*"))
    assert not (py / "lib").exists()  # nothing unpacked sits in the plain site-packages path
    assert info.layer_bytes == sum(p.stat().st_size for p in layer.rglob("*") if p.is_file())
    assert info.unpack_seconds is not None and info.unpack_seconds > 0
    assert info.fits()["unzipped"] is True
    assert set(info.extra_files) >= {
        f"python/{LOADER_NAME}",
        f"python/{MANIFEST_DIR}/manifest.json",
    }
    doc = info.to_json()
    assert doc["archive_bytes"] == archive.stat().st_size
    assert doc["needs_ephemeral_storage"] is False
    assert doc["handler_line"].startswith("import torchwheel_loader")


def test_make_packed_tree_needs_a_zstandard_wheel_before_314(tree: Path, tmp_path: Path) -> None:
    target = make_target("x86_64", runtime="python3.12")
    with pytest.raises(InputError, match=r"needs a zstandard wheel for python3\.12/x86_64"):
        make_packed_tree(tree, tmp_path / "layer", target, level=1)


def test_make_packed_tree_refuses_zstandard_for_wrong_target(tree: Path, tmp_path: Path) -> None:
    wrong = make_wheel(
        tmp_path / "w", "zstandard", "0.25.0", tags="cp312-cp312-manylinux2014_x86_64"
    )
    target = make_target("x86_64", "3.11", runtime="provided.al2023")
    with pytest.raises(InputError, match=r"does not fit provided\.al2023/x86_64"):
        make_packed_tree(tree, tmp_path / "layer", target, level=1, zstandard_wheel=wrong)


def test_python314_target_uses_stdlib_zstd(tree: Path, tmp_path: Path) -> None:
    target = make_target("arm64", runtime="python3.14")
    info = make_packed_tree(tree, tmp_path / "layer", target, level=3, measure=False)
    assert info.decompressor == "compression.zstd"
    assert not (tmp_path / "layer" / "python" / "zstandard").exists()
    assert info.unpack_seconds is None
    assert read_manifest(tmp_path / "layer" / "python")["python"] == "3.14"


def test_packinfo_quota_arithmetic(tmp_path: Path) -> None:
    q = quotas()
    base = dict(
        archive=tmp_path / "a",
        sha256="0" * 64,
        unpacked_size=0,
        files=1,
        dirs=1,
        level=DEFAULT_LEVEL,
        python="3.11",
        decompressor="zstd",
        pack_seconds=0.0,
    )
    small = PackInfo(archive_size=10, disk_size=100 * 2**20, layer_bytes=20, **base)  # type: ignore[arg-type]
    assert small.ephemeral_mb_needed == 116  # 100 MB + 16 MB margin
    assert small.ephemeral_storage_mb == 512
    assert not small.needs_more_ephemeral_storage
    big = PackInfo(
        archive_size=q.direct_upload_zipped + 1,
        disk_size=600 * 2**20,
        layer_bytes=q.unzipped - 10,
        **base,  # type: ignore[arg-type]
    )
    assert big.needs_more_ephemeral_storage
    assert big.ephemeral_storage_mb == 704  # 616 + 32 rounded up to 64
    assert big.fits() == {"unzipped": True, "direct_upload": False}
    assert big.fits(function_bytes=11)["unzipped"] is False


# --- simulated Lambda starts with small real layers ------------------------------------------

_HANDLER = """
import torchwheel_loader
import purepkg, nativepkg
print(purepkg.answer(), nativepkg.twice(21), torchwheel_loader.unpacked_now)
print(torchwheel_loader.path)
print(sys.path.index(torchwheel_loader.path))
"""


@pytest.fixture
def small_layer_zip(
    tmp_path: Path, pure_wheel: Path, native_wheel: Path, zstandard_wheel: Path
) -> Path:
    if not HOST_TARGET_OK:
        pytest.skip("simulated starts run the host interpreter as CPython 3.11 x86_64")
    sp = _site_packages(tmp_path, [pure_wheel, native_wheel])
    layer = tmp_path / "layer"
    make_packed_tree(
        sp,
        layer,
        make_target("x86_64", PY, runtime="provided.al2023"),
        level=3,
        zstandard_wheel=zstandard_wheel,
        measure=False,
    )
    return zip_tree(layer, tmp_path / "layer.zip")


def test_simulated_start_cold_then_warm(small_layer_zip: Path, tmp_path: Path) -> None:
    opt = unzip_layer(small_layer_zip, tmp_path / "opt")
    tmp = tmp_path / "tmp"
    cold = lambda_start(opt, tmp, _HANDLER)
    assert cold.returncode == 0, cold.stderr
    lines = cold.stdout.split("\n")
    assert lines[0] == "42 42 True"
    tree = Path(lines[1])
    assert tree.parent == tmp and tree.name.startswith("torchwheel-")
    assert lines[2] == "1"  # after the function dir, where the layer's site-packages would be
    marker = tree / ".torchwheel-complete"
    before = marker.stat().st_mtime_ns
    warm = lambda_start(opt, tmp, _HANDLER)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.split("\n")[0] == "42 42 False"
    assert marker.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp.iterdir()) == [tree.name, tree.name + ".lock"]


def test_simulated_start_function_code_wins(small_layer_zip: Path, tmp_path: Path) -> None:
    opt = unzip_layer(small_layer_zip, tmp_path / "opt")
    task = tmp_path / "task"
    (task / "purepkg").mkdir(parents=True)
    (task / "purepkg" / "__init__.py").write_text("def answer():\n    return 'function'\n")
    proc = lambda_start(
        opt,
        tmp_path / "tmp",
        "import torchwheel_loader, purepkg\nprint(purepkg.answer())",
        function_dir=task,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "function"


def test_simulated_start_recovers_after_half_finished_unpack(
    small_layer_zip: Path, tmp_path: Path
) -> None:
    opt = unzip_layer(small_layer_zip, tmp_path / "opt")
    tmp = tmp_path / "tmp"
    sha = read_manifest(opt / "python")["sha256"]
    stem = f"torchwheel-{sha[:16]}"
    # A crash half-way leaves a temp dir (and, in a worse case, a tree without its marker).
    half = tmp / f"{stem}.tmp-4242" / "purepkg"
    half.mkdir(parents=True)
    (half / "__init__.py").write_text("raise RuntimeError('half-written')\n")
    (tmp / stem / "purepkg").mkdir(parents=True)
    (tmp / stem / "purepkg" / "__init__.py").write_text("raise RuntimeError('no marker')\n")
    proc = lambda_start(opt, tmp, _HANDLER)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "42 42 True"
    assert sorted(p.name for p in tmp.iterdir()) == [stem, stem + ".lock"]


def test_simulated_start_corrupted_archive(small_layer_zip: Path, tmp_path: Path) -> None:
    opt = unzip_layer(small_layer_zip, tmp_path / "opt")
    tmp = tmp_path / "tmp"
    archive = opt / "python" / MANIFEST_DIR / ARCHIVE_NAME
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    proc = lambda_start(opt, tmp, "import torchwheel_loader")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("torchwheel_loader.LoaderError: torchwheel_loader: ")
    assert f"{archive} is corrupt: sha256" in last
    assert "re-upload the layer" in last
    # never a half-usable tree: nothing but the lock file is left
    assert [p.name for p in tmp.iterdir()] == [p.name for p in tmp.glob("*.lock")]
    again = lambda_start(opt, tmp, "import torchwheel_loader")
    assert "is corrupt" in again.stderr


def test_simulated_start_wrong_python(small_layer_zip: Path, tmp_path: Path) -> None:
    opt = unzip_layer(small_layer_zip, tmp_path / "opt")
    mpath = opt / "python" / MANIFEST_DIR / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["python"] = "3.12"
    mpath.write_text(json.dumps(manifest))
    proc = lambda_start(opt, tmp_path / "tmp", "import torchwheel_loader")
    assert proc.returncode != 0
    assert (
        "the packed layer was built for Python 3.12, this function runs Python "
        f"{PY}; rebuild it with --python {PY}"
    ) in proc.stderr


def test_layer_without_zstandard_gives_clear_error(small_layer_zip: Path, tmp_path: Path) -> None:
    opt = unzip_layer(small_layer_zip, tmp_path / "opt")
    shutil.rmtree(opt / "python" / "zstandard")
    proc = lambda_start(opt, tmp_path / "tmp", "import torchwheel_loader")
    assert proc.returncode != 0
    assert "no zstd decompressor" in proc.stderr
    assert not [p for p in (tmp_path / "tmp").iterdir() if not p.name.endswith(".lock")]


def test_resolve_zstandard_picks_the_target_wheel(index_server: Any, tmp_path: Path) -> None:
    from torchwheel.index import IndexClient
    from torchwheel.layer.build import resolve_zstandard

    w = tmp_path / "w"
    wheels = [
        make_wheel(w, "zstandard", "0.25.0", tags="cp311-cp311-manylinux2014_x86_64"),
        make_wheel(w, "zstandard", "0.25.0", tags="cp312-cp312-manylinux2014_x86_64"),
        make_wheel(w, "zstandard", "0.25.0", tags="cp311-cp311-macosx_11_0_arm64"),
        make_wheel(w, "zstandard", "0.26.0", tags="cp311-cp311-manylinux_2_34_x86_64"),
    ]
    index_server.add_project("zstandard", wheels)
    with IndexClient(index_server.url) as index:
        got = resolve_zstandard(
            make_target("x86_64", runtime="python3.11"), index, cache_dir=tmp_path / "cache"
        )
        assert got.name == "zstandard-0.25.0-cp311-cp311-manylinux2014_x86_64.whl"
        assert got.read_bytes() == wheels[0].read_bytes()
        # AL2023 has glibc 2.34: the newer manylinux_2_34 wheel fits there
        al2023 = resolve_zstandard(
            make_target("x86_64", "3.11", runtime="provided.al2023"),
            index,
            cache_dir=tmp_path / "cache",
        )
        assert al2023.name == "zstandard-0.26.0-cp311-cp311-manylinux_2_34_x86_64.whl"


def test_resolve_zstandard_none_fits(index_server: Any, tmp_path: Path) -> None:
    from torchwheel.errors import NoCompatibleWheel
    from torchwheel.index import IndexClient
    from torchwheel.layer.build import resolve_zstandard

    index_server.add_project(
        "zstandard", [make_wheel(tmp_path, "zstandard", "0.25.0", tags="cp311-cp311-win_amd64")]
    )
    with (
        IndexClient(index_server.url) as index,
        pytest.raises(NoCompatibleWheel, match=r"no zstandard wheel fits python3\.11/arm64"),
    ):
        resolve_zstandard(make_target("arm64", runtime="python3.11"), index)


# --- check understands packed layers ----------------------------------------------------------


def _check(*zips: Path, python: str = PY, runtime: str = "provided.al2023") -> Any:
    from torchwheel.checks import check

    return check(list(zips), runtime=runtime, arch="x86_64", python=python)


@needs_host_target
def test_check_passes_small_packed_layer(small_layer_zip: Path) -> None:
    report = _check(small_layer_zip)
    assert not report.errors, [f.message for f in report.errors]
    assert not report.warnings, [f.message for f in report.warnings]
    codes = [f.code for f in report.findings]
    assert codes == ["ephemeral-storage"]
    eph = report.findings[0]
    assert eph.severity == "info"
    assert eph.path.endswith(f"python/{MANIFEST_DIR}/{ARCHIVE_NAME}")
    assert eph.detail["needed_mb"] == 17 and eph.detail["files"] > 5
    names = {d["name"]: d["path"] for d in report.distributions}
    assert {"purepkg", "nativepkg", "zstandard"} <= set(names)
    assert "/tmp/torchwheel-" in names["nativepkg"]
    assert report.elf_files >= 2  # the native extension inside the archive + zstandard's


@needs_host_target
def test_check_judges_members_inside_the_archive(small_layer_zip: Path) -> None:
    report = _check(small_layer_zip, runtime="python3.12", python="3.12")
    bad = [f for f in report.errors if "/tmp/torchwheel-" in f.path]
    assert bad, [f.code for f in report.findings]
    assert any("nativepkg" in f.path for f in bad), [(f.code, f.path) for f in bad]


@needs_host_target
def test_check_reports_manifest_mismatch(small_layer_zip: Path, tmp_path: Path) -> None:
    opt = unzip_layer(small_layer_zip, tmp_path / "opt")
    mpath = opt / "python" / MANIFEST_DIR / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["sha256"] = "f" * 64
    mpath.write_text(json.dumps(manifest))
    report = _check(zip_tree(opt, tmp_path / "edited.zip"))
    [finding] = [f for f in report.errors if f.code == "packed-manifest"]
    assert "does not match manifest.json" in finding.message
    assert "ffffffffffffffff" in finding.message


@needs_host_target
def test_check_reports_a_manifest_that_is_not_one(small_layer_zip: Path, tmp_path: Path) -> None:
    opt = unzip_layer(small_layer_zip, tmp_path / "opt")
    mpath = opt / "python" / MANIFEST_DIR / "manifest.json"
    manifest = json.loads(mpath.read_text())
    for i, (data, says) in enumerate(
        (([], "not a JSON object"), ({**manifest, "files": "many"}, "files 'many' is not a count"))
    ):
        mpath.write_text(json.dumps(data))
        report = _check(zip_tree(opt, tmp_path / f"odd{i}.zip"))
        [finding] = [f for f in report.errors if f.code == "packed-manifest"]
        assert says in finding.message


@needs_host_target
def test_check_corrupt_packed_archive_is_bad_input(small_layer_zip: Path, tmp_path: Path) -> None:
    opt = unzip_layer(small_layer_zip, tmp_path / "opt")
    archive = opt / "python" / MANIFEST_DIR / ARCHIVE_NAME
    archive.write_bytes(archive.read_bytes()[:-200])
    bad = zip_tree(opt, tmp_path / "bad.zip")
    with pytest.raises(ArchiveError, match=rf"{ARCHIVE_NAME}: unreadable packed archive"):
        _check(bad)
    from torchwheel.cli import main

    assert main(["check", str(bad), "--runtime", "provided.al2023", "--python", PY]) == 2


def test_check_warns_when_tmp_default_is_too_small(tmp_path: Path) -> None:
    tree = tmp_path / "sp"
    (tree / "blob").mkdir(parents=True)
    with open(tree / "blob" / "zeros.bin", "wb") as f:  # sparse: cheap to make and to pack
        f.truncate(600 * 2**20)
    layer = tmp_path / "layer"
    make_packed_tree(
        tree, layer, make_target("x86_64", runtime="python3.14"), level=1, measure=False
    )
    report = _check(zip_tree(layer, tmp_path / "big.zip"), runtime="python3.14", python="3.14")
    [eph] = [f for f in report.findings if f.code == "ephemeral-storage"]
    assert eph.severity == "warning"
    assert eph.detail["needed_mb"] == 617  # 600 MiB + 4 KiB blocks + 16 MiB margin
    assert "set the function's EphemeralStorage to at least 704 MB" in eph.message
    assert not report.errors


# --- build --packed ----------------------------------------------------------------------------


@needs_host_target
def test_build_cli_packed_layer_end_to_end(
    index_server: Any,
    tmp_path: Path,
    pure_wheel: Path,
    native_wheel: Path,
    zstandard_wheel: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from torchwheel.cli import main

    index_server.add_project("purepkg", [pure_wheel])
    index_server.add_project("nativepkg", [native_wheel])
    index_server.add_project("zstandard", [zstandard_wheel])
    out = tmp_path / "layer.zip"
    argv = [
        "build",
        "purepkg",
        "nativepkg",
        "--runtime",
        "provided.al2023",
        "--python",
        PY,
        "--index-url",
        index_server.url,
        "-o",
        str(out),
        "--packed",
        "--zstd-level",
        "5",
        "--json",
    ]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    packed = doc["packed"]
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        info = zf.getinfo(f"python/{MANIFEST_DIR}/{ARCHIVE_NAME}")
        assert info.compress_type == zipfile.ZIP_STORED
        manifest = json.loads(zf.read(f"python/{MANIFEST_DIR}/manifest.json"))
        assert zf.read(f"python/{LOADER_NAME}") == loader_source()
    assert not any(n.startswith(f"python/lib/python{PY}/site-packages/purepkg") for n in names)
    assert any(n.startswith("python/zstandard/") for n in names)
    assert packed["level"] == manifest["level"] == 5
    assert packed["sha256"] == manifest["sha256"]
    assert packed["archive_bytes"] == info.file_size
    assert (
        doc["unzipped_bytes"]
        == packed["layer_bytes"]
        == sum(i.file_size for i in zipfile.ZipFile(out).infolist())
    )
    assert doc["files"] == len([n for n in names if not n.endswith("/")])
    assert {p["name"] for p in doc["packages"]} == {"purepkg", "nativepkg"}
    assert packed["unpack_seconds"] > 0 and packed["needs_ephemeral_storage"] is False
    # reproducible: a second build gives the same bytes
    again = tmp_path / "again.zip"
    assert main([*argv[:-4], "-o", str(again), "--packed", "--zstd-level", "5"]) == 0
    assert again.read_bytes() == out.read_bytes()
    text = capsys.readouterr().out
    assert "Packed" in text and "import torchwheel_loader" in text
    # and the layer starts
    opt = unzip_layer(out, tmp_path / "opt")
    proc = lambda_start(opt, tmp_path / "tmp", _HANDLER)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("42 42 True")
    # check passes it with the /tmp note only
    report = _check(out)
    assert [f.code for f in report.findings] == ["ephemeral-storage"]


def test_build_packed_without_a_zstandard_wheel(
    index_server: Any, tmp_path: Path, pure_wheel: Path
) -> None:
    from torchwheel.cli import main

    index_server.add_project("purepkg", [pure_wheel])
    index_server.add_project(
        "zstandard",
        [make_wheel(tmp_path / "z", "zstandard", "0.25.0", tags="cp312-cp312-win_amd64")],
    )
    out = tmp_path / "layer.zip"
    rc = main(
        [
            "build",
            "purepkg",
            "--runtime",
            "python3.12",
            "--index-url",
            index_server.url,
            "-o",
            str(out),
            "--packed",
        ]
    )
    assert rc == 1
    assert not out.exists()


def test_build_packed_option_errors(
    tmp_path: Path, index_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchwheel.cli import main

    out = tmp_path / "x.zip"
    base = [
        "build",
        "purepkg",
        "--runtime",
        "python3.12",
        "--index-url",
        index_server.url,
        "-o",
        str(out),
    ]
    assert main([*base, "--zstd-level", "5"]) == 2
    assert "--zstd-level applies to --packed layers only" in capsys.readouterr().err
    assert main([*base, "--packed", "--zstd-level", "30"]) == 2
    assert "zstd level 30 is out of range 1..22" in capsys.readouterr().err
    assert index_server.count("/simple") == 0  # refused before any request
    assert not out.exists()


def test_check_accepts_a_packed_archive_without_files(tmp_path: Path) -> None:
    # the archive's sha256 was read from the mount of its first *file*: an archive of
    # directories only (or of nothing) was a packed-manifest error though the loader takes it
    for name, dirs in (("empty", []), ("dirs-only", ["pkg", "pkg/sub"])):
        site = tmp_path / name / "site"
        for d in ["", *dirs]:
            (site / d).mkdir(parents=True, exist_ok=True)
        layer = tmp_path / name / "layer"
        info = pack_tree(site, layer / "python" / MANIFEST_DIR / ARCHIVE_NAME)
        manifest = {"format": 1, "archive": ARCHIVE_NAME, "sha256": info.sha256, "files": 0}
        (layer / "python" / MANIFEST_DIR / "manifest.json").write_text(json.dumps(manifest))
        (layer / "python" / LOADER_NAME).write_bytes(loader_source())
        report = _check(zip_tree(layer, tmp_path / f"{name}.zip"))
        assert [f for f in report.findings if f.code == "packed-manifest"] == []
        manifest["sha256"] = "f" * 64
        (layer / "python" / MANIFEST_DIR / "manifest.json").write_text(json.dumps(manifest))
        report = _check(zip_tree(layer, tmp_path / f"{name}-bad.zip"))
        [finding] = [f for f in report.errors if f.code == "packed-manifest"]
        assert f"vs {info.sha256[:16]}" in finding.message
