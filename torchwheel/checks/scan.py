"""Reading the inputs: zip safety, entries, expansion, dist-info.

:func:`gather` opens the zips (central directories only), refuses unsafe members, lets the
expanders add entries, reads symlink targets and every ``.dist-info``;
:func:`~torchwheel.checks.contents.scan_contents` (re-exported here) then reads the members'
contents: every member inflated and CRC-checked once, hashed and ELF-parsed in the same pass.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from ..errors import ArchiveError
from ..wheelfile import MAX_METADATA_BYTES, Metadata, parse_record, parse_wheel_info
from ..zipread import ZipMember, ZipReader, is_unsafe_name
from .contents import SMALL_MEMBER, SYMLINK_LIMIT, is_library_name, scan_contents
from .model import (
    FUNCTION_MOUNT,
    LAYER_MOUNT,
    WARNING,
    CheckState,
    Expander,
    Finding,
    InstalledDist,
    LayerEntry,
    finding,
)
from .packed import is_packed_archive
from .sources import read_tree

__all__ = ["gather", "is_library_name", "scan_contents"]

#: Members larger than this, or inflating more than this ratio, are suspicious (zip bombs).
BOMB_MEMBER_BYTES = 4 * 1024**3
BOMB_RATIO = 1100  # deflate cannot exceed ~1032:1; more means the sizes lie
BOMB_RATIO_MIN_BYTES = 1024 * 1024
BOMB_TOTAL_BYTES = 16 * 1024**3

# -- the zips ------------------------------------------------------------------------------------


#: Called with entries whose reading may start now (see :func:`gather`).
Early = Callable[[Sequence[LayerEntry]], None]


def _zip_entry(reader: ZipReader, origin: str, mount: str, index: int, m: ZipMember) -> LayerEntry:
    is_dir = m.is_dir
    return LayerEntry(
        path=m.name.rstrip("/") if is_dir else m.name,
        size=m.file_size,
        mode=m.mode,
        is_symlink=m.is_symlink,
        is_dir=is_dir,
        origin=origin,
        mount=mount,
        open=partial(reader.open, m),
        compressed_size=m.compressed_size,
        input_index=index,
        chunks=partial(reader.iter_chunks, m),
        zip_source=(reader, m),
    )


def _zip_entries(
    reader: ZipReader,
    members: Sequence[ZipMember],
    origin: str,
    mount: str,
    index: int,
    early: Early | None = None,
) -> list[LayerEntry]:
    """The members as entries. With ``early``: the big ones are made first and handed to it
    (their reading starts while the rest are made), except a packed layer's archive, which
    its expander reads whole anyway."""
    made: dict[int, LayerEntry] = {}
    if early is not None:
        for m in members:
            big = m.compressed_size > SMALL_MEMBER or m.file_size > SMALL_MEMBER
            if big and not m.is_dir and not is_packed_archive(m.name):
                made[id(m)] = _zip_entry(reader, origin, mount, index, m)
        early(list(made.values()))
    return [made.get(id(m)) or _zip_entry(reader, origin, mount, index, m) for m in members]


def _member_problem(m: ZipMember, origin: str) -> Finding | None:
    """Why one (uniquely named) member must not be looked at, or None."""
    label = f"{origin}:{m.name}"
    if m.is_encrypted:
        return finding(
            "suspicious-archive", label, f"{m.name} is encrypted; Lambda cannot extract it"
        )
    if m.file_size > BOMB_MEMBER_BYTES or (
        m.file_size > BOMB_RATIO_MIN_BYTES and m.file_size > BOMB_RATIO * max(m.compressed_size, 1)
    ):
        return finding(
            "suspicious-archive",
            label,
            f"{m.name} inflates {m.compressed_size} bytes to {m.file_size} (zip bomb?)",
            compressed=m.compressed_size,
            size=m.file_size,
        )
    if m.compress_type not in (0, 8) and not m.is_dir:
        return finding(
            "suspicious-archive",
            label,
            f"{m.name} uses compression method {m.compress_type}; use deflate or store",
            severity=WARNING,
        )
    return None


def archive_checks(reader: ZipReader, origin: str) -> tuple[list[ZipMember], list[Finding]]:
    """Safety checks on the central directory; returns the members safe to look at."""
    findings: list[Finding] = []
    safe: list[ZipMember] = []
    seen: set[str] = set()
    dups: list[str] = []
    total = 0
    for m in reader.members:
        total += m.file_size
        if is_unsafe_name(m.name):
            findings.append(
                finding(
                    "unsafe-path",
                    f"{origin}:{m.name}",
                    f"{m.name!r} would be written outside the extraction directory",
                )
            )
            continue
        if m.name in seen:
            dups.append(m.name)
            continue
        seen.add(m.name)
        problem = _member_problem(m, origin)
        if problem is None:
            safe.append(m)
        else:
            findings.append(problem)
    if dups:
        findings.append(
            finding(
                "suspicious-archive",
                origin,
                f"{len(dups)} duplicate member names (first: {dups[0]}); which copy wins is "
                "undefined",
                names=dups[:100],
            )
        )
    if total > BOMB_TOTAL_BYTES:
        findings.append(
            finding(
                "suspicious-archive",
                origin,
                f"members add up to {total} bytes unzipped (zip bomb?)",
                size=total,
            )
        )
    return safe, findings


def _is_function_zip(members: Sequence[ZipMember]) -> bool:
    return not any(m.name == "python" or m.name.startswith("python/") for m in members)


@dataclass
class _Inputs:
    entries: list[LayerEntry]
    generic: list[Finding]
    layers: list[str]
    function: str | None
    zip_sizes: list[tuple[str, int]]


def _read_zips(
    paths: Sequence[str], function: str | None, readers: list[ZipReader], early: Early | None
) -> _Inputs:
    """Open every zip (appending it to ``readers``, which the caller closes)."""
    inputs = _Inputs(entries=[], generic=[], layers=[], function=None, zip_sizes=[])
    for i, p in enumerate(paths):
        if os.path.isdir(p):
            _read_tree(inputs, p, i, len(paths), function)
            continue
        reader = ZipReader(p)
        readers.append(reader)
        safe, problems = archive_checks(reader, p)
        inputs.generic.extend(problems)
        inputs.zip_sizes.append((p, reader.size))
        is_fn = p == function or (
            function is None and i == 0 and len(paths) > 1 and _is_function_zip(reader.members)
        )
        if is_fn:
            inputs.function = p
        else:
            inputs.layers.append(p)
        mount = FUNCTION_MOUNT if is_fn else LAYER_MOUNT
        inputs.entries.extend(_zip_entries(reader, safe, p, mount, i, early))
    return inputs


def _read_tree(inputs: _Inputs, p: str, i: int, n: int, function: str | None) -> None:
    """A directory, as the zip of its contents (sources.py); SAM/CDK function dirs alone too."""
    tree = read_tree(p)
    inputs.generic.extend(tree.findings)
    first_of_several = i == 0 and n > 1 and not tree.has_python_dir
    is_fn = p == function or (
        function is None
        and inputs.function is None
        and (first_of_several or tree.looks_like_function)
    )
    if is_fn:
        inputs.function = p
    else:
        inputs.layers.append(p)
    inputs.entries.extend(tree.entries(FUNCTION_MOUNT if is_fn else LAYER_MOUNT, i))


def _expand(
    entries: list[LayerEntry], expanders: Sequence[Expander]
) -> tuple[list[str], list[str]]:
    """Add the expanders' entries to ``entries``; return their sys.path / library dirs."""
    sys_path: list[str] = []
    library_path: list[str] = []
    more: list[LayerEntry] = []
    for e in entries:
        for expander in expanders:
            exp = expander(e)
            if exp is not None:
                more.extend(exp.entries)
                sys_path.extend(exp.sys_path)
                library_path.extend(exp.library_path)
    entries.extend(more)
    return sys_path, library_path


