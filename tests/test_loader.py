"""The stdlib-only loader shipped in packed layers: unpack, reuse, locking, refusals."""

from __future__ import annotations

import ast
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from torchwheel.loader import torchwheel_loader as loader
from torchwheel.packed import loader_source, pack_tree

LOADER_FILE = Path(loader.__file__)


def test_loader_is_python38_syntax_and_stdlib_only() -> None:
    source = loader_source().decode()
    tree = ast.parse(source, feature_version=(3, 8))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"__future__", "compression", "zstandard"}
    assert imported <= allowed, imported - allowed
    assert not {"urllib", "http", "socket", "ssl"} & imported  # no network
    assert LOADER_FILE.read_bytes() == loader_source()


def _manifest(archive: Path, files: int, disk: int = 1 << 20) -> dict[str, Any]:
    return {
        "format": 1,
        "archive": archive.name,
        "files": files,
        "disk_size": disk,
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "python": None,
    }


def _raw_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """A tar.zst written by tarfile itself (to craft members pack_tree never writes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(buf.getvalue()))
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.fixture
def packed(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    src = tmp_path / "src"
    (src / "mod").mkdir(parents=True)
    (src / "mod" / "__init__.py").write_text("VALUE = 7\n")
    (src / "mod" / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # > one chunk
    (src / ("p" * 150)).mkdir()
    (src / ("p" * 150) / "x.txt").write_text("long path")
    info = pack_tree(src, tmp_path / "a.tar.zst", level=3)
    manifest = _manifest(info.archive, info.files, info.disk_size)
    yield info.archive, manifest


def test_unpack_round_trip_and_reuse(packed: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    archive, manifest = packed
    parent = tmp_path / "tmp"
    tree = Path(loader.unpack(str(archive), manifest, str(parent)))
    assert tree.name == "torchwheel-" + manifest["sha256"][:16]
    src = tmp_path / "src"
    for p in src.rglob("*"):
        if p.is_file():
            assert (tree / p.relative_to(src)).read_bytes() == p.read_bytes()
    assert (tree / ".torchwheel-complete").read_text().strip() == manifest["sha256"]
    # warm start: the finished tree is reused as is (a file added to it survives)
    (tree / "sentinel").write_text("kept")
    assert Path(loader.unpack(str(archive), manifest, str(parent))) == tree
    assert (tree / "sentinel").read_text() == "kept"


def test_unpack_refuses_wrong_hash(packed: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    archive, manifest = packed
    manifest = dict(manifest, sha256="0" * 64)
    parent = tmp_path / "tmp"
    with pytest.raises(ImportError, match=r"is corrupt: sha256 [0-9a-f]{64}, manifest says 0{64}"):
        loader.unpack(str(archive), manifest, str(parent))
    assert sorted(p.name for p in parent.iterdir()) == ["torchwheel-0000000000000000.lock"]


def test_unpack_truncated_archive(packed: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    archive, manifest = packed
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 3])
    manifest = _manifest(archive, manifest["files"])  # hash matches the truncated bytes
    with pytest.raises(loader.LoaderError, match=r"cannot unpack .*a\.tar\.zst: "):
        loader.unpack(str(archive), manifest, str(tmp_path / "tmp"))
    assert [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize(
    "name",
    ["../escape.py", "/abs/evil.py", "ok/../../escape.py", "a\\b.py", "C:/x.py"],
)
def test_unpack_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    archive = _raw_archive(
        tmp_path / "evil.tar.zst", [_file("good.py", b"x"), _file(name, b"owned")]
    )
    with pytest.raises(loader.LoaderError, match=r"member path|bad member name"):
        loader.unpack(str(archive), _manifest(archive, 2), str(tmp_path / "tmp" / "inner"))
    assert not (tmp_path / "escape.py").exists()
    assert not (tmp_path / "tmp" / "escape.py").exists()
    left = [p.name for p in (tmp_path / "tmp" / "inner").iterdir()]
    assert all(n.endswith(".lock") for n in left), left


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]
)
def test_unpack_refuses_links_and_devices(tmp_path: Path, kind: bytes) -> None:
    link = tarfile.TarInfo("pkg/link")
    link.type = kind
    link.linkname = "/etc/passwd"
    archive = _raw_archive(tmp_path / "links.tar.zst", [_file("pkg/a.py", b"x"), (link, None)])
    with pytest.raises(loader.LoaderError, match="not a regular file or directory"):
        loader.unpack(str(archive), _manifest(archive, 2), str(tmp_path / "tmp"))
    assert [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.endswith(".lock")] == []


def test_file_count_mismatch_is_refused(
    packed: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    archive, manifest = packed
    with pytest.raises(loader.LoaderError, match="unpacked 3 files, manifest says 4"):
        loader.unpack(str(archive), dict(manifest, files=4), str(tmp_path / "tmp"))


def test_check_space_message() -> None:
    loader.check_space("/tmp", 600 * 2**20, 500 * 2**20)  # enough: no error
    with pytest.raises(loader.LoaderError) as exc:
        loader.check_space("/tmp", 300 * 2**20, 700 * 2**20)
    msg = str(exc.value)
    assert "not enough space in /tmp: the packed layer needs 716 MB to unpack" in msg
    assert "300 MB are free" in msg
    assert "EphemeralStorage) to at least 768 MB" in msg
    assert "\n" not in msg


def _can_mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True
    )
    return proc.returncode == 0


@pytest.fixture
def tiny_tmp(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB tmpfs (needs root and mount rights; skips otherwise)."""
    where = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    if not _can_mount_tmpfs(where):
        pytest.skip("cannot mount a tmpfs here (needs root); check_space is unit-tested above")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_too_small_tmp_gives_clear_error(
    packed: tuple[Path, dict[str, Any]], tiny_tmp: Path
) -> None:
    archive, manifest = packed
    manifest = dict(manifest, disk_size=0)
    with pytest.raises(
        loader.LoaderError,
        match=r"not enough space in .*tiny-.*: the packed "
        r"layer needs 16 MB to unpack, 2 MB are free; .*EphemeralStorage",
    ):
        loader.unpack(str(archive), manifest, str(tiny_tmp))
    assert [p.name for p in tiny_tmp.iterdir()] == [f"torchwheel-{manifest['sha256'][:16]}.lock"]


