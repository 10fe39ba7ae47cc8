"""Install wheels into a Lambda layer tree, slim and strip it, and write a reproducible zip.

The pipeline of :func:`build_layer` is

    resolve the closure (deps) → fetch each wheel → :class:`LayerTree.install` each wheel →
    :func:`slim` → :func:`strip` → :func:`compile_bytecode` (``--compile`` only) →
    :meth:`LayerTree.finalize` (RECORD files) →
    :func:`write_layer_zip` (tree → zip)

and each step is usable alone.

Installing follows ``installer`` (pypa/installer): the archive root and
``<name>.data/purelib|platlib`` go to ``site-packages``; ``__pycache__`` members are skipped;
every member must be listed in ``RECORD`` with a matching hash (checked while the bytes are
written); the ``.dist-info`` directory is kept with an ``INSTALLER`` file and a ``RECORD``
that lists what really was installed. Unlike ``installer``, ``.data/scripts``,
``.data/headers`` and ``.data/data`` are not installed (a layer has no ``bin/`` or
``include/`` that the runtime reads) and no bytecode is compiled by default (the host's
``.pyc`` would be wrong for another Python); :func:`compile_bytecode` (``build --compile``)
writes unchecked-hash ``.pyc`` files when the running CPython is the target's. Unsafe member
paths and symlinks leaving the tree raise :class:`~torchwheel.errors.ArchiveError`.

The zip is reproducible: members sorted by name, one fixed timestamp
(``SOURCE_DATE_EPOCH`` or 1980-01-01), modes 0644/0755, no extra fields. Members whose bytes
are exactly a wheel member's are copied compressed, straight from the wheel; everything else
is deflated in parallel chunks (pigz-style, each chunk primed with the previous 32 KiB).
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import csv
import hashlib
import io
import os
import posixpath
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import httpx
from packaging.utils import canonicalize_name

from .atomic import atomic_output
from .errors import ArchiveError, InputError, TorchwheelError
from .targets import Target, quotas
from .verdict import parse_wheel
from .zipread import ZIP_DEFLATED, ZIP_STORED, ZipMember, ZipReader, is_unsafe_name

__all__ = [
    "LAYOUTS",
    "DistInfo",
    "LayerReport",
    "LayerTree",
    "OlderRelease",
    "PackageSize",
    "QuotaCheck",
    "RawSource",
    "SlimRule",
    "StepResult",
    "ZipResult",
    "build_layer",
    "check_compile_target",
    "compile_bytecode",
    "compress_backend",
    "find_older_release",
    "layer_prefix",
    "slim",
    "slim_rule_for",
    "slim_rules",
    "strip",
    "write_layer_zip",
    "zip_date_time",
]

LAYOUTS = ("site-packages", "python")
INSTALLER_NAME = b"torchwheel\n"
DEFAULT_COMPRESSLEVEL = 6
_CHUNK = 1 << 20
_DEFLATE_CHUNK = 4 << 20  # unit of parallel compression
_DICT = 32 * 1024  # deflate window: each chunk is primed with the previous 32 KiB


def layer_prefix(target: Target, layout: str = "site-packages") -> str:
    """Directory inside the layer that Python imports from: ``python/lib/python3.X/site-packages``
    (``layout="site-packages"``) or ``python`` (``layout="python"``)."""
    if layout == "site-packages":
        return target.site_packages
    if layout == "python":
        return "python"
    raise InputError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")


def _record_hash(digest: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# ---------------------------------------------------------------------------------------------
# the tree
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawSource:
    """Where a tree file's compressed bytes can be copied from: one member of one wheel."""

    wheel: Path
    member: ZipMember


@dataclass
class TreeFile:
    """One file of the layer tree (``rel`` is relative to the tree root, ``/``-separated)."""

    rel: str
    record_path: str  # as written in RECORD (relative to the site directory)
    dist: str  # canonical name of the distribution that owns it
    size: int
    hash: str  # RECORD form: sha256=<urlsafe b64>
    executable: bool
    raw: RawSource | None = None  # set while the bytes are still exactly the wheel member's
    symlink: str | None = None
    virtual: bool = False  # verified but not written to disk: zipped straight from ``raw``


@dataclass
class DistInfo:
    """One installed distribution."""

    name: str  # canonical
    display_name: str
    version: str
    wheel: Path
    dist_info: str  # directory name, relative to the site directory
    requested: bool = True
    files: dict[str, None] = field(default_factory=dict)  # record paths, install order
    notes: list[str] = field(default_factory=list)
    wheel_bytes: int = 0
    source_url: str | None = None
    sha256: str | None = None


