"""Real wheels from PyPI for the library-lookup cross-check (plugin; marker ``realwheels``).

``pip download --only-binary :all: --no-deps --platform … --python-version 3.11`` of
numpy 1.26.4 (x86_64 and aarch64), shapely 2.1.2 and pillow 12.2.0, cached in a stable
directory (``$TORCHWHEEL_TEST_CACHE`` or ``~/.cache/torchwheel-tests``, ``realwheels/``) so
that reruns are free and offline. A wheel already there is not asked for again; one that
pip cannot get skips the test with pip's reason. Never a fake: these are PyPI's files.

``ground_truth(site, code)`` runs ``code`` in a fresh ``env -i python3.11 -S`` process with
only ``site`` (a layer's site directory) on ``sys.path`` — CPython 3.11 on this glibc host,
which is what the cp311 wheels were built for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

#: (project, version, platform tag for pip, file-name glob)
REAL_WHEELS: dict[str, tuple[str, str, str, str]] = {
    "numpy-x86_64": ("numpy", "1.26.4", "manylinux2014_x86_64", "numpy-1.26.4-cp311-*x86_64*.whl"),
    "numpy-aarch64": (
        "numpy",
        "1.26.4",
        "manylinux2014_aarch64",
        "numpy-1.26.4-cp311-*aarch64*.whl",
    ),
    "shapely-x86_64": (
        "shapely",
        "2.1.2",
        "manylinux2014_x86_64",
        "shapely-2.1.2-cp311-*x86_64*.whl",
    ),
    "pillow-x86_64": (
        "pillow",
        "12.2.0",
        "manylinux2014_x86_64",
        "pillow-12.2.0-cp311-*x86_64*.whl",
    ),
}


def cache_dir() -> Path:
    """Where the real wheels are kept between runs."""
    root = os.environ.get("TORCHWHEEL_TEST_CACHE") or Path.home() / ".cache" / "torchwheel-tests"
    return Path(root) / "realwheels"


def fetch_wheel(key: str, dest: Path) -> Path:
    """The cached wheel for ``key`` (:data:`REAL_WHEELS`), downloaded once; or pytest.skip."""
    project, version, platform, pattern = REAL_WHEELS[key]
    dest.mkdir(parents=True, exist_ok=True)
    have = sorted(dest.glob(pattern))
    if have:
        return have[0]
    # pip writes into a directory of this process's own, then the wheels are renamed into
    # place: a parallel worker (pytest-xdist) never sees a half-written wheel
    part = Path(tempfile.mkdtemp(prefix=".part-", dir=dest))
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary",
                ":all:",
                "--no-deps",
                "--python-version",
                "3.11",
                "--platform",
                platform,
                "-d",
                str(part),
                f"{project}=={version}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        for wheel in part.glob("*.whl"):
            os.replace(wheel, dest / wheel.name)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    have = sorted(dest.glob(pattern))
    if proc.returncode != 0 or not have:
        pytest.skip(f"pip download {project}=={version} failed: {proc.stderr.strip()[-300:]}")
    return have[0]


@dataclass(frozen=True)
class RealWheels:
    """The real wheels, all in one find-links directory."""

    directory: Path
    wheels: dict[str, Path]


@pytest.fixture(scope="session")
def real_wheels() -> RealWheels:
    """numpy (x86_64, aarch64), shapely, pillow for cp311 (skipped when PyPI is unreachable)."""
    d = cache_dir()
    return RealWheels(d, {key: fetch_wheel(key, d) for key in REAL_WHEELS})


@dataclass(frozen=True)
class Run:
    """What the fresh interpreter did."""

    returncode: int
    stdout: str
    stderr: str


def ground_truth(site: Path, code: str, *, timeout: int = 120) -> Run:
    """Run ``code`` under ``env -i python3.11 -S`` with ``site`` alone added to sys.path."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the ground truth needs CPython 3.11 (the cp311 wheels)")
    prelude = f"import sys; sys.path.insert(0, {str(site)!r})\n"
    proc = subprocess.run(
        [sys.executable, "-S", "-c", prelude + code],
        capture_output=True,
        text=True,
        env={},
        timeout=timeout,
        cwd=site,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)
