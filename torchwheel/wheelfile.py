"""The files inside a wheel's ``.dist-info``: RECORD, METADATA, WHEEL — the one place; and
the wheel's filename (:func:`parse_wheel`).

Everything here is pure (bytes in, data out) and every parser validates: text that is not
UTF-8, CSV that does not parse, sizes that are not plain decimal numbers or absurdly long,
headers that are missing — each becomes an :class:`~torchwheel.errors.ArchiveError` (a
``ValueError``) naming ``source``, never a stray ``csv.Error`` or ``OverflowError``.

RECORD follows the binary distribution format spec (PEP 376 / PEP 627, as ``installer``'s
``records.py`` reads it): ``path,algorithm=urlsafe-b64-digest-without-padding,size``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from functools import lru_cache

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from wheel_filename import ParseError, WheelFilename

from .errors import ArchiveError, InvalidWheelFilename

__all__ = [
    "Hash",
    "Metadata",
    "ParsedWheel",
    "RecordEntry",
    "WheelInfo",
    "find_dist_info",
    "marker_holds",
    "parse_headers",
    "parse_metadata",
    "parse_record",
    "parse_requirement",
    "parse_wheel",
    "parse_wheel_info",
    "record_hash",
    "write_record",
]

#: Hash algorithms a RECORD may use (installer refuses md5 and sha1 too).
ALLOWED_ALGORITHMS = frozenset(
    {
        "sha256",
        "sha384",
        "sha512",
        "sha3_256",
        "sha3_384",
        "sha3_512",
        "blake2b",
        "blake2s",
        "sha224",
    }
)
#: A RECORD size with more digits than this is not a file size (2**64 has 20 digits).
MAX_SIZE_DIGITS = 20
#: Longest RECORD field accepted (csv's own default limit, stated here rather than global).
MAX_FIELD = 128 * 1024
#: Largest metadata-like file (RECORD, METADATA, WHEEL, entry_points.txt) read into memory.
MAX_METADATA_BYTES = 16 * 1024 * 1024


def record_hash(digest: bytes, algorithm: str = "sha256") -> str:
    """``sha256=<urlsafe base64, no padding>`` for a raw ``digest``."""
    return f"{algorithm}=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Hash:
    """One RECORD hash: the algorithm name and the encoded digest."""

    algorithm: str
    value: str

    @classmethod
    def parse(cls, text: str, *, source: str = "RECORD") -> Hash:
        """``"sha256=abc..."`` → ``Hash``; unknown algorithms or bad base64 raise."""
        algorithm, sep, value = text.partition("=")
        if not sep or not value:
            raise ArchiveError(f"{source}: malformed hash {text[:80]!r}")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise ArchiveError(f"{source}: hash algorithm {algorithm[:40]!r} is not allowed")
        try:
            base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except ValueError:
            raise ArchiveError(f"{source}: hash {text[:80]!r} is not urlsafe base64") from None
        return cls(algorithm, value)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Hash:
        """The hash of ``data``."""
        return cls.parse(record_hash(hashlib.new(algorithm, data).digest(), algorithm))

    def __str__(self) -> str:
        return f"{self.algorithm}={self.value}"


@dataclass(frozen=True)
class RecordEntry:
    """One RECORD row: ``path`` (``/``-separated, relative to the site directory)."""

    path: str
    hash: Hash | None
    size: int | None
    #: lenient parsing only: why the size could not be read (the row keeps ``size=None``)
    size_problem: str | None = field(default=None, compare=False)

    def to_row(self) -> tuple[str, str, str]:
        """The three CSV fields."""
        return (
            self.path,
            "" if self.hash is None else str(self.hash),
            "" if self.size is None else str(self.size),
        )


def _decode(data: bytes, source: str, what: str, strict: bool) -> str:
    if len(data) > MAX_METADATA_BYTES:
        raise ArchiveError(
            f"{source}: {what} is {len(data):,} bytes, over the "
            f"{MAX_METADATA_BYTES:,}-byte limit for metadata files"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if strict:
            raise ArchiveError(f"{source}: {what} is not UTF-8") from None
        return data.decode("utf-8", "replace")


def _size(text: str, source: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > MAX_SIZE_DIGITS:
        raise ArchiveError(f"{source}: RECORD size {text[:40]!r} is not a file size")
    return int(text)


def _entry_hash(digest: str, source: str, strict: bool) -> Hash | None:
    """The row's hash; lenient mode keeps an unreadable one as ``Hash("?", text)``."""
    if not digest:
        return None
    try:
        return Hash.parse(digest, source=source)
    except ArchiveError:
        if strict:
            raise
        return Hash("?", digest)


