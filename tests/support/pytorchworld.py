"""A PyTorch-shaped world for the loopback index: CPU and GPU builds of torch (issue 11).

Small real wheels (``tests/support/wheels.py``) with the shapes the real indexes have:

- PyPI-shaped torch, no local label: ``2.15.0`` (x86_64 and aarch64) is a CUDA 13 build —
  ``torch/lib/libtorch_cuda.so`` in its central directory and ``cuda-toolkit[...]``,
  ``nvidia-*-cu13``, ``triton`` requirements marked ``platform_system == "Linux"`` (as PyPI's
  2.15.0 is); ``2.10.0`` x86_64 is a CUDA 12.8 build whose ``nvidia-*-cu12`` requirements carry
  ``platform_machine == "x86_64"`` (as PyPI's 2.10.0 does), and ``2.10.0`` / ``2.9.0`` aarch64
  are CPU builds with the same requirements (so they vanish for aarch64) and no CUDA library;
- CPU-index-shaped torch: ``2.13.0+cpu`` (x86_64) for a ``--find-links`` directory, and a
  ``+cu128`` build for a CUDA index;
- the GPU requirements themselves (``nvidia-*``, ``cuda-toolkit`` with extras, ``triton``),
  with a fake ``.so`` payload of known size each, and torch's one CPU requirement
  (``filelock``).

The ``.so`` members hold ``SO_BYTES`` of incompressible bytes, not ELF files: variant
evidence is names; ELF needs are tested with gcc-built wheels (``tests/support/elfwheels.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.indexserver import IndexFile, IndexServer
from tests.support.wheels import make_wheel

X86_ONLY = 'platform_system == "Linux" and platform_machine == "x86_64"'  # torch 2.10 style
LINUX = 'platform_system == "Linux"'  # torch 2.15 style
#: Incompressible payload of each fake shared object (bytes).
SO_BYTES = 64 * 1024

CU12 = {
    "nvidia-cuda-runtime-cu12": "12.8.90",
    "nvidia-cublas-cu12": "12.8.4.1",
    "nvidia-cudnn-cu12": "9.10.2.21",
}
CU13_EXTRAS = {"nvidia-cublas": "13.1.1.3", "nvidia-cuda-runtime": "13.2.51"}


def cu12_requirements(marker: str = X86_ONLY) -> list[str]:
    """torch 2.10's GPU requirements (the real names and pins, fewer of them)."""
    reqs = [f"{n}=={v}; {marker}" for n, v in CU12.items()]
    return [*reqs, f"triton==3.6.0; {marker}"]


def cu13_requirements() -> list[str]:
    """torch 2.15's GPU requirements: cuda-toolkit with extras, nvidia-*-cu13, triton."""
    return [
        f"cuda-toolkit[cublas,cudart]==13.2.2; {LINUX}",
        f"nvidia-cudnn-cu13==9.26.0.51; {LINUX}",
        f'triton~=3.9.0; {LINUX} and python_version < "3.16"',
    ]


def so_payload(seed: str) -> bytes:
    """Deterministic incompressible bytes (a fake library's content)."""
    import hashlib

    out = bytearray()
    block = seed.encode()
    while len(out) < SO_BYTES:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:SO_BYTES])


