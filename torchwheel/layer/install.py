"""Install wheels into a Lambda layer tree: :class:`LayerTree` and what it records per file.

Installing follows ``installer`` (pypa/installer), with its split between the *source* (the
wheel: :class:`WheelSource` reads and validates ``.dist-info``, RECORD and member names,
and says where each member goes) and the *destination* (:class:`LayerTree`: writes the
files, checks their hashes while writing, and writes the new RECORD files). The archive root
and ``<name>.data/purelib|platlib`` go to ``site-packages``; ``__pycache__`` members are
skipped; every member must be listed in ``RECORD`` with a matching hash (checked while the
bytes are written); the ``.dist-info`` directory is kept with an ``INSTALLER`` file and a
``RECORD`` that lists what really was installed. Unlike ``installer``, ``.data/scripts``,
``.data/headers`` and ``.data/data`` are not installed (a layer has no ``bin/`` or
``include/`` that the runtime reads) and no bytecode is compiled here (see
:mod:`torchwheel.layer.bytecode`). Unsafe member paths and symlinks leaving the tree raise
:class:`~torchwheel.errors.ArchiveError`.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import posixpath
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from ..errors import ArchiveError, InputError
from ..progress import Step
from ..targets import Target
from ..verdict import parse_wheel
from ..wheelfile import (
    MAX_METADATA_BYTES,
    Hash,
    RecordEntry,
    find_dist_info,
    parse_headers,
    parse_record,
    parse_wheel_info,
    record_hash,
    write_record,
)
from ..zipread import ZIP_DEFLATED, ZIP_STORED, ZipMember, ZipReader, is_unsafe_name
from ..zipwrite import RawSource
from .slimrules import slim_rule_for

__all__ = [
    "INSTALLER_NAME",
    "LAYOUTS",
    "InstalledWheel",
    "LayerTree",
    "RawSource",
    "TreeFile",
    "WheelSource",
    "layer_prefix",
]

LAYOUTS = ("site-packages", "python")
INSTALLER_NAME = b"torchwheel\n"
_CHUNK = 1 << 20
#: why members were left out, as the install notes say it
_DROPPED = {
    "scripts": "scripts (.data/scripts) not installed: a layer puts nothing on PATH for Python",
    "headers": "C headers (.data/headers) not installed",
    "data": "data files (.data/data) not installed: they belong outside site-packages",
    "__pycache__": "__pycache__ members skipped (no bytecode in a layer)",
    "wheel files": "nested .whl files skipped",
}
_DROPPED_SCHEMES = ("scripts", "headers", "data")  # .data/<scheme> a layer does not install


def layer_prefix(target: Target, layout: str = "site-packages") -> str:
    """Directory inside the layer that Python imports from: ``python/lib/python3.X/site-packages``
    (``layout="site-packages"``) or ``python`` (``layout="python"``)."""
    if layout == "site-packages":
        return target.site_packages
    if layout == "python":
        return "python"
    raise InputError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")


def _sha256(digest: bytes) -> Hash:
    """The RECORD hash of a raw sha256 ``digest``."""
    return Hash.parse(record_hash(digest))


@dataclass
class TreeFile:
    """One file of the layer tree (``rel`` is relative to the tree root, ``/``-separated)."""

    rel: str
    record_path: str  # as written in RECORD (relative to the site directory)
    dist: str  # canonical name of the distribution that owns it
    size: int
    hash: Hash | None  # None for a RECORD file itself
    executable: bool
    raw: RawSource | None = None  # set while the bytes are still exactly the wheel member's
    symlink: str | None = None
    virtual: bool = False  # verified but not written to disk: zipped straight from ``raw``


@dataclass
class InstalledWheel:
    """One distribution installed into a :class:`LayerTree`."""

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


@dataclass(frozen=True)
class _Job:
    """One member to install: where it goes and the hash RECORD promises for it."""

    member: ZipMember
    dest: str  # record path
    expected: Hash | None  # None: a signature file RECORD cannot list


# ---------------------------------------------------------------------------------------------
# the source: one wheel, validated
# ---------------------------------------------------------------------------------------------


class WheelSource:
    """An open wheel whose ``.dist-info`` (WHEEL, METADATA, RECORD) has been validated.

    Refuses unsafe member names before reading any member, a missing or foreign
    ``.dist-info``, a Wheel-Version other than 1.x and a RECORD that does not parse.
    """

    def __init__(self, zr: ZipReader, label: str, project: str) -> None:
        self.zr = zr
        self.label = label
        self.members = [m for m in zr.members if not m.is_dir]
        for m in self.members:  # refuse an unsafe archive before reading anything from it
            if is_unsafe_name(m.name) or "\\" in m.name:
                raise ArchiveError(f"{label}: unsafe member path {m.name!r}")
        self.by_name = {m.name: m for m in self.members}
        if len(self.by_name) < len(self.members):  # two writers of one path race (a symlink
            # and a file: the file is written through the link before the link is checked)
            counts = Counter(m.name for m in self.members)
            twice = next(n for n, k in counts.items() if k > 1)
            raise ArchiveError(f"{label}: member path {twice!r} appears twice")
        self.dist_info = find_dist_info(self.by_name, project, source=label)
        wheel_info = parse_wheel_info(self.read_meta("WHEEL"), source=label)
        if not wheel_info.wheel_version.startswith("1."):
            raise ArchiveError(
                f"{label}: unsupported Wheel-Version {wheel_info.wheel_version!r} (need 1.x)"
            )
        self.metadata = parse_headers(self.read_meta("METADATA"), source=label)
        self.record = {e.path: e for e in parse_record(self.read_meta("RECORD"), source=label)}
        self.data_dir = self.dist_info[: -len(".dist-info")] + ".data"

    def read_meta(self, name: str) -> bytes:
        """A ``.dist-info`` file, bounded (an over-long one fails in the parser)."""
        full = f"{self.dist_info}/{name}"
        m = self.by_name.get(full)
        if m is None:
            raise ArchiveError(f"{self.label}: {full} is missing")
        return self.zr.read(m, limit=MAX_METADATA_BYTES + 1)

    def record_entry(self, m: ZipMember) -> RecordEntry | None:
        """``m``'s RECORD row (None for an unlisted signature file); unlisted members raise."""
        entry = self.record.get(m.name)
        if entry is None and m.name not in (
            f"{self.dist_info}/RECORD.jws",
            f"{self.dist_info}/RECORD.p7s",
        ):
            raise ArchiveError(f"{self.label}: {m.name} is not listed in RECORD")
        return entry

    def expected_hash(self, m: ZipMember, entry: RecordEntry | None) -> Hash | None:
        """The sha256 that ``entry`` promises for ``m``; any other hash (or none) raises."""
        if entry is None:
            return None
        if entry.hash is None or entry.hash.algorithm != "sha256":
            shown = str(entry.hash) if entry.hash else "empty"
            raise ArchiveError(f"{self.label}: RECORD has no sha256 hash for {m.name} ({shown})")
        return entry.hash

    def destination(self, name: str) -> tuple[str, str | None]:
        """Where member ``name`` goes: ``(record path, None)``, or ``(path, why)`` for a member
        left out (``why`` is a key of the install notes)."""
        parts = name.split("/")
        if "__pycache__" in parts[:-1]:
            return name, "__pycache__"
        dest = name
        if parts[0] == self.data_dir:
            scheme = parts[1] if len(parts) >= 3 else ""
            if scheme not in ("purelib", "platlib", *_DROPPED_SCHEMES):
                raise ArchiveError(f"{self.label}: {name} is not in a valid .data subdirectory")
            dest = "/".join(parts[2:])
            if scheme in _DROPPED_SCHEMES:
                return dest, scheme
        if dest.endswith(".whl"):
            return dest, "wheel files"
        return dest, None

    def console_scripts(self) -> list[str]:
        """Names of the console and GUI scripts in ``entry_points.txt`` (not generated)."""
        m = self.by_name.get(f"{self.dist_info}/entry_points.txt")
        if m is None:
            return []
        text = self.zr.read(m, limit=MAX_METADATA_BYTES).decode("utf-8", "replace")
        names: list[str] = []
        section = ""
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
            elif "=" in line and section in ("console_scripts", "gui_scripts"):
                names.append(line.split("=", 1)[0].strip())
        return names


