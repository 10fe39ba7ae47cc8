"""The loader under hostile manifests and faults (issue 13): every failure is a LoaderError
(an ImportError), the manifest is validated by shape, and its hash names no path before it is
checked."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from torchwheel.loader import torchwheel_loader as loader


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(buf.getvalue()))
    return path


def _layer(tmp_path: Path, manifest: bytes | dict[str, Any]) -> Path:
    """A layer's python/ dir with one archive and ``manifest`` (bytes as they are)."""
    here = tmp_path / "opt" / "python"
    (here / "torchwheel_packed").mkdir(parents=True, exist_ok=True)
    _archive(here / "torchwheel_packed" / "site-packages.tar.zst", {"mod.py": b"X = 1\n"})
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    (here / "torchwheel_packed" / "manifest.json").write_bytes(data)
    return here


def _good(here: Path) -> dict[str, Any]:
    archive = here / "torchwheel_packed" / "site-packages.tar.zst"
    return {
        "format": 1,
        "archive": archive.name,
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "files": 1,
        "disk_size": 8192,
    }


SHA = "a" * 64
BAD_MANIFESTS: dict[str, tuple[bytes, str]] = {
    "list": (b"[1, 2, 3]", "not a JSON object but list"),
    "string": (b'"manifest"', "not a JSON object but str"),
    "no format": (json.dumps({"sha256": SHA}).encode(), "unsupported manifest format"),
    "format true": (
        json.dumps({"format": True, "sha256": SHA}).encode(),
        "unsupported manifest format",
    ),
    "sha256 dict": (
        json.dumps({"format": 1, "archive": "a", "sha256": {"a": 1}}).encode(),
        "sha256 is not 64 lowercase hex digits",
    ),
    "sha256 path": (
        json.dumps({"format": 1, "archive": "a", "sha256": "/../../x"}).encode(),
        "sha256 is not 64 lowercase hex digits",
    ),
    "sha256 upper": (
        json.dumps({"format": 1, "archive": "a", "sha256": "A" * 64}).encode(),
        "sha256 is not 64",
    ),
    "archive traversal": (
        json.dumps({"format": 1, "archive": "../../../etc/passwd", "sha256": SHA}).encode(),
        "is not a plain file name",
    ),
    "archive dotdot": (
        json.dumps({"format": 1, "archive": "..", "sha256": SHA}).encode(),
        "is not a plain file name",
    ),
    "files list": (
        json.dumps({"format": 1, "archive": "a", "sha256": SHA, "files": [1]}).encode(),
        "files '[1]' is not a count",
    ),
    "files inf": (
        b'{"format": 1, "archive": "a", "sha256": "%s", "files": 1e400}' % SHA.encode(),
        "files 'inf' is not a count",
    ),
    "files nan": (
        b'{"format": 1, "archive": "a", "sha256": "%s", "files": NaN}' % SHA.encode(),
        "files 'nan' is not a count",
    ),
    "files negative": (
        json.dumps({"format": 1, "archive": "a", "sha256": SHA, "disk_size": -5}).encode(),
        "disk_size '-5' is not a count",
    ),
    "files 5000 digits": (
        b'{"format": 1, "files": %s}' % (b"9" * 5000),
        "not readable JSON",
    ),
    "deep": (b"[" * 200_000 + b"]" * 200_000, "not readable JSON"),
    "not utf-8": (b'{"sha256": "\xff\xfe"}', "not readable JSON"),
    "too big": (b" " * (loader.MAX_MANIFEST_BYTES + 1), "too large for a manifest"),
    "python list": (
        json.dumps({"format": 1, "archive": "a", "sha256": SHA, "python": ["3"]}).encode(),
        "python is not a short text",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_is_a_loader_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    data, message = BAD_MANIFESTS[case]
    here = _layer(tmp_path, data)
    unpack_dir = tmp_path / "unpack"
    monkeypatch.setenv("TORCHWHEEL_UNPACK_DIR", str(unpack_dir))
    with pytest.raises(loader.LoaderError, match="torchwheel_loader: ") as exc:
        loader.activate(str(here))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, ImportError)
    assert not unpack_dir.exists()  # nothing was created anywhere: no lock, no temp dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt"]


def test_unpack_validates_the_manifest_before_naming_a_path(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.tar.zst", {"m.py": b""})
    for manifest in ({"format": 1, "archive": "a.tar.zst", "sha256": "/../../x"}, ["x"], None):
        with pytest.raises(loader.LoaderError):
            loader.unpack(str(archive), manifest, str(tmp_path / "parent"))  # type: ignore[arg-type]
    assert not (tmp_path / "parent").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.zst"]


def test_a_good_manifest_still_activates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = _layer(tmp_path, b"{}")
    (here / "torchwheel_packed" / "manifest.json").write_text(json.dumps(_good(here)))
    monkeypatch.setenv("TORCHWHEEL_UNPACK_DIR", str(tmp_path / "unpack"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    tree = Path(loader.activate(str(here)))
    assert (tree / "mod.py").read_bytes() == b"X = 1\n"


def test_an_unexpected_failure_while_unpacking_is_a_loader_error(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.tar.zst", {"m.py": b""})
    manifest = {
        "format": 1,
        "archive": archive.name,
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
    }
    parent = tmp_path / "parent-is-a-file"
    parent.write_text("not a directory")
    with pytest.raises(loader.LoaderError, match="torchwheel_loader: cannot"):
        loader.unpack(str(archive), manifest, str(parent))


def _mount_tmpfs(where: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    return proc.returncode == 0


def test_enospc_writing_the_completion_marker_is_a_loader_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tmpfs with just enough inodes for the tree: the marker file is the one that fails."""
    monkeypatch.setattr(loader, "MARGIN_BYTES", 0)  # the space check passes on a tiny tmpfs
    archive = _archive(tmp_path / "a.tar.zst", {"pkg/a.py": b"a", "pkg/b.py": b"b"})
    manifest = {
        "format": 1,
        "archive": archive.name,
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "files": 2,
        "disk_size": 0,
    }
    messages = []
    for inodes in range(3, 12):
        where = tmp_path / f"tmpfs-{inodes}"
        where.mkdir()
        if not _mount_tmpfs(where, f"size=4m,nr_inodes={inodes}"):
            pytest.skip("cannot mount a tmpfs here (needs root)")
        try:
            try:
                loader.unpack(str(archive), manifest, str(where))
                break
            except loader.LoaderError as exc:
                messages.append(str(exc))
        finally:
            subprocess.run(["umount", str(where)], check=False)
    assert any("cannot write the completion marker" in m for m in messages), messages