def _entry_size(text: str, source: str, strict: bool) -> tuple[int | None, str | None]:
    """The row's size; lenient mode turns an unreadable one into ``None`` and says why."""
    try:
        return _size(text, source), None
    except ArchiveError as exc:
        if strict:
            raise
        return None, str(exc).removeprefix(f"{source}: ")


def parse_record(data: bytes, *, source: str = "RECORD", strict: bool = True) -> list[RecordEntry]:
    """Parse a RECORD file.

    ``strict`` (installing): every row has exactly three fields, every hash is valid.
    Lenient (checking layers made by other tools): short rows are padded, and a row whose
    hash or size cannot be read keeps ``None`` there — the caller compares what it can.
    Malformed CSV (over-long fields, stray carriage returns) raises in both modes.
    """
    text = _decode(data, source, "RECORD", strict)
    entries: list[RecordEntry] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if not row or not row[0]:
                continue
            if any(len(field) > MAX_FIELD for field in row):
                raise ArchiveError(f"{source}: RECORD field over {MAX_FIELD:,} characters")
            if strict and len(row) != 3:
                raise ArchiveError(f"{source}: malformed RECORD row {','.join(row)[:120]!r}")
            path = row[0]
            digest = row[1] if len(row) > 1 else ""
            size_text = row[2] if len(row) > 2 else ""
            size, size_problem = _entry_size(size_text, source, strict)
            entries.append(
                RecordEntry(path, _entry_hash(digest, source, strict), size, size_problem)
            )
    except csv.Error as exc:
        raise ArchiveError(
            f"{source}: RECORD is not valid CSV (line {reader.line_num}: {exc})"
        ) from None
    return entries


