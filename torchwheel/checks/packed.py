"""Packed layers (:mod:`torchwheel.packed`): the archive's members as entries, and the /tmp need.

:func:`expand_packed_archive` is an expander: it streams a packed layer's ``.tar.zst`` once,
with the loader's own tar reader (so the same members are refused), and returns its members
as entries mounted where the loader unpacks them, nothing written to disk. Members up to
:data:`KEEP_RAW` bytes are kept as bytes; larger ones as zstd level-1 copies decompressed
again on demand, so checking torch holds ~200 MB rather than the 460 MB tree.

Budgets (docs/security.md): at most :data:`MAX_MEMBERS` members; at most the largest
``/tmp`` Lambda offers (``ephemeral_storage_max_mb``) unpacked, since the loader could never
unpack more; and what is held while checking (raw members and level-1 frames) at most
:data:`HELD_PER_ARCHIVE_BYTE` times the archive's own size plus :data:`HELD_FLOOR` — the
stream stops as soon as one is exceeded (a 100 KB archive of 2,000 × 1 MiB members held
2 GB before).
:func:`packed_findings` is an extra check: manifest / archive agreement and the
``ephemeral-storage`` need.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from typing import IO, Any, BinaryIO, cast

from ..errors import ArchiveError
from ..loader import torchwheel_loader as loader
from ..targets import Target, quotas
from .model import INFO, CheckState, Expansion, Finding, LayerEntry, finding

__all__ = [
    "HELD_FLOOR",
    "HELD_PER_ARCHIVE_BYTE",
    "KEEP_RAW",
    "MAX_MEMBERS",
    "expand_packed_archive",
    "is_packed_archive",
    "packed_findings",
]

#: Members up to this size are kept as bytes while streaming; larger ones as zstd level-1
#: copies (re-decompressed on demand).
KEEP_RAW = 4096
#: Most members a packed archive may hold (torch 2.13 holds ~15,000).
MAX_MEMBERS = 500_000
#: Bytes held while checking may reach this many times the archive's size ...
HELD_PER_ARCHIVE_BYTE = 4
#: ... plus this many.
HELD_FLOOR = 64 * 1024 * 1024
_CHUNK = 1 << 20
#: The unit /tmp space is counted in (a file or directory takes whole 4 KiB blocks).
_DISK_BLOCK = 4096
# The layout the loader reads (torchwheel.packed writes the same names; importing the loader,
# not the builder, keeps `check` from loading the layer installer).
MANIFEST_DIR = loader.MANIFEST_DIR
MANIFEST_NAME = loader.MANIFEST_NAME
_ARCHIVE_DIR = f"python/{MANIFEST_DIR}/"

_Access = tuple[Callable[[], BinaryIO], Callable[[], Iterator[bytes]]]


def is_packed_archive(path: str) -> bool:
    """True for the archive member of a packed layer (``python/torchwheel_packed/*.tar.zst``)."""
    return path.startswith(_ARCHIVE_DIR) and path.endswith(".tar.zst") and path.count("/") == 2


# -- reading members back -------------------------------------------------------------------------


class _ReplayReader(io.RawIOBase):
    """A seekable view of one member stored as a zstd frame: forward reads stream; a backward
    seek restarts the decompression (costly, rare: the ELF re-read fallback)."""

    def __init__(self, frame: bytes, size: int) -> None:
        super().__init__()
        self._frame = frame
        self._size = size
        self._pos = 0
        self._reader: Any = None
        self._restart()

    def _restart(self) -> None:
        import zstandard  # the compressor of packed layers, loaded only when one is checked

        self._reader = zstandard.ZstdDecompressor().stream_reader(self._frame)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, buf: Any) -> int:
        data = self._reader.read(len(buf))
        n = len(data)
        buf[:n] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {
            io.SEEK_SET: offset,
            io.SEEK_CUR: self._pos + offset,
            io.SEEK_END: self._size + offset,
        }[whence]
        if target < self._pos:
            self._restart()
        while self._pos < target:
            step = self._reader.read(min(target - self._pos, _CHUNK))
            if not step:
                break
            self._pos += len(step)
        return self._pos


def _frame_chunks(frame: bytes) -> Iterator[bytes]:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(frame)
    while True:
        chunk = reader.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def _bytes_access(blob: bytes) -> _Access:
    def opener() -> BinaryIO:
        return io.BytesIO(blob)

    def chunker() -> Iterator[bytes]:
        return iter((blob,))

    return opener, chunker


def _frame_access(frame: bytes, size: int) -> _Access:
    def opener() -> BinaryIO:
        return io.BufferedReader(_ReplayReader(frame, size), buffer_size=_CHUNK)

    def chunker() -> Iterator[bytes]:
        return _frame_chunks(frame)

    return opener, chunker


# -- the expander ---------------------------------------------------------------------------------

#: (relative path, size, mode, bytes kept raw, zstd frame); both None for a directory
_Record = tuple[str, int, int, "bytes | None", "bytes | None"]


def _recompress(stream: Any, name: str, size: int) -> bytes:
    """Read ``size`` bytes of member ``name`` from ``stream`` into one zstd level-1 frame."""
    import zstandard

    cobj = zstandard.ZstdCompressor(level=1).compressobj(size=size)
    parts: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(min(left, _CHUNK))
        if not chunk:
            raise ValueError(f"archive truncated in {name!r}")
        parts.append(cobj.compress(chunk))
        left -= len(chunk)
    parts.append(cobj.flush())
    return b"".join(parts)


class _Budget:
    """What one archive may cost: members, unpacked bytes, bytes held (see the module doc)."""

    def __init__(self, archive_size: int) -> None:
        self.members = 0
        self.unpacked = 0
        self.held = 0
        self.max_unpacked = quotas().ephemeral_storage_max_mb * 1024 * 1024
        self.max_held = HELD_FLOOR + HELD_PER_ARCHIVE_BYTE * archive_size

    def member(self, size: int) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise ArchiveError(f"holds more than {MAX_MEMBERS:,} members")
        self.unpacked += size
        if self.unpacked > self.max_unpacked:
            raise ArchiveError(
                f"unpacks to more than {self.max_unpacked:,} bytes, more than the largest "
                "/tmp Lambda offers"
            )

    def hold(self, data: bytes) -> bytes:
        self.held += len(data)
        if self.held > self.max_held:
            raise ArchiveError(
                f"needs more than {self.max_held:,} bytes held to check (the limit for an "
                "archive of this size)"
            )
        return data


def _read_members(raw: BinaryIO, archive_size: int) -> tuple[list[_Record], str]:
    """Every member of the tar.zst ``raw`` (``archive_size`` bytes), and its sha256."""
    import zstandard

    records: list[_Record] = []
    budget = _Budget(archive_size)
    hashing = loader._HashingReader(raw)
    # _HashingReader has the read/readinto that stream_reader uses; not a full IO[bytes]
    stream = zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], hashing), read_size=_CHUNK)
    for name, kind, size, mode in loader._members(stream):
        rel = loader._safe_name(name).replace(os.sep, "/")
        budget.member(size)
        if kind == "dir":
            records.append((rel, 0, 0o755, None, None))
            continue
        if size <= KEEP_RAW:
            data = budget.hold(loader._read_exact(stream, size) if size else b"")
            records.append((rel, size, mode, data, None))
        else:
            frame = budget.hold(_recompress(stream, name, size))
            records.append((rel, size, mode, None, frame))
        pad = -size % loader.BLOCK
        if pad:
            loader._read_exact(stream, pad)
    hashing.drain()
    return records, hashing.digest.hexdigest()


def _entry(archive: LayerEntry, mount: str, record: _Record) -> LayerEntry:
    rel, size, mode, data, frame = record
    common: dict[str, Any] = {
        "path": rel,
        "is_symlink": False,
        "origin": archive.origin,
        "mount": mount,
        "input_index": archive.input_index,
        "expanded_from": archive.label,
    }
    if data is None and frame is None:
        return LayerEntry(size=0, mode=0o755, is_dir=True, open=_bytes_access(b"")[0], **common)
    opener, chunker = _bytes_access(data or b"") if frame is None else _frame_access(frame, size)
    return LayerEntry(
        size=size,
        mode=mode,
        is_dir=False,
        open=opener,
        compressed_size=None,
        chunks=chunker,
        **common,
    )


def expand_packed_archive(entry: LayerEntry) -> Expansion | None:
    """Expander: the members of a packed layer's archive as entries under ``/tmp``.

    Streams the archive once (zstd ``stream_reader`` + the loader's stream-mode tar reader)
    and returns an :class:`Expansion` whose entries are mounted where the loader unpacks them
    (``/tmp/torchwheel-<sha>``) and whose directory goes first on ``sys.path``. Nothing is
    written to disk. A corrupt or unsafe archive raises :class:`ArchiveError` naming the zip
    member.
    """
    if entry.is_dir or entry.is_symlink or not is_packed_archive(entry.path):
        return None
    import zstandard

    raw = entry.open()
    try:
        records, sha = _read_members(raw, entry.size)
    except ArchiveError as exc:
        raise ArchiveError(f"{entry.label}: packed archive {exc}") from None
    except (ValueError, OSError, tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise ArchiveError(f"{entry.label}: unreadable packed archive ({exc})") from None
    finally:
        raw.close()
    mount = f"/tmp/{loader.PREFIX}{sha[: loader.HASH_CHARS]}"
    entries = [_entry(entry, mount, r) for r in records]
    return Expansion(entries=entries, sys_path=(mount,))


# -- the extra check ------------------------------------------------------------------------------


def _storage_finding(arc: LayerEntry, files: list[LayerEntry], dirs: int, mount: str) -> Finding:
    """``ephemeral-storage``: a warning over the default /tmp, info with the numbers below it."""
    disk = sum(-(-e.size // _DISK_BLOCK) * _DISK_BLOCK for e in files) + (dirs + 1) * _DISK_BLOCK
    need = int(loader.needed_mb(disk))
    rec = int(loader._recommend_mb(disk))
    default = quotas().ephemeral_storage_default_mb
    detail: dict[str, Any] = {
        "needed_mb": need,
        "recommended_mb": rec,
        "default_mb": default,
        "unpacked_bytes": sum(e.size for e in files),
        "files": len(files),
        "unpack_dir": mount,
    }
    if need > default:
        return finding(
            "ephemeral-storage",
            arc.label,
            f"the packed layer unpacks {need} MB into /tmp, more than the default "
            f"{default} MB: set the function's EphemeralStorage to at least {rec} MB",
            **detail,
        )
    return finding(
        "ephemeral-storage",
        arc.label,
        f"the packed layer unpacks {need} MB into /tmp (default {default} MB): "
        f"{default - need} MB left for the function",
        severity=INFO,
        **detail,
    )


def _read_manifest(entry: LayerEntry) -> dict[str, Any] | str:
    """The manifest as the loader validates it (:func:`loader.load_manifest`), or why the
    loader would refuse it."""
    if entry.size > loader.MAX_MANIFEST_BYTES:
        return f"{MANIFEST_NAME} is {entry.size:,} bytes, not a manifest"
    try:
        with entry.open() as f:
            return loader.load_manifest(f.read(), MANIFEST_NAME)
    except loader.LoaderError as exc:
        return str(exc).removeprefix("torchwheel_loader: ")


def _archive_sha(arc: LayerEntry, expanded: list[LayerEntry]) -> str:
    """The archive's sha256 (prefix): from the mount its members were given, else (no member
    at all) hashed again — an empty archive is still one the loader accepts."""
    if expanded:
        return expanded[0].mount.rsplit("-", 1)[-1]
    h = hashlib.sha256()
    with arc.open() as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()[: loader.HASH_CHARS]


def _manifest_problem(
    arc: LayerEntry, expanded: list[LayerEntry], files: int, state: CheckState
) -> str | None:
    """Why the manifest beside the archive does not describe it, or None."""
    mpath = posixpath.join(posixpath.dirname(arc.abs_path), MANIFEST_NAME)
    man_entry = state.files.get(mpath)
    if man_entry is None:
        return f"{MANIFEST_NAME} is missing next to the archive; the loader cannot start"
    manifest = _read_manifest(man_entry)
    if isinstance(manifest, str):
        return manifest
    sha = _archive_sha(arc, expanded)
    if not manifest["sha256"].startswith(sha):
        return (
            f"the archive's sha256 does not match {MANIFEST_NAME} "
            f"({manifest['sha256'][:16]}… vs {sha}…): the loader "
            "will refuse it; rebuild or re-upload the layer"
        )
    listed = manifest.get("files")
    if listed is not None and listed != files:
        return f"{MANIFEST_NAME} lists {listed} files, the archive holds {files}"
    return None


def packed_findings(state: CheckState, target: Target | None) -> list[Finding]:
    """Extra check: manifest/archive agreement and the ``ephemeral-storage`` need.

    Target-independent (called with ``target=None``): a manifest that is missing, unreadable
    or disagrees with the archive (hash, file count) is a ``packed-manifest`` error; the /tmp
    the unpacked tree needs is an ``ephemeral-storage`` warning when it exceeds the default
    512 MB (info otherwise, with the number).
    """
    if target is not None:
        return []
    findings: list[Finding] = []
    archives = [
        e
        for e in state.files.values()
        if not e.expanded_from and not e.is_dir and is_packed_archive(e.path)
    ]
    for arc in archives:
        expanded = [e for e in state.entries if e.expanded_from == arc.label]
        files = [e for e in expanded if not e.is_dir]
        mount = expanded[0].mount if expanded else "/tmp"
        findings.append(_storage_finding(arc, files, len(expanded) - len(files), mount))
        problem = _manifest_problem(arc, expanded, len(files), state)
        if problem is not None:
            findings.append(finding("packed-manifest", arc.label, problem))
    return findings
