"""Check Lambda deployment zips (layers, function code) before deploy, without extracting them.

:func:`check` reads each zip's central directory, then only what it needs: ``.dist-info``
files, the members listed in ``RECORD`` (hashed while streaming) and ELF files (their
headers, dynamic section and version tables through :class:`~torchwheel.elf.ELFScanner`).
Members are inflated by :mod:`torchwheel.zipread` (isal when installed) on a small thread
pool; memory is bounded by the largest member read plus the ELF scanner's windows.

Facts gathered once are then judged per target (pure logic, :func:`_judge_target`), so a
matrix over every runtime × architecture costs little more than one target.

Several zips are one deployment, in Lambda's order: an optional function zip (mounted at
``/var/task``; the first of several zips that has no top-level ``python/`` directory, or the
one given as ``function=``), then layers mounted at ``/opt`` in order, later layers
overriding earlier ones. Sizes add up; dependencies may be met by any of them.

Extension hooks (for layers whose content is not plain files, e.g. packed layers):

* :data:`EXPANDERS` — functions ``expander(entry) -> Expansion | None``. Each is called with
  every :class:`LayerEntry` read from a zip; returning an :class:`Expansion` adds the entries
  it lists (e.g. the members of a ``.tar.zst`` that a loader unpacks into ``/tmp``) with
  their own ``mount``, plus directories to put first on ``sys.path`` / the library path.
  Expanded entries take part in every content check (RECORD, dependencies, ELF, layout
  within their mount) but not in the zip size quotas.
* :data:`EXTRA_CHECKS` — functions ``check(state, target) -> Iterable[Finding]`` called once
  with ``target=None`` (target-independent findings) and once per target.

Finding codes are stable (see docs/json-schema.md); severities are ``error`` (fails on
Lambda), ``warning`` (works, but worth knowing; fatal with ``--strict``) and ``info``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import queue
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any, BinaryIO

from packaging.markers import InvalidMarker, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..elf import ELFInfo, ELFScanner, is_elf, parse_elf
from ..errors import ArchiveError, InputError, InvalidWheelFilename
from ..targets import Target, all_targets, facts, make_target, normalize_arch, quotas
from ..verdict import evaluate
from ..zipread import ZipMember, ZipReader, inflate_backend, is_unsafe_name

__all__ = [
    "CODES",
    "EXPANDERS",
    "EXTRA_CHECKS",
    "CheckReport",
    "CheckState",
    "DistInfo",
    "Expansion",
    "Finding",
    "LayerEntry",
    "SizeReport",
    "TargetVerdict",
    "check",
]

ERROR = "error"
WARNING = "warning"
INFO = "info"

#: Every finding code with its default severity, in the order used to pick a target's
#: "first reason" (most fundamental first).
CODES: dict[str, str] = {
    "unsafe-path": ERROR,
    "suspicious-archive": ERROR,
    "elf-arch-mismatch": ERROR,
    "wrong-python-dir": ERROR,
    "abi-mismatch": ERROR,
    "tag-incompatible": ERROR,
    "glibc-too-new": ERROR,
    "glibcxx-too-new": ERROR,
    "missing-shared-library": ERROR,
    "unconfirmed-system-library": WARNING,
    "missing-dependency": ERROR,
    "not-on-sys-path": ERROR,
    "wheel-not-extracted": ERROR,
    "record-mismatch": ERROR,
    "packed-manifest": ERROR,
    "unzipped-too-large": ERROR,
    "too-many-layers": ERROR,
    "nested-zip": WARNING,
    "foreign-pycache": WARNING,
    "zipped-over-direct-upload": WARNING,
    "ephemeral-storage": WARNING,
}

#: Where :func:`_search_library` says a library is assumed on the image without a source.
UNCONFIRMED_SYSTEM = "system (unconfirmed)"

LAYER_MOUNT = "/opt"
FUNCTION_MOUNT = "/var/task"

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

_SO_RE = re.compile(r"\.so(\.\d+)*$")
_EXT_RE = re.compile(r"\.cpython-(\d)(\d+)([a-z]*)-(.+)\.so$")
_PYC_RE = re.compile(r"\.(cpython|pypy)-?(\d)(\d+)[^.]*(\.opt-\d)?\.pyc$")
_SITE_RE = re.compile(r"^python/lib/python(\d)\.(\d+)/site-packages(/|$)")
_PYLIB_RE = re.compile(r"^(?:python/)?lib/python(\d)\.(\d+)/")
_ARCHIVE_SUFFIXES = (".whl", ".egg", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Finding:
    """One problem found: a stable ``code``, a ``severity``, the ``path`` it is about."""

    code: str
    severity: str
    path: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (docs/json-schema.md, "check")."""
        return {"code": self.code, "severity": self.severity, "path": self.path,
                "message": self.message, "detail": self.detail}


@dataclass(frozen=True)
class LayerEntry:
    """One file (or symlink / directory) of the deployment, wherever it comes from.

    ``path`` is relative to ``mount`` (``/opt`` for layers, ``/var/task`` for the function,
    wherever an expander's loader unpacks). ``open`` returns a fresh binary stream of the
    content (seekable; cheap forward, costly backward for deflated members); ``chunks``
    (optional) yields the whole content fast.
    """

    path: str
    size: int
    mode: int | None
    is_symlink: bool
    is_dir: bool
    origin: str
    mount: str
    open: Callable[[], BinaryIO]
    compressed_size: int | None = None
    input_index: int = 0
    expanded_from: str | None = None
    chunks: Callable[[], Iterator[bytes]] | None = None
    zip_source: tuple[ZipReader, ZipMember] | None = field(default=None, compare=False)
    #: where the file lands on Lambda (``/opt/python/x.py``); computed from mount + path
    abs_path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "abs_path", posixpath.join(self.mount, self.path))

    @property
    def label(self) -> str:
        """``layer.zip:python/x.py`` for messages."""
        return f"{self.origin}:{self.path}"