def write_record(entries: Iterable[RecordEntry]) -> bytes:
    """RECORD bytes for ``entries`` (``\\n`` line ends, in the order given)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for e in entries:
        w.writerow(e.to_row())
    return buf.getvalue().encode("utf-8")


def parse_headers(
    data: bytes, *, source: str, what: str = "METADATA", strict: bool = True
) -> Message:
    """RFC 822 headers (METADATA, WHEEL, PKG-INFO) as an :class:`email.message.Message`."""
    return HeaderParser().parsestr(_decode(data, source, what, strict))


@dataclass(frozen=True)
class Metadata:
    """The parts of core metadata torchwheel uses."""

    name: str
    version: str
    requires_dist: tuple[str, ...]
    requires_python: str | None

    @classmethod
    def from_bytes(
        cls, data: bytes, *, source: str = "<metadata>", strict: bool = True
    ) -> Metadata:
        """Parse core metadata; ``strict`` demands UTF-8 and both Name and Version."""
        msg = parse_headers(data, source=source, what="core metadata", strict=strict)
        name = str(msg.get("Name") or "").strip()
        version = str(msg.get("Version") or "").strip()
        if strict and (not name or not version):
            raise ArchiveError(f"{source}: core metadata lacks Name or Version")
        rp = msg.get("Requires-Python")
        return cls(
            name=name,
            version=version,
            requires_dist=tuple(str(r).strip() for r in msg.get_all("Requires-Dist") or ()),
            requires_python=str(rp).strip() or None if rp else None,
        )


def parse_requirement(text: str, *, source: str = "Requires-Dist") -> Requirement:
    """A ``Requires-Dist`` value (or a command-line requirement) as a packaging
    :class:`~packaging.requirements.Requirement`, validated all the way: the grammar, and every
    specifier's version read as a number now (a 5,000-digit one would otherwise raise
    ``ValueError`` only when the resolver compares). Raises :class:`ArchiveError` naming
    ``source``; the one path every requirement of untrusted metadata takes."""
    shown = text[:120]
    try:
        req = Requirement(text)
        for spec in req.specifier:
            if spec.operator != "===":
                Version(spec.version.removesuffix(".*"))
    except InvalidRequirement as exc:
        detail = str(exc).splitlines()[0][:160]
        raise ArchiveError(f"{source}: invalid requirement {shown!r} ({detail})") from None
    except ValueError as exc:  # InvalidVersion, or int() refusing thousands of digits
        detail = str(exc).splitlines()[0][:160]
        raise ArchiveError(f"{source}: invalid version in {shown!r} ({detail})") from None
    return req


def marker_holds(
    req: Requirement, env: dict[str, str], extra: str = "", *, source: str = "Requires-Dist"
) -> bool:
    """Whether ``req``'s environment marker holds in ``env`` (with ``extra``); True without a
    marker. A marker that cannot be evaluated (``python_version ~= "abc"``: packaging's
    ``UndefinedComparison``; an unknown variable) raises :class:`ArchiveError` naming
    ``source``."""
    if req.marker is None:
        return True
    try:
        return bool(req.marker.evaluate({**env, "extra": extra}))
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName, ValueError) as exc:
        detail = str(exc).splitlines()[0][:160]
        raise ArchiveError(
            f"{source}: marker of {str(req)[:120]!r} cannot be evaluated ({detail})"
        ) from None


def parse_metadata(data: bytes, *, source: str = "<metadata>") -> Metadata:
    """Strictly parse a core metadata file (see :meth:`Metadata.from_bytes`)."""
    return Metadata.from_bytes(data, source=source)


@dataclass(frozen=True)
class WheelInfo:
    """The WHEEL file: format version, purelib root and tags."""

    wheel_version: str
    root_is_purelib: bool
    tags: tuple[str, ...]


def parse_wheel_info(data: bytes, *, source: str = "WHEEL", strict: bool = True) -> WheelInfo:
    """Parse a WHEEL file."""
    msg = parse_headers(data, source=source, what="WHEEL", strict=strict)
    return WheelInfo(
        wheel_version=str(msg.get("Wheel-Version") or "").strip(),
        root_is_purelib=str(msg.get("Root-Is-Purelib") or "").strip().lower() == "true",
        tags=tuple(str(t).strip() for t in msg.get_all("Tag") or ()),
    )


def find_dist_info(names: Sequence[str] | Iterable[str], project: str, *, source: str) -> str:
    """The one top-level ``<name>-<version>.dist-info`` directory of a wheel's members.

    Raises when there is none, several, or it does not belong to ``project``.
    """
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    infos = sorted(t for t in tops if t.endswith(".dist-info"))
    if len(infos) != 1:
        raise ArchiveError(
            f"{source}: wheel must contain exactly one .dist-info directory (found "
            f"{', '.join(infos) or 'none'})"
        )
    di = infos[0]
    stem = posixpath.basename(di)[: -len(".dist-info")].rsplit("-", 1)[0]
    if canonicalize_name(stem) != canonicalize_name(project):
        raise ArchiveError(f"{source}: .dist-info directory {di} does not match the wheel name")
    return di


# -- filenames -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedWheel:
    """A wheel filename, parsed and validated."""

    filename: str
    name: str  # PEP 503-normalized
    version: Version
    build: tuple[int, str] | tuple[()]
    tags: frozenset[Tag]
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]


def _bad_filename(base: str, why: str) -> InvalidWheelFilename:
    return InvalidWheelFilename(f"{base}: not a valid wheel filename ({why})")


@lru_cache(maxsize=4096)
def parse_wheel(filename: str) -> ParsedWheel:
    """Parse a wheel filename (a path or URL path is cut to its last component).

    The structure is read by ``wheel-filename`` (the binary distribution format's grammar);
    on top of it the rules pip applies through ``packaging`` hold: the extension is ``.whl``,
    the project name has no ``__``, the version is PEP 440, every interpreter tag is an
    identifier. Raises :class:`~torchwheel.errors.InvalidWheelFilename` saying which rule
    failed.
    """
    base = filename.rsplit("/", 1)[-1]
    try:
        wf = WheelFilename.parse(base)
    except ParseError as exc:
        raise _bad_filename(base, str(exc)) from None
    if not base.endswith(".whl"):
        raise _bad_filename(base, "extension must be '.whl'")
    if "__" in wf.project:
        raise _bad_filename(base, f"invalid project name {wf.project!r}")
    try:
        version = Version(wf.version)
    except InvalidVersion:
        raise _bad_filename(base, f"invalid version {wf.version!r}") from None
    bad = [t for t in wf.python_tags if not t.isidentifier()]
    if bad:
        raise _bad_filename(base, f"invalid interpreter tag {bad[0]!r}")
    return ParsedWheel(
        filename=base,
        name=canonicalize_name(wf.project),
        version=version,
        build=wf.build_tuple,
        tags=frozenset(
            Tag(py, abi, plat)
            for py in wf.python_tags
            for abi in wf.abi_tags
            for plat in wf.platform_tags
        ),
        python_tags=tuple(wf.python_tags),
        abi_tags=tuple(wf.abi_tags),
        platform_tags=tuple(wf.platform_tags),
    )
