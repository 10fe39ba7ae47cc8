"""The issue's "done when" for packed layers, with the real torch 2.13.0 CPU wheel.

``build torch --runtime provided.al2023 --python 3.11 --arch x86_64 --slim --strip --packed``
(the real CLI, once per session) must give a layer under 262,144,000 bytes unzipped that
imports torch and computes in a simulated Lambda start, and that ``check`` passes.
Skipped with pip's reason when the wheels cannot be had.
"""

from __future__ import annotations

import json
import subprocess
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.indexserver import IndexServer
from tests.support.packed import lambda_start, unzip_layer
from tests.support.torch import run_build, torch_build_args
from torchwheel.packed import ARCHIVE_NAME, MANIFEST_DIR
from torchwheel.targets import quotas

pytestmark = pytest.mark.torch

START = """
import torchwheel_loader
import torch
value = (torch.randn(3, 3) @ torch.randn(3, 3)).sum().item()
print(float(value), torchwheel_loader.unpacked_now, torch.__file__)
"""


@dataclass(frozen=True)
class PackedBuild:
    """The session's packed torch layer."""

    report: dict[str, Any]
    zip: Path
    opt: Path


@pytest.fixture(scope="session")
def torch_packed_build(
    torch_wheel: Path,
    torch_dep_index: IndexServer,
    zstandard_wheel: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> PackedBuild:
    """``build ... --slim --strip --packed`` once per session, unzipped into an "opt"."""
    torch_dep_index.add_project("zstandard", [zstandard_wheel])
    d = tmp_path_factory.mktemp("torch-packed")
    out = d / "layer.zip"
    proc = run_build(
        torch_build_args(torch_wheel, torch_dep_index, out, "--packed", "--json"), d / "cache"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return PackedBuild(json.loads(proc.stdout), out, unzip_layer(out, d / "opt"))


def test_packed_torch_layer_is_within_the_quota(torch_packed_build: PackedBuild) -> None:
    rep = torch_packed_build.report
    packed = rep["packed"]
    with zipfile.ZipFile(torch_packed_build.zip) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
        names = zf.namelist()
    assert rep["unzipped_bytes"] == unzipped == packed["layer_bytes"]
    assert unzipped < quotas().unzipped
    assert rep["over_quota"] is False
    assert f"python/{MANIFEST_DIR}/{ARCHIVE_NAME}" in names
    assert not any("/torch/" in n for n in names)  # torch itself is only inside the archive
    # what the plain layer would have been: the packages' unzipped sizes are still reported
    assert sum(p["unzipped_bytes"] for p in rep["packages"]) == packed["unpacked_bytes"]
    assert packed["unpacked_bytes"] > quotas().unzipped  # it would not fit unpacked
    assert packed["unpack_seconds"] > 0


def test_simulated_start_cold_warm_and_after_a_crash(
    torch_packed_build: PackedBuild, tmp_path: Path
) -> None:
    opt = torch_packed_build.opt
    tmp = tmp_path / "tmp"
    sha = torch_packed_build.report["packed"]["sha256"]
    stem = f"torchwheel-{sha[:16]}"
    # a previous start died half-way through the unpack
    (tmp / f"{stem}.tmp-31337" / "torch").mkdir(parents=True)
    (tmp / f"{stem}.tmp-31337" / "torch" / "__init__.py").write_text("raise SystemExit(3)\n")
    cold = lambda_start(opt, tmp, START)
    assert cold.returncode == 0, cold.stderr[-3000:]
    value, fresh, where = cold.stdout.split()
    float(value)
    assert fresh == "True"
    assert Path(where).is_relative_to(tmp / stem)
    assert sorted(p.name for p in tmp.iterdir()) == [stem, f"{stem}.lock"]
    warm = lambda_start(opt, tmp, START)
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert warm.stdout.split()[1] == "False"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Any:
    where = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield where
    subprocess.run(["umount", str(where)], check=False)


def test_simulated_start_with_too_small_tmp(
    torch_packed_build: PackedBuild, small_tmpfs: Path
) -> None:
    proc = lambda_start(torch_packed_build.opt, small_tmpfs, START)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    need = torch_packed_build.report["packed"]["ephemeral_storage_needed_mb"]
    assert f"not enough space in {small_tmpfs}: the packed layer needs {need} MB" in last
    assert "EphemeralStorage" in last
    assert [p.name.endswith(".lock") for p in small_tmpfs.iterdir()] == [True]


def test_check_passes_the_packed_torch_layer(torch_packed_build: PackedBuild) -> None:
    from torchwheel.checks import check

    report = check(
        [torch_packed_build.zip], runtime="provided.al2023", python="3.11", arch="x86_64"
    )
    assert not report.errors, [f.message for f in report.errors]
    codes = sorted({f.code for f in report.findings})
    # the zip is over the 50 MB direct-upload limit (upload through S3): a true warning too
    assert set(codes) <= {"ephemeral-storage", "zipped-over-direct-upload"}, [
        (f.code, f.path, f.message) for f in report.findings
    ]
    [eph] = [f for f in report.findings if f.code == "ephemeral-storage"]
    packed = torch_packed_build.report["packed"]
    assert eph.detail["needed_mb"] == packed["ephemeral_storage_needed_mb"]
    assert eph.severity == ("warning" if packed["needs_ephemeral_storage"] else "info")
    dists = {d["name"]: d["path"] for d in report.distributions}
    assert "/tmp/torchwheel-" in dists["torch"]
    assert report.elf_files > 10