@dataclass(frozen=True)
class Expansion:
    """What an expander adds: entries and the directories its loader puts on the paths."""

    entries: Sequence[LayerEntry]
    sys_path: tuple[str, ...] = ()
    library_path: tuple[str, ...] = ()


Expander = Callable[[LayerEntry], "Expansion | None"]
#: Hook: expanders turning one entry (e.g. a packed archive) into more entries.
EXPANDERS: list[Expander] = []


@dataclass
class DistInfo:
    """An installed distribution found in the deployment (a ``*.dist-info`` directory)."""

    name: str
    version: str
    site: str  # absolute directory holding the .dist-info
    dist_info: str  # absolute path of the .dist-info directory
    requires: tuple[str, ...]
    tags: tuple[str, ...]
    record: dict[str, tuple[str, str]]  # absolute path -> (hash "algo=b64", size)
    origin: str
    vendored: bool = False  # inside another distribution's package (setuptools/_vendor/...)

    @property
    def key(self) -> str:
        """Canonical project name."""
        return str(canonicalize_name(self.name))


@dataclass(frozen=True)
class SizeReport:
    """Sizes against Lambda's quotas."""

    zipped: tuple[tuple[str, int], ...]
    unzipped: tuple[tuple[str, int], ...]
    unzipped_total: int
    unzipped_limit: int
    direct_upload_limit: int
    layers: int
    layers_limit: int
    largest_dirs: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "zipped": [{"path": p, "bytes": n} for p, n in self.zipped],
            "unzipped": [{"path": p, "bytes": n} for p, n in self.unzipped],
            "unzipped_total": self.unzipped_total,
            "unzipped_limit": self.unzipped_limit,
            "direct_upload_limit": self.direct_upload_limit,
            "layers": self.layers,
            "layers_limit": self.layers_limit,
            "largest_dirs": [{"path": p, "bytes": n} for p, n in self.largest_dirs],
        }


@dataclass(frozen=True)
class TargetVerdict:
    """Whether the deployment works on one target, and why not."""

    target: str
    runtime: str
    arch: str
    python: str
    works: bool
    reason: str | None
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        """Number of error findings (target-independent ones included)."""
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        """Number of warning findings."""
        return sum(1 for f in self.findings if f.severity == WARNING)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"target": self.target, "runtime": self.runtime, "arch": self.arch,
                "python": self.python, "works": self.works, "reason": self.reason,
                "errors": self.errors, "warnings": self.warnings,
                "findings": [f.to_dict() for f in self.findings]}


@dataclass(frozen=True)
class CheckReport:
    """The result of :func:`check`.

    ``findings``: for one target, every finding; for a matrix, the target-independent ones
    (each verdict carries its own full list). ``ok``: no errors (and, for a matrix, at least
    one target works).
    """

    paths: tuple[str, ...]
    single_target: bool
    findings: tuple[Finding, ...]
    verdicts: tuple[TargetVerdict, ...]
    sizes: SizeReport
    distributions: tuple[dict[str, str], ...]
    elf_files: int
    members: int
    bytes_read: int
    record_checked: bool
    inflate: str
    seconds: float
    ignored: tuple[str, ...] = ()

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Error findings."""
        return tuple(f for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """Warning findings."""
        return tuple(f for f in self.findings if f.severity == WARNING)

    @property
    def ok(self) -> bool:
        """True when the deployment works (single target) / works somewhere (matrix)."""
        if self.errors:
            return False
        return any(v.works for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (docs/json-schema.md, "check")."""
        return {
            "schema": 1,
            "paths": list(self.paths),
            "mode": "target" if self.single_target else "matrix",
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "verdicts": [v.to_dict() for v in self.verdicts],
            "sizes": self.sizes.to_dict(),
            "distributions": list(self.distributions),
            "stats": {"members": self.members, "elf_files": self.elf_files,
                      "bytes_read": self.bytes_read, "record_checked": self.record_checked,
                      "inflate": self.inflate, "seconds": round(self.seconds, 3)},
            "ignored": list(self.ignored),
        }


@dataclass
class CheckState:
    """Everything gathered from the inputs; judged per target. Passed to EXTRA_CHECKS."""

    entries: list[LayerEntry]
    files: dict[str, LayerEntry]  # absolute path -> effective entry (later layers win)
    layers: list[str]
    function: str | None
    dists: list[DistInfo]
    elves: dict[str, ELFInfo]  # absolute path -> info
    digests: dict[str, str]  # absolute path -> "algo=b64"
    symlinks: dict[str, str]  # absolute path -> link target
    extra_sys_path: list[str]
    extra_library_path: list[str]
    generic: list[Finding]
    zip_sizes: list[tuple[str, int]]
    bytes_read: int = 0
    cache: dict[str, Any] = field(default_factory=dict)  # per-run memo for the judges


ExtraCheck = Callable[[CheckState, "Target | None"], Iterable[Finding]]
#: Hook: extra checks, called with target=None once and once per target.
EXTRA_CHECKS: list[ExtraCheck] = []


def _finding(code: str, path: str, message: str, severity: str | None = None,
             **detail: Any) -> Finding:
    return Finding(code=code, severity=severity or CODES[code], path=path, message=message,
                   detail=detail)


# -- reading the inputs ------------------------------------------------------------------------


