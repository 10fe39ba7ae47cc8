"""The one validated path for untrusted text in wheels (issue 13): RECORD, requirements and
markers, version numbers — bad values become ArchiveError (or a finding), never a stray
csv.Error, ValueError or packaging exception."""

from __future__ import annotations

import pytest

from torchwheel.errors import ArchiveError
from torchwheel.targets import make_target
from torchwheel.wheelfile import MAX_FIELD, marker_holds, parse_record, parse_requirement

ENV = make_target("x86_64", "3.12").marker_environment()


@pytest.mark.parametrize("strict", [True, False])
def test_record_field_limit_just_under_and_over(strict: bool) -> None:
    ok = f"{'a' * MAX_FIELD},,1\n".encode()
    assert parse_record(ok, strict=strict)[0].path == "a" * MAX_FIELD
    over = f"{'a' * (MAX_FIELD + 1)},,1\n".encode()
    with pytest.raises(ArchiveError, match="RECORD"):
        parse_record(over, strict=strict)


@pytest.mark.parametrize(
    "data",
    [
        b'a.py,"sha256=x\rmore,1\n',  # a quoted field cut by the end of the file
        "a.py,sha256=x,1\n".encode("utf-16"),
    ],
)
def test_malformed_record_is_an_archive_error(data: bytes) -> None:
    with pytest.raises(ArchiveError):
        parse_record(data, source="x/RECORD")


def test_bare_carriage_return_is_a_line_end_not_a_crash() -> None:
    rows = parse_record(b"a.py,,1\rb.py,,2\n", strict=False)
    assert [(r.path, r.size) for r in rows] == [("a.py", 1), ("b.py", 2)]


def test_record_size_with_5000_digits() -> None:
    row = f"a.py,,{'9' * 5000}\n".encode()
    with pytest.raises(ArchiveError, match="is not a file size"):
        parse_record(row)
    assert parse_record(row, strict=False)[0].size is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("dep>=1." + "9" * 5000, "invalid version"),
        ("dep==" + "1" * 5000, "invalid version"),
        ("dep>>1", "invalid requirement"),
        ("dep; python_version >> '3'", "invalid requirement"),
        ("", "invalid requirement"),
    ],
)
def test_parse_requirement_refuses(text: str, says: str) -> None:
    with pytest.raises(ArchiveError, match=f"^METADATA: {says}"):
        parse_requirement(text, source="METADATA")


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("dep", True),
        ("dep==1.*", True),
        ("dep===weird", True),
        ("dep; python_version >= '3.12'", True),
        ("dep; python_version < '3'", False),
        ("dep; platform_machine == 'aarch64'", False),
    ],
)
def test_good_requirements(text: str, holds: bool) -> None:
    assert marker_holds(parse_requirement(text), ENV) is holds


@pytest.mark.parametrize(
    "text",
    ['dep; python_version ~= "abc"', 'dep; implementation_name ~= "cpython"'],
)
def test_marker_that_cannot_be_evaluated(text: str) -> None:
    req = parse_requirement(text)
    with pytest.raises(ArchiveError, match="cannot be evaluated"):
        marker_holds(req, ENV, source="METADATA")