class LayerTree:
    """A layer tree on disk (``root``) plus what torchwheel knows about each file.

    ``prefix`` is the site directory inside the tree (see :func:`layer_prefix`).
    """

    def __init__(
        self,
        root: Path,
        prefix: str,
        *,
        workers: int | None = None,
        slim: bool = False,
        materialize: Callable[[str], bool] | None = None,
    ) -> None:
        self.root = Path(root)
        #: which RECORD paths must exist on disk (None: all). The others are hash-checked
        #: while streaming and zipped straight from the wheel (see :meth:`virtual_files`).
        self.materialize = materialize
        #: apply the ``--slim`` rules while installing (files never reach the disk)
        self.slim_on_install = slim
        #: rule name → [files, bytes] left out by ``slim_on_install``
        self.slimmed: dict[str, list[int]] = {}
        self.prefix = prefix.strip("/")
        self.site = self.root / self.prefix
        self.files: dict[str, TreeFile] = {}  # by record path
        self.dists: dict[str, DistInfo] = {}
        self.notes: list[str] = []
        self.workers = workers or max(2, os.cpu_count() or 2)
        self.site.mkdir(parents=True, exist_ok=True)

    # -- install -------------------------------------------------------------------------------

    def install(
        self,
        wheel: Path,
        *,
        requested: bool = True,
        source_url: str | None = None,
        sha256: str | None = None,
    ) -> DistInfo:
        """Install one wheel as ``installer`` would (see the module docstring)."""
        wheel = Path(wheel)
        parsed = parse_wheel(wheel.name)
        try:
            zr = ZipReader(wheel)
        except ArchiveError as exc:
            reason = str(exc).removeprefix(f"{wheel}: ")
            raise ArchiveError(f"{wheel}: not a readable wheel ({reason})") from None
        with zr:
            members = [m for m in zr.members if not m.is_dir]
            label = wheel.name
            for m in members:  # refuse an unsafe archive before reading anything from it
                if is_unsafe_name(m.name) or "\\" in m.name:
                    raise ArchiveError(f"{label}: unsafe member path {m.name!r}")
            dist_info = _dist_info_dir(members, parsed.name, label)
            by_name = {m.name: m for m in members}
            wheel_meta = _parse_headers(
                _read_member(zr, by_name, f"{dist_info}/WHEEL", label), label, "WHEEL"
            )
            wv = (wheel_meta.get("Wheel-Version") or "").strip()
            if not wv.startswith("1."):
                raise ArchiveError(f"{label}: unsupported Wheel-Version {wv!r} (need 1.x)")
            metadata = _parse_headers(
                _read_member(zr, by_name, f"{dist_info}/METADATA", label), label, "METADATA"
            )
            record_rows = _read_record(
                _read_member(zr, by_name, f"{dist_info}/RECORD", label), label
            )
            name = canonicalize_name(parsed.name)
            dist = DistInfo(
                name=str(name),
                display_name=(metadata.get("Name") or parsed.name).strip(),
                version=(metadata.get("Version") or str(parsed.version)).strip(),
                wheel=wheel,
                dist_info=dist_info,
                requested=requested,
                wheel_bytes=wheel.stat().st_size,
                source_url=source_url,
                sha256=sha256,
            )
            if dist.name in self.dists:
                raise InputError(f"{label}: {dist.name} is already installed in this layer")
            data_dir = dist_info[: -len(".dist-info")] + ".data"
            record_file = f"{dist_info}/RECORD"
            jobs: list[tuple[ZipMember, str, str | None]] = []  # member, record path, expected
            dropped: dict[str, list[str]] = {}
            for m in members:
                if m.name == record_file:
                    continue
                expected = record_rows.pop(m.name, None)
                is_sig = m.name in (f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s")
                if expected is None and not is_sig:
                    raise ArchiveError(f"{label}: {m.name} is not listed in RECORD")
                parts = m.name.split("/")
                if "__pycache__" in parts[:-1]:
                    dropped.setdefault("__pycache__", []).append(m.name)
                    continue
                if parts[0] == data_dir:
                    if len(parts) < 3:
                        raise ArchiveError(
                            f"{label}: {m.name} is not in a valid .data subdirectory"
                        )
                    scheme = parts[1]
                    if scheme in ("purelib", "platlib"):
                        dest = "/".join(parts[2:])
                    elif scheme in ("scripts", "headers", "data"):
                        dropped.setdefault(scheme, []).append("/".join(parts[2:]))
                        continue
                    else:
                        raise ArchiveError(
                            f"{label}: {m.name} is not in a valid .data subdirectory"
                        )
                else:
                    dest = m.name
                if dest.endswith(".whl"):
                    dropped.setdefault("wheel files", []).append(dest)
                    continue
                digest = expected[0] if expected else None
                if expected and (not digest or not digest.startswith("sha256=")):
                    raise ArchiveError(
                        f"{label}: RECORD has no sha256 hash for {m.name} ({digest or 'empty'})"
                    )
                if self.slim_on_install:
                    rule = slim_rule_for(dest)
                    if rule is not None:
                        counts = self.slimmed.setdefault(rule.name, [0, 0])
                        counts[0] += 1
                        counts[1] += m.file_size
                        continue
                jobs.append((m, dest, digest))
            self._extract(zr, wheel, jobs, dist, label)
            eps = _console_scripts(zr, by_name.get(f"{dist_info}/entry_points.txt"))
        for scheme, paths in sorted(dropped.items()):
            what = {
                "scripts": "scripts (.data/scripts) not installed: a layer puts nothing on PATH "
                "for Python",
                "headers": "C headers (.data/headers) not installed",
                "data": "data files (.data/data) not installed: they belong outside site-packages",
                "__pycache__": "__pycache__ members skipped (no bytecode in a layer)",
                "wheel files": "nested .whl files skipped",
            }[scheme]
            shown = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
            dist.notes.append(f"{dist.display_name}: {len(paths)} {what} ({shown})")
        if eps:
            shown = ", ".join(eps[:4]) + (", ..." if len(eps) > 4 else "")
            dist.notes.append(
                f"{dist.display_name}: {len(eps)} console script(s) not generated ({shown}); "
                "call them with python -m"
            )
        self.dists[dist.name] = dist
        self.notes.extend(dist.notes)
        return dist

    def _extract(
        self,
        zr: ZipReader,
        wheel: Path,
        jobs: list[tuple[ZipMember, str, str | None]],
        dist: DistInfo,
        label: str,
    ) -> None:
        # directories first (single-threaded), then members in parallel, biggest first
        dirs = {posixpath.dirname(dest) for _, dest, _ in jobs}
        for d in sorted(dirs):
            if d:
                (self.site / d).mkdir(parents=True, exist_ok=True)
        site_real = os.path.realpath(self.site)
        root_real = os.path.realpath(self.root)
        for d in dirs:
            real = os.path.realpath(self.site / d)
            if real != site_real and not real.startswith(site_real + os.sep):
                raise ArchiveError(f"{label}: {d}/ resolves outside the layer tree")

        def one(job: tuple[ZipMember, str, str | None]) -> TreeFile:
            m, dest, expected = job
            path = self.site / dest
            mode = m.mode or 0
            if m.is_symlink:
                target = zr.read(m).decode("utf-8", "replace")
                resolved = posixpath.normpath(
                    posixpath.join(posixpath.dirname(f"{self.prefix}/{dest}"), target)
                )
                if target.startswith("/") or resolved.startswith("../") or resolved == "..":
                    raise ArchiveError(
                        f"{label}: {m.name} is a symlink to {target!r}, outside the layer tree"
                    )
                digest = hashlib.sha256(target.encode()).digest()
                if expected is not None and _record_hash(digest) != expected:
                    raise ArchiveError(f"{label}: {m.name}: hash does not match RECORD")
                if path.is_symlink() or path.exists():
                    path.unlink()
                os.symlink(target, path)
                real = os.path.realpath(path)
                if real != root_real and not real.startswith(root_real + os.sep):
                    path.unlink()
                    raise ArchiveError(
                        f"{label}: {m.name} is a symlink to {target!r}, outside the layer tree"
                    )
                return TreeFile(
                    rel=f"{self.prefix}/{dest}",
                    record_path=dest,
                    dist=dist.name,
                    size=len(target.encode()),
                    hash=_record_hash(digest),
                    executable=False,
                    symlink=target,
                )
            executable = bool(mode and stat.S_ISREG(mode) and mode & 0o111)
            raw = RawSource(wheel, m) if m.compress_type in (ZIP_STORED, ZIP_DEFLATED) else None
            virtual = raw is not None and self.materialize is not None and not self.materialize(
                dest)
            h = hashlib.sha256()
            size = 0
            if path.is_symlink() or (virtual and path.exists()):
                path.unlink()
            if virtual:
                for chunk in zr.iter_chunks(m):  # verify (CRC + RECORD) without writing
                    h.update(chunk)
                    size += len(chunk)
            else:
                with open(path, "wb") as out:
                    for chunk in zr.iter_chunks(m):
                        h.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                os.chmod(path, 0o755 if executable else 0o644)
            rh = _record_hash(h.digest())
            if expected is not None and rh != expected:
                if not virtual:
                    path.unlink()
                raise ArchiveError(
                    f"{label}: {m.name}: sha256 does not match RECORD (corrupt wheel)"
                )
            return TreeFile(
                rel=f"{self.prefix}/{dest}",
                record_path=dest,
                dist=dist.name,
                size=size,
                hash=rh,
                executable=executable,
                raw=raw,
                virtual=virtual,
            )

        ordered = sorted(jobs, key=lambda j: -j[0].compressed_size)
        with cf.ThreadPoolExecutor(self.workers) as pool:
            results = list(pool.map(one, ordered))
        by_dest = {tf.record_path: tf for tf in results}
        for _, dest, _ in jobs:  # wheel order, for RECORD
            tf = by_dest[dest]
            prev = self.files.get(dest)
            if prev is not None and prev.dist != dist.name:
                owner = self.dists[prev.dist]
                owner.files.pop(dest, None)
                dist.notes.append(
                    f"{dist.display_name}: {dest} overwrites the file of {owner.display_name}"
                )
            self.files[dest] = tf
            dist.files[dest] = None

    # -- edits ---------------------------------------------------------------------------------

    def remove(self, record_path: str) -> int:
        """Delete one file from the tree (and its RECORD row); returns the bytes freed."""
        tf = self.files.pop(record_path)
        self.dists[tf.dist].files.pop(record_path, None)
        if not tf.virtual:
            (self.site / record_path).unlink()
        return tf.size

    def prune_empty_dirs(self) -> int:
        """Remove directories left empty (after :meth:`remove`); returns how many."""
        removed = 0
        for dirpath, _dirs, _files in os.walk(self.site, topdown=False):
            p = Path(dirpath)
            if p != self.site and not any(p.iterdir()):
                p.rmdir()
                removed += 1
        return removed

    def refresh(self, record_path: str) -> None:
        """Re-hash a file changed in place (it is no longer a raw copy of the wheel member)."""
        tf = self.files[record_path]
        h = hashlib.sha256()
        size = 0
        with open(self.site / record_path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        tf.hash = _record_hash(h.digest())
        tf.size = size
        tf.raw = None

    def finalize(self) -> None:
        """Write each distribution's ``INSTALLER`` and ``RECORD`` for the files left."""
        for dist in self.dists.values():
            di = self.site / dist.dist_info
            di.mkdir(parents=True, exist_ok=True)
            inst_rel = f"{dist.dist_info}/INSTALLER"
            rec_rel = f"{dist.dist_info}/RECORD"
            (di / "INSTALLER").write_bytes(INSTALLER_NAME)
            os.chmod(di / "INSTALLER", 0o644)
            self.files[inst_rel] = TreeFile(
                rel=f"{self.prefix}/{inst_rel}",
                record_path=inst_rel,
                dist=dist.name,
                size=len(INSTALLER_NAME),
                hash=_record_hash(hashlib.sha256(INSTALLER_NAME).digest()),
                executable=False,
            )
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            for rp in dist.files:
                if rp in (inst_rel, rec_rel):
                    continue
                tf = self.files[rp]
                w.writerow((rp, tf.hash, tf.size))
            w.writerow((inst_rel, self.files[inst_rel].hash, self.files[inst_rel].size))
            w.writerow((rec_rel, "", ""))
            data = buf.getvalue().encode("utf-8")
            (di / "RECORD").write_bytes(data)
            os.chmod(di / "RECORD", 0o644)
            self.files[rec_rel] = TreeFile(
                rel=f"{self.prefix}/{rec_rel}",
                record_path=rec_rel,
                dist=dist.name,
                size=len(data),
                hash="",
                executable=False,
            )
            for rp in (inst_rel, rec_rel):
                dist.files[rp] = None

    def virtual_files(self) -> dict[str, tuple[RawSource, bool]]:
        """Tree-relative path → (wheel member, executable) for files not written to disk;
        pass them to :func:`write_layer_zip` (``virtual=``) with the tree."""
        out: dict[str, tuple[RawSource, bool]] = {}
        for tf in self.files.values():
            if tf.virtual and tf.raw is not None:
                out[tf.rel] = (tf.raw, tf.executable)
        return out

    def raw_sources(self) -> dict[str, RawSource]:
        """Tree-relative path → wheel member, for files still byte-identical to the member."""
        return {tf.rel: tf.raw for tf in self.files.values() if tf.raw is not None}

    def unzipped_bytes(self) -> int:
        """Sum of the sizes of every file in the tree."""
        return sum(tf.size for tf in self.files.values())


def _dist_info_dir(members: Sequence[ZipMember], name: str, label: str) -> str:
    tops = {m.name.split("/", 1)[0] for m in members if "/" in m.name}
    infos = sorted(t for t in tops if t.endswith(".dist-info"))
    if len(infos) != 1:
        raise ArchiveError(
            f"{label}: wheel must contain exactly one .dist-info directory (found "
            f"{', '.join(infos) or 'none'})"
        )
    di = infos[0]
    if canonicalize_name(di[: -len(".dist-info")].rsplit("-", 1)[0]) != canonicalize_name(name):
        raise ArchiveError(f"{label}: .dist-info directory {di} does not match the wheel name")
    return di


def _read_member(zr: ZipReader, by_name: Mapping[str, ZipMember], name: str, label: str) -> bytes:
    m = by_name.get(name)
    if m is None:
        raise ArchiveError(f"{label}: {name} is missing")
    return zr.read(m)


def _parse_headers(data: bytes, label: str, what: str) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(f"{label}: {what} is not UTF-8") from None
    msg = HeaderParser().parsestr(text)
    return {k: str(v) for k, v in msg.items()}


def _read_record(data: bytes, label: str) -> dict[str, tuple[str, str]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(f"{label}: RECORD is not UTF-8") from None
    rows: dict[str, tuple[str, str]] = {}
    for row in csv.reader(text.splitlines()):
        if not row:
            continue
        if len(row) != 3:
            raise ArchiveError(f"{label}: malformed RECORD row {','.join(row)!r}")
        rows[row[0]] = (row[1], row[2])
    return rows


def _console_scripts(zr: ZipReader, m: ZipMember | None) -> list[str]:
    if m is None:
        return []
    text = zr.read(m).decode("utf-8", "replace")
    names: list[str] = []
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif "=" in line and section in ("console_scripts", "gui_scripts"):
            names.append(line.split("=", 1)[0].strip())
    return names


# ---------------------------------------------------------------------------------------------
# slimming and stripping
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlimRule:
    """One slimming step: a name, what it removes, and the predicate on RECORD paths."""

    name: str
    description: str
    match: Callable[[str], bool]


_HEADER_RE = re.compile(r"\.(h|hh|hpp|hxx|cuh|inl)$", re.IGNORECASE)
_TEST_LIB_RE = re.compile(r"^torch/lib/lib[^/]*_test\.so(\.[0-9.]+)?$")


def slim_rules() -> list[SlimRule]:
    """The ``--slim`` steps, in the order they are applied (first match counts)."""
    return [
        SlimRule("torch/test", "torch's C++ test executables (torch/test/)",
                 lambda p: p.startswith("torch/test/")),
        SlimRule("torch/include", "C++ headers for building extensions (torch/include/)",
                 lambda p: p.startswith("torch/include/")),
        SlimRule(
            "torch/bin",
            "test binaries, protoc and test models in torch/bin/ (torch_shm_manager is kept)",
            lambda p: p.startswith("torch/bin/") and p != "torch/bin/torch_shm_manager",
        ),
        SlimRule("torch test libraries", "test-only libraries torch/lib/lib*_test.so",
                 lambda p: bool(_TEST_LIB_RE.match(p))),
        SlimRule(
            "caffe2 leftovers",
            "caffe2/ and CMake package files (caffe2, torch/share/cmake/)",
            lambda p: p.startswith(("caffe2/", "torch/share/cmake/")),
        ),
        SlimRule("static libraries", "static archives (*.a)", lambda p: p.endswith(".a")),
        SlimRule("headers", "C/C++ headers of compiled code (*.h, *.hpp, ...)",
                 lambda p: bool(_HEADER_RE.search(p))),
        SlimRule("type stubs", "type stubs (*.pyi)", lambda p: p.endswith(".pyi")),
        SlimRule("__pycache__", "bytecode caches (__pycache__/)",
                 lambda p: "__pycache__" in p.split("/")[:-1]),
    ]


@dataclass(frozen=True)
class StepResult:
    """What one slim/strip step did."""

    step: str
    description: str
    files: int
    bytes_saved: int
    applied: bool = True
    note: str | None = None
    bytes_added: int = 0  # what the step added (compile: the .pyc files)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "step": self.step,
            "description": self.description,
            "files": self.files,
            "bytes_saved": self.bytes_saved,
            "applied": self.applied,
            "note": self.note,
            "bytes_added": self.bytes_added,
        }


_RULES: list[SlimRule] | None = None


def slim_rule_for(record_path: str) -> SlimRule | None:
    """The first ``--slim`` rule that removes ``record_path`` (never a ``.dist-info`` file)."""
    global _RULES
    if record_path.split("/", 1)[0].endswith(".dist-info"):
        return None
    if _RULES is None:
        _RULES = slim_rules()
    for rule in _RULES:
        if rule.match(record_path):
            return rule
    return None


def _slim_plan(tree: LayerTree) -> list[tuple[SlimRule, list[str]]]:
    plan: list[tuple[SlimRule, list[str]]] = [(r, []) for r in slim_rules()]
    index = {r.name: hits for r, hits in plan}
    for rp in tree.files:
        rule = slim_rule_for(rp)
        if rule is not None:
            index[rule.name].append(rp)
    return plan


def slim(tree: LayerTree, *, dry_run: bool = False) -> list[StepResult]:
    """Apply the ``--slim`` rules (see :func:`slim_rules`); RECORD follows at finalize.

    With ``dry_run`` nothing is removed: the results say what would be saved.
    """
    results: list[StepResult] = []
    for rule, hits in _slim_plan(tree):
        if dry_run:
            saved = sum(tree.files[rp].size for rp in hits)
        else:
            saved = sum(tree.remove(rp) for rp in hits)
        before = tree.slimmed.get(rule.name, [0, 0])  # left out while installing
        results.append(StepResult(f"slim: {rule.name}", rule.description,
                                  len(hits) + before[0], saved + before[1],
                                  applied=not dry_run))
    if not dry_run:
        tree.prune_empty_dirs()
    return results


_SO_RE = re.compile(r"\.so(\.[0-9]+)*$")


def _parse_elf(path: Path) -> str | None:
    """The ELF machine of ``path`` when torchwheel's ELF reader parses it, else None."""
    from .elf import parse_elf

    try:
        with open(path, "rb") as f:
            return parse_elf(f, name=str(path)).machine
    except (InputError, OSError, ValueError, struct.error):
        return None


def strip(
    tree: LayerTree,
    *,
    strip_tool: str | None = None,
    workers: int | None = None,
) -> StepResult:
    """Run ``strip --strip-unneeded`` on the tree's shared objects (``*.so``, ``*.so.N``).

    Only files the ELF reader parses are touched; a file strip fails on, or that would not
    shrink, is left as it was. Without a ``strip`` program the step is skipped with a note.
    """
    tool = strip_tool or shutil.which("strip")
    desc = "strip --strip-unneeded on shared objects"
    if tool is None:
        return StepResult("strip", desc, 0, 0, applied=False,
                          note="no strip program found (install binutils); skipped")
    candidates = [
        rp for rp, tf in tree.files.items()
        if tf.symlink is None and _SO_RE.search(rp) and not rp.split("/", 1)[0].endswith(
            ".dist-info")
    ]
    machines = {rp: _parse_elf(tree.site / rp) for rp in candidates}
    not_elf = [rp for rp, mach in machines.items() if mach is None]
    todo = sorted((rp for rp, mach in machines.items() if mach is not None),
                  key=lambda rp: -tree.files[rp].size)
    failures: list[str] = []

    def one(rp: str) -> int:
        path = tree.site / rp
        before = tree.files[rp].size
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".strip-")
        os.close(fd)
        try:
            proc = subprocess.run(
                [tool, "--strip-unneeded", "-o", tmp, str(path)],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                failures.append(f"{rp}: {proc.stderr.strip().splitlines()[-1:] or ['failed']}")
                return 0
            after = os.path.getsize(tmp)
            if after >= before:
                return 0
            os.chmod(tmp, 0o755 if tree.files[rp].executable else 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        tree.refresh(rp)
        return before - tree.files[rp].size

    with cf.ThreadPoolExecutor(workers or tree.workers) as pool:
        saved = list(pool.map(one, todo))
    changed = sum(1 for s in saved if s > 0)
    notes = []
    if not_elf:
        notes.append(f"{len(not_elf)} file(s) not parsed as ELF, left alone")
    if failures:
        notes.append(f"strip failed on {len(failures)} file(s), left alone: {failures[0]}")
    return StepResult("strip", desc, changed, sum(saved), note="; ".join(notes) or None)


# ---------------------------------------------------------------------------------------------
# bytecode (--compile)
# ---------------------------------------------------------------------------------------------

#: the compiler worker: a fresh ``python -S -s`` reading ``[[source, pyc, dfile], ...]`` as JSON
#: on stdin, answering one JSON list (null: compiled; else why not). Plain subprocesses rather
#: than multiprocessing: nothing of the caller's ``__main__`` is re-imported.
#:
#: Reproducibility: marshal sets a reference flag on objects whose refcount is above 1 and
#: writes a string as interned when it is, so a ``.pyc`` can depend on the state of the process
#: that wrote it (bpo-34093). Each worker therefore starts from the same state (clean
#: environment, fixed hash seed, no site, the 256 one-character strings interned up front)
#: and compiles a fixed run of files, whatever the number of workers.
_COMPILE_CHUNK = 100  # files per worker process

_COMPILE_WORKER = r"""
import sys
del sys.path[0]  # -c puts the working directory first
for _i in range(256):
    sys.intern(chr(_i))
import json, py_compile
out = []
for src, pyc, dfile in json.load(sys.stdin):
    try:
        py_compile.compile(src, cfile=pyc, dfile=dfile, doraise=True, optimize=0,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError as exc:
        out.append(exc.exc_type_name + ": " + (str(exc.exc_value).splitlines() or [""])[0])
    else:
        out.append(None)
json.dump(out, sys.stdout)
"""


def check_compile_target(target: Target) -> None:
    """Raise :class:`InputError` unless this interpreter can write bytecode for ``target``:
    it must be CPython with the target's (major, minor) (``.pyc`` files are version-specific)."""
    import platform
    import sys

    impl = platform.python_implementation()
    here = sys.version_info[:2]
    if impl != "CPython" or here != tuple(target.python):
        raise InputError(
            f"--compile needs CPython {target.python_str} to write bytecode for {target.label}; "
            f"this is {impl} {here[0]}.{here[1]}"
        )


def _pyc_record_path(record_path: str, tag: str) -> str:
    head, _, name = record_path.rpartition("/")
    pyc = f"__pycache__/{name[:-3]}.{tag}.pyc"
    return f"{head}/{pyc}" if head else pyc


def _compile_chunk(jobs: list[tuple[str, str, str]]) -> list[str | None]:
    """Run one compiler worker on ``jobs``; per job None (compiled) or the reason it was not."""
    import json
    import sys

    env = {"PYTHONHASHSEED": "0", "PYTHONUTF8": "1", "PATH": os.environ.get("PATH", "")}
    proc = subprocess.run([sys.executable, "-S", "-s", "-c", _COMPILE_WORKER],
                          input=json.dumps(jobs), capture_output=True, text=True, check=False,
                          env=env, encoding="utf-8")
    try:
        res = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        res = None
    if not isinstance(res, list) or len(res) != len(jobs):
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise TorchwheelError(f"the bytecode compiler ({sys.executable}) failed: {last}")
    return [r if isinstance(r, str) else None for r in res]


def compile_bytecode(tree: LayerTree, target: Target, *, workers: int | None = None) -> StepResult:
    """Compile every ``.py`` of the tree into ``__pycache__/<name>.cpython-3XY.pyc`` and add
    each ``.pyc`` to its distribution's RECORD (as pip does).

    The ``.pyc`` files are unchecked-hash (PEP 552: no source mtime, never revalidated, so
    valid on a read-only ``/opt``), optimization level 0, and carry ``/opt/<tree path>`` as
    their file name: the bytes depend on the sources only. Files that fail to compile (Python 2
    syntax in test data, say) are skipped and counted in the note. Run it after :func:`slim`
    (which removes ``__pycache__``) and :func:`strip`; raises :class:`InputError` when the
    running interpreter is not the target's CPython (:func:`check_compile_target`).
    """
    check_compile_target(target)
    tag = f"cpython-{target.python[0]}{target.python[1]}"
    sources = sorted(
        rp for rp, tf in tree.files.items()
        if rp.endswith(".py") and tf.symlink is None and "__pycache__" not in rp.split("/")
        and not rp.split("/", 1)[0].endswith(".dist-info")
    )
    # a source left in its wheel (zip-only build) is written out to be compiled; it is still
    # zipped straight from the wheel
    virtual: dict[Path, list[str]] = {}
    for rp in sources:
        tf = tree.files[rp]
        if tf.virtual and tf.raw is not None and not (tree.site / rp).exists():
            virtual.setdefault(tf.raw.wheel, []).append(rp)
    for wheel, rps in virtual.items():
        with ZipReader(wheel) as zr:
            for rp in rps:
                path = tree.site / rp
                path.parent.mkdir(parents=True, exist_ok=True)
                raw = tree.files[rp].raw
                assert raw is not None
                path.write_bytes(zr.read(raw.member))
    jobs: list[tuple[str, str, str]] = []
    for rp in sources:
        pyc_rp = _pyc_record_path(rp, tag)
        if pyc_rp in tree.files:  # cannot happen after slim/install; never clobber a file
            continue
        (tree.site / pyc_rp).parent.mkdir(exist_ok=True)
        jobs.append((str(tree.site / rp), str(tree.site / pyc_rp), f"/opt/{tree.prefix}/{rp}"))
    nworkers = max(1, workers or tree.workers)
    # fixed runs of sorted files (see _COMPILE_WORKER); a process costs ~20 ms to start
    chunks = [jobs[i:i + _COMPILE_CHUNK] for i in range(0, len(jobs), _COMPILE_CHUNK)]
    with cf.ThreadPoolExecutor(nworkers) as pool:
        answers = list(pool.map(_compile_chunk, chunks))
    results: dict[str, str | None] = {}
    for chunk, answer in zip(chunks, answers, strict=True):
        for job, res in zip(chunk, answer, strict=True):
            results[job[0]] = res
    added = 0
    failed: list[str] = []
    done = 0
    for src, pyc, _ in jobs:
        rp = os.path.relpath(src, tree.site).replace(os.sep, "/")
        why = results[src]
        if why is not None:
            failed.append(f"{rp} ({why})")
            continue
        pyc_rp = os.path.relpath(pyc, tree.site).replace(os.sep, "/")
        os.chmod(pyc, 0o644)  # py_compile copies the source's mode
        data = Path(pyc).read_bytes()
        size, digest = len(data), _record_hash(hashlib.sha256(data).digest())
        owner = tree.files[rp].dist
        tree.files[pyc_rp] = TreeFile(rel=f"{tree.prefix}/{pyc_rp}", record_path=pyc_rp,
                                      dist=owner, size=size, hash=digest, executable=False)
        tree.dists[owner].files[pyc_rp] = None
        added += size
        done += 1
    tree.prune_empty_dirs()  # __pycache__ of sources that all failed
    note = None
    if failed:
        note = (f"{len(failed)} file(s) did not compile, left as source "
                f"(first: {failed[0]})")
    return StepResult("compile", f"bytecode for CPython {target.python_str} "
                      "(unchecked-hash .pyc, optimization 0)", done, 0, note=note,
                      bytes_added=added)


# ---------------------------------------------------------------------------------------------
# the reproducible zip
# ---------------------------------------------------------------------------------------------

_LFH = struct.Struct("<4s5H3L2H")
_CDH = struct.Struct("<4s6H3L5H2L")
_EOCD = struct.Struct("<4s4H2LH")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_LOC64 = struct.Struct("<4sLQL")
_U32 = 0xFFFFFFFF


def zip_date_time(epoch: int | str | None = None) -> tuple[int, int]:
    """DOS (date, time) for ``epoch`` (default ``$SOURCE_DATE_EPOCH``, else 1980-01-01 00:00)."""
    if epoch is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch in (None, ""):
        y, mo, d, h, mi, s = 1980, 1, 1, 0, 0, 0
    else:
        try:
            t = time.gmtime(int(str(epoch).strip()))
        except (ValueError, OverflowError, OSError):
            raise InputError(f"SOURCE_DATE_EPOCH {epoch!r} is not a Unix timestamp") from None
        y, mo, d, h, mi, s = t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec
        if y < 1980:
            y, mo, d, h, mi, s = 1980, 1, 1, 0, 0, 0
        elif y > 2107:
            y, mo, d, h, mi, s = 2107, 12, 31, 23, 59, 58
    return ((y - 1980) << 9) | (mo << 5) | d, (h << 11) | (mi << 5) | (s // 2)


@dataclass(frozen=True)
class ZipResult:
    """What :func:`write_layer_zip` wrote."""

    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    members: int
    raw_copied: int
    compressed: int
    sha256: str


@dataclass
class _Entry:
    name: str
    path: str
    size: int
    mode: int  # full st_mode for the central directory
    symlink: str | None
    raw: RawSource | None


def _walk(tree_root: Path) -> list[_Entry]:
    """Every file and symlink under ``tree_root``, sorted by zip name (os.scandir: fast)."""
    out: list[_Entry] = []
    stack = [(os.fspath(tree_root), "")]
    while stack:
        dirpath, prefix = stack.pop()
        with os.scandir(dirpath) as it:
            for de in it:
                rel = prefix + de.name
                if de.is_symlink():  # files and directories alike: stored as links
                    target = os.readlink(de.path)
                    out.append(_Entry(rel, de.path, len(target.encode()),
                                      stat.S_IFLNK | 0o777, target, None))
                elif de.is_dir(follow_symlinks=False):
                    stack.append((de.path, rel + "/"))
                elif de.is_file(follow_symlinks=False):
                    st = de.stat(follow_symlinks=False)
                    mode = 0o755 if st.st_mode & 0o111 else 0o644
                    out.append(_Entry(rel, de.path, st.st_size, stat.S_IFREG | mode, None,
                                      None))
    out.sort(key=lambda e: e.name)
    return out


def _isal() -> Any:
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is optional
        return None
    return isal_zlib


def compress_backend(level: int) -> str:
    """Which deflate implementation writes members at ``level``: levels 1–3 use ISA-L
    (``isal``, several times faster) when it is installed, everything else stdlib zlib."""
    if level == 0:
        return "stored"
    return "isal" if 1 <= level <= 3 and _isal() is not None else "zlib"


def _deflate_chunk(data: bytes, zdict: bytes, level: int, last: bool) -> bytes:
    mod: Any = _isal() if compress_backend(level) == "isal" else zlib
    if zdict:
        c = mod.compressobj(level, mod.DEFLATED, -15, 9, 0, zdict)
    else:
        c = mod.compressobj(level, mod.DEFLATED, -15, 9)
    out: bytes = c.compress(data)
    tail: bytes = c.flush(mod.Z_FINISH if last else mod.Z_SYNC_FLUSH)
    return out + tail


def _copy_range(src_fd: int, dst: Any, offset: int, length: int) -> None:
    """Append ``length`` bytes at ``offset`` of ``src_fd`` to ``dst`` (kernel copy if possible)."""
    dst.flush()
    out_fd = dst.fileno()
    done = 0
    use_kernel = hasattr(os, "copy_file_range")
    while done < length:
        if use_kernel:
            try:
                n = os.copy_file_range(src_fd, out_fd, length - done, offset + done)
            except OSError:
                use_kernel = False
                continue
            if n <= 0:
                use_kernel = False
                continue
            os.lseek(out_fd, 0, os.SEEK_END)
        else:
            piece = os.pread(src_fd, min(_CHUNK * 8, length - done), offset + done)
            if not piece:
                raise ArchiveError(f"unexpected end of file while copying {length} bytes")
            _write_all(out_fd, piece)
            n = len(piece)
        done += n
    dst.seek(0, os.SEEK_END)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_layer_zip(
    tree_root: Path,
    output: Path,
    *,
    raw_sources: Mapping[str, RawSource] | None = None,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    date_time: tuple[int, int] | None = None,
    workers: int | None = None,
    virtual: Mapping[str, tuple[RawSource, bool]] | None = None,
) -> ZipResult:
    """Zip the tree at ``tree_root`` into ``output`` reproducibly (see the module docstring).

    ``raw_sources`` maps tree-relative paths to wheel members holding exactly those bytes;
    their compressed data is copied without inflating. ``virtual`` adds files that are not on
    disk (tree-relative path → (wheel member, executable); see
    :meth:`LayerTree.virtual_files`), copied the same way. ``compresslevel`` 0 stores, 1–9
    deflate. The zip is written to a temporary file next to ``output`` and renamed into place.
    """
    if not 0 <= compresslevel <= 9:
        raise InputError(f"compression level {compresslevel} is not between 0 and 9")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    entries = _walk(Path(tree_root))
    if virtual:
        by_name = {e.name: e for e in entries}
        for rel, (vsrc, executable) in virtual.items():
            by_name[rel] = _Entry(rel, "", vsrc.member.file_size,
                                  stat.S_IFREG | (0o755 if executable else 0o644), None, vsrc)
        entries = sorted(by_name.values(), key=lambda e: e.name)
    raw_map = dict(raw_sources or {})
    for e in entries:
        src = raw_map.get(e.name)
        if src is not None and e.symlink is None and src.member.file_size == e.size:
            e.raw = src
    ddate, dtime = date_time or zip_date_time()
    nworkers = workers or max(2, os.cpu_count() or 2)
    readers: dict[Path, int] = {}
    central: list[bytes] = []
    raw_count = comp_count = 0
    unzipped = 0
    try:
        with atomic_output(output, mode=0o644, fsync=True) as out, \
                cf.ThreadPoolExecutor(nworkers) as pool:
            for e in entries:
                name_b = e.name.encode("utf-8")
                flags = 0x800 if not e.name.isascii() else 0
                offset = out.tell()
                unzipped += e.size
                if e.raw is not None:
                    m = e.raw.member
                    src_fd = readers.get(e.raw.wheel)
                    if src_fd is None:
                        src_fd = os.open(e.raw.wheel, os.O_RDONLY)
                        readers[e.raw.wheel] = src_fd
                    data_off = _data_offset(src_fd, m, e.raw.wheel)
                    method, crc, csize = m.compress_type, m.crc, m.compressed_size
                    zip64 = e.size >= _U32 or csize >= _U32
                    out.write(_local_header(name_b, flags, method, ddate, dtime, crc, csize,
                                            e.size, zip64))
                    _copy_range(src_fd, out, data_off, csize)
                    raw_count += 1
                else:
                    comp_count += 1
                    method = ZIP_DEFLATED if compresslevel > 0 and e.symlink is None else ZIP_STORED
                    zip64 = e.size >= 0xF0000000
                    header_at = out.tell()
                    out.write(_local_header(name_b, flags, method, ddate, dtime, 0, 0, e.size,
                                            zip64))
                    data_start = out.tell()
                    crc = _write_member_data(e, out, method, compresslevel, pool, nworkers)
                    csize = out.tell() - data_start
                    # patch the local header with the real CRC and sizes
                    out.seek(header_at)
                    out.write(_local_header(name_b, flags, method, ddate, dtime, crc, csize,
                                            e.size, zip64))
                    out.seek(0, os.SEEK_END)
                central.append(_central_header(name_b, flags, method, ddate, dtime, crc, csize,
                                               e.size, offset, e.mode))
            cd_offset = out.tell()
            for c in central:
                out.write(c)
            cd_size = out.tell() - cd_offset
            n = len(central)
            if n >= 0xFFFF or cd_offset >= _U32 or cd_size >= _U32:
                eocd64_at = out.tell()
                out.write(_EOCD64.pack(b"PK\x06\x06", 44, (3 << 8) | 45, 45, 0, 0, n, n,
                                       cd_size, cd_offset))
                out.write(_LOC64.pack(b"PK\x06\x07", 0, eocd64_at, 1))
            out.write(_EOCD.pack(b"PK\x05\x06", 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                                 min(cd_size, _U32), min(cd_offset, _U32), 0))
            zipped = out.tell()
        digest = _sha256_file(output)
    finally:
        for rfd in readers.values():
            os.close(rfd)
    return ZipResult(output, zipped, unzipped, len(entries), raw_count, comp_count, digest)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK * 4):
            h.update(chunk)
    return h.hexdigest()


def _data_offset(fd: int, m: ZipMember, wheel: Path) -> int:
    head = os.pread(fd, 30, m.header_offset)
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        raise ArchiveError(f"{wheel.name}: {m.name}: bad local header at {m.header_offset}")
    nlen, xlen = struct.unpack_from("<2H", head, 26)
    return int(m.header_offset + 30 + nlen + xlen)


def _local_header(name: bytes, flags: int, method: int, ddate: int, dtime: int, crc: int,
                  csize: int, size: int, zip64: bool) -> bytes:
    if zip64:
        extra = struct.pack("<2H2Q", 1, 16, size, csize)
        return _LFH.pack(b"PK\x03\x04", 45, flags, method, dtime, ddate, crc, _U32, _U32,
                         len(name), len(extra)) + name + extra
    version = 20 if method == ZIP_DEFLATED else 10
    return _LFH.pack(b"PK\x03\x04", version, flags, method, dtime, ddate, crc, csize, size,
                     len(name), 0) + name


def _central_header(name: bytes, flags: int, method: int, ddate: int, dtime: int, crc: int,
                    csize: int, size: int, offset: int, mode: int) -> bytes:
    extra = b""
    fields: list[int] = []
    if size >= _U32:
        fields.append(size)
    if csize >= _U32:
        fields.append(csize)
    if offset >= _U32:
        fields.append(offset)
    if fields:
        extra = struct.pack("<2H", 1, 8 * len(fields)) + struct.pack(f"<{len(fields)}Q", *fields)
    needed = 45 if fields else (20 if method == ZIP_DEFLATED else 10)
    return _CDH.pack(
        b"PK\x01\x02", (3 << 8) | needed, needed, flags, method, dtime, ddate, crc,
        min(csize, _U32), min(size, _U32), len(name), len(extra), 0, 0, 0,
        (mode & 0xFFFF) << 16, min(offset, _U32),
    ) + name + extra


def _write_member_data(e: _Entry, out: Any, method: int, level: int,
                       pool: cf.ThreadPoolExecutor, nworkers: int) -> int:
    if e.symlink is not None:
        data = e.symlink.encode()
        out.write(data)
        return zlib.crc32(data)
    crc = 0
    with open(e.path, "rb") as f:
        if method == ZIP_STORED:
            while chunk := f.read(_CHUNK * 4):
                crc = zlib.crc32(chunk, crc)
                out.write(chunk)
            return crc
        if e.size == 0:
            out.write(_deflate_chunk(b"", b"", level, True))
            return 0
        pending: list[cf.Future[bytes]] = []
        prev = b""
        done = 0
        window = nworkers * 2
        while done < e.size:
            data = f.read(_DEFLATE_CHUNK)
            if not data:
                raise InputError(f"{e.path}: file shrank while zipping")
            done += len(data)
            crc = zlib.crc32(data, crc)
            last = done >= e.size
            pending.append(pool.submit(_deflate_chunk, data, prev[-_DICT:], level, last))
            prev = data
            while len(pending) >= window:
                out.write(pending.pop(0).result())
        for fut in pending:
            out.write(fut.result())
    return crc


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageSize:
    """One distribution in the layer."""

    name: str
    version: str
    wheel: str
    files: int
    unzipped_bytes: int
    wheel_bytes: int
    requested: bool
    source_url: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name, "version": self.version, "wheel": self.wheel,
            "files": self.files, "unzipped_bytes": self.unzipped_bytes,
            "wheel_bytes": self.wheel_bytes, "requested": self.requested,
            "source_url": self.source_url, "sha256": self.sha256,
        }


@dataclass(frozen=True)
class QuotaCheck:
    """The layer against one Lambda quota."""

    name: str
    limit: int
    actual: int
    fits: bool
    over_by: int
    hard: bool  # True: Lambda refuses the function; False: a workaround exists (S3 upload)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "limit": self.limit, "actual": self.actual, "fits": self.fits,
                "over_by": self.over_by, "hard": self.hard}


@dataclass(frozen=True)
class LayerReport:
    """Everything :func:`build_layer` did and measured."""

    target: str
    runtime: str
    arch: str
    python: str
    layout: str
    prefix: str
    output: Path | None
    tree: Path | None
    zipped_bytes: int | None
    unzipped_bytes: int
    files: int
    sha256: str | None
    raw_copied: int
    compressed: int
    packages: tuple[PackageSize, ...]
    largest_files: tuple[tuple[str, int], ...]
    steps: tuple[StepResult, ...]
    skipped_runtime_packages: tuple[str, ...]
    quotas: tuple[QuotaCheck, ...]
    suggestions: tuple[str, ...]
    notes: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    packed: dict[str, Any] | None = None
    older_release: OlderRelease | None = None

    @property
    def over_quota(self) -> bool:
        """True when a hard quota (the 250 MB unzipped limit) is exceeded."""
        return any(q.hard and not q.fits for q in self.quotas)

    def to_dict(self) -> dict[str, Any]:
        """The ``build --json`` document (schema in docs/json-schema.md)."""
        return {
            "schema": "torchwheel.build/1",
            "target": {"label": self.target, "runtime": self.runtime, "arch": self.arch,
                       "python": self.python},
            "layout": self.layout,
            "prefix": self.prefix,
            "output": str(self.output) if self.output else None,
            "tree": str(self.tree) if self.tree else None,
            "zipped_bytes": self.zipped_bytes,
            "unzipped_bytes": self.unzipped_bytes,
            "files": self.files,
            "sha256": self.sha256,
            "raw_copied": self.raw_copied,
            "compressed": self.compressed,
            "over_quota": self.over_quota,
            "quotas": [q.to_dict() for q in self.quotas],
            "packages": [p.to_dict() for p in self.packages],
            "largest_files": [{"path": p, "bytes": n} for p, n in self.largest_files],
            "steps": [s.to_dict() for s in self.steps],
            "skipped_runtime_packages": list(self.skipped_runtime_packages),
            "suggestions": list(self.suggestions),
            "notes": list(self.notes),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "packed": self.packed,
            "older_release": self.older_release.to_dict() if self.older_release else None,
        }


def quota_checks(zipped: int | None, unzipped: int) -> list[QuotaCheck]:
    """The layer's sizes against Lambda's quotas (from the facts file)."""
    q = quotas()
    out = [QuotaCheck("unzipped (function + all layers)", q.unzipped, unzipped,
                      unzipped <= q.unzipped, max(0, unzipped - q.unzipped), True)]
    if zipped is not None:
        out.append(QuotaCheck("zipped, direct upload", q.direct_upload_zipped, zipped,
                              zipped <= q.direct_upload_zipped,
                              max(0, zipped - q.direct_upload_zipped), False))
    return out


def _suggestions(
    checks: Sequence[QuotaCheck],
    *,
    slimmed: bool,
    stripped: bool,
    slim_would_save: int,
    packages: Sequence[PackageSize],
    human: Callable[[int], str],
    older: OlderRelease | None = None,
    probed_older: bool = False,
) -> list[str]:
    out: list[str] = []
    q = quotas()
    for c in checks:
        if c.fits:
            continue
        if not c.hard:
            out.append(
                f"the zip is {human(c.over_by)} over the {human(c.limit)} direct-upload limit: "
                "publish it from S3 (aws lambda publish-layer-version --content S3Bucket=...)"
            )
            continue
        need = c.over_by
        if not slimmed and slim_would_save:
            verdict = "enough" if slim_would_save >= need else "not enough alone"
            out.append(f"--slim would remove {human(slim_would_save)} ({verdict})")
        if not stripped:
            out.append("--strip shrinks shared objects further (strip --strip-unneeded)")
        big = max(packages, key=lambda p: p.unzipped_bytes, default=None)
        if older is not None:
            out.append(
                f"{older.package} {older.version} fits: about {human(older.layer_bytes)} "
                f"unzipped for the whole layer (`torchwheel build "
                f"'{older.package}=={older.version}' ...`; {older.wheel})"
            )
        elif probed_older and big is not None:
            out.append(
                f"no older {big.name} release found that fits (up to 8 older compatible "
                f"releases checked; {big.name} {big.version} alone is "
                f"{human(big.unzipped_bytes)} unzipped here)"
            )
        out.append(
            "a packed layer (zstd archive unpacked into /tmp at cold start; /tmp holds up to "
            f"{q.ephemeral_storage_max_mb:,} MB) stays under the unzipped limit"
        )
        out.append(f"a container image allows {human(q.container_image)}")
    return out


@dataclass(frozen=True)
class OlderRelease:
    """An older release of the layer's largest package that would bring it under the quota."""

    package: str
    version: str
    wheel: str
    unzipped_bytes: int  # the wheel's members (after --slim rules when the build slimmed)
    layer_bytes: int  # estimated layer size with it instead of the built version
    probed: int  # wheels whose central directory was read to find it

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"package": self.package, "version": self.version, "wheel": self.wheel,
                "unzipped_bytes": self.unzipped_bytes, "layer_bytes": self.layer_bytes,
                "probed": self.probed}


