"""Cross-check of the library lookup on real wheels: the host's loader is the ground truth.

Each real wheel (tests/support/realwheels.py: numpy 1.26.4, shapely 2.1.2, pillow 12.2.0)
is laid out as a layer by torchwheel's own ``build_layer``; a fresh ``env -i python3.11 -S``
process imports it from the layer's site directory and computes with it, and
``/proc/self/maps`` shows the layer's vendored libraries loaded — the same load graph
``check`` walks (auditwheel's libraries have no RPATH of their own and are found through
the extension module's DT_RPATH). ``check`` must agree: the layer passes. And it must agree
the other way: with one vendored library removed, the import fails on the host and
``check`` fails naming the chain.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.realwheels import RealWheels, ground_truth
from torchwheel.checks import check
from torchwheel.layer.build import build_layer
from torchwheel.zipwrite import write_layer_zip

pytestmark = pytest.mark.realwheels

SITE = "python/lib/python3.11/site-packages"
ELF_ERRORS = {"missing-shared-library", "version-not-found", "glibc-too-new", "glibcxx-too-new"}


@dataclass(frozen=True)
class Case:
    """One real layer: what to install, the import that exercises it, what must be mapped."""

    name: str
    packages: tuple[str, ...]
    arch: str
    code: str
    expect: str  # printed by the code
    mapped: tuple[str, ...]  # substrings of /proc/self/maps paths (vendored libraries)


MAPS = "\nprint(open('/proc/self/maps').read())"
CASES = (
    Case(
        "numpy",
        ("numpy==1.26.4",),
        "x86_64",
        "import numpy as np\nm = np.array([[2.0, 1.0], [1.0, 3.0]])\n"
        "print('det', round(float(np.linalg.det(m)), 6), float(np.linalg.inv(m)[0, 0]))" + MAPS,
        "det 5.0 0.6",
        ("numpy.libs/libopenblas", "numpy.libs/libgfortran", "numpy.libs/libquadmath"),
    ),
    Case(
        "shapely",
        ("shapely==2.1.2",),
        "x86_64",
        "from shapely.geometry import Point\n"
        "print('area', round(Point(0, 0).buffer(1.0, 64).area, 3))" + MAPS,
        "area 3.141",
        ("shapely.libs/libgeos_c", "shapely.libs/libgeos-"),
    ),
    Case(
        "pillow",
        ("pillow==12.2.0",),
        "x86_64",
        "import io\nfrom PIL import Image, ImageFont\n"
        "im = Image.new('RGB', (16, 16), 'red')\nb = io.BytesIO()\nim.save(b, 'PNG')\n"
        "im.save(io.BytesIO(), 'WEBP')\nImageFont.load_default(size=12)\n"
        "print('png', len(b.getvalue()) > 0)" + MAPS,
        "png True",
        ("pillow.libs/libbrotlicommon", "pillow.libs/libfreetype", "pillow.libs/libwebp"),
    ),
)


@dataclass(frozen=True)
class Built:
    zip: Path
    tree: Path

    @property
    def site(self) -> Path:
        return self.tree / SITE


def _build(
    real_wheels: RealWheels,
    out: Path,
    packages: tuple[str, ...],
    arch: str = "x86_64",
    runtime: str = "python3.11",
    **options: object,
) -> Built:
    zip_path, tree = out / "layer.zip", out / "tree"
    build_layer(
        packages,
        arch=arch,
        python="3.11",
        runtime=runtime,
        output=zip_path,
        tree=tree,
        find_links=[str(real_wheels.directory)],
        no_index=True,
        cache_dir=out / "cache",
        **options,  # type: ignore[arg-type]
    )
    return Built(zip_path, tree)


@pytest.fixture(scope="module")
def built(real_wheels: RealWheels, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """Each case's layer, built once by torchwheel for python3.11."""
    return {
        c.name: _build(real_wheels, tmp_path_factory.mktemp(c.name), c.packages, c.arch)
        for c in CASES
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_real_layer_imports_and_check_agrees(case: Case, built: dict[str, Built]) -> None:
    layer = built[case.name]
    run = ground_truth(layer.site, case.code)
    assert run.returncode == 0, run.stderr[-2000:]
    assert case.expect in run.stdout
    maps = run.stdout
    for lib in case.mapped:  # the vendored libraries really came from the layer
        assert f"{layer.site}/{lib}" in maps, lib
    for runtime in ("python3.11", "provided.al2", "provided.al2023"):
        report = check([layer.zip], arch=case.arch, python="3.11", runtime=runtime)
        assert report.ok, [(f.code, f.message) for f in report.errors]
        assert not {f.code for f in report.findings} & ELF_ERRORS
        warnings = {f.code for f in report.warnings}
        assert warnings <= {"unconfirmed-system-library"}, warnings
        # one warning per library for the whole deployment, however many files need it
        libs = [f.detail["libraries"][0] for f in report.warnings]
        assert len(libs) == len(set(libs))


def test_numpy_aarch64_passes_on_arm64(
    real_wheels: RealWheels, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The aarch64 wheel can only be judged statically here: it passes on arm64 targets."""
    layer = _build(real_wheels, tmp_path_factory.mktemp("numpy-arm"), ("numpy==1.26.4",), "arm64")
    for runtime in ("python3.11", "provided.al2023"):
        report = check([layer.zip], arch="arm64", python="3.11", runtime=runtime)
        assert report.ok, [(f.code, f.message) for f in report.errors]
        assert not {f.code for f in report.findings} & ELF_ERRORS
    x86 = check([layer.zip], arch="x86_64", python="3.11", runtime="python3.11")
    assert "elf-arch-mismatch" in {f.code for f in x86.errors}


def test_removed_vendored_library_fails_both(built: dict[str, Built], tmp_path: Path) -> None:
    """Agreement the other way: without libquadmath the import fails and so does check."""
    tree = tmp_path / "tree"
    shutil.copytree(built["numpy"].tree, tree, symlinks=True)
    (quadmath,) = (tree / SITE / "numpy.libs").glob("libquadmath-*.so*")
    quadmath.unlink()
    run = ground_truth(tree / SITE, "import numpy")
    assert run.returncode != 0 and quadmath.name in run.stderr
    zip_path = tmp_path / "broken.zip"
    write_layer_zip(tree, zip_path)
    report = check([zip_path], arch="x86_64", python="3.11", runtime="python3.11")
    assert not report.ok
    missing = [f for f in report.errors if f.code == "missing-shared-library"]
    assert missing and all(quadmath.name in f.message for f in missing)
    f = missing[0]
    assert f.path.endswith(".so.5.0.0") and "libgfortran" in f.path
    # the chain: the extension module → libopenblas → libgfortran (which needs libquadmath)
    assert "_multiarray_umath" in f.message or "_umath_linalg" in f.message
    assert "→ libopenblas" in f.message and f.detail["chain"][-1].startswith("libgfortran")


_SETS = [("numpy==1.26.4",), ("shapely==2.1.2",), ("pillow==12.2.0",)]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    packages=st.lists(st.sampled_from(_SETS), min_size=1, max_size=3, unique=True),
    runtime=st.sampled_from(["python3.11", "provided.al2", "provided.al2023"]),
    slim=st.booleans(),
    layout=st.sampled_from(["site-packages", "python"]),
)
def test_build_output_passes_its_own_check(
    real_wheels: RealWheels,
    tmp_path_factory: pytest.TempPathFactory,
    packages: list[tuple[str, ...]],
    runtime: str,
    slim: bool,
    layout: str,
) -> None:
    """Property: whatever ``build`` makes of the real wheels passes ``check`` for its target."""
    wanted = tuple(p for group in packages for p in group)
    layer = _build(
        real_wheels,
        tmp_path_factory.mktemp("prop"),
        wanted,
        runtime=runtime,
        slim=slim,
        layout=layout,
    )
    report = check([layer.zip], arch="x86_64", python="3.11", runtime=runtime)
    assert report.ok, [(f.code, f.message) for f in report.errors]
    assert not {f.code for f in report.findings} & ELF_ERRORS
