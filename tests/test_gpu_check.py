"""``check`` flags GPU builds in a layer (issue 11): the ``gpu-build`` warning.

Layers are built by ``torchwheel build`` from the PyTorch-shaped loopback world
(``tests/support/pytorchworld.py``): a CUDA 13.2 torch asked for with ``--variant cuda``
(with its ``cuda-toolkit``, ``nvidia-*`` and ``triton`` requirements) and the CPU build.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.pytorchworld import PytorchWorld, build_world, serve_pypi
from tests.support.wheels import make_wheel
from torchwheel import build_layer, check
from torchwheel.checks.policy import ACTIONABLE
from torchwheel.cli import main
from torchwheel.report import human_bytes
from torchwheel.resolution import DEFAULT_INDEX_URL


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> PytorchWorld:
    return build_world(tmp_path_factory.mktemp("pytorch-world"))


def _sizes(layer: Path, needle: str) -> int:
    with zipfile.ZipFile(layer) as zf:
        return sum(i.file_size for i in zf.infolist() if needle in i.filename)


def test_a_cuda_layer_gets_one_warning_per_gpu_distribution(
    index_server: IndexServer, world: PytorchWorld, tmp_path: Path
) -> None:
    serve_pypi(index_server, world)
    layer = tmp_path / "cuda.zip"
    build_layer(
        "torch",
        arch="x86_64",
        python="3.12",
        index_url=index_server.url,
        output=layer,
        variant="cuda",
    )
    report = check([layer], arch="x86_64", python="3.12", runtime="python3.12")
    gpu = {f.detail["distribution"]: f for f in report.findings if f.code == "gpu-build"}
    assert set(gpu) == {
        "torch",
        "cuda-toolkit",
        "nvidia-cublas",
        "nvidia-cuda-runtime",
        "nvidia-cudnn-cu13",
        "triton",
    }
    assert all(f.severity == "warning" for f in gpu.values())
    torch = gpu["torch"]
    libs = _sizes(layer, "libtorch_cuda.so") + _sizes(layer, "libc10_cuda.so")
    assert torch.detail["bytes"] == libs and torch.detail["kind"] == "cuda"
    assert torch.message == (
        f"torch 2.15.0 is a CUDA build: libtorch_cuda.so and 1 more GPU libraries take "
        f"{human_bytes(libs)}; Lambda has no GPU: build torch from the CPU index (torchwheel "
        f"build torch --index-url {DEFAULT_INDEX_URL})"
    )
    cublas = gpu["nvidia-cublas"]
    assert cublas.detail["bytes"] == _sizes(layer, "nvidia/nvidia_cublas/") + _sizes(
        layer, "/nvidia_cublas-13.1.1.3.dist-info/"
    )
    assert cublas.message.startswith("nvidia-cublas 13.1.1.3 is a CUDA package (")
    assert cublas.message.endswith("a CPU build of torch does not require it")
    assert gpu["triton"].message.startswith("triton 3.9.0 is a GPU-only package")
    # a warning: the layer works otherwise, and --strict fails on it
    assert "gpu-build" in ACTIONABLE
    assert main(["check", str(layer), "--runtime", "python3.12"]) == 0
    assert main(["check", str(layer), "--runtime", "python3.12", "--strict"]) == 1


def test_a_cpu_layer_has_none(
    index_server: IndexServer, world: PytorchWorld, tmp_path: Path
) -> None:
    assert world.cpu_links is not None
    serve_pypi(index_server, world)
    layer = tmp_path / "cpu.zip"
    build_layer(
        "torch",
        arch="x86_64",
        python="3.12",
        index_url=index_server.url,
        find_links=[str(world.cpu_links)],
        output=layer,
    )
    report = check([layer], arch="x86_64", python="3.12", runtime="python3.12")
    assert not [f for f in report.findings if f.code == "gpu-build"]


def test_loose_gpu_libraries_are_flagged_too(tmp_path: Path) -> None:
    layer = tmp_path / "loose.zip"
    with zipfile.ZipFile(layer, "w") as zf:
        zf.writestr("lib/libcudart.so.12", b"x" * 5000)
        zf.writestr("lib/libnccl.so.2", b"y" * 3000)
        zf.writestr("python/app.py", b"print('hi')\n")
    report = check([layer], arch="x86_64", python="3.12", runtime="python3.12")
    (f,) = [f for f in report.findings if f.code == "gpu-build"]
    assert f.detail["bytes"] == 8000 and f.path == f"{layer}:lib/libcudart.so.12"
    assert f.message == (
        f"2 CUDA 12 libraries outside any distribution take {human_bytes(8000)}; Lambda has no GPU"
    )


def test_plain_packages_are_not_gpu_builds(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w", "numpyish", "1.0", files={"numpyish/libblas.so.3": b"z"})
    site = "python/lib/python3.12/site-packages"
    layer = tmp_path / "plain.zip"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(layer, "w") as dst:
        for info in src.infolist():
            dst.writestr(f"{site}/{info.filename}", src.read(info))
    report = check([layer], arch="x86_64", python="3.12", runtime="python3.12")
    assert not [f for f in report.findings if f.code == "gpu-build"]