def gather(
    paths: Sequence[str],
    function: str | None,
    expanders: Sequence[Expander],
    readers: list[ZipReader],
    *,
    early: Early | None = None,
) -> CheckState:
    """Everything but the members' contents: entries, symlinks, distributions.

    ``readers`` receives every opened :class:`ZipReader`; the caller closes them. ``early``
    is handed each zip's big members as soon as its central directory is read, before the
    other entries are made and the dist-info read
    (:meth:`~torchwheel.checks.contents.ContentScan.start` sets them inflating).
    """
    inputs = _read_zips(paths, function, readers, early)
    extra_sys, extra_lib = _expand(inputs.entries, expanders)
    files: dict[str, LayerEntry] = {}
    for e in inputs.entries:  # in input order: later layers override earlier ones
        if not e.is_dir:
            files[e.abs_path] = e
    state = CheckState(
        entries=inputs.entries,
        files=files,
        layers=inputs.layers,
        function=inputs.function,
        dists=[],
        elves={},
        digests={},
        symlinks={},
        extra_sys_path=extra_sys,
        extra_library_path=extra_lib,
        generic=inputs.generic,
        zip_sizes=inputs.zip_sizes,
    )
    for path, e in files.items():
        if e.is_symlink and e.size < SYMLINK_LIMIT:
            with e.open() as f:
                state.symlinks[path] = f.read().decode("utf-8", "replace")
    state.dists = load_dists(files)
    mark_vendored(state.dists)
    return state