def torch_wheel(
    directory: Path,
    version: str,
    arch: str,
    *,
    gpu: bool,
    requires: list[str],
    python: str = "cp312",
) -> Path:
    """A torch wheel: a CUDA build holds ``torch/lib/libtorch_cuda.so``."""
    files = {
        "torch/__init__.py": f'__version__ = "{version}"\n'.encode(),
        "torch/lib/libtorch_cpu.so": so_payload(f"cpu-{version}-{arch}"),
    }
    if gpu:
        files["torch/lib/libtorch_cuda.so"] = so_payload(f"cuda-{version}-{arch}")
        files["torch/lib/libc10_cuda.so"] = so_payload(f"c10cuda-{version}-{arch}")[: SO_BYTES // 4]
    tags = f"{python}-{python}-manylinux_2_28_{arch}"
    return make_wheel(
        directory,
        "torch",
        version,
        tags=tags,
        files=files,
        requires_dist=["filelock", *requires],
        requires_python=">=3.10",
    )


def _gpu_package(directory: Path, name: str, version: str, requires: list[str]) -> Path:
    lib = name.replace("-", "_")
    files = {f"nvidia/{lib}/lib/lib{lib}.so.1": so_payload(f"{name}-{version}")}
    if name == "triton":
        files = {"triton/_C/libtriton.so": so_payload(f"triton-{version}")}
    if name == "cuda-toolkit":
        files = {"cuda_toolkit/__init__.py": b""}
    return make_wheel(
        directory,
        name,
        version,
        tags="py3-none-manylinux_2_27_x86_64.manylinux_2_27_aarch64",
        files=files,
        requires_dist=requires,
    )


@dataclass
class PytorchWorld:
    """Where the world's wheels are and what they are."""

    root: Path
    pypi: dict[str, Path] = field(default_factory=dict)  # PyPI-shaped torch, by label
    cpu_links: Path | None = None  # a --find-links directory holding torch 2.13.0+cpu
    cpu_wheel: Path | None = None
    cuda_wheel: Path | None = None  # torch 2.13.0+cu128 (x86_64)
    gpu_packages: list[Path] = field(default_factory=list)

    def gpu_package_names(self) -> set[str]:
        """Normalized names of the GPU requirement projects."""
        return {p.name.split("-")[0].replace("_", "-").lower() for p in self.gpu_packages}


def build_world(root: Path) -> PytorchWorld:
    """Write every wheel of the world under ``root`` (call once per session)."""
    world = PytorchWorld(root)
    pypi = root / "pypi"
    for arch in ("x86_64", "aarch64"):
        world.pypi[f"2.15.0-{arch}"] = torch_wheel(
            pypi, "2.15.0", arch, gpu=True, requires=cu13_requirements()
        )
    world.pypi["2.10.0-x86_64"] = torch_wheel(
        pypi, "2.10.0", "x86_64", gpu=True, requires=cu12_requirements()
    )
    for version in ("2.10.0", "2.9.0"):
        world.pypi[f"{version}-aarch64"] = torch_wheel(
            pypi, version, "aarch64", gpu=False, requires=cu12_requirements()
        )
    world.cpu_links = root / "cpu-links"
    world.cpu_wheel = torch_wheel(world.cpu_links, "2.13.0+cpu", "x86_64", gpu=False, requires=[])
    world.cuda_wheel = torch_wheel(
        root / "cu128", "2.13.0+cu128", "x86_64", gpu=True, requires=cu12_requirements()
    )
    deps = root / "deps"
    for name, version in CU12.items():
        world.gpu_packages.append(_gpu_package(deps, name, version, []))
    for name, version in CU13_EXTRAS.items():
        world.gpu_packages.append(_gpu_package(deps, name, version, []))
    world.gpu_packages.append(_gpu_package(deps, "nvidia-cudnn-cu13", "9.26.0.51", []))
    world.gpu_packages.append(
        _gpu_package(
            deps,
            "cuda-toolkit",
            "13.2.2",
            [
                f'nvidia-cublas=={CU13_EXTRAS["nvidia-cublas"]}; extra == "cublas"',
                f'nvidia-cuda-runtime=={CU13_EXTRAS["nvidia-cuda-runtime"]}; extra == "cudart"',
            ],
        )
    )
    for version in ("3.6.0", "3.9.0"):
        world.gpu_packages.append(_gpu_package(deps, "triton", version, []))
    make_wheel(deps, "filelock", "3.16.1")
    return world


FILELOCK = "filelock-3.16.1-py3-none-any.whl"


def serve_pypi(server: IndexServer, world: PytorchWorld, *, metadata: bool = True) -> None:
    """The PyPI-shaped project and every requirement on ``server``.

    ``metadata=False`` serves no PEP 658 files (the variant is then read by ranges).
    """

    def entry(p: Path) -> IndexFile:
        return IndexFile(p.name, p) if metadata else IndexFile(p.name, p, metadata=None)

    server.add_project("torch", [entry(p) for p in world.pypi.values()])
    for p in world.gpu_packages:
        server.add_project(p.name.split("-")[0], [entry(p)])
    server.add_project("filelock", [entry(world.root / "deps" / FILELOCK)])


def whole_downloads(server: IndexServer) -> list[str]:
    """Paths of wheel files the server sent whole (a GET without Range, not PEP 658)."""
    return [
        r.path
        for r in server.requests
        if r.path.startswith("/files/")
        and r.path.endswith(".whl")
        and "range" not in r.headers
        and r.method == "GET"
    ]


def listing(directory: Path) -> list[str]:
    """File names in ``directory`` (for messages)."""
    return sorted(os.listdir(directory))