def find_older_release(
    package: PackageSize,
    layer_bytes: int,
    target: Target,
    index: Any,
    *,
    slimmed: bool,
    client: Any = None,
    max_probes: int = 8,
) -> OlderRelease | None:
    """The newest compatible release older than ``package`` whose wheel, installed (and slimmed
    when ``slimmed``), keeps the layer within the unzipped quota.

    Sizes come from each wheel's zip central directory (HTTP range reads, no download) via
    :func:`torchwheel.remote.remote_wheel_size`; at most ``max_probes`` wheels are read,
    newest first. Strip savings are not counted, so the estimate errs on the large side.
    """
    from packaging.version import Version

    from .remote import remote_wheel_size
    from .resolution import select

    budget = quotas().unzipped - (layer_bytes - package.unzipped_bytes)
    current = Version(package.version)
    _, judged = select(index.candidates(package.name), target)
    seen: set[Version] = set()
    probed = 0
    for cand, verdict in judged:
        if not verdict.compatible or cand.version >= current or cand.version in seen:
            continue
        seen.add(cand.version)
        if probed >= max_probes:
            break
        probed += 1
        size = remote_wheel_size(cand.url, client=client, top=1 << 30)
        total = size.unzipped
        if slimmed:
            total -= sum(n for name, n in size.largest if slim_rule_for(name) is not None)
        if total <= budget:
            return OlderRelease(package.name, str(cand.version), cand.filename, total,
                                layer_bytes - package.unzipped_bytes + total, probed)
    return None


