"""The container-image readers (issue 14): tarstream (bounded tar over plain / gzip / zstd),
image (docker save tarballs, OCI layouts), imagefs (layers applied with OCI whiteouts).

Images are built here without a daemon (tests/support/images.py) in three shapes: docker
save, an OCI layout in a tar, an OCI layout directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.support.images import (
    OPAQUE,
    WHITEOUT,
    Symlink,
    layer_tar,
    tar_header,
    write_image_at,
)
from torchwheel.checks import check
from torchwheel.errors import ArchiveError, InputError
from torchwheel.image import is_image, open_image
from torchwheel.imagefs import FileSystem, FsEntry, LayerListing, list_layer, open_member
from torchwheel.tarstream import SYMLINK, Decompressed, TarStream

FORMATS = ("docker-save", "oci-tar", "oci-dir")
_write = write_image_at
_header = tar_header


def _merged(path: Path) -> dict[str, tuple[str, int, str]]:
    with open_image(str(path)) as image:
        fs = FileSystem()
        for layer in image.layers:
            fs.apply(list_layer(layer))
        return {p: (e.kind, e.size, e.link) for p, e in fs.files.items()}


# -- the reader ----------------------------------------------------------------------------------


def test_three_formats_read_the_same(tmp_path: Path) -> None:
    layers: list[dict[str, object]] = [
        {"/usr/lib64/libx.so.1": b"x" * 5000, "/lib64": Symlink("usr/lib64"), "/etc/a": b"a"},
        {"/var/task/app.py": b"print(1)\n", "/var/task/bin/run": (b"#!/bin/sh\n", 0o755)},
    ]
    seen = []
    for fmt in FORMATS:
        path = _write(tmp_path, fmt, layers, fmt)
        assert is_image(str(path))
        with open_image(str(path)) as image:
            assert image.format == ("docker-save" if fmt == "docker-save" else "oci-layout")
            assert image.config.architecture == "amd64" and image.tags == ("example/app:latest",)
            assert image.config.getenv("LAMBDA_TASK_ROOT") == "/var/task"
            diff_ids = [layer.diff_id for layer in image.layers]
        seen.append((diff_ids, _merged(path)))
    assert seen[0] == seen[1] == seen[2]
    files = seen[0][1]
    assert files["/var/task/bin/run"][:2] == ("file", 10)
    assert files["/lib64"] == ("symlink", 0, "usr/lib64")


def test_whiteouts_opaque_dirs_and_replacements(tmp_path: Path) -> None:
    base: dict[str, object] = {
        "/usr/lib64/liba.so.1": b"a",
        "/usr/lib64/libb.so.1": b"b",
        "/opt/python/old/__init__.py": b"",
        "/opt/python/old/mod.py": b"",
        "/opt/data/x": b"x",
        "/var/task/keep.py": b"",
    }
    top: dict[str, object] = {
        "/usr/lib64/liba.so.1": WHITEOUT,  # a file
        "/opt/python/old": WHITEOUT,  # a directory and all below it
        "/opt/data": OPAQUE,  # hides what lower layers put there...
        "/opt/data/y": b"y",  # ...but not what this layer adds
    }
    again: dict[str, object] = {"/usr/lib64/liba.so.1": b"back", "/var/task/keep.py": b"new"}
    for fmt in FORMATS:
        files = _merged(_write(tmp_path, f"wh-{fmt}", [base, top, again], fmt))
        assert "/usr/lib64/libb.so.1" in files
        assert files["/usr/lib64/liba.so.1"][1] == 4  # whited out, then added again above
        assert not any(p.startswith("/opt/python/old") for p in files)
        assert "/opt/data/x" not in files and "/opt/data/y" in files
        assert files["/var/task/keep.py"][1] == 3
        assert not any(".wh." in p for p in files)


def test_file_replacing_a_directory_hides_its_contents(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "rep",
        [{"/opt/lib/a.so": b"a", "/opt/lib/sub/b.so": b"b"}, {"/opt/lib": Symlink("/usr/lib64")}],
        "oci-tar",
    )
    files = _merged(path)
    assert files["/opt/lib"][0] == "symlink"
    assert not any(p.startswith("/opt/lib/") for p in files)


def test_symlink_resolution_and_member_reads(tmp_path: Path) -> None:
    layers: list[dict[str, object]] = [
        {
            "/lib64": Symlink("usr/lib64"),
            "/usr/lib64/libc-2.26.so": b"\x7fELF" + b"c" * 100,
            "/usr/lib64/libc.so.6": Symlink("libc-2.26.so"),
            "/usr/lib64/abs": Symlink("/lib64/libc.so.6"),
            "/loop/a": Symlink("b"),
            "/loop/b": Symlink("a"),
            "/dangling": Symlink("/nowhere"),
        }
    ]
    for fmt in ("docker-save", "oci-tar"):
        with open_image(str(_write(tmp_path, f"sym-{fmt}", layers, fmt))) as image:
            fs = FileSystem()
            fs.apply(list_layer(image.layers[0]))
            assert fs.resolve("/lib64/libc.so.6") == "/usr/lib64/libc-2.26.so"
            assert fs.resolve("/usr/lib64/abs") == "/usr/lib64/libc-2.26.so"
            assert fs.resolve("/loop/a") is None and fs.resolve("/dangling") is None
            entry = fs.files["/usr/lib64/libc-2.26.so"]
            with open_member(image.layers[0], entry) as f:
                assert f.read(4) == b"\x7fELF"
                f.seek(100)
                assert f.read() == b"c" * 4
                f.seek(0)  # backwards: a compressed layer is streamed again
                assert len(f.read()) == 104


def test_long_names_and_hardlinks(tmp_path: Path) -> None:
    deep = "/var/task/" + "/".join(["d" * 60] * 4) + "/module.py"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in ((deep.lstrip("/"), b"long"), ("var/task/orig.so", b"ELF!")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("var/task/link.so")
        link.type, link.linkname = tarfile.LNKTYPE, "var/task/orig.so"
        tf.addfile(link)
    gnu = buf.getvalue()
    pax = layer_tar({deep: b"long"})
    for n, blob in enumerate((gnu, pax)):
        path = tmp_path / f"l{n}.tar"
        # a docker-save tarball around the raw layer

        diff = hashlib.sha256(blob).hexdigest()
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": [f"sha256:{diff}"]}}
        ).encode()
        members = {
            "c.json": config,
            "l/layer.tar": blob,
            "manifest.json": json.dumps([{"Config": "c.json", "Layers": ["l/layer.tar"]}]).encode(),
        }
        with tarfile.open(path, "w") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        files = _merged(path)
        assert files[deep][:2] == ("file", 4)
        if n == 0:
            assert files["/var/task/link.so"][:2] == ("file", 4)


def test_broken_images_are_one_clear_error(tmp_path: Path) -> None:
    good = _write(tmp_path, "good", [{"/var/task/a.py": b"a"}], "docker-save")
    data = bytearray(good.read_bytes())
    # a flipped byte inside the layer: its diff_id no longer matches
    pos = data.find(b"a.py")
    data[pos + 600] ^= 0xFF if data[pos + 600] else 0x01
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArchiveError) as err:
        check([bad])
    assert "bad.tar" in str(err.value)
    with (
        pytest.raises(ArchiveError, match="does not match the config's diff_id"),
        open_image(str(bad)) as image,
    ):
        for layer in image.layers:
            list_layer(layer)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:1500])
    with pytest.raises(ArchiveError, match=r"cut\.tar"):
        check([cut])
    two = tmp_path / "two.tar"
    with tarfile.open(good) as src, tarfile.open(two, "w") as dst:
        for m in src.getmembers():
            f = src.extractfile(m)
            if m.name == "manifest.json" and f is not None:
                doc = json.loads(f.read())
                payload = json.dumps(doc + doc).encode()
                m.size = len(payload)
                dst.addfile(m, io.BytesIO(payload))
            else:
                dst.addfile(m, f)
    with pytest.raises(InputError, match="holds 2 images"):
        check([two])
    with pytest.raises(InputError, match="checked alone"):
        check([good, good])


def test_multi_platform_index_is_chosen_by_arch(tmp_path: Path) -> None:
    amd = _write(tmp_path, "amd", [{"/var/task/a.py": b"x86"}], "oci-dir", arch="amd64")
    arm = _write(tmp_path, "arm", [{"/var/task/a.py": b"arm!"}], "oci-dir", arch="arm64")
    # merge arm's blobs and index entry into amd's layout: one multi-platform image
    for blob in (arm / "blobs" / "sha256").iterdir():
        (amd / "blobs" / "sha256" / blob.name).write_bytes(blob.read_bytes())
    index = json.loads((amd / "index.json").read_text())
    index["manifests"] += json.loads((arm / "index.json").read_text())["manifests"]
    (amd / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match=r"holds 2 images \(linux/amd64, linux/arm64\)"):
        open_image(str(amd))
    with open_image(str(amd), arch="arm64") as image:
        assert image.config.architecture == "arm64"


def test_zstd_layer(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    path = _write(tmp_path, "z", [{"/var/task/a.py": b"zstd" * 1000}], "oci-dir")
    manifest_desc = json.loads((path / "index.json").read_text())["manifests"][0]
    blobs = path / "blobs" / "sha256"
    manifest = json.loads((blobs / manifest_desc["digest"][7:]).read_text())
    layer = manifest["layers"][0]
    raw = gzip.decompress((blobs / layer["digest"][7:]).read_bytes())
    z = zstandard.ZstdCompressor().compress(raw)

    zd = hashlib.sha256(z).hexdigest()
    (blobs / zd).write_bytes(z)
    layer.update(
        digest=f"sha256:{zd}", size=len(z), mediaType="application/vnd.oci.image.layer.v1.tar+zstd"
    )
    mbytes = json.dumps(manifest).encode()
    md = hashlib.sha256(mbytes).hexdigest()
    (blobs / md).write_bytes(mbytes)
    manifest_desc.update(digest=f"sha256:{md}", size=len(mbytes))
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    with open_image(str(path)) as image:
        listing = list_layer(image.layers[0])
        assert listing.compression == "zstd" and listing.digest == image.layers[0].diff_id


# -- budgets: the tar reader under hostile input --------------------------------------------------


def _members(data: bytes, **limits: int) -> list[tuple[str, int]]:
    stream = Decompressed(io.BytesIO(data), source="t")
    tar = TarStream(stream, source="t", **limits)
    return [(m.name, len(b"".join(tar.chunks()))) for m in tar]


def test_tar_budgets_and_formats() -> None:
    body = b"x" * 700
    one = _header("a.txt", len(body)) + body + bytes(-len(body) % 512)
    assert _members(one + bytes(1024)) == [("a.txt", 700)]
    # GNU base-256 size field
    b256 = b"\x80" + (700).to_bytes(11, "big")
    assert _members(_header("b.txt", 0, size_field=b256) + body + bytes(324)) == [("b.txt", 700)]
    # a pax header over the limit is refused before it is read
    pax = _header("././@PaxHeader", 10 * 1024**3, b"x")
    with pytest.raises(ArchiveError, match="pax header of 10,737,418,240 bytes"):
        _members(pax + one)
    with pytest.raises(ArchiveError, match="more than 2 members"):
        _members(one * 3, max_members=2)
    with pytest.raises(ArchiveError, match="member limit"):
        _members(one, max_member_bytes=100)
    broken = bytearray(one)
    broken[0] ^= 0x01  # the name changes, the checksum does not
    with pytest.raises(ArchiveError, match="corrupt tar header at byte 0"):
        _members(bytes(broken))
    with pytest.raises(ArchiveError, match="truncated tar data"):
        _members(one[:600])


def test_gzip_streams_bounded_and_concatenated() -> None:
    a = layer_tar({"/a": b"A" * 5000})
    b = layer_tar({"/b": b"B" * 5000})
    # pigz-style concatenated members, then zero padding: read as one stream
    joined = gzip.compress(a[:1024]) + gzip.compress(a[1024:]) + bytes(512)
    stream = Decompressed(io.BytesIO(joined), source="t", hash_content=True)
    assert stream.compression == "gzip"
    stream.drain()
    assert stream.pos == len(a)
    # a bomb: 64 MiB of zeros in a few KB stops at the budget, without holding it
    bomb = gzip.compress(bytes(64 * 1024**2), compresslevel=9)
    assert len(bomb) < 100_000
    capped = Decompressed(io.BytesIO(bomb), source="bomb", max_bytes=8 * 1024**2)
    with pytest.raises(ArchiveError, match="inflates past 8,388,608 bytes"):
        capped.drain()
    with pytest.raises(ArchiveError, match="truncated gzip"):
        Decompressed(io.BytesIO(gzip.compress(b)[:-20]), source="t").drain()


def test_stdin_spool_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _write(tmp_path, "img", [{"/var/task/a.py": b"a" * 100_000}], "docker-save")

    class _Stdin:
        buffer = io.BytesIO(image.read_bytes())

    monkeypatch.setattr(sys, "stdin", _Stdin())
    with pytest.raises(InputError, match="more than 50,000 bytes"):
        open_image("-", spool_limit=50_000)
    _Stdin.buffer.seek(0)
    with open_image("-") as opened:
        assert opened.source == "<stdin>" and len(opened.layers) == 1


def _rewrite_manifest(src: Path, dest: Path, edit: dict[str, object]) -> None:
    """Copy the docker save tarball ``src`` to ``dest`` with manifest.json's entry edited."""
    with tarfile.open(src) as old, tarfile.open(dest, "w") as new:
        for m in old.getmembers():
            f = old.extractfile(m)
            if m.name == "manifest.json" and f is not None:
                doc = json.loads(f.read())
                doc[0].update(edit)
                payload = json.dumps(doc).encode()
                m.size = len(payload)
                new.addfile(m, io.BytesIO(payload))
            else:
                new.addfile(m, f)


