"""Cross-architecture ``--strip``: a strip that knows the target's ELF machine, or a refusal
before any download (issue 12).

The aarch64 file is real aarch64 machine code assembled by ``llvm-mc`` (an ELF relocatable
object with a debug section; binutils' x86_64 ``strip`` cannot read it, ``llvm-strip`` can).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.realwheels import RealWheels
from tests.support.wheels import make_wheel
from torchwheel import check
from torchwheel.cli import main
from torchwheel.elf import parse_elf
from torchwheel.errors import InputError
from torchwheel.layer import LayerTree
from torchwheel.layer.stripping import find_strip_tool, host_machine, require_strip, strip

ARM = ["--runtime", "python3.12", "--arch", "arm64"]
SITE = "python/lib/python3.12/site-packages"
ARM_ASM = """
    .text
    .globl answer
    .type answer,%function
answer:
    mov w0, #42
    ret
local_helper:
    mov w0, #1
    ret
    .section .debug_str,"MS",%progbits,1
    .asciz "a debug string that --strip-unneeded removes ........................................"
"""

needs_x86_host = pytest.mark.skipif(
    host_machine() != "x86_64", reason="the cross case is aarch64 files on an x86_64 host"
)


@pytest.fixture(scope="session")
def aarch64_object(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Real aarch64 code: an ELF object assembled by llvm-mc (skips without llvm-mc)."""
    mc = shutil.which("llvm-mc")
    if mc is None:
        pytest.skip("llvm-mc is not installed (apt-get install llvm)")
    d = tmp_path_factory.mktemp("aarch64")
    (d / "a.s").write_text(ARM_ASM)
    subprocess.run(
        [mc, "-triple=aarch64-linux-gnu", "-filetype=obj", "a.s", "-o", "a.o"],
        cwd=d,
        check=True,
        capture_output=True,
    )
    return (d / "a.o").read_bytes()


@pytest.fixture
def arm_wheel(tmp_path: Path, aarch64_object: bytes) -> Path:
    return make_wheel(
        tmp_path / "wheels",
        "armpkg",
        "1.0",
        tags="py3-none-manylinux_2_17_aarch64",
        files={"armpkg/__init__.py": b"", "armpkg/_native.so": aarch64_object},
    )