def _zip_entries(reader: ZipReader, members: Sequence[ZipMember], origin: str, mount: str,
                 index: int) -> list[LayerEntry]:
    out = []
    for m in members:
        def opener(m: ZipMember = m) -> BinaryIO:
            return reader.open(m)

        def chunker(m: ZipMember = m) -> Iterator[bytes]:
            return reader.iter_chunks(m)

        out.append(LayerEntry(
            path=m.name.rstrip("/") if m.is_dir else m.name,
            size=m.file_size, mode=m.mode, is_symlink=m.is_symlink, is_dir=m.is_dir,
            origin=origin, mount=mount, open=opener, compressed_size=m.compressed_size,
            input_index=index, chunks=chunker, zip_source=(reader, m),
        ))
    return out


def _archive_checks(reader: ZipReader, origin: str) -> tuple[list[ZipMember], list[Finding]]:
    """Safety checks on the central directory; returns the members safe to look at."""
    findings: list[Finding] = []
    safe: list[ZipMember] = []
    seen: set[str] = set()
    dups: list[str] = []
    total = 0
    for m in reader.members:
        total += m.file_size
        if is_unsafe_name(m.name):
            findings.append(_finding(
                "unsafe-path", f"{origin}:{m.name}",
                f"{m.name!r} would be written outside the extraction directory",
            ))
            continue
        if m.name in seen:
            dups.append(m.name)
            continue
        seen.add(m.name)
        if m.is_encrypted:
            findings.append(_finding("suspicious-archive", f"{origin}:{m.name}",
                                     f"{m.name} is encrypted; Lambda cannot extract it"))
            continue
        if m.file_size > BOMB_MEMBER_BYTES or (
            m.file_size > BOMB_RATIO_MIN_BYTES
            and m.file_size > BOMB_RATIO * max(m.compressed_size, 1)
        ):
            findings.append(_finding(
                "suspicious-archive", f"{origin}:{m.name}",
                f"{m.name} inflates {m.compressed_size} bytes to {m.file_size} (zip bomb?)",
                compressed=m.compressed_size, size=m.file_size,
            ))
            continue
        if m.compress_type not in (0, 8) and not m.is_dir:
            findings.append(_finding(
                "suspicious-archive", f"{origin}:{m.name}",
                f"{m.name} uses compression method {m.compress_type}; use deflate or store",
                severity=WARNING,
            ))
            continue
        safe.append(m)
    if dups:
        findings.append(_finding(
            "suspicious-archive", origin,
            f"{len(dups)} duplicate member names (first: {dups[0]}); which copy wins is "
            "undefined", names=dups[:100],
        ))
    if total > BOMB_TOTAL_BYTES:
        findings.append(_finding(
            "suspicious-archive", origin,
            f"members add up to {total} bytes unzipped (zip bomb?)", size=total,
        ))
    return safe, findings


def _is_function_zip(members: Sequence[ZipMember]) -> bool:
    return not any(m.name == "python" or m.name.startswith("python/") for m in members)


def _read_small(entry: LayerEntry, limit: int = 16 * 1024 * 1024) -> bytes:
    if entry.size > limit:
        raise ArchiveError(f"{entry.label}: {entry.size} bytes is too large for a metadata file")
    with entry.open() as f:
        return f.read()


def _parse_headers(data: bytes) -> Any:
    return HeaderParser().parsestr(data.decode("utf-8", "replace"))


def _load_dists(files: dict[str, LayerEntry]) -> list[DistInfo]:
    dists: list[DistInfo] = []
    for abs_path, entry in sorted(files.items()):
        if not abs_path.endswith(".dist-info/METADATA") or entry.is_symlink:
            continue
        di = posixpath.dirname(abs_path)
        site = posixpath.dirname(di)
        meta = _parse_headers(_read_small(entry))
        name = (meta.get("Name") or posixpath.basename(di).split("-")[0]).strip()
        version = (meta.get("Version") or "").strip()
        requires = tuple(str(r).strip() for r in meta.get_all("Requires-Dist") or ())
        tags: tuple[str, ...] = ()
        wheel = files.get(f"{di}/WHEEL")
        if wheel is not None and not wheel.is_symlink:
            tags = tuple(str(t).strip() for t in _parse_headers(_read_small(wheel))
                         .get_all("Tag") or ())
        record: dict[str, tuple[str, str]] = {}
        rec = files.get(f"{di}/RECORD")
        if rec is not None and not rec.is_symlink:
            import csv
            import io

            text = _read_small(rec).decode("utf-8", "replace")
            for row in csv.reader(io.StringIO(text)):
                if not row or not row[0]:
                    continue
                rel = row[0]
                digest = row[1] if len(row) > 1 else ""
                size = row[2] if len(row) > 2 else ""
                target = posixpath.normpath(posixpath.join(site, rel))
                record[target] = (digest, size)
        dists.append(DistInfo(name=name, version=version, site=site, dist_info=di,
                              requires=requires, tags=tags, record=record,
                              origin=entry.origin))
    return dists


def _mark_vendored(dists: Sequence[DistInfo]) -> None:
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


