"""The plan before download (issue 11): ``build --dry-run``, ``build`` stopping before any
download, ``resolve --size``, and the scenario of the issue — find-links holding a CPU torch,
an index serving newer GPU builds: the CPU wheel is built and nothing else is downloaded."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.pytorchworld import (
    FILELOCK,
    PytorchWorld,
    build_world,
    serve_pypi,
    whole_downloads,
)
from torchwheel.cli import main
from torchwheel.plan import PACKED_RATIO, Plan, PlanItem, _fits
from torchwheel.targets import make_target, quotas
from torchwheel.variants import Variant

X86 = ("--runtime", "python3.12", "--arch", "x86_64")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> PytorchWorld:
    return build_world(tmp_path_factory.mktemp("pytorch-world"))


@pytest.fixture
def pypi(index_server: IndexServer, world: PytorchWorld) -> IndexServer:
    serve_pypi(index_server, world)
    return index_server


def _unzipped(path: Path) -> int:
    with zipfile.ZipFile(path) as zf:
        return sum(i.file_size for i in zf.infolist())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the scenario -------------------------------------------------------------------------


def test_find_links_cpu_and_index_gpu_builds_the_cpu_wheel_and_downloads_nothing_else(
    pypi: IndexServer, world: PytorchWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert world.cpu_links is not None and world.cpu_wheel is not None
    out = tmp_path / "layer.zip"
    code, stdout, _ = run(
        capsys,
        "build",
        "torch",
        *X86,
        "--find-links",
        str(world.cpu_links),
        "--index-url",
        pypi.url,
        "-o",
        str(out),
        "--json",
    )
    assert code == 0
    report = json.loads(stdout)
    assert {p["name"]: p["version"] for p in report["packages"]} == {
        "torch": "2.13.0+cpu",
        "filelock": "3.16.1",
    }
    kinds = [(p["name"], (p["variant"] or {}).get("kind")) for p in report["plan"]["packages"]]
    assert kinds == [("torch", "cpu"), ("filelock", None)]
    # the only wheel fetched from the index is filelock; the GPU torch builds were judged by
    # their PEP 658 metadata, and no nvidia-*, triton or cuda-* file was asked for at all
    assert whole_downloads(pypi) == [f"/files/filelock/{FILELOCK}"]
    gpu_names = world.gpu_package_names()
    touched = {r.path.split("/")[2] for r in pypi.requests if r.path.startswith("/files/")}
    assert touched == {"torch", "filelock"}
    assert not any(name.replace("_", "-") in touched for name in gpu_names)
    torch_reads = [r for r in pypi.requests if r.path.startswith("/files/torch/")]
    assert torch_reads and all(r.path.endswith(".metadata") for r in torch_reads)
    with zipfile.ZipFile(out) as zf:
        assert not any("libtorch_cuda" in n for n in zf.namelist())


def test_dry_run_prints_the_plan_and_writes_nothing(
    pypi: IndexServer, world: PytorchWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert world.cpu_links is not None and world.cpu_wheel is not None
    args = ["build", "torch", *X86, "--find-links", str(world.cpu_links), "--index-url", pypi.url]
    code, stdout, _ = run(capsys, *args, "--dry-run", "--json")
    assert code == 0
    doc = json.loads(stdout)
    assert doc["schema"] == "torchwheel.plan/1"
    assert (doc["fits"], doc["blocked"], doc["blockers"]) == ("plain", False, [])
    torch, filelock = doc["packages"]
    assert torch["filename"] == world.cpu_wheel.name
    assert torch["download_bytes"] == world.cpu_wheel.stat().st_size
    assert torch["unzipped_bytes"] == _unzipped(world.cpu_wheel)
    filelock_path = world.root / "deps" / FILELOCK
    assert filelock["unzipped_bytes"] == _unzipped(filelock_path)
    assert doc["download_bytes"] == world.cpu_wheel.stat().st_size + filelock_path.stat().st_size
    assert doc["packed_estimate_bytes"] == int(doc["download_bytes"] * PACKED_RATIO)
    # the local wheel is read in place; filelock's central directory by one range request
    assert doc["requests"] == 1 and doc["bytes_received"] > 0
    assert whole_downloads(pypi) == []
    assert list(tmp_path.iterdir()) == []
    code, stdout, _ = run(capsys, *args, "--dry-run")
    assert code == 0
    assert "Plan for python3.12/x86_64 (CPython 3.12), before download" in stdout
    assert "fits a plain layer" in stdout and "2.13.0+cpu" in stdout


def test_build_stops_before_download_on_gpu_packages(
    pypi: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "layer.zip"
    code, stdout, stderr = run(
        capsys, "build", "nvidia-cudnn-cu12", *X86, "--index-url", pypi.url, "-o", str(out)
    )
    assert code == 1 and not out.exists()
    assert "nvidia-cudnn-cu12" in stdout and "CUDA package: Lambda has no GPU" in stdout
    assert "build stopped before download: the closure holds GPU builds (nvidia-cudnn-cu12" in (
        stderr
    )
    assert whole_downloads(pypi) == []
    # asked for: the plan shows the GPU package and does not block
    code, stdout, _ = run(
        capsys,
        "build",
        "nvidia-cudnn-cu12",
        *X86,
        "--index-url",
        pypi.url,
        "--variant",
        "cuda",
        "--dry-run",
        "--json",
    )
    doc = json.loads(stdout)
    assert code == 0 and doc["blocked"] is False
    assert doc["packages"][0]["gpu"] == "CUDA package: Lambda has no GPU"


def test_build_of_torch_with_only_gpu_builds_stops_and_says_where_cpu_builds_are(
    pypi: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = run(
        capsys, "build", "torch", *X86, "--index-url", pypi.url, "-o", str(tmp_path / "l.zip")
    )
    assert code == 1
    assert "no torch build for python3.12/x86_64 passes" in stderr
    assert "CPU builds are on the PyTorch CPU index: --index-url" in stderr
    assert whole_downloads(pypi) == []


def test_cuda_build_when_asked_plans_every_gpu_requirement(
    pypi: IndexServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, _ = run(
        capsys,
        "build",
        "torch",
        *X86,
        "--index-url",
        pypi.url,
        "--variant",
        "cuda",
        "--dry-run",
        "--json",
    )
    assert code == 0
    doc = json.loads(stdout)
    names = {p["name"]: p for p in doc["packages"]}
    assert names["torch"]["version"] == "2.15.0"
    assert names["torch"]["variant"]["name"] == "CUDA 13.2"
    gpu = {n for n, p in names.items() if p["gpu"]}
    assert gpu == {"torch", "cuda-toolkit", "nvidia-cublas", "nvidia-cuda-runtime"} | {
        "nvidia-cudnn-cu13",
        "triton",
    }
    assert doc["blocked"] is False  # asked for
    assert whole_downloads(pypi) == []


def test_resolve_size_plans_the_closure(
    pypi: IndexServer, world: PytorchWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    assert world.cpu_links is not None and world.cpu_wheel is not None
    args = ["resolve", *X86, "--find-links", str(world.cpu_links), "--index-url", pypi.url]
    code, stdout, _ = run(capsys, *args, "--size", "--json")
    assert code == 0
    doc = json.loads(stdout)
    assert doc["chosen"]["unzipped_size"] == _unzipped(world.cpu_wheel)
    assert [p["name"] for p in doc["plan"]["packages"]] == ["torch", "filelock"]
    assert doc["plan"]["fits"] == "plain"
    code, stdout, _ = run(capsys, *args, "--size")
    assert "Plan for python3.12/x86_64" in stdout and "filelock" in stdout
    assert whole_downloads(pypi) == []


# -- what fits (pure) -----------------------------------------------------------------------------


def _plan(download: int, unzipped: int, gpu: bool = False, variant: str = "cpu") -> Plan:
    item = PlanItem(
        name="torch",
        version="2.15.0",
        filename="torch-2.15.0-cp312-cp312-manylinux_2_28_x86_64.whl",
        url="https://example/t.whl",
        requested=True,
        source="https://example/simple",
        download_bytes=download,
        unzipped_bytes=unzipped,
        files=10,
        variant=Variant("cuda", "13.2", "metadata") if gpu else None,
        gpu="CUDA 13.2 build: Lambda has no GPU" if gpu else None,
    )
    packed = int(download * PACKED_RATIO)
    return Plan(
        target=make_target("x86_64", "3.12"),
        variant=variant,
        items=(item,),
        download_bytes=download,
        unzipped_bytes=unzipped,
        packed_estimate=packed,
        fits=_fits(unzipped, packed),
        notes=(),
        requests=0,
        bytes_received=0,
        seconds=0.0,
    )


def test_what_fits() -> None:
    limit = quotas().unzipped
    assert _fits(limit, limit) == "plain"
    assert _fits(limit + 1, limit) == "packed"
    assert _fits(limit + 1, limit + 1) == "neither"
    assert _fits(11 * 1024 * MIB, 100 * MIB) == "neither"  # would not unpack into /tmp
    cpu = _plan(190 * MIB, 699 * MIB)  # torch 2.13.0+cpu
    assert (cpu.fits, cpu.blocked) == ("packed", False)
    gpu = _plan(539 * MIB, 1144 * MIB, gpu=True)  # torch 2.15.0 from PyPI
    assert gpu.fits == "neither"
    assert len(gpu.blockers) == 2 and gpu.blockers[0].startswith("the closure holds GPU builds")
    assert "cannot fit even packed" in gpu.blockers[1]
    asked = _plan(100 * MIB, 200 * MIB, gpu=True, variant="cuda")
    assert not asked.blocked and asked.gpu_items
