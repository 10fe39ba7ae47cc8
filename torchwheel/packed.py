"""Packed layers: a site-packages tree as one zstd-compressed tar plus a tiny loader.

No modern torch fits Lambda's 262,144,000-byte unzipped quota as a plain layer. A packed layer
ships the tree compressed (``python/torchwheel_packed/site-packages.tar.zst``) with a manifest
and ``python/torchwheel_loader.py``; the handler's first line ``import torchwheel_loader``
unpacks it into ``/tmp`` once per execution environment (see docs/packed-layers.md).

:func:`pack_tree` writes a reproducible archive (members sorted, fixed mtime, uid/gid 0,
modes 0644/0755, PAX format) and :func:`make_packed_tree` lays out the whole layer, including
the ``zstandard`` wheel for targets older than Python 3.14 (3.14 has ``compression.zstd``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import stat
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

from .atomic import atomic_output, atomic_write, check_output_file
from .errors import ArchiveError, InputError
from .layer.install import LayerTree
from .layer.stripping import strip as strip_tree
from .loader import torchwheel_loader
from .progress import Step
from .targets import Target, quotas
from .verdict import evaluate

__all__ = [
    "ARCHIVE_NAME",
    "DEFAULT_LEVEL",
    "LOADER_NAME",
    "MANIFEST_DIR",
    "MEASURE_STEM",
    "PACKED_STEM",
    "PackInfo",
    "check_level",
    "install_wheel_flat",
    "loader_source",
    "make_packed_tree",
    "measure_unpack",
    "needs_zstandard",
    "pack_tree",
    "read_manifest",
    "tree_stats",
]

#: Default zstd level, chosen by measurement on the slimmed torch 2.13.0 tree
#: (docs/performance.md, "Packed layers").
DEFAULT_LEVEL = 9
MIN_LEVEL = 1
MAX_LEVEL = 22
LOADER_NAME = "torchwheel_loader.py"
MANIFEST_DIR = "torchwheel_packed"
MANIFEST_NAME = "manifest.json"
ARCHIVE_NAME = "site-packages.tar.zst"
FORMAT = 1
#: Python versions with ``compression.zstd`` in the standard library (PEP 784).
STDLIB_ZSTD = (3, 14)
_BLOCK = 4096
_CHUNK = 1 << 20
_MB = 1024 * 1024
_ZIP_EPOCH = 315532800  # 1980-01-01, the earliest zip timestamp
#: Temp names (with the process id, see torchwheel.atomic.clean_stale): the packed layer laid
#: out beside the tree, and the measured unpack in the temp directory.
PACKED_STEM = ".torchwheel-packed"
MEASURE_STEM = "torchwheel-measure"


@dataclass(frozen=True)
class TreeStats:
    """Size facts of a directory tree."""

    files: int
    dirs: int
    bytes: int
    disk_bytes: int  # with every file and directory rounded up to 4 KiB blocks


@dataclass(frozen=True)
class PackInfo:
    """What :func:`pack_tree` / :func:`make_packed_tree` wrote and what it means on Lambda."""

    archive: Path
    sha256: str
    archive_size: int
    unpacked_size: int
    disk_size: int
    files: int
    dirs: int
    level: int
    python: str | None
    decompressor: str
    pack_seconds: float
    unpack_seconds: float | None = None
    layer_root: Path | None = None
    layer_bytes: int | None = None  # every file the layer holds (archive, loader, zstandard)
    extra_files: tuple[str, ...] = ()  # layer paths beside the archive
    notes: tuple[str, ...] = field(default=())
    unpack_measured_in: str | None = None  # the directory the measured unpack wrote to

    @property
    def ephemeral_mb_needed(self) -> int:
        """MB of /tmp the unpacked tree occupies, margin included."""
        return int(_loader().needed_mb(self.disk_size))

    @property
    def ephemeral_storage_mb(self) -> int:
        """The EphemeralStorage setting to use (multiple of 64 MB, at least the 512 default)."""
        return int(_loader()._recommend_mb(self.disk_size))

    @property
    def needs_more_ephemeral_storage(self) -> bool:
        """True when the default 512 MB /tmp is too small (the ``ephemeral-storage`` warning)."""
        return self.ephemeral_mb_needed > quotas().ephemeral_storage_default_mb

    def fits(self, function_bytes: int = 0) -> dict[str, bool | None]:
        """Whether the layer (+ ``function_bytes`` of function code) is within the quotas.

        ``unzipped``: layer + function within 262,144,000 bytes; ``direct_upload``: the
        compressed archive alone already exceeds 50 MB, so the layer zip must go through S3
        when this is False (None when the layer size is unknown).
        """
        q = quotas()
        total = (self.layer_bytes or 0) + function_bytes
        return {
            "unzipped": None if self.layer_bytes is None else total <= q.unzipped,
            "direct_upload": self.archive_size <= q.direct_upload_zipped,
        }

    def to_json(self) -> dict[str, Any]:
        """The ``packed`` object of ``build --json`` (docs/json-schema.md)."""
        q = quotas()
        return {
            "archive": self.archive.name,
            "sha256": self.sha256,
            "compression": "zstd",
            "level": self.level,
            "archive_bytes": self.archive_size,
            "unpacked_bytes": self.unpacked_size,
            "disk_bytes": self.disk_size,
            "files": self.files,
            "python": self.python,
            "decompressor": self.decompressor,
            "layer_bytes": self.layer_bytes,
            "ephemeral_storage_needed_mb": self.ephemeral_mb_needed,
            "ephemeral_storage_recommended_mb": self.ephemeral_storage_mb,
            "ephemeral_storage_default_mb": q.ephemeral_storage_default_mb,
            "needs_ephemeral_storage": self.needs_more_ephemeral_storage,
            "pack_seconds": round(self.pack_seconds, 3),
            "unpack_seconds": None
            if self.unpack_seconds is None
            else round(self.unpack_seconds, 3),
            "unpack_measured_in": self.unpack_measured_in,
            "fits_unzipped": self.fits()["unzipped"],
            "handler_line": "import torchwheel_loader  # noqa: F401",
            "notes": list(self.notes),
        }


def _loader() -> Any:
    """The loader module (imported under its package name, so it does not auto-activate)."""
    return torchwheel_loader


def loader_source() -> bytes:
    """The bytes of ``torchwheel_loader.py`` as shipped in every packed layer."""
    return resources.files("torchwheel").joinpath("loader", LOADER_NAME).read_bytes()


def _mtime() -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        try:
            return max(int(env), 0)
        except ValueError:
            raise InputError(f"SOURCE_DATE_EPOCH={env!r} is not an integer") from None
    return _ZIP_EPOCH


def _walk(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Sorted (relative posix path, path, lstat) of every dir and file below ``root``."""
    stack = [(root, "")]
    while stack:
        directory, rel = stack.pop()
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise InputError(f"{directory}: cannot list directory: {exc.strerror}") from None
        subdirs: list[tuple[Path, str]] = []
        for name in names:
            p = directory / name
            r = f"{rel}{name}"
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                yield r, p, st
                subdirs.append((p, r + "/"))
            elif stat.S_ISREG(st.st_mode):
                yield r, p, st
            elif stat.S_ISLNK(st.st_mode):
                raise InputError(
                    f"{p}: symbolic link in the tree to pack; packed layers hold regular files only"
                )
            else:
                raise InputError(f"{p}: not a regular file or directory")
        # Depth first, in sorted order: push in reverse so the smallest name comes next.
        stack.extend((d, r) for d, r in reversed(subdirs))