def _elf_candidate(entry: LayerEntry) -> bool:
    base = posixpath.basename(entry.path)
    if _SO_RE.search(base) or ".so." in base:
        return True
    if entry.mode is not None and entry.mode & 0o111 and not base.endswith(
        (".py", ".sh", ".pyc", ".txt", ".json", ".h")
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
        res.digest = f"{algo}=" + base64.urlsafe_b64encode(hasher.digest()).rstrip(b"=").decode()
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
        digest = hashlib.new(algo, data).digest()
        res.digest = f"{algo}=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    if is_elf(data):
        res.elf = parse_elf(data, name=entry.label)
    return res


def _scan_batch(reader: ZipReader, jobs: Sequence[tuple[LayerEntry, str | None]]) -> list[
        _ScanResult]:
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


# -- layout and size (target-independent) --------------------------------------------------------


def _pythonish(path: str) -> bool:
    base = posixpath.basename(path)
    return base.endswith((".py", ".pyc", ".pth")) or bool(_EXT_RE.search(base)) or \
        ".dist-info/" in path or base.endswith(".abi3.so")


def _layout_findings(entries: Sequence[LayerEntry]) -> list[Finding]:
    findings: list[Finding] = []
    off_path: dict[tuple[str, str], int] = defaultdict(int)
    for e in entries:
        if e.is_dir or e.mount != LAYER_MOUNT or e.expanded_from:
            continue
        p = e.path
        if p.startswith("python/") or not _pythonish(p):
            continue
        m = _PYLIB_RE.match(p)
        group = m.group(0) + "site-packages/" if m and "/site-packages/" in p else \
            p.split("/", 1)[0] + ("/" if "/" in p else "")
        off_path[(e.origin, group)] += 1
    for (origin, group), n in sorted(off_path.items()):
        hint = "put packages under python/ or python/lib/python3.X/site-packages/"
        if origin.endswith(".whl"):
            hint = "a wheel is not a layer: install it under python/ (torchwheel build)"
        elif group.startswith("lib/python"):
            hint = f"the zip lacks the python/ prefix: use python/{group}"
        elif group == "site-packages/":
            hint = "use python/lib/python3.X/site-packages/ (or python/)"
        findings.append(_finding(
            "not-on-sys-path", f"{origin}:{group}",
            f"{n} Python file(s) under {group} are not on sys.path (layers land in /opt); "
            f"{hint}", files=n,
        ))
    for e in entries:
        if e.is_dir:
            continue
        base = posixpath.basename(e.path).lower()
        if base.endswith(_ARCHIVE_SUFFIXES):
            in_site = e.path.startswith("python/") or e.mount != LAYER_MOUNT
            findings.append(_finding(
                "wheel-not-extracted", e.label,
                f"{e.path} is an archive, not an installed package: Python cannot import "
                "from it; install it (pip install --target / torchwheel build) instead",
                severity=ERROR if in_site else WARNING,
            ))
        elif base.endswith(".zip") and not e.expanded_from:
            findings.append(_finding(
                "nested-zip", e.label,
                f"{e.path} is a zip inside the zip: Lambda does not extract nested archives",
            ))
    return findings


def _largest_dirs(entries: Sequence[LayerEntry], top: int = 10) -> list[tuple[str, int]]:
    sizes: dict[str, int] = defaultdict(int)
    for e in entries:
        if e.is_dir or e.expanded_from:
            continue
        parts = e.path.split("/")[:-1]
        m = _SITE_RE.match(e.path)
        root = 4 if m else (1 if parts and parts[0] == "python" else 0)
        for depth in (root, root + 1, root + 2):
            if depth >= 1 and len(parts) >= depth:
                sizes[f"{e.origin}:{'/'.join(parts[:depth])}/"] += e.size
    ranked = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:top]


def _record_findings(state: CheckState, record: bool) -> list[Finding]:
    findings: list[Finding] = []
    if not record:
        return findings
    dists = [d for d in state.dists if not d.vendored]
    claimed: set[str] = set()
    for d in state.dists:
        claimed.update(d.record)
    for d in dists:
        bad: list[str] = []
        missing: list[str] = []
        for path, (digest, size) in sorted(d.record.items()):
            entry = state.files.get(path)
            if entry is None:
                if path.endswith(".pyc") or not path.startswith(d.site):
                    continue
                missing.append(path)
                continue
            if entry.is_symlink or entry.is_dir:
                continue
            if size and size.isdigit() and int(size) != entry.size:
                bad.append(path)
                continue
            got = state.digests.get(path)
            if digest and got is not None and got != digest:
                bad.append(path)
        label = f"{d.name} {d.version}".strip()
        rel = [posixpath.relpath(p, d.site) for p in bad]
        if bad:
            findings.append(_finding(
                "record-mismatch", f"{d.origin}:{_rel_in_zip(d.dist_info, d.origin, state)}",
                f"{label}: {len(bad)} file(s) differ from RECORD (first: {rel[0]}); the "
                "layer was modified after install or is corrupt", files=rel[:100],
                kind="hash",
            ))
        if missing:
            mrel = [posixpath.relpath(p, d.site) for p in missing]
            findings.append(_finding(
                "record-mismatch", f"{d.origin}:{_rel_in_zip(d.dist_info, d.origin, state)}",
                f"{label}: {len(missing)} file(s) listed in RECORD are missing "
                f"(first: {mrel[0]}); slimmed without updating RECORD?", severity=WARNING,
                files=mrel[:100], kind="missing",
            ))
    # files in a distribution's top-level packages that no RECORD lists
    tops: dict[str, set[str]] = defaultdict(set)
    for d in dists:
        for path in d.record:
            if path.startswith(d.site + "/"):
                first = path[len(d.site) + 1 :].split("/", 1)
                if len(first) == 2 and not first[0].endswith((".dist-info", ".data")):
                    tops[d.site].add(first[0])
    unrecorded: dict[str, list[str]] = defaultdict(list)
    for path, entry in state.files.items():
        if entry.is_dir or path in claimed or path.endswith(".pyc"):
            continue
        site = posixpath.dirname(path)
        while site and site != "/" and site not in tops:
            site = posixpath.dirname(site)
        if site in tops:
            top = path[len(site) + 1 :].split("/", 1)[0]
            if top in tops[site]:
                unrecorded[site].append(path[len(site) + 1 :])
    for site, paths in sorted(unrecorded.items()):
        findings.append(_finding(
            "record-mismatch", site,
            f"{len(paths)} file(s) under {site} belong to no RECORD (first: {sorted(paths)[0]})",
            severity=WARNING, files=sorted(paths)[:100], kind="unrecorded",
        ))
    return findings


