import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.tags import Tag

from torchwheel import evaluate, make_target
from torchwheel.errors import InvalidWheelFilename
from torchwheel.targets import Target

PY311 = make_target("x86_64", runtime="python3.11")
PY312_ARM = make_target("arm64", runtime="python3.12")


@pytest.mark.parametrize(
    "filename,target,fragment",
    [
        (
            "torch-2.8.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
            PY311,
            "needs glibc 2.28 (manylinux_2_28); python3.11 on Amazon Linux 2 has glibc 2.26",
        ),
        (
            "torch-2.5.1-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
            PY311,
            "built for aarch64; target is x86_64",
        ),
        (
            "torch-2.5.1-cp310-cp310-manylinux1_x86_64.whl",
            PY311,
            "cp310 wheel; target is CPython 3.11",
        ),
        (
            "torch-2.9.0-cp313-cp313t-manylinux_2_28_aarch64.whl",
            make_target("arm64", runtime="python3.13"),
            "free-threaded ABI cp313t; Lambda runs the default build",
        ),
        (
            "numpy-2.1.0-cp312-cp312-musllinux_1_2_aarch64.whl",
            PY312_ARM,
            "musllinux (Alpine); Lambda uses glibc",
        ),
        ("torch-2.5.1-cp312-none-macosx_11_0_arm64.whl", PY312_ARM, "macOS wheel"),
        ("torch-2.5.1+cpu-cp312-cp312-win_amd64.whl", PY312_ARM, "Windows wheel"),
    ],
)
def test_rejection_reasons(filename: str, target: Target, fragment: str) -> None:
    v = evaluate(filename, target)
    assert not v.compatible
    assert v.rank is None
    assert fragment in v.reasons


def test_requires_python_and_yanked() -> None:
    v = evaluate("x-1.0-py3-none-any.whl", PY311, requires_python=">=3.13")
    assert v.reasons == ("requires Python >=3.13",)
    v = evaluate("x-1.0-py3-none-any.whl", PY311, requires_python=">=3.8")
    assert v.compatible
    v = evaluate("x-1.0-py3-none-any.whl", PY311, yanked="broken build")
    assert v.reasons == ("yanked: broken build",)
    v = evaluate("x-1.0-py3-none-any.whl", PY311, yanked=True)
    assert v.reasons == ("yanked: no reason given",)


def test_linux_tag_is_compatible_but_unverified() -> None:
    v = evaluate("torch-2.5.1+cpu-cp311-cp311-linux_x86_64.whl", PY311)
    assert v.compatible and v.unverified
    assert any("promises nothing about glibc" in w for w in v.warnings)
    assert not evaluate("torch-2.5.1-cp311-cp311-manylinux1_x86_64.whl", PY311).unverified


def test_rank_prefers_newer_manylinux_and_specific_abi() -> None:
    a = evaluate("t-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", PY311)
    b = evaluate("t-1-cp311-cp311-manylinux1_x86_64.whl", PY311)
    c = evaluate("t-1-cp37-abi3-manylinux_2_17_x86_64.whl", PY311)
    d = evaluate("t-1-py3-none-any.whl", PY311)
    assert a.rank is not None and b.rank is not None and c.rank is not None
    assert d.rank is not None
    assert a.rank < b.rank < c.rank < d.rank


@pytest.mark.parametrize(
    "bad",
    [
        "torch.whl",
        "torch-2.5.1.whl",
        "torch-2.5.1-cp311.whl",
        "torch-x-cp311-cp311-linux_x86_64.whl",
        "notawheel.tar.gz",
    ],
)
def test_invalid_filenames_raise_clear_error(bad: str) -> None:
    with pytest.raises(InvalidWheelFilename, match="not a valid wheel filename"):
        evaluate(bad, PY311)


_platforms = st.one_of(
    st.builds(
        lambda a, b, arch: f"manylinux_{a}_{b}_{arch}",
        st.just(2),
        st.integers(0, 40),
        st.sampled_from(["x86_64", "aarch64", "i686", "ppc64le"]),
    ),
    st.builds(
        lambda k, arch: f"{k}_{arch}",
        st.sampled_from(["manylinux1", "manylinux2010", "manylinux2014", "linux"]),
        st.sampled_from(["x86_64", "aarch64"]),
    ),
    st.builds(
        lambda a, b, arch: f"musllinux_{a}_{b}_{arch}",
        st.just(1),
        st.integers(0, 3),
        st.sampled_from(["x86_64", "aarch64"]),
    ),
    st.sampled_from(["any", "win_amd64", "macosx_11_0_arm64", "macosx_10_9_x86_64"]),
)
_interp = st.one_of(
    st.builds(lambda m: f"cp3{m}", st.integers(0, 15)),
    st.builds(lambda m: f"py3{m}", st.integers(0, 15)),
    st.sampled_from(["py3", "py2", "pp310"]),
)
_abi = st.one_of(
    st.builds(lambda m, s: f"cp3{m}{s}", st.integers(5, 15), st.sampled_from(["", "t", "d"])),
    st.sampled_from(["abi3", "none"]),
)
_targets = st.sampled_from(
    [
        make_target("x86_64", runtime="python3.11"),
        make_target("arm64", runtime="python3.12"),
        make_target("arm64", runtime="python3.8"),
        make_target("x86_64", runtime="python3.7"),
        make_target("x86_64", "3.13", runtime="provided.al2023"),
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    interps=st.lists(_interp, min_size=1, max_size=2, unique=True),
    abis=st.lists(_abi, min_size=1, max_size=2, unique=True),
    plats=st.lists(_platforms, min_size=1, max_size=3, unique=True),
    target=_targets,
)
def test_verdict_agrees_with_tag_membership(
    interps: list[str], abis: list[str], plats: list[str], target: Target
) -> None:
    name = f"pkg-1.0-{'.'.join(interps)}-{'.'.join(abis)}-{'.'.join(plats)}.whl"
    accepted = target.tags()
    wheel_tags = {Tag(i, a, p) for i in interps for a in abis for p in plats}
    v = evaluate(name, target)
    assert v.compatible == bool(wheel_tags & set(accepted))
    if v.compatible:
        assert v.reasons == ()
        assert v.rank == min(accepted.index(t) for t in wheel_tags if t in accepted)
    else:
        assert v.reasons and all(isinstance(r, str) and r for r in v.reasons)
