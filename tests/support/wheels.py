"""A small factory for real wheel files, shared by every test module.

``make_wheel`` writes a valid wheel (PEP 427 / the binary distribution format): a
``.dist-info`` directory with METADATA, WHEEL, optional entry_points.txt and a RECORD whose
hashes and sizes match the archive members, plus optional ``.data/<scheme>/`` trees.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import re
import zipfile
from collections.abc import Collection, Sequence
from pathlib import Path

from packaging.tags import parse_tag

# A fixed timestamp so the same inputs give byte-identical wheels (and stable sha256).
_DATE_TIME = (2024, 1, 1, 0, 0, 0)


def escape_name(name: str) -> str:
    """Escape a distribution name for a wheel filename (runs of ``-_.`` become ``_``)."""
    return re.sub(r"[-_.]+", "_", name)


def escape_version(version: str) -> str:
    """Escape a version for a wheel filename (``-`` is not allowed there)."""
    return version.replace("-", "_")


def record_hash(data: bytes) -> str:
    """The RECORD hash form: ``sha256=<urlsafe base64, no padding>``."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def wheel_sha256(path: Path) -> str:
    """Hex sha256 of a file (what an index puts in ``#sha256=``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_filename(
    name: str, version: str, tags: str = "py3-none-any", build: str | None = None
) -> str:
    """The file name ``make_wheel`` writes for these arguments."""
    parts = [escape_name(name), escape_version(version)]
    if build:
        parts.append(build)
    parts.append(tags)
    return "-".join(parts) + ".whl"


def metadata_text(
    name: str,
    version: str,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
) -> str:
    """The METADATA file contents ``make_wheel`` writes (also served as PEP 658 metadata)."""
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {req}" for req in requires_dist)
    return "\n".join(lines) + "\n\n"


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    tags: str = "py3-none-any",
    files: dict[str, bytes] | None = None,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    data: dict[str, dict[str, bytes]] | None = None,
    entry_points: str | None = None,
    build: str | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Write ``<name>-<version>[-build]-<tags>.whl`` into ``directory`` and return its path.

    ``files`` maps archive paths (root of the wheel) to contents; by default one package
    ``<name>/__init__.py`` is written. ``data`` maps a scheme (``scripts``, ``purelib``,
    ``platlib``, ``headers``, ``data``) to ``{relative path: bytes}`` under
    ``<name>-<version>.data/<scheme>/``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    esc_name = escape_name(name)
    esc_version = escape_version(version)
    expanded = sorted({str(t) for t in parse_tag(tags)})
    purelib = all(t.endswith("-any") for t in expanded)

    if files is None:
        files = {f"{esc_name.lower()}/__init__.py": f'__version__ = "{version}"\n'.encode()}

    dist_info = f"{esc_name}-{esc_version}.dist-info"
    data_dir = f"{esc_name}-{esc_version}.data"

    members: list[tuple[str, bytes]] = list(files.items())
    for scheme, tree in (data or {}).items():
        for rel, content in tree.items():
            members.append((f"{data_dir}/{scheme}/{rel}", content))

    wheel_lines = [
        "Wheel-Version: 1.0",
        "Generator: torchwheel-tests (0)",
        f"Root-Is-Purelib: {'true' if purelib else 'false'}",
    ]
    wheel_lines.extend(f"Tag: {t}" for t in expanded)
    if build:
        wheel_lines.append(f"Build: {build}")
    members.append(
        (
            f"{dist_info}/METADATA",
            metadata_text(name, version, requires_dist, requires_python).encode(),
        )
    )
    members.append((f"{dist_info}/WHEEL", ("\n".join(wheel_lines) + "\n").encode()))
    if entry_points is not None:
        members.append((f"{dist_info}/entry_points.txt", entry_points.encode()))

    record_lines = [f"{path},{record_hash(content)},{len(content)}" for path, content in members]
    record_path = f"{dist_info}/RECORD"
    record_lines.append(f"{record_path},,")
    members.append((record_path, ("\n".join(record_lines) + "\n").encode()))

    out = directory / wheel_filename(name, version, tags, build)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=compression) as zf:
        for path, content in members:
            info = zipfile.ZipInfo(path, date_time=_DATE_TIME)
            info.compress_type = compression
            info.external_attr = (0o755 if "/scripts/" in path else 0o644) << 16
            zf.writestr(info, content)
    tmp.replace(out)
    return out


def raw_wheel(
    directory: Path,
    filename: str,
    members: list[tuple[str, bytes, int]],
    *,
    record: dict[str, str] | None = None,
    skip_record: Collection[str] = frozenset(),
) -> Path:
    """A wheel with exact member names and modes (S_IFLNK for symlinks); RECORD computed
    unless ``record`` overrides rows (``{name: hash}``)."""
    name, version = filename.split("-")[:2]
    di = f"{name}-{version}.dist-info"
    base = [
        (
            f"{di}/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n".encode(),
            0o100644,
        ),
        (
            f"{di}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            0o100644,
        ),
    ]
    allm = members + base
    rows = []
    for n, data, _mode in allm:
        if n in skip_record:
            continue
        h = (record or {}).get(n, record_hash(data))
        rows.append(f"{n},{h},{len(data)}")
    rows.append(f"{di}/RECORD,,")
    allm.append((f"{di}/RECORD", ("\n".join(rows) + "\n").encode(), 0o100644))
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / filename
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data, mode in allm:
            info = zipfile.ZipInfo(n, date_time=(2024, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return out


def check_records(site: Path) -> None:
    """Every RECORD row matches the file; every file is in exactly one RECORD."""
    listed: set[str] = set()
    for record in site.glob("*.dist-info/RECORD"):
        rows = list(csv.reader(record.read_text().splitlines()))
        own = record.relative_to(site).as_posix()
        for path, h, size in rows:
            listed.add(path)
            if path == own:
                assert h == "" and size == ""
                continue
            data = (site / path).read_bytes()
            assert h == record_hash(data), path
            assert int(size) == len(data), path
    on_disk = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert on_disk == listed
