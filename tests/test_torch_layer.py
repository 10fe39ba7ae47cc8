"""The real thing: torch 2.13.0 (CPU) + its dependencies as a slimmed, stripped layer.

Built once per session by the ``torch_build`` fixture (tests/support/torch.py) with the real
CLI: ``build torch --runtime provided.al2023 --python 3.11 --arch x86_64 --find-links DIR
--index-url <loopback> --slim --strip -o layer.zip --tree DIR --json``.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.torch import SITE311, TorchBuild, run_build, torch_build_args
from tests.support.wheels import check_records
from torchwheel.targets import quotas

pytestmark = pytest.mark.torch

PROOF = "import torch; print((torch.randn(3, 3) @ torch.randn(3, 3)).sum().item())"


def test_slim_stripped_layer_imports_and_computes(torch_build: TorchBuild) -> None:
    site = torch_build.site
    code = f"import sys; sys.path.insert(0, {str(site)!r}); {PROOF}; print(torch.__file__)"
    # -B: no bytecode written into the shared tree
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    value, where = proc.stdout.split()
    float(value)  # a number came out of the matrix product
    assert Path(where).is_relative_to(site)


def test_closure_report_and_numbers(torch_build: TorchBuild) -> None:
    rep = torch_build.report
    assert torch_build.returncode == 0  # over quota, but not --strict
    names = {p["name"].lower().replace("_", "-"): p for p in rep["packages"]}
    for dep in (
        "torch",
        "filelock",
        "typing-extensions",
        "sympy",
        "mpmath",
        "networkx",
        "jinja2",
        "markupsafe",
        "fsspec",
        "setuptools",
    ):
        assert dep in names, dep
    assert names["torch"]["version"] == "2.13.0+cpu" and names["torch"]["requested"]
    assert rep["skipped_runtime_packages"] == []  # provided.al2023 ships no packages
    with zipfile.ZipFile(torch_build.zip) as zf:
        infos = zf.infolist()
    assert rep["zipped_bytes"] == torch_build.zip.stat().st_size
    assert rep["unzipped_bytes"] == sum(i.file_size for i in infos)
    tree_files = [p for p in torch_build.tree.rglob("*") if p.is_file()]
    assert rep["files"] == len(infos) == len(tree_files)
    assert rep["unzipped_bytes"] == sum(p.stat().st_size for p in tree_files)
    assert {i.filename for i in infos} == {
        p.relative_to(torch_build.tree).as_posix() for p in tree_files
    }
    # most members were copied compressed from the wheels; stripped .so files were not
    assert rep["raw_copied"] > 0.9 * rep["files"]
    steps = {s["step"]: s for s in rep["steps"]}
    assert steps["slim: torch/test"]["bytes_saved"] > 50_000_000
    assert steps["slim: torch/include"]["files"] > 1000
    assert steps["strip"]["bytes_saved"] > 10_000_000
    # the quota check tells the truth about a modern torch
    unz = rep["quotas"][0]
    assert unz["limit"] == quotas().unzipped == 262_144_000
    assert unz["over_by"] == max(0, rep["unzipped_bytes"] - 262_144_000)
    assert rep["over_quota"] == (rep["unzipped_bytes"] > 262_144_000)
    if rep["over_quota"]:
        assert any("packed layer" in s for s in rep["suggestions"])


def test_tree_is_clean(torch_build: TorchBuild) -> None:
    tree = torch_build.tree
    assert sorted(p.name for p in (tree / "python/lib").iterdir()) == ["python3.11"]
    assert not list(tree.rglob("*.whl"))
    assert not list(tree.rglob("*.pyc"))
    site = torch_build.site
    assert not (site / "torch/test").exists() and not (site / "torch/include").exists()
    assert sorted(p.name for p in (site / "torch/bin").iterdir()) == ["torch_shm_manager"]
    torch_di = next(site.glob("torch-2.13.0*.dist-info"))
    assert (torch_di / "INSTALLER").read_text() == "torchwheel\n"
    rows = list(csv.reader((torch_di / "RECORD").read_text().splitlines()))
    assert not any(r[0].startswith("torch/test/") for r in rows)
    check_records(site)


def test_second_build_is_byte_identical(
    torch_build: TorchBuild, torch_wheel: Path, torch_dep_index: IndexServer, tmp_path: Path
) -> None:
    out = tmp_path / "again.zip"
    proc = run_build(
        torch_build_args(torch_wheel, torch_dep_index, out), torch_build.zip.parent / "cache"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes() == torch_build.zip.read_bytes()
    assert SITE311 in proc.stdout  # the human report names the layer directory
