"""Reading the inputs: zip safety, entries, expansion, dist-info, then hashing and ELF parsing.

:func:`gather` opens the zips (central directories only), refuses unsafe members, lets the
expanders add entries, reads symlink targets and every ``.dist-info``; :func:`scan_contents`
then reads only what the checks need — the members RECORD lists (hashed while streaming) and
ELF files (through :class:`~torchwheel.elf.ELFScanner`) — largest first on a small thread
pool, small neighbours in batches (one pread for many members).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import queue
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..elf import ELFInfo, ELFScanner, is_elf, parse_elf
from ..errors import ArchiveError
from ..wheelfile import MAX_METADATA_BYTES, Metadata, parse_record, parse_wheel_info, record_hash
from ..zipread import ZipMember, ZipReader, is_unsafe_name
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
from .sources import read_tree

__all__ = ["gather", "is_library_name", "scan_contents"]

#: Members larger than this, or inflating more than this ratio, are suspicious (zip bombs).
BOMB_MEMBER_BYTES = 4 * 1024**3
BOMB_RATIO = 1100  # deflate cannot exceed ~1032:1; more means the sizes lie
BOMB_RATIO_MIN_BYTES = 1024 * 1024
BOMB_TOTAL_BYTES = 16 * 1024**3

#: Members up to this compressed size are read in batches (one pread for many neighbours).
SMALL_MEMBER = 256 * 1024
SMALL_INFLATED = 8 * 1024 * 1024
#: Members at least this big are hashed on a helper thread while they are inflated.
PIPELINE_BYTES = 64 * 1024 * 1024
BATCH_MEMBERS = 2000
#: Symlink members up to this size have their target read.
SYMLINK_LIMIT = 4096

#: Algorithms a RECORD hash can be checked with (shake_* digests need a length: not usable).
_HASHABLE = frozenset(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake_"))
_SO_RE = re.compile(r"\.so(\.\d+)*$")


def is_library_name(base: str) -> bool:
    """``libx.so``, ``libx.so.1.2``, ``x.so.abc``: named like a shared library."""
    return bool(_SO_RE.search(base)) or ".so." in base


# -- the zips ------------------------------------------------------------------------------------


def _zip_entries(
    reader: ZipReader, members: Sequence[ZipMember], origin: str, mount: str, index: int
) -> list[LayerEntry]:
    out = []
    for m in members:

        def opener(m: ZipMember = m) -> BinaryIO:
            return reader.open(m)

        def chunker(m: ZipMember = m) -> Iterator[bytes]:
            return reader.iter_chunks(m)

        out.append(
            LayerEntry(
                path=m.name.rstrip("/") if m.is_dir else m.name,
                size=m.file_size,
                mode=m.mode,
                is_symlink=m.is_symlink,
                is_dir=m.is_dir,
                origin=origin,
                mount=mount,
                open=opener,
                compressed_size=m.compressed_size,
                input_index=index,
                chunks=chunker,
                zip_source=(reader, m),
            )
        )
    return out


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


def _read_zips(paths: Sequence[str], function: str | None, readers: list[ZipReader]) -> _Inputs:
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
        inputs.entries.extend(_zip_entries(reader, safe, p, mount, i))
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
) -> CheckState:
    """Everything but the members' contents: entries, symlinks, distributions.

    ``readers`` receives every opened :class:`ZipReader`; the caller closes them.
    """
    inputs = _read_zips(paths, function, readers)
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
    for row in rows:
        h = row.hash
        digest = "" if h is None else h.value if h.algorithm == "?" else str(h)
        record[posixpath.normpath(posixpath.join(site, row.path))] = (digest, row.size)
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


# -- member contents -----------------------------------------------------------------------------


def _elf_candidate(entry: LayerEntry) -> bool:
    base = posixpath.basename(entry.path)
    if is_library_name(base):
        return True
    if (
        entry.mode is not None
        and entry.mode & 0o111
        and not base.endswith((".py", ".sh", ".pyc", ".txt", ".json", ".h"))
    ):
        return True
    parts = entry.path.split("/")
    return "bin" in parts[:-1] and "." not in base


@dataclass
class _ScanResult:
    path: str
    digest: str | None = None
    elf: ELFInfo | None = None
    read: int = 0


def _scan(entry: LayerEntry, algo: str | None) -> _ScanResult:
    """Hash (when ``algo``) and ELF-parse one entry in a single pass over its bytes."""
    res = _ScanResult(entry.abs_path)
    hasher = hashlib.new(algo) if algo else None
    chunks: Iterator[bytes]
    stream: BinaryIO | None = None
    if entry.chunks is not None and hasher is not None:
        chunks = entry.chunks()
    else:
        stream = entry.open()
        chunks = _stream_chunks(stream)
    scanner: ELFScanner | None = None
    first = True
    # big members: hash on a helper thread while this one inflates (both release the GIL)
    piped = _HashPipe(hasher) if hasher is not None and entry.size >= PIPELINE_BYTES else None
    update = piped.put if piped is not None else hasher.update if hasher is not None else None
    try:
        for chunk in chunks:
            if first:
                first = False
                if is_elf(chunk):
                    scanner = ELFScanner(entry.size, name=entry.label)
                elif hasher is None:
                    break
            res.read += len(chunk)
            if update is not None:
                update(chunk)
            if scanner is not None:
                scanner.feed(chunk)
                if hasher is None and scanner.satisfied:
                    break
    finally:
        if piped is not None:
            piped.close()
        if stream is not None:
            stream.close()
    if hasher is not None:
        res.digest = record_hash(hasher.digest(), hasher.name)
    if scanner is not None:
        res.elf = scanner.result(reopen=entry.open)
    return res


class _HashPipe:
    """Feed a hash object from another thread through a small bounded queue."""

    def __init__(self, hasher: Any, depth: int = 8) -> None:
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._hasher = hasher
        self._thread = threading.Thread(target=self._run, name="torchwheel-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._q.get()
            if chunk is None:
                return
            self._hasher.update(chunk)

    def put(self, chunk: bytes) -> None:
        self._q.put(chunk)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()


def _scan_bytes(entry: LayerEntry, data: bytes, algo: str | None) -> _ScanResult:
    res = _ScanResult(entry.abs_path, read=len(data))
    if algo:
        res.digest = record_hash(hashlib.new(algo, data).digest(), algo)
    if is_elf(data):
        res.elf = parse_elf(data, name=entry.label)
    return res


_Job = tuple[LayerEntry, "str | None"]  # an entry and the hash algorithm RECORD wants, if any


def _scan_batch(reader: ZipReader, jobs: Sequence[_Job]) -> list[_ScanResult]:
    by_member = {id(e.zip_source[1]): (e, a) for e, a in jobs if e.zip_source is not None}
    members = [e.zip_source[1] for e, _a in jobs if e.zip_source is not None]
    out = []
    for m, data in reader.read_many(members):
        entry, algo = by_member[id(m)]
        out.append(_scan_bytes(entry, data, algo))
    return out


def _stream_chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    read1 = getattr(stream, "read1", None) or stream.read
    while True:
        b = read1(size)
        if not b:
            return
        yield b


def _record_algorithms(state: CheckState) -> dict[str, str]:
    """Absolute path -> the hash algorithm its RECORD line uses (non-vendored dists)."""
    algos: dict[str, str] = {}
    for d in state.dists:
        if d.vendored:
            continue
        for path, (digest, _size) in d.record.items():
            algo = digest.split("=", 1)[0] if "=" in digest else ""
            if algo in _HASHABLE:
                algos[path] = algo
    return algos


def _jobs(state: CheckState, algos: dict[str, str]) -> list[_Job]:
    """The entries to read: those to hash, and the possible ELF files."""
    jobs: list[_Job] = []
    for path, e in state.files.items():
        if e.is_dir or e.is_symlink or e.size == 0:
            continue
        want = algos.get(path)
        if want is not None or _elf_candidate(e):
            jobs.append((e, want))
    return jobs


def _is_small(job: _Job) -> bool:
    e, algo = job
    src = e.zip_source
    return (
        src is not None
        and src[1].compressed_size <= SMALL_MEMBER
        and src[1].file_size <= (SMALL_INFLATED if algo is not None else SMALL_MEMBER)
    )


def _tasks(jobs: Sequence[_Job]) -> list[Callable[[], list[_ScanResult]]]:
    """Big members one task each, largest first; small ones in header-ordered batches."""
    small: dict[int, list[_Job]] = defaultdict(list)
    readers: dict[int, ZipReader] = {}
    big: list[_Job] = []
    for job in jobs:
        src = job[0].zip_source
        if src is not None and _is_small(job):
            small[id(src[0])].append(job)
            readers[id(src[0])] = src[0]
        else:
            big.append(job)
    big.sort(key=lambda j: -j[0].size)
    tasks: list[Callable[[], list[_ScanResult]]] = []
    for e, a in big:
        tasks.append(lambda e=e, a=a: [_scan(e, a)])  # type: ignore[misc]
    for rid, group in small.items():
        group.sort(key=lambda j: j[0].zip_source[1].header_offset)  # type: ignore[index]
        for i in range(0, len(group), BATCH_MEMBERS):
            part = group[i : i + BATCH_MEMBERS]
            tasks.append(lambda r=readers[rid], part=part: _scan_batch(r, part))  # type: ignore[misc]
    return tasks


def scan_contents(state: CheckState, record: bool, workers: int | None) -> None:
    """Hash RECORD-listed files and parse ELF files, largest first, on a thread pool."""
    algos = _record_algorithms(state) if record else {}
    tasks = _tasks(_jobs(state, algos))
    n = workers or min(4, os.cpu_count() or 1)
    if n <= 1 or len(tasks) < 2:
        results = [r for t in tasks for r in t()]
    else:
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = [r for rs in pool.map(lambda t: t(), tasks) for r in rs]
    for r in results:
        state.bytes_read += r.read
        if r.digest is not None:
            state.digests[r.path] = r.digest
        if r.elf is not None:
            state.elves[r.path] = r.elf
