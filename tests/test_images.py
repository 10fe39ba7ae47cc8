"""Container images (issue 14): `check image.tar` judging /var/task and /opt against the
image's own files (the readers themselves: tests/test_image_reader.py).

Images are built here without a daemon (tests/support/images.py): layers are tar files, the
config and manifest JSON per the OCI image spec, in three shapes (docker save, OCI layout in
a tar, OCI layout directory). The base layer's libc.so.6 / libm / libgcc_s / libstdc++ are
built by gcc with version scripts that stop at Amazon Linux 2's or 2023's ceilings; the
function's native code is tests/support/elves.py's gcc-built objects (one needs GLIBC_2.28).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.elves import Elves
from tests.support.images import (
    OPAQUE,
    WHITEOUT,
    SystemLibs,
    base_layer,
    docker_save_files,
    layer_tar,
    tar_header,
    wheel_layer_file,
    write_image_at,
)
from tests.support.realwheels import RealWheels
from tests.support.recipes import run_recipe, shell_blocks
from tests.support.wheels import make_wheel
from torchwheel.checks import CheckReport, check
from torchwheel.errors import InputError
from torchwheel.image import open_image

FORMATS = ("docker-save", "oci-tar", "oci-dir")
TAG = "cpython-312-x86_64-linux-gnu"
_write = write_image_at
_header = tar_header


# -- check: the image's own files are the truth --------------------------------------------------


def _app(elves: Elves, **extra: object) -> dict[str, object]:
    return {
        "/var/task/app.py": b"import fast\n",
        f"/var/task/fast.{TAG}.so": (elves.read("fcntl64"), 0o755),  # needs GLIBC_2.28
        f"/var/task/plain.{TAG}.so": (elves.read("plain"), 0o755),
        **extra,
    }


def _image(
    tmp: Path,
    name: str,
    libs: SystemLibs,
    glibc: str,
    app: dict[str, object],
    fmt: str = "oci-tar",
    more: list[dict[str, object]] | None = None,
) -> Path:
    return _write(tmp, name, [base_layer(libs, glibc), *(more or []), app], fmt)


def codes(report: CheckReport, severity: str | None = None) -> set[str]:
    return {f.code for f in report.findings if severity in (None, f.severity)}


def test_glibc_228_fails_on_226_image_and_passes_on_234(
    tmp_path: Path, system_libs: SystemLibs, elves: Elves
) -> None:
    for fmt in FORMATS:
        old = check([_image(tmp_path, f"al2-{fmt}", system_libs, "2.26", _app(elves), fmt)])
        (f,) = [f for f in old.findings if f.code == "glibc-too-new"]
        assert f.path.endswith(f"/var/task:fast.{TAG}.so") and "@sha256:" in f.path
        assert "GLIBC_2.28" in f.message and "glibc 2.26" in f.message
        assert not old.ok
        new = check([_image(tmp_path, f"al2023-{fmt}", system_libs, "2.34", _app(elves), fmt)])
        assert new.ok and codes(new) == set(), new.findings


def test_the_image_is_the_truth_and_says_so(
    tmp_path: Path, system_libs: SystemLibs, elves: Elves
) -> None:
    # python3.12 on glibc 2.26: not what the facts file says python3.12 is (AL2023, 2.34)
    r = check([_image(tmp_path, "mixed", system_libs, "2.26", _app(elves))])
    truth = r.truth
    assert truth["source"] == "image" and truth["glibc"] == "2.26"
    assert truth["glibc_from"].startswith("/usr/lib64/libc-2.26.so in layer sha256:")
    assert truth["glibcxx"] == "3.4.24" and truth["cxxabi"] == "1.3.11"
    assert truth["python"] == "3.12" and truth["python_from"] == "/var/lang/bin/python3.12"
    assert truth["architecture"] == "x86_64" and truth["architecture_from"] == "image config"
    assert truth["ld_library_path_from"] == "image config"
    assert truth["claimed_runtime"] == "python3.12"
    (w,) = [f for f in r.findings if f.code == "image-differs-from-runtime"]
    assert w.severity == "warning" and "python3.12" in w.message
    assert {d["what"] for d in w.detail["differences"]} == {"glibc", "GLIBCXX", "CXXABI"}
    # the image agrees with the facts for python3.12: no warning; a zip's truth is the facts
    agree = check([_image(tmp_path, "agree", system_libs, "2.34", _app(elves))])
    assert "image-differs-from-runtime" not in codes(agree)
    data = agree.to_dict()
    assert data["image"]["format"] == "oci-layout" and len(data["image"]["layers"]) == 2
    assert data["inputs"][0]["kind"] == "image"
    assert data["sizes"]["unzipped_limit"] == 10 * 1024**3


def test_whiteout_deleting_a_needed_library(
    tmp_path: Path, system_libs: SystemLibs, elves: Elves
) -> None:
    dep: dict[str, object] = {"/usr/lib64/libdep.so.1": (elves.read("dep"), 0o755)}
    app = _app(elves, **{f"/var/task/uses.{TAG}.so": (elves.read("uses_dep"), 0o755)})
    for fmt in FORMATS:
        present = check([_image(tmp_path, f"dep-{fmt}", system_libs, "2.34", app, fmt, [dep])])
        assert present.ok, present.findings
        gone = check(
            [
                _image(
                    tmp_path,
                    f"gone-{fmt}",
                    system_libs,
                    "2.34",
                    app,
                    fmt,
                    [dep, {"/usr/lib64/libdep.so.1": WHITEOUT}],
                )
            ]
        )
        (f,) = gone.findings
        assert f.code == "missing-shared-library" and f.severity == "error"
        assert "libdep.so.1" in f.message and f.path.endswith(f"/var/task:uses.{TAG}.so")
        # an opaque directory hides what the layers beneath put there
        rt_dep: dict[str, object] = {"/var/runtime/lib/libdep.so.1": (elves.read("dep"), 0o755)}
        hidden: dict[str, object] = {"/var/runtime/lib": OPAQUE, "/var/runtime/lib/x.txt": b""}
        seen = check([_image(tmp_path, f"rt-{fmt}", system_libs, "2.34", app, fmt, [rt_dep])])
        assert seen.ok, seen.findings
        opaque = _image(tmp_path, f"opq-{fmt}", system_libs, "2.34", app, fmt, [rt_dep, hidden])
        assert codes(check([opaque])) == {"missing-shared-library"}
    # without its libc the image cannot be judged at all: one clear error
    no_libc = _image(
        tmp_path, "nolibc", system_libs, "2.34", app, "oci-tar", [{"/usr/lib64": OPAQUE}]
    )
    with pytest.raises(InputError, match=r"no libc\.so\.6"):
        check([no_libc])


def test_docker_save_and_oci_layout_give_the_same_answer(
    tmp_path: Path, system_libs: SystemLibs, elves: Elves
) -> None:
    app = _app(
        elves,
        **{
            f"/var/task/cx.{TAG}.so": (elves.read("cxx_new"), 0o755),  # GLIBCXX_3.4.30
            "/var/task/arm.so": (elves.read("aarch64"), 0o755),
            "/opt/python/lib/python3.11/site-packages/x.py": b"",
        },
    )
    answers = []
    for fmt in FORMATS:
        path = _image(tmp_path, f"same-{fmt}", system_libs, "2.26", app, fmt)
        r = check([path])
        answers.append(
            sorted(
                (f.code, f.severity, f.path.replace(str(path), "<img>"), f.message)
                for f in r.findings
            )
        )
    assert answers[0] == answers[1] == answers[2]
    got = {row[0] for row in answers[0]}
    assert {"glibc-too-new", "glibcxx-too-new", "elf-arch-mismatch", "wrong-python-dir"} <= got


def test_arch_and_python_come_from_the_image(
    tmp_path: Path, system_libs: SystemLibs, elves: Elves
) -> None:
    path = _image(tmp_path, "img", system_libs, "2.34", _app(elves))
    with pytest.raises(InputError, match="is x86_64"):
        check([path], arch="arm64")
    with pytest.raises(InputError, match=r"runs CPython 3\.12"):
        check([path], python="3.11")
    assert check([path], arch="x86_64", python="3.12").ok
    # --runtime names what the image claims to be (compared, not used for the verdict)
    r = check([path], runtime="python3.11")
    assert r.truth["claimed_runtime"] == "python3.11"
    assert "image-differs-from-runtime" in codes(r) and codes(r, "error") == set()


def test_arch_from_the_user_when_the_config_names_none(
    tmp_path: Path, system_libs: SystemLibs, elves: Elves
) -> None:
    # the truth said "image config" even when --arch supplied it; a python3.<5,000 digits>
    # file beside the interpreter was a ValueError from int() (exit 3)
    odd: dict[str, object] = {f"/var/lang/bin/python3.{'9' * 5000}": b"#!/bin/sh\n"}
    layers = [base_layer(system_libs, "2.34"), odd, _app(elves)]
    path = _write(tmp_path, "noarch", layers, "oci-tar", arch="")
    with pytest.raises(InputError, match="names no architecture; give --arch"):
        check([path])
    r = check([path], arch="x86_64")
    assert r.ok and r.truth["architecture_from"] == "--arch" and r.truth["python"] == "3.12"
    plain = check([_image(tmp_path, "img", system_libs, "2.34", _app(elves))])
    assert plain.truth["architecture_from"] == "image config"


def test_dependencies_record_and_runtime_packages(tmp_path: Path, system_libs: SystemLibs) -> None:
    wheel = make_wheel(tmp_path / "w", "app", "1.0", requires_dist=("boto3",))
    with zipfile.ZipFile(wheel) as zf:
        installed: dict[str, object] = {f"/var/task/{n}": zf.read(n) for n in zf.namelist()}
    r = check([_image(tmp_path, "nob", system_libs, "2.34", installed)])
    (f,) = r.findings
    assert f.code == "missing-dependency" and "boto3" in f.message
    assert f.path.endswith("/var/task:app-1.0.dist-info")
    runtime_boto: dict[str, object] = {
        "/var/lang/lib/python3.12/site-packages/boto3-1.34.0.dist-info/METADATA": b"Name: boto3\n"
    }
    ok = check([_image(tmp_path, "boto", system_libs, "2.34", installed, more=[runtime_boto])])
    assert ok.ok and ok.findings == ()
    # a later layer changes a file RECORD lists: named with that layer's digest
    tampered: dict[str, object] = {"/var/task/app/__init__.py": b"changed = True\n"}
    layers = [runtime_boto, installed]
    bad = check([_image(tmp_path, "bad", system_libs, "2.34", tampered, more=layers)])
    (f,) = bad.findings
    assert f.code == "record-mismatch" and f.detail["files"] == ["app/__init__.py"]
    with open_image(str(tmp_path / "bad.tar")) as image:
        top = image.layers[-1].short
        below = image.layers[-2].short
    assert below in f.path  # the distribution's layer; the message names the changed file
    assert check(
        [_image(tmp_path, "bad2", system_libs, "2.34", tampered, more=layers)], record=False
    ).ok
    assert top != below


# -- the CLI: `docker save … | torchwheel check -` ------------------------------------------------


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "torchwheel", "check", *args],
        input=stdin,
        capture_output=True,
        timeout=300,
    )


def test_cli_reads_an_image_from_stdin(
    tmp_path: Path, system_libs: SystemLibs, elves: Elves
) -> None:
    old = _image(tmp_path, "old", system_libs, "2.26", _app(elves), "docker-save")
    done = _cli("-", "--json", stdin=old.read_bytes())
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["paths"] == ["-"] and data["inputs"][0]["path"] == "<stdin>"
    assert data["truth"]["source"] == "image"
    assert "glibc-too-new" in {f["code"] for f in data["findings"]}
    new = _image(tmp_path, "new", system_libs, "2.34", _app(elves), "docker-save")
    zipped = gzip.compress(new.read_bytes())  # docker save … | gzip
    done = _cli("-", stdin=zipped)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "image" in out and "glibc 2.34" in out
    zipped_layer = _cli("-", stdin=b"PK\x03\x04" + bytes(100))
    assert zipped_layer.returncode == 2 and b"a zip, not an image" in zipped_layer.stderr
    broken = _cli("-", stdin=b"not an image at all" * 100)
    assert broken.returncode == 2 and b"Traceback" not in broken.stderr
    assert broken.stderr.decode().strip().count("\n") == 0


# -- docs/ci.md recipes, run verbatim ------------------------------------------------------------

DOCKER_STUB = """case "$1" in
  build) echo "built" ;;
  save) cat "$IMAGE_SAVE" ;;
  buildx) cp "$IMAGE_OCI" inference.tar ;;
