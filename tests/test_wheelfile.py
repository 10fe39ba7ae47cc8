"""wheelfile: RECORD, METADATA and WHEEL parsing — validated, one error type, no crashes."""

from __future__ import annotations

import hashlib

import pytest

from torchwheel.errors import ArchiveError
from torchwheel.wheelfile import (
    Hash,
    Metadata,
    RecordEntry,
    find_dist_info,
    parse_record,
    parse_wheel_info,
    record_hash,
    write_record,
)


def test_record_round_trip() -> None:
    data = b"hello"
    entries = [
        RecordEntry("pkg/__init__.py", Hash.of(data), len(data)),
        RecordEntry("pkg-1.0.dist-info/RECORD", None, None),
    ]
    text = write_record(entries)
    assert text.decode().splitlines()[1] == "pkg-1.0.dist-info/RECORD,,"
    assert parse_record(text) == entries
    assert str(entries[0].hash) == record_hash(hashlib.sha256(data).digest())


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"a,sha256=x\n", "malformed RECORD row"),  # two fields
        (b"a,md5=abc,1\n", "not allowed"),
        (b"a,sha256=abc,1e3\n", "not a file size"),
        (b"a,sha256=abc," + b"9" * 5000 + b"\n", "not a file size"),  # over int's digit limit
        (b'a,"sha256=abc\rdef",1\n', None),  # CR inside quotes is data, not an error
        (b"a,sha256=abc\r,1\n", "malformed RECORD row"),  # a bare CR ends the row early
        (b"a," + b"x" * 200_000 + b",1\n", "not valid CSV"),  # csv's field limit
        (b"\xff\xfe,,\n", "not UTF-8"),
    ],
)
def test_strict_record_errors_are_archive_errors(data: bytes, words: str | None) -> None:
    if words is None:
        with pytest.raises(ArchiveError):  # the hash is not base64 either way
            parse_record(data, source="x.whl")
        return
    with pytest.raises(ArchiveError, match=words) as info:
        parse_record(data, source="x.whl")
    assert str(info.value).startswith("x.whl: ")
    assert isinstance(info.value, ValueError)


def test_lenient_record_keeps_what_it_can_read() -> None:
    rows = parse_record(b"a,md5=xx,12\nb,sha256=abc,zz\nc\n\n", strict=False)
    assert [r.size_problem for r in rows] == [None, "RECORD size 'zz' is not a file size", None]
    assert rows == [
        RecordEntry("a", Hash("?", "md5=xx"), 12),
        RecordEntry("b", Hash("sha256", "abc"), None),
        RecordEntry("c", None, None),
    ]
    # bad CSV is bad in both modes
    with pytest.raises(ArchiveError, match="not valid CSV"):
        parse_record(b"a," + b"x" * 200_000 + b",1\n", strict=False)


def test_metadata_and_wheel_headers() -> None:
    meta = Metadata.from_bytes(
        b"Metadata-Version: 2.1\nName: Foo\nVersion: 1.0\nRequires-Dist: bar>1\n"
        b"Requires-Python: >=3.9\n\n"
    )
    assert (meta.name, meta.version, meta.requires_dist, meta.requires_python) == (
        "Foo",
        "1.0",
        ("bar>1",),
        ">=3.9",
    )
    with pytest.raises(ArchiveError, match="lacks Name or Version"):
        Metadata.from_bytes(b"Name: x\n\n", source="x.whl")
    assert Metadata.from_bytes(b"\xffName: x\n\n", strict=False).version == ""
    info = parse_wheel_info(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    assert info.root_is_purelib and info.tags == ("py3-none-any",)


def test_find_dist_info() -> None:
    names = ["foo/__init__.py", "Foo_Bar-1.0.dist-info/METADATA"]
    assert find_dist_info(names, "foo-bar", source="w") == "Foo_Bar-1.0.dist-info"
    with pytest.raises(ArchiveError, match="does not match"):
        find_dist_info(names, "other", source="w")
    with pytest.raises(ArchiveError, match="exactly one"):
        find_dist_info([*names, "x-1.dist-info/RECORD"], "foo-bar", source="w")