def test_enospc_during_unpack_is_clear(
    tmp_path: Path, tiny_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when the space check is fooled (too-small size in the manifest), ENOSPC is clear."""
    src = tmp_path / "big"
    src.mkdir()
    (src / "blob").write_bytes(os.urandom(4 * 1024 * 1024))
    info = pack_tree(src, tmp_path / "big.tar.zst", level=1)
    monkeypatch.setattr(loader, "MARGIN_BYTES", 0)
    manifest = dict(_manifest(info.archive, 1), disk_size=0)
    with pytest.raises(loader.LoaderError, match="ran out of space unpacking into"):
        loader.unpack(str(info.archive), manifest, str(tiny_tmp))
    assert [p.name for p in tiny_tmp.iterdir() if not p.name.endswith(".lock")] == []


_RACE = """
import sys, json
sys.path.insert(0, {loader_dir!r})
from torchwheel_loader_under_test import unpack
import torchwheel_loader_under_test as L
manifest = json.loads({manifest!r})
print(unpack({archive!r}, manifest, {parent!r}), L.unpacked_now)
"""


def test_concurrent_unpacks_produce_one_tree(
    packed: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import json

    archive, manifest = packed
    loader_dir = tmp_path / "loader"
    loader_dir.mkdir()
    (loader_dir / "torchwheel_loader_under_test.py").write_bytes(loader_source())
    parent = tmp_path / "tmp"
    code = _RACE.format(
        loader_dir=str(loader_dir),
        manifest=json.dumps(manifest),
        archive=str(archive),
        parent=str(parent),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    results = [o[0].split() for o in outs]
    assert len({r[0] for r in results}) == 1
    assert sorted(r[1] for r in results) == ["False", "False", "False", "True"]
    assert sorted(p.name for p in parent.iterdir()) == [
        Path(results[0][0]).name,
        Path(results[0][0]).name + ".lock",
    ]


def test_activate_inserts_before_layer_entries(
    packed: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    archive, manifest = packed
    here = tmp_path / "opt" / "python"
    (here / "torchwheel_packed").mkdir(parents=True)
    os.replace(archive, here / "torchwheel_packed" / archive.name)
    (here / "torchwheel_packed" / "manifest.json").write_text(json.dumps(manifest))
    site = here / "lib" / "python3.11" / "site-packages"
    monkeypatch.setattr(sys, "path", ["/var/task", str(site), str(here), "/var/lang/lib"])
    monkeypatch.setenv("TORCHWHEEL_UNPACK_DIR", str(tmp_path / "tmp"))
    tree = loader.activate(str(here))
    assert sys.path == ["/var/task", tree, str(site), str(here), "/var/lang/lib"]
    loader.activate(str(here))  # idempotent
    assert sys.path.count(tree) == 1


def test_missing_manifest_is_clear(tmp_path: Path) -> None:
    with pytest.raises(
        ImportError,
        match=r"cannot read .*manifest\.json: .*is the packed layer "
        "attached",
    ):
        loader.activate(str(tmp_path))