def tree_stats(root: Path) -> TreeStats:
    """Files, directories, bytes and 4 KiB-block disk bytes of ``root``."""
    files = dirs = size = disk = 0
    for _rel, _p, st in _walk(root):
        if stat.S_ISDIR(st.st_mode):
            dirs += 1
            disk += _BLOCK
        else:
            files += 1
            size += st.st_size
            disk += -(-st.st_size // _BLOCK) * _BLOCK
    return TreeStats(files=files, dirs=dirs, bytes=size, disk_bytes=disk + _BLOCK)


class _HashingWriter(io.RawIOBase):
    """Write-through file wrapper that hashes and counts bytes (the compressed output)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._raw.write(view)
        self.digest.update(view)
        self.count += len(view)
        return len(view)


def _zstd_writer(out: IO[bytes], level: int) -> tuple[Any, str]:
    """A zstd-compressing writer on ``out``: stdlib on 3.14+, else ``zstandard``.

    Multi-threaded (one worker per CPU): zstd's output with any worker count >= 1 is identical,
    so the archive stays reproducible across machines.
    """
    workers = max(os.cpu_count() or 1, 1)
    if sys.version_info >= STDLIB_ZSTD:  # pragma: no cover - host Python 3.14+
        from compression import zstd as stdzstd  # type: ignore[import-not-found]

        options = {
            stdzstd.CompressionParameter.compression_level: level,
            stdzstd.CompressionParameter.nb_workers: workers,
        }
        return stdzstd.ZstdFile(out, "wb", options=options), "compression.zstd"
    import zstandard

    cctx = zstandard.ZstdCompressor(level=level, threads=workers)
    return cctx.stream_writer(out, closefd=False), f"zstandard {zstandard.__version__}"


def check_level(level: int) -> None:
    """Raise :class:`InputError` for a zstd level outside 1..22."""
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise InputError(f"zstd level {level} is out of range {MIN_LEVEL}..{MAX_LEVEL}")


def pack_tree(
    site_packages: Path,
    archive: Path,
    *,
    level: int = DEFAULT_LEVEL,
    progress: Step | None = None,
) -> PackInfo:
    """Write ``site_packages`` as a reproducible zstd-compressed tar at ``archive``.

    Members are sorted (directories before their contents), mtime is ``SOURCE_DATE_EPOCH`` or
    1980-01-01, uid/gid 0 with empty owner names, modes 0755 for directories and executables and
    0644 otherwise. The archive is written to a temp file in the same directory and renamed
    into place; symbolic links and special files are refused with :class:`InputError`.
    ``progress`` counts the files archived and their bytes.
    """
    check_level(level)
    site_packages = Path(site_packages)
    archive = check_output_file(Path(archive), "archive")
    if not site_packages.is_dir():
        raise InputError(f"{site_packages}: not a directory")
    archive.parent.mkdir(parents=True, exist_ok=True)
    mtime = _mtime()
    start = time.perf_counter()
    files = dirs = size = disk = 0
    with atomic_output(archive) as raw:
        hashing = _HashingWriter(raw)
        writer, _how = _zstd_writer(hashing, level)  # type: ignore[arg-type]
        with (
            writer,
            tarfile.open(
                fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_CHUNK
            ) as tar,
        ):
            for rel, path, st in _walk(site_packages):
                info = tarfile.TarInfo(rel)
                info.mtime = mtime
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                    dirs += 1
                    disk += _BLOCK
                    continue
                info.type = tarfile.REGTYPE
                info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                with open(path, "rb") as f:
                    info.size = os.fstat(f.fileno()).st_size
                    tar.addfile(info, f)
                files += 1
                size += info.size
                if progress is not None:
                    progress.advance(files=1, bytes=info.size)
                disk += -(-info.size // _BLOCK) * _BLOCK
    return PackInfo(
        archive=archive,
        sha256=hashing.digest.hexdigest(),
        archive_size=hashing.count,
        unpacked_size=size,
        disk_size=disk + _BLOCK,
        files=files,
        dirs=dirs,
        level=level,
        python=None,
        decompressor="zstd",
        pack_seconds=time.perf_counter() - start,
    )


def install_wheel_flat(
    wheel: Path,
    dest: Path,
    *,
    exclude: Callable[[str], bool] | None = None,
    strip: bool = False,
) -> list[str]:
    """Install a wheel's purelib/platlib contents into ``dest`` (``python/`` of the layer).

    The same installer as ``build`` (:class:`torchwheel.layer.LayerTree`): ``.data/purelib|
    platlib`` merged into ``dest``, other ``.data`` schemes dropped, ``*.dist-info`` kept (its
    RECORD rewritten to match what was written), no bytecode. ``exclude(relpath)`` drops
    members; ``strip`` runs ``strip --strip-unneeded`` on ``.so`` files when ``strip`` exists.
    Returns the written paths relative to ``dest``.
    Unsafe member names raise :class:`ArchiveError`.
    """
    dest = Path(dest)
    tree = LayerTree(dest.parent, dest.name)
    tree.install(Path(wheel))
    if exclude is not None:
        for rel in [r for r in tree.files if exclude(r)]:
            tree.remove(rel)
        tree.prune_empty_dirs()
    if strip:
        strip_tree(tree)
    tree.finalize()
    return sorted(tree.files)


def _no_cffi(rel: str) -> bool:
    """zstandard's cffi backend needs the ``cffi`` package Lambda lacks: leave it out (12 MB)."""
    name = rel.rsplit("/", 1)[-1]
    return rel.startswith("zstandard/") and (name.startswith("_cffi") or name == "backend_cffi.py")


def _layer_size(root: Path) -> int:
    return sum(st.st_size for _r, _p, st in _walk(root) if not stat.S_ISDIR(st.st_mode))


def make_packed_tree(
    site_packages: Path,
    layer_root: Path,
    target: Target,
    *,
    level: int = DEFAULT_LEVEL,
    zstandard_wheel: Path | None = None,
    measure: bool = True,
    progress: Step | None = None,
) -> PackInfo:
    """Lay out a packed layer for ``target`` under ``layer_root`` (the zip's root).

    Writes ``python/torchwheel_loader.py``, ``python/torchwheel_packed/site-packages.tar.zst``
    and ``python/torchwheel_packed/manifest.json``; for targets before Python 3.14 the
    ``zstandard_wheel`` (resolved for the *target*, required then) is installed uncompressed
    into ``python/``. With ``measure`` the archive is unpacked once into a temp dir with the
    loader's own code to time it (and prove the round trip). ``progress`` counts the files
    archived (see :func:`pack_tree`).
    """
    layer_root = Path(layer_root)
    py = layer_root / "python"
    notes: list[str] = []
    extra: list[str] = []
    if target.python >= STDLIB_ZSTD:
        decompressor = "compression.zstd"
        if zstandard_wheel is not None:
            notes.append("zstandard wheel not needed: the target has compression.zstd")
    else:
        if zstandard_wheel is None:
            raise InputError(
                f"a packed layer for Python {target.python_str} needs a zstandard wheel for "
                f"{target.label} (Python < 3.14 has no compression.zstd)"
            )
        verdict = evaluate(Path(zstandard_wheel).name, target)
        if not verdict.compatible:
            raise InputError(
                f"{Path(zstandard_wheel).name}: does not fit {target.label}: {verdict.explain()}"
            )
        installed = install_wheel_flat(Path(zstandard_wheel), py, exclude=_no_cffi, strip=True)
        extra.extend(f"python/{p}" for p in installed)
        decompressor = f"zstandard ({Path(zstandard_wheel).name})"
    info = pack_tree(
        site_packages, py / MANIFEST_DIR / ARCHIVE_NAME, level=level, progress=progress
    )
    manifest = {
        "format": FORMAT,
        "archive": ARCHIVE_NAME,
        "sha256": info.sha256,
        "compression": "zstd",
        "level": level,
        "archive_size": info.archive_size,
        "unpacked_size": info.unpacked_size,
        "disk_size": info.disk_size,
        "files": info.files,
        "dirs": info.dirs,
        "python": target.python_str,
        "target": target.label,
    }
    atomic_write(
        py / MANIFEST_DIR / MANIFEST_NAME,
        (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
    )
    atomic_write(py / LOADER_NAME, loader_source())
    extra[:0] = [f"python/{LOADER_NAME}", f"python/{MANIFEST_DIR}/{MANIFEST_NAME}"]
    unpack_s = None
    measured_in = None
    if measure:
        measured_in = tempfile.gettempdir()
        unpack_s = measure_unpack(py, Path(measured_in))
    return PackInfo(
        archive=info.archive,
        sha256=info.sha256,
        archive_size=info.archive_size,
        unpacked_size=info.unpacked_size,
        disk_size=info.disk_size,
        files=info.files,
        dirs=info.dirs,
        level=level,
        python=target.python_str,
        decompressor=decompressor,
        pack_seconds=info.pack_seconds,
        unpack_seconds=unpack_s,
        layer_root=layer_root,
        layer_bytes=_layer_size(layer_root),
        extra_files=tuple(extra),
        notes=tuple(notes),
        unpack_measured_in=measured_in,
    )


def read_manifest(layer_python: Path) -> dict[str, Any]:
    """The manifest of the packed layer whose ``python/`` directory is ``layer_python``,
    validated as the loader validates it (:class:`InputError` when it would refuse it)."""
    path = Path(layer_python) / MANIFEST_DIR / MANIFEST_NAME
    try:
        with open(path, "rb") as f:
            data = f.read(torchwheel_loader.MAX_MANIFEST_BYTES + 1)
        return torchwheel_loader.load_manifest(data, str(path))
    except OSError as exc:
        raise InputError(f"{path}: not a readable packed-layer manifest ({exc})") from None
    except torchwheel_loader.LoaderError as exc:
        raise InputError(str(exc).removeprefix("torchwheel_loader: ")) from None


def measure_unpack(layer_python: Path, parent: Path | None = None) -> float:
    """Unpack the layer's archive with the loader's own code into a temp dir; return seconds.

    Uses the host's decompressor (``compression.zstd`` or ``zstandard``); the tree is removed
    afterwards.
    """
    loader = _loader()
    layer_python = Path(layer_python)
    manifest = read_manifest(layer_python)
    archive = layer_python / MANIFEST_DIR / str(manifest["archive"])
    if importlib.util.find_spec("zstandard") is None and sys.version_info < STDLIB_ZSTD:
        raise InputError("cannot measure the unpack: no zstd decompressor on this machine")
    prefix = f"{MEASURE_STEM}-{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        start = time.perf_counter()
        try:
            loader.unpack(str(archive), manifest, tmp)
        except ImportError as exc:
            raise ArchiveError(str(exc)) from None
        return time.perf_counter() - start


def needs_zstandard(target: Target) -> bool:
    """True when the target's Python lacks ``compression.zstd`` (before 3.14)."""
    return target.python < STDLIB_ZSTD