def _open_wheel(wheel: Path) -> ZipReader:
    try:
        return ZipReader(wheel)
    except ArchiveError as exc:
        reason = str(exc).removeprefix(f"{wheel}: ")
        raise ArchiveError(f"{wheel}: not a readable wheel ({reason})") from None


def _notes(display_name: str, dropped: dict[str, list[str]], scripts: list[str]) -> list[str]:
    """The install notes: what was left out of the layer and why."""
    notes = []
    for why, paths in sorted(dropped.items()):
        shown = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
        notes.append(f"{display_name}: {len(paths)} {_DROPPED[why]} ({shown})")
    if scripts:
        shown = ", ".join(scripts[:4]) + (", ..." if len(scripts) > 4 else "")
        notes.append(
            f"{display_name}: {len(scripts)} console script(s) not generated ({shown}); "
            "call them with python -m"
        )
    return notes


# ---------------------------------------------------------------------------------------------
# the destination: the tree
# ---------------------------------------------------------------------------------------------


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
        self.dists: dict[str, InstalledWheel] = {}
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
        progress: Step | None = None,
    ) -> InstalledWheel:
        """Install one wheel as ``installer`` would (see the module docstring).

        ``progress`` counts each member written (files, unzipped bytes); its byte total grows
        by this wheel's when the wheel is planned."""
        wheel = Path(wheel)
        parsed = parse_wheel(wheel.name)
        with _open_wheel(wheel) as zr:
            src = WheelSource(zr, wheel.name, parsed.name)
            dist = InstalledWheel(
                name=str(canonicalize_name(parsed.name)),
                display_name=str(src.metadata.get("Name") or parsed.name).strip(),
                version=str(src.metadata.get("Version") or parsed.version).strip(),
                wheel=wheel,
                dist_info=src.dist_info,
                requested=requested,
                wheel_bytes=wheel.stat().st_size,
                source_url=source_url,
                sha256=sha256,
            )
            if dist.name in self.dists:
                raise InputError(f"{src.label}: {dist.name} is already installed in this layer")
            jobs, dropped = self._plan(src)
            if progress is not None:
                more = sum(j.member.file_size for j in jobs)
                progress.update(bytes_total=(progress.bytes_total or 0) + more)
            self._extract(src, wheel, jobs, dist, progress)
            scripts = src.console_scripts()
        dist.notes.extend(_notes(dist.display_name, dropped, scripts))
        self.dists[dist.name] = dist
        self.notes.extend(dist.notes)
        return dist

    def _plan(self, src: WheelSource) -> tuple[list[_Job], dict[str, list[str]]]:
        """The members to write, and those left out by why (``--slim`` counted apart)."""
        record_file = f"{src.dist_info}/RECORD"
        jobs: list[_Job] = []
        dropped: dict[str, list[str]] = {}
        for m in src.members:
            if m.name == record_file:
                continue
            entry = src.record_entry(m)
            dest, why = src.destination(m.name)
            if why is not None:  # left out: its RECORD hash does not matter
                dropped.setdefault(why, []).append(dest)
                continue
            expected = src.expected_hash(m, entry)
            if not self._slims(dest, m):
                jobs.append(_Job(m, dest, expected))
        return jobs, dropped

    def _slims(self, dest: str, m: ZipMember) -> bool:
        """True (and counted) when ``--slim`` while installing leaves ``dest`` out."""
        rule = slim_rule_for(dest) if self.slim_on_install else None
        if rule is None:
            return False
        counts = self.slimmed.setdefault(rule.name, [0, 0])
        counts[0] += 1
        counts[1] += m.file_size
        return True

    def _extract(
        self,
        src: WheelSource,
        wheel: Path,
        jobs: list[_Job],
        dist: InstalledWheel,
        progress: Step | None = None,
    ) -> None:
        """Write the members in parallel, biggest first; record them in wheel order."""
        self._make_dirs({posixpath.dirname(j.dest) for j in jobs}, src.label)

        def one(job: _Job) -> TreeFile:
            if job.member.is_symlink:
                tf = self._write_symlink(src, job, dist.name)
            else:
                tf = self._write_file(src, wheel, job, dist.name)
            if progress is not None:
                progress.advance(files=1, bytes=job.member.file_size)
            return tf

        ordered = sorted(jobs, key=lambda j: -j.member.compressed_size)
        with cf.ThreadPoolExecutor(self.workers) as pool:
            by_dest = {tf.record_path: tf for tf in pool.map(one, ordered)}
        for job in jobs:  # wheel order, for RECORD
            prev = self.files.get(job.dest)
            if prev is not None and prev.dist != dist.name:
                owner = self.dists[prev.dist]
                owner.files.pop(job.dest, None)
                dist.notes.append(
                    f"{dist.display_name}: {job.dest} overwrites the file of {owner.display_name}"
                )
            self.files[job.dest] = by_dest[job.dest]
            dist.files[job.dest] = None

    def _make_dirs(self, dirs: set[str], label: str) -> None:
        """Create the directories (single-threaded); none may resolve outside the site."""
        for d in sorted(dirs):
            if d:
                (self.site / d).mkdir(parents=True, exist_ok=True)
        site_real = os.path.realpath(self.site)
        for d in dirs:
            real = os.path.realpath(self.site / d)
            if real != site_real and not real.startswith(site_real + os.sep):
                raise ArchiveError(f"{label}: {d}/ resolves outside the layer tree")

    def _write_symlink(self, src: WheelSource, job: _Job, owner: str) -> TreeFile:
        m, dest = job.member, job.dest
        path = self.site / dest
        target = src.zr.read(m).decode("utf-8", "replace")
        escape = ArchiveError(
            f"{src.label}: {m.name} is a symlink to {target!r}, outside the layer tree"
        )
        resolved = posixpath.normpath(
            posixpath.join(posixpath.dirname(f"{self.prefix}/{dest}"), target)
        )
        if target.startswith("/") or resolved.startswith("../") or resolved == "..":
            raise escape
        digest = Hash.of(target.encode())
        if job.expected is not None and digest != job.expected:
            raise ArchiveError(f"{src.label}: {m.name}: hash does not match RECORD")
        if path.is_symlink() or path.exists():
            path.unlink()
        os.symlink(target, path)
        real = os.path.realpath(path)
        root_real = os.path.realpath(self.root)
        if real != root_real and not real.startswith(root_real + os.sep):
            path.unlink()
            raise escape
        return TreeFile(
            rel=f"{self.prefix}/{dest}",
            record_path=dest,
            dist=owner,
            size=len(target.encode()),
            hash=digest,
            executable=False,
            symlink=target,
        )

    def _write_file(self, src: WheelSource, wheel: Path, job: _Job, owner: str) -> TreeFile:
        """Stream one member to disk (or only through the hash, for a virtual file)."""
        m, dest = job.member, job.dest
        path = self.site / dest
        mode = m.mode or 0
        executable = bool(mode and stat.S_ISREG(mode) and mode & 0o111)
        raw = RawSource(wheel, m) if m.compress_type in (ZIP_STORED, ZIP_DEFLATED) else None
        virtual = raw is not None and self.materialize is not None and not self.materialize(dest)
        if path.is_symlink() or (virtual and path.exists()):
            path.unlink()
        if virtual:  # verify (CRC + RECORD) without writing
            size, digest = _hash_chunks(src.zr.iter_chunks(m), None)
        else:
            with open(path, "wb") as out:
                size, digest = _hash_chunks(src.zr.iter_chunks(m), out.write)
            os.chmod(path, 0o755 if executable else 0o644)
        if job.expected is not None and digest != job.expected:
            if not virtual:
                path.unlink()
            raise ArchiveError(
                f"{src.label}: {m.name}: sha256 does not match RECORD (corrupt wheel)"
            )
        return TreeFile(
            rel=f"{self.prefix}/{dest}",
            record_path=dest,
            dist=owner,
            size=size,
            hash=digest,
            executable=executable,
            raw=raw,
            virtual=virtual,
        )

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
        with open(self.site / record_path, "rb") as f:
            tf.size, tf.hash = _hash_chunks(iter(lambda: f.read(_CHUNK), b""), None)
        tf.raw = None

    def add_file(self, record_path: str, owner: str, data: bytes) -> TreeFile:
        """Record a file already written at ``record_path`` with content ``data`` as part of
        distribution ``owner`` (listed in its RECORD at :meth:`finalize`)."""
        tf = TreeFile(
            rel=f"{self.prefix}/{record_path}",
            record_path=record_path,
            dist=owner,
            size=len(data),
            hash=Hash.of(data),
            executable=False,
        )
        self.files[record_path] = tf
        self.dists[owner].files[record_path] = None
        return tf

    def finalize(self) -> None:
        """Write each distribution's ``INSTALLER`` and ``RECORD`` for the files left."""
        for dist in self.dists.values():
            di = self.site / dist.dist_info
            di.mkdir(parents=True, exist_ok=True)
            inst_rel = f"{dist.dist_info}/INSTALLER"
            rec_rel = f"{dist.dist_info}/RECORD"
            (di / "INSTALLER").write_bytes(INSTALLER_NAME)
            os.chmod(di / "INSTALLER", 0o644)
            dist.files.pop(inst_rel, None)
            dist.files.pop(rec_rel, None)
            self.add_file(inst_rel, dist.name, INSTALLER_NAME)
            rows = [RecordEntry(rp, self.files[rp].hash, self.files[rp].size) for rp in dist.files]
            data = write_record([*rows, RecordEntry(rec_rel, None, None)])
            (di / "RECORD").write_bytes(data)
            os.chmod(di / "RECORD", 0o644)
            self.files[rec_rel] = TreeFile(
                rel=f"{self.prefix}/{rec_rel}",
                record_path=rec_rel,
                dist=dist.name,
                size=len(data),
                hash=None,
                executable=False,
            )
            dist.files[rec_rel] = None

    # -- views ---------------------------------------------------------------------------------

    def virtual_files(self) -> dict[str, tuple[RawSource, bool]]:
        """Tree-relative path → (wheel member, executable) for files not written to disk;
        pass them to :func:`~torchwheel.zipwrite.write_layer_zip` (``virtual=``) with the
        tree."""
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


def _hash_chunks(
    chunks: Iterator[bytes], write: Callable[[bytes], object] | None
) -> tuple[int, Hash]:
    """Size and RECORD hash of ``chunks``, each passed to ``write`` as well when given."""
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        h.update(chunk)
        if write is not None:
            write(chunk)
        size += len(chunk)
    return size, _sha256(h.digest())
