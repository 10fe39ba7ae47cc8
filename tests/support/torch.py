"""Session fixtures around the real torch wheel and the layer ``build`` makes of it (plugin).

- ``torch_wheel``: ``pip download torch==2.13.0 --no-deps`` into a session temp dir (the CPU
  wheel, cp311 manylinux_2_28_x86_64 on this machine); skipped with pip's reason when it
  cannot be had.
- ``torch_dep_wheels``: a directory with real wheels of torch's requirements
  (``pip download --only-binary=:all:``), skipped likewise.
- ``torch_dep_index``: a loopback PEP 503/691 index serving those wheels.
- ``torch_build``: the layer built ONCE per session with ``python -m torchwheel build torch
  --runtime provided.al2023 --python 3.11 --arch x86_64 --find-links <torch dir>
  --index-url <loopback> --slim --strip -o layer.zip --tree DIR --json`` (the real CLI in a
  subprocess); ``torch_layer_tree`` / ``torch_layer_zip`` / ``torch_layer_site`` are its
  outputs, for every test module that needs a real torch layer.
- ``native_so``: a small real shared object with debug info (gcc), for strip tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.indexserver import IndexServer

TORCH_REQUIREMENT = "torch==2.13.0"
#: torch 2.13's Requires-Dist (setuptools is unconditional in 2.13) and their own requirements.
TORCH_DEPS = (
    "filelock",
    "typing-extensions",
    "sympy",
    "mpmath",
    "networkx",
    "jinja2",
    "MarkupSafe",
    "fsspec",
    "setuptools",
)
TORCH_TARGET = ("--runtime", "provided.al2023", "--python", "3.11", "--arch", "x86_64")
SITE311 = "python/lib/python3.11/site-packages"

NATIVE_C = r"""
static double table[256];
double native_answer(int i) {
    for (int k = 0; k < 256; k++) table[k] = k * 0.5;
    return table[i & 255] + 40.5;
}
int native_big(int n) { int s = 0; for (int k = 0; k < n; k++) s += k * k; return s; }
"""


def pip_download(args: list[str], dest: Path) -> list[Path]:
    """``pip download ARGS -d DEST``; the wheels it got, or ``pytest.skip`` with pip's reason."""
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "-d", str(dest), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        pytest.skip(f"pip download {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    return wheels


@pytest.fixture(scope="session")
def torch_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real torch 2.13.0 CPU wheel (skipped when pip cannot get it)."""
    wheels = pip_download([TORCH_REQUIREMENT, "--no-deps"], tmp_path_factory.mktemp("torch"))
    return wheels[0]


@pytest.fixture(scope="session")
def torch_dep_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of real wheels of torch's requirements (for CPython 3.11 on this host)."""
    d = tmp_path_factory.mktemp("torch-deps")
    pip_download(["--only-binary=:all:", *TORCH_DEPS], d)
    return d


@pytest.fixture(scope="session")
def torch_dep_index(
    torch_dep_wheels: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IndexServer]:
    """A loopback index holding torch's dependencies (PEP 658 metadata included)."""
    from packaging.utils import parse_wheel_filename

    server = IndexServer(root=tmp_path_factory.mktemp("torch-dep-index")).start()
    for w in sorted(torch_dep_wheels.glob("*.whl")):
        server.add_project(str(parse_wheel_filename(w.name)[0]), [w])
    yield server
    server.stop()


@dataclass(frozen=True)
class TorchBuild:
    """The session's torch layer: CLI exit code, JSON report and outputs."""

    returncode: int
    report: dict[str, Any]
    zip: Path
    tree: Path
    stderr: str

    @property
    def site(self) -> Path:
        """``<tree>/python/lib/python3.11/site-packages``."""
        return self.tree / SITE311


def run_build(
    args: list[str], cache_dir: Path, *, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    """``python -m torchwheel build ARGS`` in a subprocess with its own cache dir."""
    env = dict(os.environ, TORCHWHEEL_CACHE_DIR=str(cache_dir))
    for var in ("TORCHWHEEL_INDEX_URL", "TORCHWHEEL_EXTRA_INDEX_URL", "TORCHWHEEL_FIND_LINKS"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "torchwheel", "build", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


#: Level 2 deflates the stripped libraries with ISA-L when installed: ~10x faster than the
#: default level 6 and still byte-reproducible; level 6 is covered by tests/test_layer.py.
TEST_COMPRESSION = ("--compression-level", "2")


def torch_build_args(torch_wheel: Path, index: IndexServer, out: Path, *extra: str) -> list[str]:
    """The issue's "done when" command line (find-links for torch, loopback index for deps)."""
    return [
        "torch",
        *TORCH_TARGET,
        "--find-links",
        str(torch_wheel.parent),
        "--index-url",
        index.url,
        "-o",
        str(out),
        "--slim",
        "--strip",
        *TEST_COMPRESSION,
        *extra,
    ]


@pytest.fixture(scope="session")
def torch_build(
    torch_wheel: Path, torch_dep_index: IndexServer, tmp_path_factory: pytest.TempPathFactory
) -> TorchBuild:
    """Build the slimmed + stripped torch layer once per session (real CLI, subprocess)."""
    d = tmp_path_factory.mktemp("torch-layer")
    out, tree = d / "layer.zip", d / "tree"
    proc = run_build(
        torch_build_args(torch_wheel, torch_dep_index, out, "--tree", str(tree), "--json"),
        d / "cache",
    )
    if proc.returncode not in (0, 1):
        raise AssertionError(f"build failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return TorchBuild(proc.returncode, json.loads(proc.stdout), out, tree, proc.stderr)


@pytest.fixture(scope="session")
def torch_layer_zip(torch_build: TorchBuild) -> Path:
    """The slimmed + stripped torch layer zip (provided.al2023, CPython 3.11, x86_64)."""
    return torch_build.zip


@pytest.fixture(scope="session")
def torch_layer_tree(torch_build: TorchBuild) -> Path:
    """The unzipped tree of the same layer (its root holds ``python/``)."""
    return torch_build.tree


@pytest.fixture(scope="session")
def native_so(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real shared object with debug info (so ``strip`` has something to remove)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("native-so")
    (d / "native.c").write_text(NATIVE_C)
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-g", "-O1", "native.c", "-o", "libnative.so"],
        cwd=d,
        check=True,
        capture_output=True,
    )
    return (d / "libnative.so").read_bytes()