def _rel_in_zip(abs_path: str, origin: str, state: CheckState) -> str:
    for e in state.entries:
        if e.origin == origin:
            return posixpath.relpath(abs_path, e.mount)
    return abs_path


def _size_findings(state: CheckState) -> tuple[list[Finding], SizeReport]:
    q = quotas()
    findings: list[Finding] = []
    per_zip: dict[str, int] = defaultdict(int)
    for e in state.entries:
        if not e.is_dir and not e.expanded_from:
            per_zip[e.origin] += e.size
    total = sum(per_zip.values())
    if total > q.unzipped:
        findings.append(_finding(
            "unzipped-too-large", ", ".join(per_zip),
            f"function + layers unzip to {total:,} bytes; Lambda allows {q.unzipped:,} "
            "(slim it, use a packed layer, or a container image)", size=total,
            limit=q.unzipped,
        ))
    for path, zipped in state.zip_sizes:
        if zipped > q.direct_upload_zipped:
            findings.append(_finding(
                "zipped-over-direct-upload", path,
                f"{zipped:,} bytes zipped is over the {q.direct_upload_zipped:,}-byte direct "
                "upload limit: upload it through S3", size=zipped,
                limit=q.direct_upload_zipped,
            ))
    if len(state.layers) > q.layers_per_function:
        findings.append(_finding(
            "too-many-layers", ", ".join(state.layers),
            f"{len(state.layers)} layers; a function can use at most {q.layers_per_function}",
        ))
    report = SizeReport(
        zipped=tuple(state.zip_sizes), unzipped=tuple(per_zip.items()), unzipped_total=total,
        unzipped_limit=q.unzipped, direct_upload_limit=q.direct_upload_zipped,
        layers=len(state.layers), layers_limit=q.layers_per_function,
        largest_dirs=tuple(_largest_dirs(state.entries)),
    )
    return findings, report


def _symlink_findings(state: CheckState) -> list[Finding]:
    findings = []
    for path, target in sorted(state.symlinks.items()):
        entry = state.files[path]
        if target.startswith("/"):
            resolved = posixpath.normpath(target)
        else:
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        mount = entry.mount.rstrip("/") + "/"
        if not resolved.startswith(mount):
            severity = ERROR if not target.startswith("/") else WARNING
            findings.append(_finding(
                "unsafe-path", entry.label,
                f"symlink {entry.path} -> {target} points outside {entry.mount}",
                severity=severity, target=target,
            ))
    return findings


# -- per target ------------------------------------------------------------------------------------


def _sys_path(target: Target, state: CheckState) -> list[str]:
    x = target.python_str
    dirs = [d.replace("{X}", x) for d in facts()["layer"]["sys_path"]]
    return [*state.extra_sys_path, *dirs]


def _runtime_provides(target: Target) -> set[str]:
    if target.runtime.python is None:
        return set()
    return {str(canonicalize_name(n)) for n in facts()["layer"]["runtime_packages"]}


