import dataclasses
import platform
import sysconfig

import pytest
from packaging import tags as ptags
from packaging.tags import Tag

from torchwheel import get_runtime, make_target
from torchwheel.targets import Target


def _host_glibc() -> tuple[int, int] | None:
    libc, ver = platform.libc_ver()
    if libc != "glibc":
        return None
    major, minor = ver.split(".")[:2]
    return int(major), int(minor)


def test_matches_packaging_sys_tags_on_this_host() -> None:
    """With the host's glibc, arch and Python, target.tags() must equal sys_tags().

    One documented difference: packaging >= 26.4 ranks ``linux_<arch>`` first (on the host a
    locally built wheel should win); torchwheel keeps it last, as packaging < 26.4 did, since
    for Lambda a ``linux_`` wheel was built elsewhere and promises nothing about glibc.
    """
    glibc = _host_glibc()
    machine = sysconfig.get_platform().split("-")[-1]
    if glibc is None or machine not in ("x86_64", "aarch64"):
        pytest.skip("host is not glibc Linux on x86_64/aarch64")
    import sys

    rt = dataclasses.replace(get_runtime("python3.11"), glibc=glibc, python=sys.version_info[:2])
    arch = "x86_64" if machine == "x86_64" else "arm64"
    target = Target(rt, arch, sys.version_info[:2])
    expected = [t for t in ptags.sys_tags() if not t.platform.startswith("musllinux")]
    ours = target.tags()
    assert set(ours) == set(expected) and len(ours) == len(expected)

    def without_linux(tags: list[Tag]) -> list[Tag]:
        return [t for t in tags if not t.platform.startswith("linux_")]

    assert without_linux(ours) == without_linux(expected)
    # linux_<arch> right after the manylinux tags of the same interpreter/ABI
    first_linux = next(i for i, t in enumerate(ours) if t.platform.startswith("linux_"))
    assert ours[first_linux - 1].platform.startswith("manylinux")


def test_python311_x86_64_shape() -> None:
    tags = [str(t) for t in make_target("x86_64", runtime="python3.11").tags()]
    assert tags[0] == "cp311-cp311-manylinux_2_26_x86_64"
    assert "cp311-cp311-manylinux2014_x86_64" in tags
    assert "cp311-cp311-manylinux1_x86_64" in tags
    assert "cp311-cp311-manylinux_2_27_x86_64" not in tags
    assert "cp311-cp311-linux_x86_64" in tags
    assert "cp32-abi3-manylinux_2_26_x86_64" in tags
    assert tags[-1] == "py30-none-any"
    assert "cp311-none-any" in tags
    # legacy alias right after its manylinux_2_X twin, as packaging orders them
    i = tags.index("cp311-cp311-manylinux_2_17_x86_64")
    assert tags[i + 1] == "cp311-cp311-manylinux2014_x86_64"


def test_python312_arm64_shape() -> None:
    tags = [str(t) for t in make_target("arm64", runtime="python3.12").tags()]
    assert tags[0] == "cp312-cp312-manylinux_2_34_aarch64"
    assert "cp312-cp312-manylinux2014_aarch64" in tags
    assert not any("manylinux1" in t or "manylinux2010" in t for t in tags)
    assert not any("x86_64" in t for t in tags)
    assert "cp312-cp312-manylinux_2_16_aarch64" not in tags  # aarch64 starts at 2_17


def test_marker_environment_is_the_targets() -> None:
    env = make_target("arm64", runtime="python3.12").marker_environment()
    assert env["platform_machine"] == "aarch64"
    assert env["python_version"] == "3.12"
    assert env["sys_platform"] == "linux"