esac"""


def test_ci_recipes_container_images(tmp_path: Path, system_libs: SystemLibs, elves: Elves) -> None:
    save_block, oci_block = shell_blocks("ci.md", "Container images")
    assert "docker save inference | torchwheel check -" in save_block
    for glibc, code in (("2.26", 1), ("2.34", 0)):
        env = {
            "IMAGE_SAVE": str(
                _image(tmp_path, f"s{glibc}", system_libs, glibc, _app(elves), "docker-save")
            ),
            "IMAGE_OCI": str(
                _image(tmp_path, f"o{glibc}", system_libs, glibc, _app(elves), "oci-tar")
            ),
        }
        for block in (save_block, oci_block):
            project = tmp_path / f"p{glibc}-{len(block)}"
            project.mkdir()
            done = run_recipe(block, project, {"docker": DOCKER_STUB}, env)
            assert done.returncode == code, done.stdout + done.stderr
            assert "judged by the image's own files" in done.stdout
            assert f"glibc {glibc}" in done.stdout
            assert ("GLIBC_2.28" in done.stdout) == (code == 1)


# -- real wheels in /var/task --------------------------------------------------------------------


@pytest.mark.realwheels
def test_real_wheels_in_var_task(
    tmp_path: Path, system_libs: SystemLibs, real_wheels: RealWheels
) -> None:
    """numpy, shapely and pillow (cp311, manylinux2014) installed into /var/task as
    `pip install --target "${LAMBDA_TASK_ROOT}"` does, on python3.11 images: they load."""
    task: dict[str, object] = {"/var/task/app.py": b"import numpy, shapely, PIL\n"}
    for key in ("numpy-x86_64", "shapely-x86_64", "pillow-x86_64"):
        with zipfile.ZipFile(real_wheels.wheels[key]) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    mode = (info.external_attr >> 16) & 0o777 or 0o644
                    task["/var/task/" + info.filename] = (zf.read(info), mode)
    for glibc in ("2.26", "2.34"):
        layers = [base_layer(system_libs, glibc, python="3.11"), task]
        r = check([_write(tmp_path, f"real{glibc}", layers, "oci-tar")])
        errors = [f for f in r.findings if f.severity == "error"]
        assert errors == [], errors
        assert r.elf_files > 50 and {d["name"] for d in r.distributions} >= {"numpy", "shapely"}
        assert r.record_checked and r.truth["python"] == "3.11"
    # the same files without the image's libm: numpy's extension modules cannot load
    gone = [
        base_layer(system_libs, "2.26", python="3.11"),
        {"/usr/lib64/libm.so.6": WHITEOUT},
        task,
    ]
    r = check([_write(tmp_path, "nolibm", gone, "docker-save")])
    missing = [
        f for f in r.findings if f.code == "missing-shared-library" and f.severity == "error"
    ]
    assert any("numpy/" in f.path and "libm.so.6" in f.message for f in missing)


def test_nothing_to_check_is_an_error(tmp_path: Path, system_libs: SystemLibs) -> None:
    path = _write(
        tmp_path, "empty", [base_layer(system_libs, "2.34"), {"/app/a.py": b""}], "oci-tar"
    )
    with pytest.raises(InputError, match="nothing in /var/task or /opt"):
        check([path])


def _sparse_docker_save(dest: Path, base: bytes, big: int) -> None:
    """A docker-save tarball whose second layer holds one ``big``-byte file of zeros, written
    sparse (nothing but headers reaches the disk)."""

    def member(name: str, size: int) -> bytes:
        field = b"\x80" + size.to_bytes(11, "big") if size >= 8**11 else None
        return _header(name, size, size_field=field)

    inner = member("data/zeros.bin", big)
    layer_size = len(inner) + big + (-big % 512) + 1024
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["LD_LIBRARY_PATH=/lib64"]},
            "rootfs": {"diff_ids": ["sha256:" + "0" * 64, "sha256:" + "1" * 64]},
        }
    ).encode()
    manifest = json.dumps(
        [{"Config": "c.json", "Layers": ["base/layer.tar", "big/layer.tar"]}]
    ).encode()
    with open(dest, "wb") as f:
        for name, data in (("c.json", config), ("base/layer.tar", base)):
            f.write(member(name, len(data)) + data + bytes(-len(data) % 512))
        f.write(member("big/layer.tar", layer_size) + inner)
        f.seek(big + (-big % 512), 1)
        f.write(bytes(1024))  # the layer's end blocks
        f.write(member("manifest.json", len(manifest)) + manifest + bytes(-len(manifest) % 512))
        f.write(bytes(1024))


def test_image_over_the_10_gb_quota(tmp_path: Path, system_libs: SystemLibs, elves: Elves) -> None:
    layers = {**base_layer(system_libs, "2.34"), **_app(elves)}
    dest = tmp_path / "huge.tar"
    _sparse_docker_save(dest, layer_tar(layers), 10 * 1024**3 + 1)
    assert dest.stat().st_blocks * 512 < 50 * 1024**2  # sparse: the disk holds the headers
    r = check([dest], record=False)  # --no-record: plain layers are skipped by seeking
    (f,) = [f for f in r.findings if f.code == "image-too-large"]
    assert f.severity == "error" and f.detail["limit"] == 10 * 1024**3
    assert r.sizes.unzipped_total > 10 * 1024**3
    assert not r.ok and r.bytes_read < 100 * 1024**2


@pytest.mark.torch
def test_real_torch_in_an_image(tmp_path: Path, system_libs: SystemLibs, torch_wheel: Path) -> None:
    """The real torch 2.13.0 CPU wheel in /var/task of python3.11 images: GLIBC_2.28 needs
    fail on the 2.26 image, named with the layer that brought them, and pass on 2.34."""
    app = wheel_layer_file(torch_wheel, tmp_path / "app.tar")
    for glibc in ("2.26", "2.34"):
        base = tmp_path / f"base{glibc}.tar"
        base.write_bytes(layer_tar(base_layer(system_libs, glibc, python="3.11")))
        image = docker_save_files(tmp_path / f"torch{glibc}.tar", [base, app])
        r = check([image])
        by_code: dict[str, list[str]] = {}
        for f in r.findings:
            by_code.setdefault(f.code, []).append(f.path)
        assert "record-mismatch" not in by_code  # 12,000+ files hashed against RECORD
        assert r.elf_files > 100 and r.sizes.unzipped_total > 600 * 1024**2
        cpu = [
            p for p in by_code.get("glibc-too-new", []) if p.endswith("torch/lib/libtorch_cpu.so")
        ]
        if glibc == "2.26":
            (path,) = cpu
            with open_image(str(image)) as opened:
                assert f"@{opened.layers[1].short}/var/task:" in path
        else:
            assert not cpu and "glibcxx-too-new" not in by_code
            assert "missing-dependency" in by_code  # torch's requirements are not in the image


def test_other_system_libraries_are_judged_by_their_own_versions(
    tmp_path: Path, system_libs: SystemLibs
) -> None:
    """A need on ZLIB_1.2.9 (crc32_z): the AL2 stand-in's libz defines up to 1.2.7, the
    AL2023 one up to 1.2.11 — the image's own libz answers, not the facts file."""
    src = tmp_path / "z.c"
    src.write_text(
        "#include <zlib.h>\n"
        "unsigned long z(const unsigned char *p, size_t n) { return crc32_z(0, p, n); }\n"
    )
    so = tmp_path / "z.so"
    done = subprocess.run(
        ["gcc", "-shared", "-fPIC", str(src), "-o", str(so), "-lz"], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot link against zlib here: {done.stderr.strip()[:200]}")
    app: dict[str, object] = {f"/var/task/z.{TAG}.so": (so.read_bytes(), 0o755)}
    old = check([_image(tmp_path, "z226", system_libs, "2.26", app)])
    (f,) = [f for f in old.findings if f.severity == "error"]
    assert f.code == "version-not-found" and "ZLIB_1.2.9" in f.message
    # the image's file, the layer that brought it, and what it does define
    assert "/usr/lib64/libz.so.1.2.26 (layer sha256:" in f.message
    assert "up to ZLIB_1.2.5.2" in f.message
    new = check([_image(tmp_path, "z234", system_libs, "2.34", app)])
    assert not [f for f in new.findings if f.severity == "error"], new.findings
