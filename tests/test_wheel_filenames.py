"""wheelfile.parse_wheel: the one wheel-filename parser (wheel-filename for the grammar, the
packaging rules on top) accepts and reads exactly what wheel-filename and packaging's
parse_wheel_filename both accept."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename as PackagingInvalid
from packaging.utils import parse_wheel_filename
from packaging.version import Version
from wheel_filename import ParseError, WheelFilename

from torchwheel.errors import InvalidWheelFilename
from torchwheel.wheelfile import ParsedWheel, parse_wheel


def reference(filename: str) -> ParsedWheel | None:
    """Both libraries, as verdict.parse_wheel used them before, or None when either refuses.

    packaging >= 26.3 also refuses interpreter tags that are not identifiers; that rule is
    applied here so the reference does not depend on the installed packaging.
    """
    try:
        wf = WheelFilename.parse(filename)
        name, version, build, tags = parse_wheel_filename(filename)
    except (ParseError, PackagingInvalid, ValueError):
        return None
    if not all(t.isidentifier() for t in wf.python_tags):
        return None
    return ParsedWheel(
        filename=filename,
        name=str(name),
        version=version,
        build=build,
        tags=tags,
        python_tags=tuple(wf.python_tags),
        abi_tags=tuple(wf.abi_tags),
        platform_tags=tuple(wf.platform_tags),
    )


def test_reads_a_torch_wheel_name() -> None:
    w = parse_wheel(
        "https://h/whl/cpu/Torch_Thing-2.5.1+cpu-1b-cp311-cp311-"
        "manylinux_2_17_aarch64.manylinux2014_aarch64.whl"
    )
    assert w.filename.startswith("Torch_Thing-2.5.1+cpu")
    assert w.name == "torch-thing"
    assert w.version == Version("2.5.1+cpu")
    assert w.build == (1, "b")
    assert w.tags == {
        Tag("cp311", "cp311", "manylinux_2_17_aarch64"),
        Tag("cp311", "cp311", "manylinux2014_aarch64"),
    }
    assert w.platform_tags == ("manylinux_2_17_aarch64", "manylinux2014_aarch64")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("demo-1.0-py3-none-any.WHL", "extension must be '.whl'"),
        ("de__mo-1.0-py3-none-any.whl", "invalid project name"),
        ("demo-1.0.x-py3-none-any.whl", "invalid version '1.0.x'"),
        ("demo-1.0-3py-none-any.whl", "invalid interpreter tag '3py'"),
        ("demo-1.0-py3-none.whl", "Invalid wheel filename"),
        ("demo-1.0-x-py3-none-any.whl", "Invalid wheel filename"),
    ],
)
def test_refusals_say_why(name: str, why: str) -> None:
    with pytest.raises(InvalidWheelFilename) as err:
        parse_wheel(name)
    assert str(err.value).startswith(f"{name}: not a valid wheel filename (")
    assert why in str(err.value)


_part = st.text(alphabet="aZz09._-+!", min_size=0, max_size=8)
_names = st.sampled_from(["demo", "Torch_Thing", "a.b_c", "x", "de__mo", "_x", "y."])
_versions = st.sampled_from(["1.0", "2.5.1+cpu", "1!2.0rc1", "1.0.x", "", "1_0", "v2"])
_builds = st.sampled_from(["1", "12abc", "x1", "1.2", "1_b"])
_tags = st.lists(
    st.one_of(
        st.sampled_from(["py3", "cp311", "none", "abi3", "any", "linux_x86_64"]),
        st.sampled_from(["3x", "", "_x", "A.b"]),
    ),
    min_size=1,
    max_size=2,
).map(".".join)


@st.composite
def wheelish(draw: st.DrawFn) -> str:
    parts = [draw(st.one_of(_names, _part)), draw(st.one_of(_versions, _part))]
    if draw(st.booleans()):
        parts.append(draw(st.one_of(_builds, _part)))
    parts += [draw(_tags), draw(_tags), draw(_tags)]
    ext = draw(st.sampled_from([".whl", ".whl", ".whl", ".WHL", ".zip", ""]))
    return "-".join(parts) + ext


@settings(max_examples=600, deadline=None)
@given(wheelish())
@example("demo-1.0-py3-none-any.whl")
@example("a.b_c-1.0-1-py2.py3-none-any.whl")
@example("_demo-1.0-py3-none-any.whl")
@example("demo.-1.0-py3-none-any.whl")
@example("de__mo-1.0-py3-none-any.whl")
@example("demo-1.0-3x-none-any.whl")
def test_agrees_with_wheel_filename_and_packaging(filename: str) -> None:
    want = reference(filename)
    if want is None:
        with pytest.raises(InvalidWheelFilename):
            parse_wheel(filename)
    else:
        assert parse_wheel(filename) == want