def _path_with(tmp_path: Path, *programs: str) -> str:
    """A PATH holding only links to these programs (those that exist here)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for name in programs:
        real = shutil.which(name)
        if real is not None:
            (d / name).symlink_to(real)
    return str(d)


def test_host_strip_is_not_used_for_another_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = shutil.which("strip")
    if (
        plain is None
        or "LLVM" in subprocess.run([plain, "--version"], capture_output=True, text=True).stdout
    ):
        pytest.skip("needs binutils' strip")
    other = "aarch64" if host_machine() == "x86_64" else "x86_64"
    monkeypatch.setenv("PATH", _path_with(tmp_path, "strip"))
    assert find_strip_tool(host_machine()) is not None
    assert find_strip_tool(other) is None
    with pytest.raises(InputError) as exc:
        require_strip(other)
    msg = str(exc.value)
    assert "\n" not in msg and "llvm-strip" in msg and f"binutils-{other}-linux-gnu" in msg


def test_llvm_strip_is_found_for_any_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("llvm-strip") is None:
        pytest.skip("llvm-strip is not installed")
    monkeypatch.setenv("PATH", _path_with(tmp_path, "llvm-strip"))
    for machine in ("x86_64", "aarch64"):
        tool = find_strip_tool(machine)
        assert tool is not None and tool.name == "llvm-strip"


def test_no_strip_at_all_names_binutils_for_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(InputError, match=r"install binutils \(strip\) or llvm"):
        require_strip(host_machine())


@needs_x86_host
def test_cross_strip_with_llvm_strip(
    tmp_path: Path, arm_wheel: Path, aarch64_object: bytes
) -> None:
    if shutil.which("llvm-strip") is None:
        pytest.skip("llvm-strip is not installed")
    tree = LayerTree(tmp_path / "t", SITE)
    tree.install(arm_wheel)
    res = strip(tree)
    so = tmp_path / "t" / SITE / "armpkg/_native.so"
    assert res.files == 1 and res.bytes_saved == len(aarch64_object) - so.stat().st_size > 0
    assert res.note is not None and "llvm-strip" in res.note and "failed" not in res.note
    with open(so, "rb") as f:
        assert parse_elf(f, name=str(so)).machine == "aarch64"


@needs_x86_host
def test_a_failing_strip_names_the_layer_path_not_the_temp_dir(
    tmp_path: Path, arm_wheel: Path, aarch64_object: bytes
) -> None:
    plain = shutil.which("strip")
    if plain is None:
        pytest.skip("no strip program")
    root = tmp_path / "torchwheel-layer-xyz"
    tree = LayerTree(root, SITE)
    tree.install(arm_wheel)
    res = strip(tree, strip_tool=plain)  # forced: binutils' x86_64 strip on aarch64 code
    assert res.files == 0 and res.note is not None
    assert "strip failed on 1 file(s)" in res.note and "armpkg/_native.so" in res.note
    assert str(root) not in res.note and "torchwheel-layer" not in res.note
    assert (root / SITE / "armpkg/_native.so").read_bytes() == aarch64_object


@needs_x86_host
def test_build_arm64_strip_uses_llvm_strip(
    index_server: IndexServer,
    arm_wheel: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if shutil.which("llvm-strip") is None:
        pytest.skip("llvm-strip is not installed")
    index_server.add_project("armpkg", [arm_wheel])
    out = tmp_path / "l.zip"
    rc = main(
        [
            "build",
            "armpkg",
            *ARM,
            "--index-url",
            index_server.url,
            "--strip",
            "-o",
            str(out),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    step = next(s for s in json.loads(captured.out)["steps"] if s["step"] == "strip")
    assert step["files"] == 1 and step["bytes_saved"] > 0
    assert "llvm-strip" in step["note"] and "failed" not in step["note"]


@needs_x86_host
def test_build_arm64_strip_refused_before_any_download(
    index_server: IndexServer,
    arm_wheel: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index_server.add_project("armpkg", [arm_wheel])
    monkeypatch.setenv("PATH", _path_with(tmp_path, "strip"))  # binutils' x86_64 strip only
    if find_strip_tool("aarch64") is not None:
        pytest.skip("this machine's strip reads aarch64 files (binutils-multiarch)")
    out = tmp_path / "l.zip"
    rc = main(["build", "armpkg", *ARM, "--index-url", index_server.url, "--strip", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "llvm" in err and "aarch64" in err, err
    assert index_server.count() == 0 and not out.exists()
    # without --strip the same build goes through
    assert main(["build", "armpkg", *ARM, "--index-url", index_server.url, "-o", str(out)]) == 0
    assert os.path.getsize(out) > 0


@needs_x86_host
@pytest.mark.realwheels
def test_real_numpy_arm64_strip(
    real_wheels: RealWheels, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: numpy's aarch64 wheel from PyPI, --strip on an x86_64 host."""
    if shutil.which("llvm-strip") is None:
        pytest.skip("llvm-strip is not installed")
    out = tmp_path / "numpy.zip"
    target = ["--runtime", "python3.11", "--arch", "arm64"]
    wheels = ["--no-index", "--find-links", str(real_wheels.directory)]
    rc = main(["build", "numpy==1.26.4", *target, *wheels, "--strip", "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    step = next(s for s in json.loads(captured.out)["steps"] if s["step"] == "strip")
    assert step["files"] > 0 and step["bytes_saved"] > 0, step
    assert "llvm-strip" in step["note"] and "failed" not in step["note"]
    assert "/tmp/" not in step["note"]
    report = check(out, arch="arm64", runtime="python3.11")
    assert report.ok, [(f.code, f.message) for f in report.errors]
