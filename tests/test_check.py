"""torchwheel.check on real zips: wheels made by tests.support.wheels, ELF files built by gcc."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from tests.support.elves import Elves
from tests.support.layers import SITE311, install_wheel, libz_so, make_layer
from tests.support.wheels import make_wheel, record_hash
from torchwheel.checks import CODES, EXPANDERS, CheckReport, Expansion, LayerEntry, check
from torchwheel.errors import ArchiveError, InputError
from torchwheel.zipread import ZipReader

SITE312 = "python/lib/python3.12/site-packages/"


def codes(report: CheckReport, severity: str | None = None) -> set[str]:
    return {f.code for f in report.findings if severity is None or f.severity == severity}


def pure_wheel(
    tmp_path: Path, name: str = "pure", version: str = "1.0", requires: tuple[str, ...] = ()
) -> Path:
    return make_wheel(tmp_path / "wheels", name, version, requires_dist=requires)


# -- layout --------------------------------------------------------------------------------------


def test_pure_layer_works_everywhere(tmp_path: Path) -> None:
    files = install_wheel(pure_wheel(tmp_path), prefix="python/")
    layer = make_layer(tmp_path / "l.zip", files)
    report = check([layer])
    assert not report.single_target and report.ok
    assert all(v.works for v in report.verdicts)
    assert {v.arch for v in report.verdicts} == {"x86_64", "arm64"}
    one = check([layer], runtime="python3.12", arch="arm64")
    assert one.single_target and one.ok and one.findings == ()
    assert one.distributions[0]["name"] == "pure"


def test_python311_dir_checked_for_312(tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "l.zip", install_wheel(pure_wheel(tmp_path), SITE311))
    assert check([layer], runtime="python3.11").ok
    report = check([layer], runtime="python3.12")
    assert not report.ok
    assert codes(report, "error") == {"wrong-python-dir"}
    (f,) = report.findings
    assert "python/lib/python3.11/" in f.path and "3.12" in f.message
    matrix = check([layer], arch="x86_64")
    works = {v.runtime for v in matrix.verdicts if v.works}
    assert works == {"python3.11"}


def test_seed_style_wheel_left_in_site_packages(tmp_path: Path) -> None:
    # the recipe mistake: the wheel file copied into site-packages instead of installed
    wheel = make_wheel(tmp_path / "w", "torch", "2.13.0", tags="cp311-cp311-manylinux_2_28_x86_64")
    layer = make_layer(
        tmp_path / "seed.zip",
        {
            SITE311 + wheel.name: wheel.read_bytes(),
            "python/handler_helpers.py": b"X = 1\n",
        },
    )
    report = check([layer], runtime="python3.11")
    (f,) = [f for f in report.findings if f.code == "wheel-not-extracted"]
    assert f.severity == "error" and wheel.name in f.path
    assert not report.ok


def test_not_on_sys_path_and_function_zip(tmp_path: Path) -> None:
    files = install_wheel(pure_wheel(tmp_path), prefix="site-packages/")
    layer = make_layer(tmp_path / "flat.zip", files)
    report = check([layer], runtime="python3.12")
    assert "not-on-sys-path" in codes(report, "error")
    assert any("site-packages/" in f.path for f in report.findings)
    lib_layer = make_layer(
        tmp_path / "lib.zip", install_wheel(pure_wheel(tmp_path), "lib/python3.12/site-packages/")
    )
    f = next(f for f in check([lib_layer], runtime="python3.12").findings)
    assert f.code == "not-on-sys-path" and "python/lib/python3.12" in f.message
    # a wheel given as if it were a layer
    whl = pure_wheel(tmp_path, "given", "1.0")
    found = check([whl], runtime="python3.12").findings
    assert found and all(
        f.code == "not-on-sys-path" and "a wheel is not a layer" in f.message for f in found
    )
    # the same files as a function zip (first of several, no python/ dir) are fine
    fn = make_layer(tmp_path / "function.zip", {"app.py": b"def handler(e, c): return 1\n"})
    deploy = check(
        [fn, make_layer(tmp_path / "py.zip", install_wheel(pure_wheel(tmp_path), "python/"))],
        runtime="python3.12",
    )
    assert deploy.ok, deploy.findings


def test_foreign_pycache_abi_mismatch_and_nested_zip(tmp_path: Path, elves: Elves) -> None:
    layer = make_layer(
        tmp_path / "l.zip",
        {
            "python/mod.py": b"",
            "python/__pycache__/mod.cpython-311.pyc": b"\x00" * 16,
            "python/_ext.cpython-311-x86_64-linux-gnu.so": elves.read("plain"),
            "python/data/models.zip": b"PK\x05\x06" + b"\x00" * 18,
        },
    )
    r312 = check([layer], runtime="python3.12")
    assert {"foreign-pycache", "abi-mismatch", "nested-zip"} <= codes(r312)
    assert codes(r312, "error") == {"abi-mismatch"}
    r311 = check([layer], runtime="python3.11")
    assert codes(r311) == {"nested-zip"} and r311.ok


# -- native code ---------------------------------------------------------------------------------


def _so_layer(tmp_path: Path, elves: Elves, name: str, which: str) -> Path:
    return make_layer(tmp_path / f"{name}.zip", {f"python/{name}.so": elves.read(which)})


def test_plain_so_works(tmp_path: Path, elves: Elves) -> None:
    report = check([_so_layer(tmp_path, elves, "plain", "plain")], runtime="python3.11")
    assert report.ok and report.findings == () and report.elf_files == 1


def test_glibc_too_new(tmp_path: Path, elves: Elves) -> None:
    layer = _so_layer(tmp_path, elves, "fast", "fcntl64")
    r = check([layer], runtime="python3.11")
    (f,) = r.findings
    assert f.code == "glibc-too-new" and "GLIBC_2.28" in f.message and "2.26" in f.message
    assert f.detail["needs"] == "2.28"
    assert check([layer], runtime="python3.12").ok
    newer = _so_layer(tmp_path, elves, "rnd", "arc4random")
    r = check([newer], runtime="python3.12")
    assert codes(r) == {"glibc-too-new"} and "GLIBC_2.36" in r.findings[0].message
    matrix = check([layer], arch="x86_64", python="3.11")
    works = {v.runtime for v in matrix.verdicts if v.works}
    assert "provided.al2023" in works and "python3.11" not in works and "provided.al2" not in works


def test_glibcxx_too_new(tmp_path: Path, elves: Elves) -> None:
    r = check([_so_layer(tmp_path, elves, "cx", "cxx_new")], runtime="python3.12")
    assert codes(r) == {"glibcxx-too-new"} and "GLIBCXX_3.4.30" in r.findings[0].message
    assert check([_so_layer(tmp_path, elves, "cp", "cxx_plain")], runtime="python3.12").ok


def test_aarch64_elf_in_x86_64_layer(tmp_path: Path, elves: Elves) -> None:
    layer = make_layer(
        tmp_path / "mixed.zip",
        {
            "python/a.so": elves.read("plain"),
            "python/b.so": elves.read("aarch64"),
        },
    )
    r = check([layer], runtime="python3.12", arch="x86_64")
    (f,) = r.findings
    assert f.code == "elf-arch-mismatch" and f.path.endswith("python/b.so")
    assert "aarch64" in f.message
    arm = check([layer], runtime="python3.12", arch="arm64")
    assert [f.path.rsplit(":", 1)[1] for f in arm.findings] == ["python/a.so"]


def test_missing_shared_library(tmp_path: Path, elves: Elves) -> None:
    alone = make_layer(tmp_path / "alone.zip", {"python/uses.so": elves.read("uses_dep")})
    r = check([alone], runtime="python3.12")
    (f,) = r.findings
    assert f.code == "missing-shared-library" and "libdep.so.1" in f.message
    assert f.severity == "error"
    # next to it ($ORIGIN RUNPATH) or in /opt/lib (LD_LIBRARY_PATH): found
    beside = make_layer(
        tmp_path / "beside.zip",
        {"python/uses.so": elves.read("uses_dep"), "python/libdep.so.1": elves.read("dep")},
    )
    assert check([beside], runtime="python3.12").ok
    libs = make_layer(tmp_path / "libs.zip", {"lib/libdep.so.1": elves.read("dep")})
    assert check([alone, libs], runtime="python3.12").ok
    # in the layer, but where the loader does not look: named in the message
    elsewhere = make_layer(
        tmp_path / "else.zip",
        {"python/uses.so": elves.read("uses_dep"), "python/deps/libdep.so.1": elves.read("dep")},
    )
    (f,) = check([elsewhere], runtime="python3.12").findings
    assert "not on the search path" in f.message


def test_later_layer_overrides_earlier(tmp_path: Path, elves: Elves) -> None:
    first = _so_layer(tmp_path, elves, "x", "fcntl64")
    second = make_layer(tmp_path / "second.zip", {"python/x.so": elves.read("plain")})
    assert not check([first], runtime="python3.11").ok
    assert check([first, second], runtime="python3.11").ok
    assert not check([second, first], runtime="python3.11").ok


# -- wheels inside -------------------------------------------------------------------------------


def test_tag_incompatible(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w", "native", "1.0", tags="cp311-cp311-manylinux_2_28_x86_64")
    layer = make_layer(tmp_path / "l.zip", install_wheel(wheel, SITE311))
    r = check([layer], runtime="python3.11")
    (f,) = r.findings
    assert f.code == "tag-incompatible" and "glibc 2.28" in f.message
    assert check([layer], runtime="provided.al2023", python="3.11").ok
    arm = check([layer], runtime="provided.al2023", arch="arm64", python="3.11")
    assert codes(arm) == {"tag-incompatible"}


def test_missing_dependency(tmp_path: Path) -> None:
    app = pure_wheel(
        tmp_path,
        "app",
        "1.0",
        requires=(
            "helper>=2",
            'oldlib; python_version < "3.8"',
            "boto3",
            "extra-only; extra == 'x'",
        ),
    )
    layer = make_layer(tmp_path / "app.zip", install_wheel(app, "python/"))
    r = check([layer], runtime="python3.12")
    (f,) = r.findings
    assert f.code == "missing-dependency" and "helper>=2" in f.message
    # provided.* ships no boto3
    r = check([layer], runtime="provided.al2023", python="3.12")
    assert {f.detail["requirement"] for f in r.findings} == {"helper>=2", "boto3"}
    # satisfied by another layer of the deployment; a too-old version is not enough
    helper2 = make_layer(
        tmp_path / "h2.zip", install_wheel(pure_wheel(tmp_path, "helper", "2.1"), "python/")
    )
    assert check([layer, helper2], runtime="python3.12").ok
    helper1 = make_layer(
        tmp_path / "h1.zip", install_wheel(pure_wheel(tmp_path, "helper", "1.5"), "python/")
    )
    (f,) = check([layer, helper1], runtime="python3.12").findings
    assert f.code == "missing-dependency" and "1.5" in f.message


def test_record_mismatch(tmp_path: Path) -> None:
    files = install_wheel(pure_wheel(tmp_path, "rec", "1.0"), "python/")
    good = make_layer(tmp_path / "good.zip", files)
    assert check([good], runtime="python3.12").ok
    bad_files = dict(files)
    bad_files["python/rec/__init__.py"] = b"tampered = True\n"
    bad = make_layer(tmp_path / "bad.zip", bad_files)
    r = check([bad], runtime="python3.12")
    (f,) = r.findings
    assert f.code == "record-mismatch" and f.severity == "error"
    assert f.detail["files"] == ["rec/__init__.py"]
    assert check([bad], runtime="python3.12", record=False).ok
    # same size, different bytes: only the hash tells
    same = dict(files)
    orig = files["python/rec/__init__.py"]
    same["python/rec/__init__.py"] = orig[:-2] + b"X\n"
    (f,) = check([make_layer(tmp_path / "same.zip", same)], runtime="python3.12").findings
    assert f.code == "record-mismatch"
    # a file deleted (slimmed) without updating RECORD, and a file RECORD does not know
    slim = dict(files)
    del slim["python/rec/__init__.py"]
    slim["python/rec/extra.py"] = b"x = 1\n"
    r = check([make_layer(tmp_path / "slim.zip", slim)], runtime="python3.12")
    kinds = {f.detail["kind"]: f.severity for f in r.findings if f.code == "record-mismatch"}
    assert kinds == {"missing": "warning", "unrecorded": "warning"}
    assert r.ok


def test_unreadable_record_is_a_finding(tmp_path: Path) -> None:
    files = install_wheel(pure_wheel(tmp_path, "rec", "1.0"), "python/")
    record = "python/rec-1.0.dist-info/RECORD"
    broken = dict(files)
    # a field over csv's limit: not CSV that any installer reads
    broken[record] = files[record] + b'"' + b"x" * 200_000 + b'",,\n'
    layer = make_layer(tmp_path / "broken.zip", broken)
    r = check([layer], runtime="python3.12")
    (f,) = r.findings
    assert f.code == "record-mismatch" and f.severity == "error"
    assert f.detail["kind"] == "unreadable"
    assert f.path == f"{layer}:python/rec-1.0.dist-info"
    assert f"{layer}:{record}" in f.message and "not valid CSV" in f.message
    # nothing else is judged from it: no file counts as unrecorded, --no-record skips it
    assert check([layer], runtime="python3.12", record=False).ok
    # a row whose hash cannot be computed (shake_128 has no fixed digest) is skipped; one whose
    # size cannot be read ("twelve") matches no file and differs; the rest are still compared
    odd = dict(files)
    odd[record] = files[record] + b"rec/other.py,sha256,twelve\nrec/shaken.py,shake_128=AAAA,6\n"
    odd["python/rec/other.py"] = b"x = 1\n"
    odd["python/rec/shaken.py"] = b"y = 2\n"
    odd["python/rec/__init__.py"] = b"tampered = True\n"
    (f,) = check([make_layer(tmp_path / "odd.zip", odd)], runtime="python3.12").findings
    assert f.detail["kind"] == "hash"
    assert f.detail["files"] == ["rec/__init__.py", "rec/other.py"]


def test_vendored_dist_info_is_not_an_installed_distribution(tmp_path: Path) -> None:
    # setuptools ships setuptools/_vendor/<pkg>.dist-info with RECORDs nobody maintains
    vendored_record = b"inner/__init__.py,sha256=AAAA,3\ninner/gone.pyi,,\n"
    wheel = make_wheel(
        tmp_path / "w",
        "outer",
        "1.0",
        files={
            "outer/__init__.py": b"",
            "outer/_vendor/inner/__init__.py": b"x = 1\n",
            "outer/_vendor/inner-1.0.dist-info/METADATA": b"Name: inner\nVersion: 1.0\n"
            b"Requires-Dist: absent\n",
            "outer/_vendor/inner-1.0.dist-info/RECORD": vendored_record,
        },
    )
    r = check(
        [make_layer(tmp_path / "v.zip", install_wheel(wheel, "python/"))], runtime="python3.12"
    )
    assert r.ok and r.findings == ()
    assert {d["name"] for d in r.distributions} == {"outer", "inner"}


def test_record_hashes_big_members_and_elf(tmp_path: Path, elves: Elves) -> None:
    # a member above the batch threshold goes through the streaming path
    big = bytes(range(256)) * 8192 * 3  # 6 MiB, compresses well but not to nothing
    so = elves.read("fcntl64")
    wheel = make_wheel(
        tmp_path / "w",
        "bigpkg",
        "1.0",
        tags="cp311-cp311-linux_x86_64",
        files={"bigpkg/blob.bin": big, "bigpkg/_x.cpython-311-x86_64-linux-gnu.so": so},
    )
    files = install_wheel(wheel, SITE311)
    r = check([make_layer(tmp_path / "big.zip", files)], runtime="python3.11")
    assert codes(r) == {"glibc-too-new"}  # linux_x86_64 tag: the ELF scan decides
    files[SITE311 + "bigpkg/blob.bin"] = big[:-1] + b"!"
    r = check([make_layer(tmp_path / "big2.zip", files)], runtime="python3.11")
    assert codes(r) == {"glibc-too-new", "record-mismatch"}


# -- safety --------------------------------------------------------------------------------------


def test_zip_slip_and_symlinks(tmp_path: Path) -> None:
    layer = make_layer(
        tmp_path / "slip.zip",
        {
            "python/ok.py": b"",
            "../../etc/cron.d/evil": b"* * * * * root sh\n",
            "/abs/path": b"",
        },
        symlinks={"python/escape": "../../../etc/passwd", "python/inside": "ok.py"},
    )
    r = check([layer], runtime="python3.12")
    unsafe = [f for f in r.findings if f.code == "unsafe-path"]
    assert len(unsafe) == 3
    assert any("escape" in f.path for f in unsafe)
    assert not any("inside" in f.path for f in unsafe)
    assert not r.ok


def test_duplicates_and_lying_sizes(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("python/a.py", b"1")
        with pytest.warns(UserWarning, match="Duplicate"):
            zf.writestr("python/a.py", b"2")
        zf.writestr(
            zipfile.ZipInfo("python/blob"), b"\x00" * 10_000, compress_type=zipfile.ZIP_DEFLATED
        )
    # make the central directory claim ~4 GiB for python/blob (a ratio deflate cannot reach)
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        nlen = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + nlen] == b"python/blob":
            break
        pos = data.find(b"PK\x01\x02", pos + 4)
    assert pos >= 0
    struct.pack_into("<L", data, pos + 24, 0xFFFFFFFE)
    path.write_bytes(bytes(data))
    r = check([path], runtime="python3.12")
    sus = [f for f in r.findings if f.code == "suspicious-archive"]
    assert len(sus) == 2 and "python/blob" in " ".join(f.path for f in sus)
    assert any("duplicate" in f.message for f in sus)


def test_unreadable_inputs(tmp_path: Path) -> None:
    layer = make_layer(tmp_path / "l.zip", {"python/a.py": b"x" * 1000})
    cut = tmp_path / "cut.zip"
    cut.write_bytes(layer.read_bytes()[:-30])
    with pytest.raises(ArchiveError, match=r"cut\.zip"):
        check([cut])
    text = tmp_path / "text.zip"
    text.write_text("hello")
    with pytest.raises(ArchiveError, match="not a zip"):
        check([text])
    with pytest.raises(InputError, match="unknown finding code"):
        check([layer], ignore=["no-such-code"])


# -- sizes ---------------------------------------------------------------------------------------


def test_sizes_add_up_and_layer_count(tmp_path: Path) -> None:
    zeros = b"\x00" * (27 * 1024 * 1024)
    first = make_layer(
        tmp_path / "z0.zip",
        {"python/blob0.bin": zeros, "python/blob1.bin": zeros, "python/m.py": b""},
    )
    layers = [first]
    for i in range(1, 6):  # the same bytes under other names: sizes still add up
        copy = tmp_path / f"z{i}.zip"
        copy.write_bytes(first.read_bytes())
        layers.append(copy)
    r = check(layers[:1], runtime="python3.12")
    assert r.ok and r.sizes.unzipped_total == 2 * len(zeros)
    r = check(layers[:5], runtime="python3.12")
    assert codes(r) == {"unzipped-too-large"}
    assert r.sizes.unzipped_total > r.sizes.unzipped_limit == 262_144_000
    r = check(layers, runtime="python3.12", ignore=["unzipped-too-large"])
    assert codes(r) == {"too-many-layers"} and r.ignored == ("unzipped-too-large",)
    assert r.sizes.largest_dirs


# -- layers built by torchwheel's own builder, and the real torch wheel ---------------------------


def test_layer_built_by_layer_tree(tmp_path: Path, elves: Elves) -> None:
    from torchwheel.layer import LayerTree, layer_prefix, write_layer_zip
    from torchwheel.targets import make_target

    target = make_target("x86_64", runtime="python3.11")
    native = make_wheel(
        tmp_path / "w",
        "native",
        "1.0",
        tags="cp311-cp311-linux_x86_64",
        files={
            "native/__init__.py": b"",
            "native/_c.cpython-311-x86_64-linux-gnu.so": elves.read("fcntl64"),
        },
        requires_dist=("pure",),
    )
    pure = pure_wheel(tmp_path, "pure", "1.0")
    tree = LayerTree(tmp_path / "tree", layer_prefix(target))
    tree.install(native)
    tree.install(pure)
    tree.finalize()
    out = tmp_path / "built.zip"
    write_layer_zip(tree.root, out)
    r = check([out], runtime="python3.11")
    assert codes(r) == {"glibc-too-new"}  # RECORD, dependencies, layout: all fine
    assert check([out], runtime="python3.11", arch="x86_64", ignore=["glibc-too-new"]).ok
    matrix = check([out])
    assert {v.target for v in matrix.verdicts if v.works} == set()
    reasons = {v.runtime: v.reason or "" for v in matrix.verdicts if v.arch == "x86_64"}
    assert reasons["python3.11"].startswith("glibc-too-new")
    assert reasons["python3.12"].startswith("wrong-python-dir")


@pytest.mark.torch
def test_real_torch_layer(torch_layer: Path) -> None:
    # one scan, judged for every runtime x arch (provided.* with CPython 3.11)
    r = check([torch_layer], python="3.11")
    by = {v.target: v for v in r.verdicts}

    def vcodes(label: str, severity: str | None = None) -> set[str]:
        return {f.code for f in by[label].findings if severity in (None, f.severity)}

    py311 = by["python3.11/x86_64"]
    glibc = {
        f.path.rsplit(":", 1)[1]: f.detail["needs"]
        for f in py311.findings
        if f.code == "glibc-too-new"
    }
    assert glibc[SITE311 + "torch/lib/libtorch_cpu.so"] == "2.28"
    assert "record-mismatch" not in vcodes("python3.11/x86_64")  # 12,248 files vs RECORD
    assert {"unzipped-too-large", "tag-incompatible", "missing-dependency"} <= vcodes(
        "python3.11/x86_64", "error"
    )
    assert "zipped-over-direct-upload" in codes(r, "warning")
    assert r.elf_files > 100
    al2023 = "provided.al2023/x86_64 (CPython 3.11)"
    native = {
        "glibc-too-new",
        "glibcxx-too-new",
        "elf-arch-mismatch",
        "abi-mismatch",
        "tag-incompatible",
    }
    assert not vcodes(al2023) & native
    assert vcodes(al2023, "error") == {"unzipped-too-large", "missing-dependency"}
    assert "elf-arch-mismatch" in vcodes("provided.al2023/arm64 (CPython 3.11)")
    assert by["python3.12/x86_64"].reason is not None
    assert by["python3.12/x86_64"].reason.startswith("wrong-python-dir")
    ok = check(
        [torch_layer],
        runtime="provided.al2023",
        python="3.11",
        record=False,
        ignore=["unzipped-too-large", "missing-dependency"],
    )
    assert ok.ok


@pytest.mark.torch
def test_torch_layer_built_by_build(torch_layer_zip: Path) -> None:
    """The slimmed + stripped layer `torchwheel build` makes (provided.al2023, CPython 3.11)."""
    r = check([torch_layer_zip], runtime="provided.al2023", python="3.11")
    assert "record-mismatch" not in codes(r)  # build rewrote RECORD after strip and slim
    assert "missing-dependency" not in codes(r)  # the closure is in the layer
    assert not codes(r, "error") - {"unzipped-too-large"}, r.findings
    r311 = check([torch_layer_zip], runtime="python3.11", record=False)
    assert "glibc-too-new" in codes(r311)


# -- hooks ---------------------------------------------------------------------------------------


def test_expander_hook_adds_entries(tmp_path: Path, elves: Elves) -> None:
    """An expander sees each entry and may add entries mounted elsewhere (packed layers)."""
    inner = make_layer(tmp_path / "inner.zip", {"native.so": elves.read("fcntl64")})
    outer = make_layer(tmp_path / "outer.zip", {"python/bundle/inner.zip": inner.read_bytes()})

    readers: list[ZipReader] = []

    def expand(entry: LayerEntry) -> Expansion | None:
        if not entry.path.endswith("inner.zip"):
            return None
        data = entry.open().read()
        nested = tmp_path / "nested-copy.zip"
        nested.write_bytes(data)
        reader = ZipReader(nested)
        readers.append(reader)
        m = reader.members[0]
        return Expansion(
            entries=[
                LayerEntry(
                    path=m.name,
                    size=m.file_size,
                    mode=m.mode,
                    is_symlink=False,
                    is_dir=False,
                    origin=f"{entry.label}!",
                    mount="/tmp/unpacked",
                    open=lambda: reader.open(m),
                    expanded_from=entry.label,
                )
            ],
            sys_path=("/tmp/unpacked",),
        )

    EXPANDERS.append(expand)
    try:
        r = check([outer], runtime="python3.11", ignore=["nested-zip"])
    finally:
        EXPANDERS.remove(expand)
        for reader in readers:
            reader.close()
    assert codes(r) == {"glibc-too-new"}
    assert r.findings[0].path.endswith("!:native.so")
    assert r.sizes.unzipped_total == len(inner.read_bytes())  # expanded bytes: not the quota


def test_codes_are_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "json-schema.md").read_text()
    for code in CODES:
        assert f"`{code}`" in doc, code


def test_record_hash_helper_matches() -> None:
    # the RECORD form used by the wheel factory is the one check compares against
    assert record_hash(b"") == "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"


def test_unconfirmed_system_library_is_a_warning_that_says_so(tmp_path: Path) -> None:
    """libz.so.1 is assumed on the image, but no source lists it: a warning, not silence."""
    import subprocess

    so = libz_so(tmp_path)
    layer = make_layer(tmp_path / "z.zip", {"python/usez.so": so})
    r = check([layer], runtime="provided.al2023", python="3.12")
    (f,) = r.findings
    assert f.code == "unconfirmed-system-library" and f.severity == "warning"
    assert "libz.so.1" in f.message and "unconfirmed" in f.message
    assert r.ok  # warnings pass unless --strict
    # a bundled zlib next to it settles the question
    real = subprocess.run(["gcc", "-print-file-name=libz.so.1"], capture_output=True, text=True)
    libz = Path(real.stdout.strip())
    if libz.is_file():
        both = make_layer(
            tmp_path / "zz.zip",
            {"python/usez.so": so, "lib/libz.so.1": libz.read_bytes()},
        )
        assert check([both], runtime="provided.al2023", python="3.12").findings == ()