# ---------------------------------------------------------------------------------------------
# build_layer: the whole pipeline
# ---------------------------------------------------------------------------------------------


def _prepare_tree_dir(tree: Path) -> Path:
    """A fresh temporary directory next to ``tree`` (refuses to clobber foreign content)."""
    tree = Path(tree)
    if tree.exists():
        if not tree.is_dir():
            raise InputError(f"{tree}: exists and is not a directory")
        extra = [p.name for p in tree.iterdir() if p.name != "python"]
        if extra:
            raise InputError(
                f"{tree}: not empty ({', '.join(sorted(extra)[:3])}); refusing to replace it"
            )
    tree.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{tree.name}."))


def _publish_tree(tmp_root: Path, tree: Path) -> None:
    if tree.exists():
        old = Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{tree.name}.old."))
        os.replace(tree, old / "x")
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp_root, tree)


def build_layer(
    packages: Sequence[str] = ("torch",),
    *,
    arch: str = "x86_64",
    python: str | tuple[int, int] | None = None,
    runtime: str | None = None,
    version: str | None = None,
    output: str | os.PathLike[str] | None = None,
    tree: str | os.PathLike[str] | None = None,
    slim: bool = False,
    strip: bool = False,
    no_deps: bool = False,
    include_runtime_packages: bool = False,
    layout: str = "site-packages",
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    index_url: str | None = None,
    extra_index_urls: Sequence[str] = (),
    find_links: Sequence[str] = (),
    no_index: bool = False,
    offline: bool = False,
    client: Any = None,
    index: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    prereleases: bool | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    workers: int | None = None,
    packed: bool = False,
    zstd_level: int | None = None,
    compile_bytecode: bool = False,
) -> LayerReport:
    """Build a Lambda layer for ``packages`` (requirement strings or local ``.whl`` paths).

    Resolves the ``Requires-Dist`` closure for the target (``runtime``/``arch``/``python``;
    see :func:`torchwheel.make_target`) unless ``no_deps``, downloads and verifies each
    wheel, installs them into a tree, optionally slims and strips it, and writes ``output``
    (a zip) and/or ``tree`` (the unzipped directory). ``version`` pins the first package
    (``"2.5.1"`` or a specifier like ``">=2.5,<2.6"``). ``index`` is an
    :class:`~torchwheel.index.IndexClient` (built from the index options otherwise).
    Returns a :class:`LayerReport`; nothing is left half-written on error.

    ``packed`` ships the tree as a zstd archive (level ``zstd_level``) plus a loader that
    unpacks it into ``/tmp`` (see :mod:`torchwheel.packed`, docs/packed-layers.md).

    ``compile_bytecode`` adds unchecked-hash ``.pyc`` files for every ``.py`` after slimming
    and stripping (see :func:`compile_bytecode`); it needs the running interpreter to be the
    target's CPython and raises :class:`InputError` before any download otherwise.
    """
    from . import deps as _deps
    from . import packed as _packed
    from .download import fetch
    from .report import human_bytes
    from .targets import make_target

    if output is None and tree is None:
        raise InputError("nothing to write: give an output zip (-o) and/or a tree directory")
    target = make_target(runtime, arch, python)
    prefix = layer_prefix(target, layout)
    if packed and zstd_level is not None:
        _packed.check_level(zstd_level)  # fail before any download
    if compile_bytecode:
        check_compile_target(target)  # fail before any download
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    own_index = index is None
    if index is None:
        from .index import DEFAULT_INDEX_URL, IndexClient

        index = IndexClient(
            index_url or os.environ.get("TORCHWHEEL_INDEX_URL") or DEFAULT_INDEX_URL,
            extra_index_urls,
            find_links,
            no_index=no_index,
            client=client,
            cache_dir=Path(cache_dir) if cache_dir else None,
            offline=offline,
        )
    try:
        closure = _deps.resolve_closure(
            list(packages),
            target,
            index,
            version=version,
            no_deps=no_deps,
            include_runtime_packages=include_runtime_packages,
            prereleases=prereleases,
            cache_dir=cache_dir,
        )
        timings["resolve"] = time.perf_counter() - t0
        t = time.perf_counter()
        wheels: list[tuple[_deps.Pin, Path]] = []
        http = getattr(index, "client", None) if client is None else client
        for pin in closure.pins:
            def cb(done: int, total: int | None, _name: str = pin.name) -> None:
                if progress is not None:
                    progress(_name, done, total)

            path = fetch(pin.candidate, cache_dir=cache_dir, client=http, progress=cb,
                         offline=offline)
            wheels.append((pin, path))
        zstd_wheel: Path | None = None
        if packed and _packed.needs_zstandard(target):
            zstd_wheel = _packed.resolve_zstandard(target, index, cache_dir=cache_dir,
                                                   client=http, offline=offline)
        timings["fetch"] = time.perf_counter() - t
    finally:
        if own_index:
            index.close()

    out_path = Path(output) if output is not None else None
    tree_path = Path(tree) if tree is not None else None
    if tree_path is not None:
        root = _prepare_tree_dir(tree_path)
    else:
        root = Path(tempfile.mkdtemp(prefix="torchwheel-layer-"))
    pack_info: _packed.PackInfo | None = None
    out_root = root
    try:
        t = time.perf_counter()
        # a zip-only build writes to disk only what strip must rewrite: everything else is
        # verified while streaming and zipped straight from the wheels (same bytes either way)
        on_disk: Callable[[str], bool] | None = None
        if tree_path is None and not packed:
            on_disk = _on_disk_predicate(strip, compile_bytecode)
        lt = LayerTree(root, prefix, workers=workers, slim=slim, materialize=on_disk)
        for pin, path in wheels:
            lt.install(path, requested=pin.requested, source_url=pin.candidate.url,
                       sha256=pin.candidate.sha256)
        timings["install"] = time.perf_counter() - t
        steps: list[StepResult] = []
        t = time.perf_counter()
        if slim:
            steps.extend(_run_slim(lt))
            slim_would_save = 0
        else:
            slim_would_save = sum(s.bytes_saved for s in _run_slim(lt, dry_run=True))
        timings["slim"] = time.perf_counter() - t
        t = time.perf_counter()
        if strip:
            steps.append(_run_strip(lt, workers))
            timings["strip"] = time.perf_counter() - t
        if compile_bytecode:  # after slim: slim removes __pycache__
            t = time.perf_counter()
            steps.append(_compile_step(lt, target, workers))
            timings["compile"] = time.perf_counter() - t
        lt.finalize()
        if packed:
            t = time.perf_counter()
            out_root = Path(tempfile.mkdtemp(prefix=".torchwheel-packed-",
                                             dir=tree_path.parent if tree_path else None))
            pack_info = _packed.make_packed_tree(
                root / prefix, out_root, target, zstandard_wheel=zstd_wheel,
                level=_packed.DEFAULT_LEVEL if zstd_level is None else zstd_level)
            timings["pack"] = time.perf_counter() - t
        zres: ZipResult | None = None
        if out_path is not None:
            t = time.perf_counter()
            # packed: the archive is zstd already; storing it beats deflating it again
            zres = write_layer_zip(out_root, out_path,
                                   raw_sources=None if packed else lt.raw_sources(),
                                   virtual=None if packed else lt.virtual_files(),
                                   compresslevel=0 if packed else compresslevel,
                                   workers=workers)
            timings["zip"] = time.perf_counter() - t
        if tree_path is not None:
            _publish_tree(out_root, tree_path)
    finally:
        if root.exists() and (tree_path is None or root != tree_path):
            shutil.rmtree(root, ignore_errors=True)
        if out_root != root and out_root.exists() and out_root != tree_path:
            shutil.rmtree(out_root, ignore_errors=True)
    timings["total"] = time.perf_counter() - t0

    pkgs = []
    for d in lt.dists.values():
        size = sum(lt.files[rp].size for rp in d.files if rp in lt.files)
        pkgs.append(PackageSize(d.display_name, d.version, d.wheel.name, len(d.files), size,
                                d.wheel_bytes, d.requested, d.source_url, d.sha256))
    pkgs.sort(key=lambda p: -p.unzipped_bytes)
    unzipped = lt.unzipped_bytes()
    if pack_info is not None and pack_info.layer_bytes is not None:
        unzipped = pack_info.layer_bytes
    largest = sorted(((tf.rel, tf.size) for tf in lt.files.values()), key=lambda x: (-x[1], x[0]))
    checks = quota_checks(zres.zipped_bytes if zres else None, unzipped)
    older: OlderRelease | None = None
    probe_notes: list[str] = []
    probed_ok = False
    big = pkgs[0] if pkgs else None
    if big is not None and big.requested and any(c.hard and not c.fits for c in checks):
        try:
            older = find_older_release(big, unzipped, target, index, slimmed=slim,
                                       client=client)
            probed_ok = True
        except (TorchwheelError, httpx.HTTPError) as exc:
            probe_notes.append(f"could not look for an older {big.name} that fits: {exc}")
    suggestions = _suggestions(checks, slimmed=slim, stripped=strip,
                               slim_would_save=slim_would_save, packages=pkgs, human=human_bytes,
                               older=older, probed_older=probed_ok)
    notes = list(closure.notes) + lt.notes + probe_notes
    if pack_info is not None:
        notes.extend(pack_info.notes)
    return LayerReport(
        target=target.label,
        runtime=target.runtime.name,
        arch=target.arch,
        python=target.python_str,
        layout=layout,
        prefix=prefix,
        output=out_path,
        tree=tree_path,
        zipped_bytes=zres.zipped_bytes if zres else None,
        unzipped_bytes=unzipped,
        files=len(lt.files) if pack_info is None else len(pack_info.extra_files) + 1,
        sha256=zres.sha256 if zres else None,
        raw_copied=zres.raw_copied if zres else 0,
        compressed=zres.compressed if zres else 0,
        packages=tuple(pkgs),
        largest_files=tuple(largest[:10]),
        steps=tuple(steps),
        skipped_runtime_packages=tuple(closure.skipped_runtime),
        quotas=tuple(checks),
        suggestions=tuple(suggestions),
        notes=tuple(notes),
        timings=timings,
        packed=pack_info.to_json() if pack_info is not None else None,
        older_release=older,
    )


def _on_disk_predicate(strip: bool, compile_py: bool) -> Callable[[str], bool]:
    """Which files a zip-only build writes to disk: what strip rewrites, what compile reads."""
    def on_disk(rp: str) -> bool:
        return bool((strip and _SO_RE.search(rp)) or (compile_py and rp.endswith(".py")))

    return on_disk


def _compile_step(lt: LayerTree, target: Target, workers: int | None) -> StepResult:
    return compile_bytecode(lt, target, workers=workers)


def _run_slim(lt: LayerTree, dry_run: bool = False) -> list[StepResult]:
    return slim(lt, dry_run=dry_run)


def _run_strip(lt: LayerTree, workers: int | None) -> StepResult:
    return strip(lt, workers=workers)


def iter_tree_files(root: Path) -> Iterator[tuple[str, int]]:
    """``(relative path, size)`` of every file under ``root`` (sorted; for reports/tests)."""
    for e in _walk(Path(root)):
        yield e.name, e.size