# -- dist-info -----------------------------------------------------------------------------------


def _read_small(entry: LayerEntry) -> bytes:
    if entry.size > MAX_METADATA_BYTES:
        raise ArchiveError(f"{entry.label}: {entry.size} bytes is too large for a metadata file")
    with entry.open() as f:
        return f.read()


def _readable(files: dict[str, LayerEntry], path: str) -> LayerEntry | None:
    entry = files.get(path)
    return None if entry is None or entry.is_symlink else entry


def _read_record(
    entry: LayerEntry, site: str
) -> tuple[dict[str, tuple[str, int | None]], str | None]:
    """RECORD as absolute path -> (hash text, size), leniently; or why it cannot be read.

    A hash :mod:`~torchwheel.wheelfile` does not accept (md5, bad base64) is kept as written:
    it is still compared when hashlib knows its algorithm.
    """
    try:
        rows = parse_record(_read_small(entry), source=entry.label, strict=False)
    except ArchiveError as exc:  # not CSV: a finding about the layer, not a failed check
        return {}, str(exc)
    record: dict[str, tuple[str, int | None]] = {}
    quick = posixpath.normpath(site) == site  # then normal rows need no normpath
    for row in rows:
        h = row.hash
        digest = "" if h is None else h.value if h.algorithm == "?" else str(h)
        rel = row.path
        if quick and not (
            rel.startswith(("/", ".")) or "/." in rel or "//" in rel or rel.endswith("/")
        ):
            path = f"{site}/{rel}"  # what normpath would give (nearly every row)
        else:
            path = posixpath.normpath(posixpath.join(site, rel))
        # an unreadable size (5,000 digits, "1e3") matches no file: compared, it differs
        record[path] = (digest, -1 if row.size_problem else row.size)
    return record, None


def load_dists(files: dict[str, LayerEntry]) -> list[InstalledDist]:
    """Every ``*.dist-info`` with a METADATA file, with its WHEEL tags and RECORD."""
    dists: list[InstalledDist] = []
    for abs_path, entry in sorted(files.items()):
        if not abs_path.endswith(".dist-info/METADATA") or entry.is_symlink:
            continue
        di = posixpath.dirname(abs_path)
        site = posixpath.dirname(di)
        meta = Metadata.from_bytes(_read_small(entry), source=entry.label, strict=False)
        wheel = _readable(files, f"{di}/WHEEL")
        tags: tuple[str, ...] = ()
        if wheel is not None:
            tags = parse_wheel_info(_read_small(wheel), source=wheel.label, strict=False).tags
        rec = _readable(files, f"{di}/RECORD")
        record, error = ({}, None) if rec is None else _read_record(rec, site)
        dists.append(
            InstalledDist(
                name=meta.name or posixpath.basename(di).split("-")[0],
                version=meta.version,
                site=site,
                dist_info=di,
                requires=meta.requires_dist,
                tags=tags,
                record=record,
                origin=entry.origin,
                record_error=error,
            )
        )
    return dists


def mark_vendored(dists: Sequence[InstalledDist]) -> None:
    """Flag dist-info directories that sit inside another distribution's files.

    ``setuptools/_vendor/more_itertools-10.8.0.dist-info`` describes a vendored copy, not an
    installed distribution: its RECORD is not maintained by installers (nor by slimming).
    """
    owned_dirs: set[str] = set()
    for d in dists:
        for path in d.record:
            if path.startswith(d.site + "/") and ".dist-info/" not in path:
                parent = posixpath.dirname(path)
                while len(parent) > len(d.site):
                    if parent in owned_dirs:
                        break
                    owned_dirs.add(parent)
                    parent = posixpath.dirname(parent)
    for d in dists:
        d.vendored = d.site in owned_dirs
