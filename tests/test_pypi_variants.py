"""The issue's "done when" against the real PyPI (issue 11), cheaply: index pages and central
directories by HTTP ranges, never a whole wheel. What was learnt is kept per sha256 in a
stable cache directory, so a rerun reads no wheel again. Skipped when PyPI cannot be reached.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from torchwheel.index import IndexClient
from torchwheel.probe import WheelProbe
from torchwheel.resolution import DEFAULT_INDEX_URL, resolve_target
from torchwheel.targets import make_target

pytestmark = pytest.mark.pypi

PYPI = "https://pypi.org/simple"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torchwheel-tests-pypi"


@pytest.fixture(scope="module")
def pypi() -> Iterator[IndexClient]:
    try:
        httpx.head(f"{PYPI}/torch/", timeout=10, follow_redirects=True).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.skip(f"PyPI cannot be reached: {exc}")
    with IndexClient(PYPI, cache_dir=CACHE) as idx:
        yield idx


def test_arm64_gets_the_newest_aarch64_cpu_build(pypi: IndexClient) -> None:
    res = resolve_target(make_target("arm64", "3.12"), pypi)
    assert res.wheel is not None and res.wheel.filename.endswith("_aarch64.whl")
    chosen = res.screened[res.wheel.url].variant
    assert chosen is not None and chosen.kind == "cpu"
    # every newer compatible wheel was passed over as a GPU build, and the summary says why
    newer = [
        (c, v)
        for c, v in res.rejected
        if c.version > res.wheel.version and c.filename.endswith("cp312-manylinux_2_28_aarch64.whl")
    ]
    assert newer and all(v.reasons[0].startswith("CUDA") for _, v in newer)
    assert "Lambda has no GPU" in res.summary


def test_x86_64_has_no_cpu_build_on_pypi(pypi: IndexClient) -> None:
    res = resolve_target(make_target("x86_64", "3.12"), pypi)
    assert res.wheel is None
    advice = f"CPU builds are on the PyTorch CPU index: --index-url {DEFAULT_INDEX_URL}"
    assert res.summary.endswith(advice)


def test_glibc_needs_of_a_real_wheel_within_budget(pypi: IndexClient) -> None:
    cand = next(
        c
        for c in pypi.candidates("torch")
        if c.filename == "torch-2.10.0-cp312-cp312-manylinux_2_28_aarch64.whl"
    )
    needs = WheelProbe.for_index(pypi).elf_needs(cand)
    assert needs is not None and needs.complete and len(needs.files) >= 10
    assert needs.requests <= 12 and needs.bytes_received <= 16 * 1024 * 1024
    top = needs.max_version("GLIBC_")
    assert top is not None and top[1] == "GLIBC_2.28"  # its manylinux_2_28 tag tells the truth
