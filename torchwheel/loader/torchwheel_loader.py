"""Unpack a torchwheel packed layer into /tmp and put it on ``sys.path``.

A packed Lambda layer holds this file as ``python/torchwheel_loader.py`` next to
``python/torchwheel_packed/`` (``site-packages.tar.zst`` + ``manifest.json``). The function's
handler starts with one line::

    import torchwheel_loader  # noqa: F401  (unpacks the packed layer, then `import torch` works)

On the first import in an execution environment the archive is verified (sha256 from the
manifest) and unpacked into ``/tmp/torchwheel-<sha256 prefix>/``; warm starts find the finished
tree and only touch ``sys.path``. The unpack goes into a temporary directory in the same parent
and is renamed into place only when complete, under an ``fcntl.flock`` lock, so a crash half-way
leaves nothing that looks usable and the next start cleans it up and unpacks again.

Only the standard library and the bundled decompressor (``compression.zstd`` on Python 3.14+,
the ``zstandard`` wheel shipped in the layer otherwise) are used; no network. The syntax stays
Python 3.8 compatible: this file runs on every Lambda Python runtime.

Every failure is a :class:`LoaderError` (an ``ImportError``) with a one-line reason: the
manifest is validated by shape (:func:`validate_manifest`; its ``sha256`` must be 64 lowercase
hex digits and its ``archive`` a plain file name before either names a path), and anything
unexpected while unpacking is reported as a ``LoaderError`` too.

Environment:
    TORCHWHEEL_UNPACK_DIR  parent directory of the unpacked tree (default ``/tmp``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import sys
import tarfile
import time
from collections.abc import Iterator
from typing import IO, Any

__all__ = [
    "LoaderError",
    "activate",
    "check_space",
    "load_manifest",
    "needed_mb",
    "unpack",
    "validate_manifest",
]

MANIFEST_DIR = "torchwheel_packed"
MANIFEST_NAME = "manifest.json"
FORMAT = 1
ENV_DIR = "TORCHWHEEL_UNPACK_DIR"
MARKER = ".torchwheel-complete"
PREFIX = "torchwheel-"
HASH_CHARS = 16
# Head room on top of the unpacked bytes: file-system metadata and the runtime's own /tmp use.
MARGIN_BYTES = 16 * 1024 * 1024
_CHUNK = 1 << 20
BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
_MB = 1024 * 1024
#: Largest manifest.json read (a real one is under 1 KB).
MAX_MANIFEST_BYTES = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ARCHIVE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_COUNTS = ("files", "dirs", "archive_size", "unpacked_size", "disk_size", "level")
_TEXTS = ("python", "compression", "target")
_MAX_COUNT = 1 << 53

# Set by activate(): the directory that was put on sys.path, and how it got there.
path: str | None = None
unpacked_now = False
unpack_seconds = 0.0


class LoaderError(ImportError):
    """The packed layer could not be made importable (message says why and what to do)."""


def validate_manifest(manifest: Any, where: str = MANIFEST_NAME) -> dict[str, Any]:
    """``manifest`` itself when its shape is right, else :class:`LoaderError` saying why.

    A JSON object with ``format`` 1, ``sha256`` of 64 lowercase hex digits, ``archive`` a plain
    file name (no ``/``, not ``..``); counts (``files``, ``disk_size`` ...) absent, null or
    non-negative integers; ``python``, ``compression``, ``target`` absent, null or short text.
    """

    def bad(why: str) -> LoaderError:
        return LoaderError(
            f"torchwheel_loader: {where}: {why}; rebuild the packed layer with torchwheel"
        )

    if not isinstance(manifest, dict):
        raise bad(f"not a JSON object but {type(manifest).__name__}")
    fmt = manifest.get("format")
    if type(fmt) is not int or fmt != FORMAT:
        raise bad(f"unsupported manifest format {str(fmt)[:40]!r} (this loader reads {FORMAT})")
    sha = manifest.get("sha256")
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise bad("sha256 is not 64 lowercase hex digits")
    archive = manifest.get("archive")
    if not isinstance(archive, str) or not _ARCHIVE_NAME.fullmatch(archive) or ".." in archive:
        raise bad(f"archive {str(archive)[:60]!r} is not a plain file name")
    for key in _COUNTS:
        value = manifest.get(key)
        if value is not None and (type(value) is not int or not 0 <= value <= _MAX_COUNT):
            raise bad(f"{key} {str(value)[:40]!r} is not a count")
    for key in _TEXTS:
        value = manifest.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 200):
            raise bad(f"{key} is not a short text")
    return manifest


def load_manifest(data: bytes, where: str = MANIFEST_NAME) -> dict[str, Any]:
    """Parse and validate manifest bytes (at most :data:`MAX_MANIFEST_BYTES`)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise LoaderError(
            f"torchwheel_loader: {where}: {len(data):,} bytes is too large for a manifest"
        )
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise LoaderError(
            f"torchwheel_loader: {where}: not readable JSON ({str(exc)[:120]})"
        ) from None
    return validate_manifest(manifest, where)