def test_manifest_and_index_fields_of_the_wrong_shape(tmp_path: Path) -> None:
    # RepoTags that is not a list was a TypeError (exit 3); a platform that is not an object
    # was an AttributeError once --arch was given; a malformed digest did not name the image
    good = _write(tmp_path, "good", [{"/var/task/a.py": b"a"}], "docker-save")
    odd = tmp_path / "odd.tar"
    _rewrite_manifest(good, odd, {"RepoTags": 5})
    with open_image(str(odd)) as image:
        assert image.tags == ()
    layout = _write(tmp_path, "layout", [{"/var/task/a.py": b"a"}], "oci-dir")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append({**index["manifests"][0], "platform": "zz"})
    (layout / "index.json").write_text(json.dumps(index))
    with open_image(str(layout), arch="amd64") as image:
        assert image.config.architecture == "amd64"
    with pytest.raises(InputError, match=r"holds 2 images \(linux/amd64, \?\)"):
        open_image(str(layout), arch="arm64")
    index["manifests"] = [{**index["manifests"][0], "digest": "sha256:../../x"}]
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ArchiveError, match=r"layout: malformed digest 'sha256:\.\./\.\./x'"):
        open_image(str(layout))


def test_deep_trees_and_long_links_stay_linear() -> None:
    # removing a tree 5,000 directories deep recursed once per level (RecursionError), and a
    # symlink of 200,000 "./" parts took quadratic time to resolve (list.pop(0) per part)
    fs = FileSystem()
    deep = "/a" * 5000
    top = LayerListing(0)
    top.entries.append(FsEntry(deep + "/f", "file", 1, 0o644, "", 0, 0))
    top.entries.append(FsEntry("/b", "file", 1, 0o644, "", 0, 0))
    link = "./" * 200_000
    top.entries.append(FsEntry("/l", SYMLINK, 0, 0o777, link + "b", 0, 0))
    top.entries.append(FsEntry("/m", SYMLINK, 0, 0o777, link + "l", 0, 0))
    fs.apply(top)
    started = time.perf_counter()
    assert fs.resolve("/m") == "/b"
    assert time.perf_counter() - started < 2.0
    gone = LayerListing(1)
    gone.whiteouts.append("/a")
    fs.apply(gone)
    assert set(fs.files) == {"/b", "/l", "/m"} and fs.listdir("/") == ["/b", "/l", "/m"]


def test_a_plain_tar_cut_inside_a_skipped_member_is_truncated(tmp_path: Path) -> None:
    # a plain, unhashed layer (check --no-record) skips big members by seeking; a seek past
    # the end read nothing more and the layer simply ended there, its later files missing
    big = 3 * 1024 * 1024
    whole = _header("big.bin", big) + bytes(big) + _header("after.txt", 0) + bytes(1024)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: 512 + big // 2])
    with cut.open("rb") as raw:
        tar = TarStream(Decompressed(raw, source="cut.tar"), source="cut.tar")
        with pytest.raises(ArchiveError, match=r"cut\.tar: truncated tar data"):
            list(tar)
    with io.BytesIO(whole) as raw:
        stream = Decompressed(raw, source="whole")
        assert [m.name for m in TarStream(stream, source="whole")] == ["big.bin", "after.txt"]
        assert stream.seeked > 0
