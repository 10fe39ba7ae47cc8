"""The merged file system of a container image: layers applied in order with OCI whiteouts.

:func:`list_layer` streams one layer blob once (:mod:`torchwheel.tarstream`) and lists what it
does — entries added, ``.wh.<name>`` whiteouts, ``.wh..wh..opq`` opaque directories — handing
each regular file to a visitor while its bytes go by (so a check reads every layer exactly
once), and checks the uncompressed digest against the config's ``diff_id``.
:class:`FileSystem` applies listings in order as the OCI layer spec says ("Whiteouts": a
whiteout deletes the name and everything below it from the layers beneath; an opaque marker
hides everything the layers beneath put in its directory; neither touches its own layer's
entries; a file replacing a directory hides the directory's contents) and resolves symlinks as
the kernel does. :func:`open_member` re-reads one file later (directly from a plain layer; by
re-streaming a compressed one up to it).
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .errors import ArchiveError
from .image import ImageLayer
from .tarstream import (
    DIRECTORY,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Decompressed,
    TarMember,
    TarStream,
    member_name,
    open_layer_stream,
)

__all__ = ["MAX_SYMLINKS", "FileSystem", "FsEntry", "LayerListing", "list_layer", "open_member"]

#: Symlinks followed while resolving one path (the kernel's limit).
MAX_SYMLINKS = 40
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class FsEntry:
    """A file of the merged image: where it lies, what it is, and which layer brought it."""

    path: str  # absolute: /var/task/app.py
    kind: str  # file / dir / symlink / other (hardlinks are resolved to the file they name)
    size: int
    mode: int
    link: str  # a symlink's target as stored
    layer: int  # index of the layer whose bytes hold it
    offset: int  # where its data starts in that layer's uncompressed tar stream


@dataclass
class LayerListing:
    """What one layer does: entries added, paths whited out, directories made opaque."""

    index: int
    entries: list[FsEntry] = field(default_factory=list)
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)  # member names with ``..``
    bytes: int = 0  # uncompressed tar bytes
    read: int = 0  # of which actually read (the rest was skipped by seeking a plain layer)
    digest: str | None = None  # sha256 of the uncompressed tar, when hashed
    compression: str = "none"


#: Called for every regular file as the layer streams by: read it through ``tar.chunks()``.
Visitor = Callable[[FsEntry, TarStream], None]
#: Told ``(files, bytes)`` done after each member (uncompressed bytes of the tar stream).
Progress = Callable[[int, int], None]


def _whiteout(listing: LayerListing, path: str) -> bool:
    """Record ``path`` if it is a whiteout or opaque marker; True when it was one."""
    base = posixpath.basename(path)
    if not base.startswith(_WHITEOUT):
        return False
    if base == _OPAQUE:
        listing.opaque.append(posixpath.dirname(path))
    elif not base.startswith(_WHITEOUT + _WHITEOUT):  # other .wh..wh.* names: aufs metadata
        listing.whiteouts.append(posixpath.join(posixpath.dirname(path), base[len(_WHITEOUT) :]))
    return True


def _entry(m: TarMember, path: str, layer: int, by_path: dict[str, FsEntry]) -> FsEntry:
    """The entry for member ``m``; a hardlink to a file of this layer becomes that file."""
    if m.kind != HARDLINK:
        return FsEntry(path, m.kind, m.size, m.mode, m.linkname, layer, m.offset)
    target = "/" + (member_name(m.linkname) or "")
    linked = by_path.get(target)
    if linked is None:  # a file of a lower layer: resolved when the layers are applied
        return FsEntry(path, "hardlink", 0, m.mode, target, layer, 0)
    return FsEntry(path, linked.kind, linked.size, m.mode, linked.link, layer, linked.offset)


def list_layer(
    layer: ImageLayer,
    *,
    visit: Visitor | None = None,
    hash_content: bool = True,
    progress: Progress | None = None,
    max_bytes: int | None = None,
) -> LayerListing:
    """Stream ``layer`` once: its entries and whiteouts; ``visit`` may read each regular file.

    With ``hash_content`` the uncompressed stream is hashed and checked against the layer's
    ``diff_id`` (:class:`ArchiveError` when they differ). ``progress`` is told each member. A
    layer inflating past ``max_bytes`` is an :class:`ArchiveError` (a bomb, or far over any
    quota: the caller chooses).
    """
    label = f"{layer.store.label}: layer {layer.index + 1} ({layer.short})"
    listing = LayerListing(index=layer.index)
    by_path: dict[str, FsEntry] = {}
    with layer.open() as raw:
        stream = open_layer_stream(
            raw, source=label, hash_content=hash_content, max_bytes=max_bytes
        )
        listing.compression = stream.compression
        tar = TarStream(stream, source=label)
        done = 0
        for m in tar:
            if progress is not None:
                progress(1, stream.pos - done)
                done = stream.pos
            name = member_name(m.name)
            if name is None:
                if ".." in m.name.split("/"):
                    listing.unsafe.append(m.name)
                continue
            if _whiteout(listing, "/" + name):
                continue
            entry = _entry(m, "/" + name, layer.index, by_path)
            by_path[entry.path] = entry
            listing.entries.append(entry)
            if entry.kind == REGULAR and visit is not None and entry.offset == m.offset:
                visit(entry, tar)
        if hash_content:
            stream.drain()
        if progress is not None:
            progress(0, stream.pos - done)
        listing.bytes = stream.pos
        listing.read = stream.pos - stream.seeked
        listing.digest = stream.digest
    if hash_content and listing.digest is not None and listing.digest != layer.diff_id:
        raise ArchiveError(
            f"{label}: content sha256 {listing.digest[7:19]}… does not match the config's "
            f"diff_id {layer.diff_id}: the image is corrupt"
        )
    return listing


class FileSystem:
    """The merged view of an image's layers, applied in order with OCI whiteouts."""

    def __init__(self) -> None:
        self.files: dict[str, FsEntry] = {}
        self._children: dict[str, set[str]] = {"/": set()}

    def _link(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while True:
            kids = self._children.setdefault(parent, set())
            if path in kids:
                return
            kids.add(path)
            if parent == "/":
                return
            path, parent = parent, posixpath.dirname(parent)

    def remove(self, path: str) -> None:
        """Delete ``path`` and everything below it (iteratively: a layer may nest deep)."""
        self._children.get(posixpath.dirname(path), set()).discard(path)
        stack = [path]
        while stack:
            p = stack.pop()
            self.files.pop(p, None)
            stack.extend(self._children.pop(p, ()))

    def _clear(self, directory: str) -> None:
        for child in list(self._children.get(directory, ())):
            self.remove(child)

    def apply(self, listing: LayerListing) -> None:
        """Apply one layer on top: opaque dirs and whiteouts first, then its entries."""
        for d in listing.opaque:
            self._clear(d)
        for w in listing.whiteouts:
            self.remove(w)
        for e in listing.entries:
            old = self.files.get(e.path)
            if old is not None and (old.kind == DIRECTORY) != (e.kind == DIRECTORY):
                self.remove(e.path)  # a file replacing a directory hides all below it
            if e.kind == "hardlink":  # to a file of a lower layer
                target = self.files.get(e.link)
                if target is None:
                    continue
                e = FsEntry(
                    e.path,
                    target.kind,
                    target.size,
                    e.mode,
                    target.link,
                    target.layer,
                    target.offset,
                )
            self.files[e.path] = e
            self._link(e.path)

    def listdir(self, directory: str) -> list[str]:
        """Absolute paths directly below ``directory`` (directories implied by files too)."""
        return sorted(self._children.get(directory.rstrip("/") or "/", ()))

    def is_dir(self, path: str) -> bool:
        """True for a directory (listed, or implied by what lies below it)."""
        e = self.files.get(path)
        return (e is not None and e.kind == DIRECTORY) or (e is None and path in self._children)

    def resolve(self, path: str) -> str | None:
        """``path`` with every symlink resolved (as the kernel would); None when it dangles."""
        parts = [p for p in reversed(path.split("/")) if p]  # a stack: the next part last
        current = "/"
        hops = 0
        while parts:
            part = parts.pop()
            if part == ".":
                continue
            if part == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, part)
            e = self.files.get(candidate)
            if e is not None and e.kind == SYMLINK:
                hops += 1
                if hops > MAX_SYMLINKS:
                    return None
                target = e.link
                current = "/" if target.startswith("/") else current
                parts.extend(p for p in reversed(target.split("/")) if p)
                continue
            if e is None and candidate not in self._children:
                return None
            current = candidate
        return current

    def walk(self, top: str) -> Iterator[FsEntry]:
        """Every entry below ``top`` (not following symlinks), in path order."""
        prefix = top.rstrip("/") + "/"
        for path in sorted(self.files):
            if path.startswith(prefix):
                yield self.files[path]


def open_member(layer: ImageLayer, entry: FsEntry) -> BinaryIO:
    """A fresh stream of ``entry``'s bytes (seekable; backwards costs a re-read of the layer)."""
    return io.BufferedReader(_MemberReader(layer, entry), buffer_size=1 << 20)


class _MemberReader(io.RawIOBase):
    """A member's data read from its layer: direct for plain layers, else by re-streaming."""

    def __init__(self, layer: ImageLayer, entry: FsEntry) -> None:
        self._layer, self._entry = layer, entry
        self._pos = 0
        self._raw: BinaryIO | None = None
        self._stream: Decompressed | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _ensure(self) -> Decompressed:
        if self._stream is None or self._stream.pos > self._entry.offset + self._pos:
            if self._raw is not None:
                self._raw.close()
            self._raw = self._layer.open()
            self._stream = open_layer_stream(self._raw, source=self._layer.store.label)
        want = self._entry.offset + self._pos
        if self._stream.pos < want:
            self._stream.skip(want - self._stream.pos)
        return self._stream

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._entry.size - self._pos)
        if n <= 0:
            return 0
        data = self._ensure().read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._entry.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        super().close()