def _count(manifest: dict[str, Any], *keys: str) -> int:
    """The first of ``keys`` the manifest gives as a count, else 0."""
    for key in keys:
        value = manifest.get(key)
        if type(value) is int:
            return value
    return 0


def needed_mb(disk_bytes: int) -> int:
    """MB (MiB, as AWS counts) of /tmp an unpack of ``disk_bytes`` needs, margin included."""
    return -(-(disk_bytes + MARGIN_BYTES) // _MB)


def check_space(parent: str, free_bytes: int, disk_bytes: int) -> None:
    """Raise :class:`LoaderError` when ``free_bytes`` in ``parent`` cannot hold the tree."""
    need = disk_bytes + MARGIN_BYTES
    if free_bytes >= need:
        return
    mb = needed_mb(disk_bytes)
    raise LoaderError(
        f"torchwheel_loader: not enough space in {parent}: the packed layer needs {mb} MB to "
        f"unpack, {free_bytes // _MB} MB are free; raise the function's ephemeral storage "
        f"(EphemeralStorage) to at least {_recommend_mb(disk_bytes)} MB "
        "(default 512, maximum 10240)"
    )


def _recommend_mb(disk_bytes: int) -> int:
    # The runtime and extensions use a little of /tmp too: round the need up to 64 MB.
    return max(512, -(-(needed_mb(disk_bytes) + 32) // 64) * 64)


class _HashingReader:
    """File wrapper hashing every byte read through it (the compressed archive)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        n = self._raw.readinto(buf)  # type: ignore[attr-defined]
        if n:
            self.digest.update(memoryview(buf)[:n])
            self.count += n
        return int(n or 0)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _decompressing_reader(raw: Any) -> Any:
    """A file-like object yielding the decompressed tar stream."""
    try:
        from compression import zstd as _stdzstd  # type: ignore[import-not-found]
    except ImportError:
        _stdzstd = None
    if _stdzstd is not None:
        return _stdzstd.ZstdFile(raw, "rb")
    try:
        import zstandard
    except ImportError as exc:
        raise LoaderError(
            "torchwheel_loader: no zstd decompressor: Python "
            f"{sys.version_info[0]}.{sys.version_info[1]} has no compression.zstd "
            f"and the layer's bundled zstandard package cannot be imported ({exc}); rebuild the "
            "layer for this runtime's Python version"
        ) from None
    return zstandard.ZstdDecompressor().stream_reader(raw, read_size=_CHUNK, closefd=False)


def _safe_name(name: str) -> str:
    """The member name as a relative path, or raise for anything that could leave the tree."""
    if not name or "\x00" in name or "\\" in name:
        raise ValueError(f"bad member name {name!r}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"absolute member path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValueError(f"unsafe member path {name!r}")
    return os.path.join(*parts)


def _read_exact(stream: Any, size: int) -> bytes:
    """Exactly ``size`` bytes from ``stream``; a short read means a truncated archive."""
    data = stream.read(size)
    if len(data) == size:
        return bytes(data)
    parts = [data]
    got = len(data)
    while got < size:
        more = stream.read(size - got)
        if not more:
            raise ValueError("archive truncated")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse PAX extended header records (``"<len> key=value\\n"``)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] != b"\x00":
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        if length <= 0:
            raise ValueError("bad PAX record")
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        out[str(key.decode("utf-8"))] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _members(stream: Any) -> Iterator[tuple[str, str, int, int]]:
    """(name, kind "dir"/"file", size, mode) of each member; the caller reads the data.

    A deliberately small ustar/PAX reader (tarfile's stream mode costs ~0.6 s more on torch):
    regular files, directories and PAX ``x`` headers; anything else is refused.
    """
    pax: dict[str, str] = {}
    while True:
        block = _read_exact(stream, BLOCK)
        if block == ZERO_BLOCK:
            return
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        size = int(pax.get("size", info.size))
        if size < 0:  # a PAX size of "-1": read(-1) would read the rest of the stream
            raise ValueError(f"member {info.name!r} has a negative size")
        if info.type == tarfile.XHDTYPE:
            pax = _pax_records(_read_exact(stream, info.size + _pad(info.size))[: info.size])
            continue
        if info.type == tarfile.XGLTYPE:
            _read_exact(stream, info.size + _pad(info.size))
            continue
        name = pax.get("path", info.name)
        pax = {}
        if info.type == tarfile.DIRTYPE:
            yield name, "dir", 0, info.mode
        elif info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            yield name, "file", size, info.mode
        else:
            raise ValueError(f"member {name!r} is not a regular file or directory")


def _pad(size: int) -> int:
    return -size % BLOCK


def _extract(stream: Any, dest: str) -> int:
    """Write every member of the tar ``stream`` below ``dest``; refuse anything unsafe."""
    made: set[str] = set()
    count = 0
    for name, kind, size, mode in _members(stream):
        rel = _safe_name(name)
        out = os.path.join(dest, rel)
        if kind == "dir":
            if out not in made:
                os.makedirs(out, exist_ok=True)
                made.add(out)
            continue
        parent = os.path.dirname(out)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755 if mode & 0o111 else 0o644)
        with os.fdopen(fd, "wb", buffering=0) as f:
            left = size
            while left:
                chunk = stream.read(min(left, _CHUNK))
                if not chunk:
                    raise ValueError(f"archive truncated in {name!r}")
                left -= len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[f.write(view) or 0 :]
        pad = _pad(size)
        if pad:
            _read_exact(stream, pad)
        count += 1
    return count


def _read_manifest(here: str) -> dict[str, Any]:
    mpath = os.path.join(here, MANIFEST_DIR, MANIFEST_NAME)
    try:
        with open(mpath, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise LoaderError(
            f"torchwheel_loader: cannot read {mpath}: {exc}; is the packed layer attached?"
        ) from None
    manifest = load_manifest(data, mpath)
    want = manifest.get("python")
    have = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if want and want != have:
        raise LoaderError(
            f"torchwheel_loader: the packed layer was built for Python {want}, this function runs "
            f"Python {have}; rebuild it with --python {have}"
        )
    return manifest


def _clean_stale(parent: str, stem: str) -> None:
    """Remove temp dirs left by an unpack that died half-way (the caller holds the lock)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if name.startswith(stem + ".tmp-"):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def unpack(archive: str, manifest: dict[str, Any], parent: str) -> str:
    """Make ``<parent>/torchwheel-<sha prefix>`` a complete tree of ``archive``; return it.

    Reuses a finished tree; otherwise takes the lock, checks the free space, unpacks into a
    temp dir while hashing the archive, and renames the temp dir into place only when the hash
    matches. Raises :class:`LoaderError` with a one-line reason on any failure (the manifest
    is validated first, see :func:`validate_manifest`).
    """
    validate_manifest(manifest)
    try:
        return _unpack(archive, manifest, parent)
    except LoaderError:
        raise
    except Exception as exc:
        raise LoaderError(
            f"torchwheel_loader: cannot unpack {archive} into {parent}: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from exc


def _unpack(archive: str, manifest: dict[str, Any], parent: str) -> str:
    global unpacked_now, unpack_seconds
    import fcntl

    sha = str(manifest["sha256"])
    stem = PREFIX + sha[:HASH_CHARS]
    final = os.path.join(parent, stem)
    if os.path.exists(os.path.join(final, MARKER)):
        return final
    try:
        os.makedirs(parent, exist_ok=True)
        lock_fd = os.open(os.path.join(parent, stem + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LoaderError(
            f"torchwheel_loader: cannot use {parent} to unpack the packed layer: {exc}"
        ) from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(final, MARKER)):  # another process finished meanwhile
            return final
        _clean_stale(parent, stem)
        if os.path.isdir(final):  # a tree without its marker: not ours to trust
            shutil.rmtree(final, ignore_errors=True)
        disk = _count(manifest, "disk_size", "unpacked_size")
        check_space(parent, shutil.disk_usage(parent).free, disk)
        tmp = os.path.join(parent, f"{stem}.tmp-{os.getpid()}")
        start = time.perf_counter()
        try:
            _unpack_into(archive, manifest, tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        unpacked_now = True
        unpack_seconds = time.perf_counter() - start
        return final
    finally:
        os.close(lock_fd)


def _unpack_into(archive: str, manifest: dict[str, Any], tmp: str) -> None:
    os.mkdir(tmp)
    try:
        raw = open(archive, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise LoaderError(f"torchwheel_loader: cannot open {archive}: {exc}") from None
    with raw:
        hashing = _HashingReader(raw)
        problem: str | None = None
        files = 0
        try:
            reader = _decompressing_reader(hashing)
            files = _extract(reader, tmp)
            hashing.drain()
        except LoaderError:
            raise
        except OSError as exc:
            if exc.errno is not None and exc.errno == 28:  # ENOSPC despite the check
                raise LoaderError(
                    "torchwheel_loader: ran out of space unpacking into {} (needs {} MB); "
                    "raise the function's ephemeral storage (EphemeralStorage)".format(
                        os.path.dirname(tmp), needed_mb(_count(manifest, "disk_size"))
                    )
                ) from None
            problem = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # zstd errors, tarfile.ReadError, unsafe members
            problem = f"{type(exc).__name__}: {exc}"
        actual = hashing.digest.hexdigest()
    if actual != manifest["sha256"]:
        raise LoaderError(
            "torchwheel_loader: {} is corrupt: sha256 {}, manifest says {}; re-upload the "
            "layer".format(archive, actual, manifest["sha256"])
        )
    if problem is not None:
        raise LoaderError(f"torchwheel_loader: cannot unpack {archive}: {problem}")
    want_files = manifest.get("files")
    if want_files is not None and files != want_files:
        raise LoaderError(
            f"torchwheel_loader: {archive} unpacked {files} files, manifest says {want_files}"
        )
    try:
        with open(os.path.join(tmp, MARKER), "w") as f:
            f.write(manifest["sha256"] + "\n")
    except OSError as exc:
        where = os.path.dirname(tmp)
        raise LoaderError(
            f"torchwheel_loader: cannot write the completion marker in {where} "
            f"({exc.strerror or exc}); raise the function's ephemeral storage "
            "(EphemeralStorage) if /tmp is full"
        ) from None


def _insert_path(tree: str, layer_python: str) -> None:
    """Put ``tree`` where a plain layer's site-packages would be: before the layer's entries."""
    if tree in sys.path:
        return
    root = os.path.realpath(layer_python)
    index = 0
    for i, entry in enumerate(sys.path):
        real = os.path.realpath(entry or os.curdir)
        if real == root or real.startswith(root + os.sep):
            index = i
            break
    sys.path.insert(index, tree)
    importlib.invalidate_caches()


def activate(here: str | None = None) -> str:
    """Unpack (or reuse) the packed layer next to ``here`` and put it on ``sys.path``.

    Every failure is a :class:`LoaderError` (an ``ImportError``).
    """
    try:
        return _activate(here)
    except LoaderError:
        raise
    except Exception as exc:
        raise LoaderError(
            f"torchwheel_loader: cannot activate the packed layer: {type(exc).__name__}: "
            f"{str(exc)[:200]}"
        ) from exc


def _activate(here: str | None) -> str:
    global path
    here = here or os.path.dirname(os.path.abspath(__file__))
    manifest = _read_manifest(here)
    archive = os.path.join(here, MANIFEST_DIR, str(manifest.get("archive", "")))
    parent = os.environ.get(ENV_DIR) or "/tmp"
    tree = unpack(archive, manifest, parent)
    _insert_path(tree, here)
    path = tree
    return tree


if __name__ == "torchwheel_loader":
    activate()