def _version_str(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _judge_target(state: CheckState, target: Target) -> list[Finding]:
    findings: list[Finding] = []
    py = target.python
    sys_path = _sys_path(target, state)

    pre = _precompute(state)
    # layout: python/lib/python3.Y for another Y
    for (origin, pdir, ver), n in sorted(pre.site_dirs.items()):
        if ver == py:
            continue
        findings.append(_finding(
            "wrong-python-dir", f"{origin}:{pdir}",
            f"{pdir} ({n} files) is invisible to CPython {target.python_str}: use "
            f"python/lib/python{target.python_str}/site-packages/ or python/", files=n,
        ))
    # extension modules and __pycache__ for another Python
    for path, e, ver, flags, plat in pre.extensions:
        if not _on_sys_path(path, sys_path):
            continue
        if ver != py or flags or plat != f"{target.machine}-linux-gnu":
            findings.append(_finding(
                "abi-mismatch", e.label,
                f"{posixpath.basename(path)} is built for cpython-{ver[0]}{ver[1]}{flags}"
                f"-{plat}; {target.label} imports only "
                f"cpython-{py[0]}{py[1]}-{target.machine}-linux-gnu",
            ))
    for (origin, impl, ver), n in sorted(pre.pycs.items()):
        if impl == "cpython" and ver == py:
            continue
        findings.append(_finding(
            "foreign-pycache", f"{origin}:__pycache__",
            f"{n} .pyc files for {impl}-{ver[0]}{ver[1]} are dead weight on CPython "
            f"{target.python_str}", files=n,
        ))
    # distributions visible to this target
    visible = [d for d in state.dists if d.site in sys_path and not d.vendored]
    installed: dict[str, DistInfo] = {}
    for d in reversed(visible):  # earlier sys.path entries win
        installed[d.key] = d
    for d in sorted(installed.values(), key=lambda d: d.key):
        findings.extend(_tag_findings(d, target, state))
        findings.extend(_dep_findings(d, target, installed, _dist_label(d, state)))
    findings.extend(_elf_findings(state, target))
    return findings


@dataclass
class _Pre:
    site_dirs: dict[tuple[str, str, tuple[int, int]], int]
    extensions: list[tuple[str, LayerEntry, tuple[int, int], str, str]]
    pycs: dict[tuple[str, str, tuple[int, int]], int]
    names: dict[str, list[str]]
    resolved: dict[tuple[str, str], str | None]


def _precompute(state: CheckState) -> _Pre:
    """Per-file facts every target needs, computed once (cached on the state)."""
    cached = state.cache.get("pre")
    if isinstance(cached, _Pre):
        return cached
    site_dirs: dict[tuple[str, str, tuple[int, int]], int] = defaultdict(int)
    for e in state.entries:
        if e.is_dir or e.mount != LAYER_MOUNT or not e.path.startswith("python/lib/"):
            continue
        m = _SITE_RE.match(e.path)
        if m:
            ver = (int(m.group(1)), int(m.group(2)))
            site_dirs[(e.origin, f"python/lib/python{ver[0]}.{ver[1]}/", ver)] += 1
    extensions = []
    pycs: dict[tuple[str, str, tuple[int, int]], int] = defaultdict(int)
    names: dict[str, list[str]] = defaultdict(list)
    for path, e in state.files.items():
        base = posixpath.basename(path)
        names[base].append(path)
        if base.endswith(".pyc"):
            pm = _PYC_RE.search(base)
            if pm:
                pycs[(e.origin, pm.group(1), (int(pm.group(2)), int(pm.group(3))))] += 1
        elif base.endswith(".so"):
            ext = _EXT_RE.search(base)
            if ext:
                extensions.append((path, e, (int(ext.group(1)), int(ext.group(2))),
                                   ext.group(3), ext.group(4)))
    pre = _Pre(site_dirs=dict(site_dirs), extensions=extensions, pycs=dict(pycs),
               names=dict(names), resolved={})
    state.cache["pre"] = pre
    return pre


def _on_sys_path(path: str, sys_path: Sequence[str]) -> bool:
    return any(path.startswith(d.rstrip("/") + "/") for d in sys_path)


def _dist_label(d: DistInfo, state: CheckState) -> str:
    return f"{d.origin}:{_rel_in_zip(d.dist_info, d.origin, state)}"


def _tag_findings(d: DistInfo, target: Target, state: CheckState) -> list[Finding]:
    if not d.tags:
        return []
    reasons: list[str] = []
    name = re.sub(r"[-_.]+", "_", d.name) or "x"
    for tag in d.tags:
        try:
            verdict = evaluate(f"{name}-0-{tag}.whl", target)
        except InvalidWheelFilename:
            continue
        if verdict.compatible:
            return []
        reasons.extend(r for r in verdict.reasons if r not in reasons)
    if not reasons:
        return []
    return [_finding(
        "tag-incompatible", _dist_label(d, state),
        f"{d.name} {d.version} is tagged {', '.join(d.tags)}: {reasons[0]}",
        tags=list(d.tags), reasons=reasons,
    )]


def _dep_findings(d: DistInfo, target: Target, installed: dict[str, DistInfo],
                  label: str) -> list[Finding]:
    out: list[Finding] = []
    env = target.marker_environment()
    provided = _runtime_provides(target)
    for text in d.requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None:
            try:
                if not req.marker.evaluate({**env, "extra": ""}):
                    continue
            except (InvalidMarker, UndefinedEnvironmentName):
                continue
        key = str(canonicalize_name(req.name))
        have = installed.get(key)
        if have is None:
            if key in provided:
                continue
            out.append(_finding(
                "missing-dependency", label,
                f"{d.name} {d.version} requires {req}, which is in no layer"
                + ("" if target.runtime.python is None else " nor the runtime"),
                requirement=str(req), dist=d.name,
            ))
            continue
        if req.specifier and have.version:
            try:
                ok = req.specifier.contains(Version(have.version), prereleases=True)
            except InvalidVersion:
                ok = True
            if not ok:
                out.append(_finding(
                    "missing-dependency", label,
                    f"{d.name} {d.version} requires {req}; the layer has "
                    f"{have.name} {have.version}", requirement=str(req), dist=d.name,
                    found=have.version,
                ))
    return out


def _library_dirs(state: CheckState) -> list[str]:
    return [*state.extra_library_path, *facts()["layer"]["ld_library_path"]]


def _expand_origin(p: str, origin_dir: str) -> str:
    return posixpath.normpath(p.replace("${ORIGIN}", origin_dir).replace("$ORIGIN", origin_dir))


def _resolve_library(lib: str, path: str, info: ELFInfo, state: CheckState,
                     target: Target) -> str | None:
    """Where ``lib`` (a NEEDED entry of ``path``) is found: an absolute path, "system", or None."""
    if target.runtime.python is not None and lib.startswith(f"libpython{target.python_str}.so"):
        return "system"  # /var/lang/lib/libpython3.X.so.1.0 of the python3.X runtimes
    resolved = _precompute(state).resolved
    key = (lib, path)
    if key not in resolved:
        resolved[key] = _search_library(lib, path, info, state)
    return resolved[key]


def _search_library(lib: str, path: str, info: ELFInfo, state: CheckState) -> str | None:
    system = set(facts()["system_libraries"]["names"])
    origin_dir = posixpath.dirname(path)
    if "/" in lib:
        p = _expand_origin(lib if lib.startswith("/") else posixpath.join(origin_dir, lib),
                           origin_dir)
        return p if p in state.files else None
    dirs: list[str] = []
    if not info.runpath:
        dirs += [_expand_origin(p, origin_dir) for p in info.rpath]
    dirs += _library_dirs(state)
    dirs += [_expand_origin(p, origin_dir) for p in info.runpath]
    for d in dirs:
        candidate = posixpath.join(d, lib)
        if candidate in state.files:
            return candidate
    if lib in system:
        return "system"
    if lib in facts()["system_libraries"].get("unconfirmed", {}):
        return UNCONFIRMED_SYSTEM
    return None


def _elf_findings(state: CheckState, target: Target) -> list[Finding]:
    out: list[Finding] = []
    rt = target.runtime
    pre = _precompute(state)
    names_in_layer = pre.names
    for path, info in sorted(state.elves.items()):
        entry = state.files.get(path)
        if entry is None:
            continue
        label = entry.label
        if info.machine != target.machine:
            out.append(_finding(
                "elf-arch-mismatch", label,
                f"{entry.path} is {info.machine} code; {target.label} runs {target.machine}",
                machine=info.machine,
            ))
            continue  # nothing else about it matters on this target
        if info.type not in ("DYN", "EXEC"):
            continue
        # which library each version need comes from: system or a bundled copy
        by_file: dict[str, list[str]] = defaultdict(list)
        for need in info.version_needs:
            by_file[need.file].append(need.name)
        glibc_need: tuple[int, ...] | None = None
        cxx_need: list[str] = []
        for lib, names in by_file.items():
            where = _resolve_library(lib, path, info, state, target)
            if where not in (None, "system", UNCONFIRMED_SYSTEM):
                continue  # a bundled copy; its own needs are checked where it lies
            for n in names:
                if n.startswith("GLIBC_") and n[6:7].isdigit():
                    v = tuple(int(x) for x in n[6:].split("."))
                    if v > rt.glibc and (glibc_need is None or v > glibc_need):
                        glibc_need = v
                elif n.startswith("GLIBCXX_") and n[8:9].isdigit():
                    v = tuple(int(x) for x in n[8:].split("."))
                    if v > rt.glibcxx:
                        cxx_need.append(n)
                elif n.startswith("CXXABI_") and n[7:8].isdigit():
                    v = tuple(int(x) for x in n[7:].split("."))
                    if v > rt.cxxabi:
                        cxx_need.append(n)
        if glibc_need is not None:
            out.append(_finding(
                "glibc-too-new", label,
                f"{entry.path} needs GLIBC_{_version_str(glibc_need)}; {rt.name} on "
                f"{rt.os_short} has glibc {rt.glibc_str}", needs=_version_str(glibc_need),
                has=rt.glibc_str,
            ))
        if cxx_need:
            worst = max(cxx_need, key=lambda n: tuple(int(x) for x in n.split("_", 1)[1]
                                                       .split(".")))
            out.append(_finding(
                "glibcxx-too-new", label,
                f"{entry.path} needs {worst}; {rt.name} has up to GLIBCXX_{rt.glibcxx_str} / "
                f"CXXABI_{rt.cxxabi_str}", needs=sorted(set(cxx_need)),
            ))
        missing = []
        assumed = []
        for lib in info.needed:
            where = _resolve_library(lib, path, info, state, target)
            if where is None:
                missing.append(lib)
            elif where == UNCONFIRMED_SYSTEM:
                assumed.append(lib)
        notes = facts()["system_libraries"].get("unconfirmed", {})
        for lib in assumed:
            out.append(_finding(
                "unconfirmed-system-library", label,
                f"{entry.path} needs {lib}, not in the layers; {notes[lib]}",
                libraries=[lib],
            ))
        if missing:
            elsewhere = {lib: names_in_layer[lib][:3] for lib in missing if lib in names_in_layer}
            hint = ""
            if elsewhere:
                lib, spots = next(iter(elsewhere.items()))
                hint = f" ({lib} is in the layer at {spots[0]} but not on the search path)"
            base = posixpath.basename(path)
            library = bool(_SO_RE.search(base)) or ".so." in base
            out.append(_finding(
                "missing-shared-library", label,
                f"{entry.path} needs {', '.join(missing)}, found neither in the layers nor "
                f"on the {rt.os_short} image{hint}"
                + ("" if library else " (an executable: fails only when run)"),
                severity=ERROR if library else WARNING, libraries=missing,
            ))
    return out


# -- the entry point ---------------------------------------------------------------------------


def _targets(runtime: str | None, arch: str | None, python: str | None) -> tuple[list[Target],
                                                                                  bool]:
    if runtime is not None:
        return [make_target(runtime, arch or "x86_64", python)], True
    py = None
    if python is not None:
        from ..targets import parse_python

        py = parse_python(python)
    targets = all_targets(provided_python=py)
    if arch is not None:
        a = normalize_arch(arch)
        targets = [t for t in targets if t.arch == a]
    return targets, False


def _first_reason(findings: Sequence[Finding]) -> str | None:
    order = {c: i for i, c in enumerate(CODES)}
    errors = [f for f in findings if f.severity == ERROR]
    if not errors:
        return None
    first = min(errors, key=lambda f: order.get(f.code, len(order)))
    return f"{first.code}: {first.message}"


def check(
    paths: Sequence[str | Path],
    *,
    runtime: str | None = None,
    arch: str | None = None,
    python: str | None = None,
    ignore: Iterable[str] = (),
    record: bool = True,
    function: str | Path | None = None,
    workers: int | None = None,
) -> CheckReport:
    """Check zips that make one Lambda deployment; never extracts anything to disk.

    ``runtime`` (+ ``arch``, ``python``) checks one target; without ``runtime`` every
    non-deprecated runtime × architecture is judged (``provided.*`` too when ``python`` is
    given; only ``arch`` when given). ``ignore`` drops finding codes. ``record=False`` skips
    RECORD hashing (ELF files are still read). ``function`` names the function zip (mounted
    at ``/var/task``); by default the first of several zips without a ``python/`` directory
    is taken as the function. Raises :class:`ArchiveError` for unreadable zips.
    """
    t0 = time.perf_counter()
    if not paths:
        raise InputError("check: name at least one zip file")
    ignored = tuple(sorted(set(ignore)))
    unknown = [c for c in ignored if c not in CODES]
    if unknown:
        raise InputError(f"unknown finding code(s) {', '.join(unknown)}; known: {', '.join(CODES)}")
    targets, single = _targets(runtime, arch, python)
    readers: list[ZipReader] = []
    try:
        entries: list[LayerEntry] = []
        generic: list[Finding] = []
        layers: list[str] = []
        function_label: str | None = None
        zip_sizes: list[tuple[str, int]] = []
        fn_path = str(function) if function is not None else None
        all_paths = [str(p) for p in paths]
        if fn_path is not None and fn_path not in all_paths:
            all_paths.insert(0, fn_path)
        for i, p in enumerate(all_paths):
            reader = ZipReader(p)
            readers.append(reader)
            safe, problems = _archive_checks(reader, p)
            generic.extend(problems)
            zip_sizes.append((p, reader.size))
            is_fn = p == fn_path or (fn_path is None and i == 0 and len(all_paths) > 1
                                     and _is_function_zip(reader.members))
            mount = FUNCTION_MOUNT if is_fn else LAYER_MOUNT
            if is_fn:
                function_label = p
            else:
                layers.append(p)
            entries.extend(_zip_entries(reader, safe, p, mount, i))
        extra_sys: list[str] = []
        extra_lib: list[str] = []
        if EXPANDERS:
            more: list[LayerEntry] = []
            for e in entries:
                for expander in EXPANDERS:
                    exp = expander(e)
                    if exp is not None:
                        more.extend(exp.entries)
                        extra_sys.extend(exp.sys_path)
                        extra_lib.extend(exp.library_path)
            entries.extend(more)
        files: dict[str, LayerEntry] = {}
        for e in entries:  # in input order: later layers override earlier ones
            if not e.is_dir:
                files[e.abs_path] = e
        state = CheckState(entries=entries, files=files, layers=layers,
                           function=function_label, dists=[], elves={}, digests={},
                           symlinks={}, extra_sys_path=extra_sys, extra_library_path=extra_lib,
                           generic=generic, zip_sizes=zip_sizes)
        for path, e in files.items():
            if e.is_symlink and e.size < 4096:
                with e.open() as f:
                    state.symlinks[path] = f.read().decode("utf-8", "replace")
        state.dists = _load_dists(files)
        _mark_vendored(state.dists)
        _scan_contents(state, record, workers)
        generic.extend(_layout_findings(entries))
        generic.extend(_symlink_findings(state))
        generic.extend(_record_findings(state, record))
        size_findings, sizes = _size_findings(state)
        generic.extend(size_findings)
        for extra in EXTRA_CHECKS:
            generic.extend(extra(state, None))
        generic = [f for f in generic if f.code not in ignored]
        verdicts = []
        for t in targets:
            own = _judge_target(state, t)
            for extra in EXTRA_CHECKS:
                own.extend(extra(state, t))
            own = [f for f in own if f.code not in ignored]
            all_f = _dedupe([*generic, *own])
            reason = _first_reason(all_f)
            verdicts.append(TargetVerdict(
                target=t.label, runtime=t.runtime.name, arch=t.arch, python=t.python_str,
                works=reason is None, reason=reason, findings=tuple(_sorted(all_f)),
            ))
        findings = verdicts[0].findings if single and verdicts else tuple(_sorted(generic))
        dists = tuple(
            {"name": d.name, "version": d.version, "path": _dist_label(d, state)}
            for d in state.dists
        )
        return CheckReport(
            paths=tuple(all_paths), single_target=single, findings=tuple(findings),
            verdicts=tuple(verdicts), sizes=sizes, distributions=dists,
            elf_files=len(state.elves), members=len(entries), bytes_read=state.bytes_read,
            record_checked=record, inflate=inflate_backend(),
            seconds=time.perf_counter() - t0, ignored=ignored,
        )
    finally:
        for r in readers:
            r.close()


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for f in findings:
        key = (f.code, f.path, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _sorted(findings: Iterable[Finding]) -> list[Finding]:
    sev = {ERROR: 0, WARNING: 1, INFO: 2}
    order = {c: i for i, c in enumerate(CODES)}
    return sorted(findings, key=lambda f: (sev.get(f.severity, 3),
                                           order.get(f.code, len(order)), f.path))


def _scan_contents(state: CheckState, record: bool, workers: int | None) -> None:
    """Hash RECORD-listed files and parse ELF files, largest first, on a thread pool."""
    algos: dict[str, str] = {}
    if record:
        for d in state.dists:
            if d.vendored:
                continue
            for path, (digest, _size) in d.record.items():
                if "=" in digest:
                    algo = digest.split("=", 1)[0]
                    if algo in hashlib.algorithms_guaranteed:
                        algos[path] = algo
    jobs: list[tuple[LayerEntry, str | None]] = []
    for path, e in state.files.items():
        if e.is_dir or e.is_symlink or e.size == 0:
            continue
        want = algos.get(path)
        if want is None and not _elf_candidate(e):
            continue
        jobs.append((e, want))
    small: dict[int, list[tuple[LayerEntry, str | None]]] = defaultdict(list)
    readers: dict[int, ZipReader] = {}
    big: list[tuple[LayerEntry, str | None]] = []
    for e, a in jobs:
        src = e.zip_source
        if src is not None and src[1].compressed_size <= SMALL_MEMBER and (
            src[1].file_size <= (SMALL_INFLATED if a is not None else SMALL_MEMBER)
        ):
            small[id(src[0])].append((e, a))
            readers[id(src[0])] = src[0]
        else:
            big.append((e, a))
    big.sort(key=lambda j: -j[0].size)
    tasks: list[Callable[[], list[_ScanResult]]] = []
    for e, a in big:
        tasks.append(lambda e=e, a=a: [_scan(e, a)])  # type: ignore[misc]
    for rid, group in small.items():
        group.sort(key=lambda j: j[0].zip_source[1].header_offset)  # type: ignore[index]
        for i in range(0, len(group), BATCH_MEMBERS):
            part = group[i : i + BATCH_MEMBERS]
            tasks.append(lambda r=readers[rid], part=part: _scan_batch(r, part))  # type: ignore[misc]
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


# Packed layers (torchwheel.packed): read the archive's members in memory, judge the /tmp need.
from ..packed import expand_packed_archive, packed_findings  # noqa: E402

EXPANDERS.append(expand_packed_archive)
EXTRA_CHECKS.append(packed_findings)
