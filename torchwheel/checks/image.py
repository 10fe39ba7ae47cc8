"""Check a Lambda container image: ``/var/task`` and ``/opt`` judged against the image itself.

``torchwheel check image.tar`` (a ``docker save`` tarball or an OCI layout, directory or tar;
``-`` reads one from stdin): every layer is streamed once, in parallel across layers
(:func:`torchwheel.imagefs.list_layer`); while a file's bytes go by it is hashed (files of
``/var/task`` and ``/opt``, for RECORD), ELF-parsed (those files, and every library-named file
elsewhere: the image's system libraries) or kept (``.dist-info`` metadata, ``/etc/os-release``,
``ld.so.conf``). Then the layers are applied with their whiteouts (:class:`FileSystem`), and
the merged ``/var/task`` (the function, mounted as for a zip) and ``/opt`` (layers) become the
:class:`~torchwheel.checks.model.CheckState` every check module judges — with the image's own
files as the system (:class:`~.imagesys.ImageSystem`), the image's glibc / libstdc++ / CPython
/ architecture as the target (:func:`~.imagesys.image_runtime`), and Lambda's 10 GB image quota
from the facts file.

Finding paths name the image, the layer (its ``diff_id``, the same in every format) and the
mount: ``app.tar@sha256:0123456789ab/var/task:fast.so``.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..elf import ELFInfo, ELFScanner, is_elf
from ..errors import ELFError, InputError
from ..image import Image, ImageLayer, open_image
from ..imagefs import FileSystem, FsEntry, LayerListing, list_layer, open_member
from ..progress import Step
from ..targets import Target, normalize_arch, quotas
from ..tarstream import DIRECTORY, REGULAR, SYMLINK, TarStream
from ..wheelfile import MAX_METADATA_BYTES, record_hash
from .contents import KEEP_PREFIX_MAX
from .imagesys import (
    ImageFacts,
    ImageSystem,
    claimed_runtime,
    describe,
    disagreements,
    image_arch,
    image_runtime,
)
from .model import (
    FUNCTION_MOUNT,
    LAYER_MOUNT,
    CheckState,
    Finding,
    LayerEntry,
    SizeReport,
    finding,
)
from .scan import is_library_name, load_dists, mark_vendored

__all__ = ["ImageCheck", "read_image"]

_MOUNTS = (FUNCTION_MOUNT, LAYER_MOUNT)
_KEEP_NAMES = frozenset({"METADATA", "WHEEL", "RECORD"})
_SYSTEM_TEXTS = frozenset(
    {"/etc/os-release", "/usr/lib/os-release", "/etc/system-release", "/etc/ld.so.conf"}
)
_TEXT_LIMIT = 64 * 1024
_ARCH_TO_OCI = {"x86_64": "amd64", "arm64": "arm64"}
_MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}


@dataclass
class _Read:
    """One deployed file's facts from the streaming pass."""

    digest: str | None = None
    data: bytes | None = None


@dataclass
class _LayerResult:
    listing: LayerListing
    read: dict[int, _Read]  # offset -> facts of a deployed file
    elves: dict[int, ELFInfo]
    texts: dict[int, bytes]


def _deployed(path: str) -> bool:
    return path.startswith((FUNCTION_MOUNT + "/", LAYER_MOUNT + "/"))


def _keep(path: str, size: int) -> bool:
    if _deployed(path):
        return (
            ".dist-info/" in path
            and posixpath.basename(path) in _KEEP_NAMES
            and size <= MAX_METADATA_BYTES
        )
    if size > _TEXT_LIMIT:
        return False
    return path in _SYSTEM_TEXTS or (
        path.startswith("/etc/ld.so.conf.d/") and path.endswith(".conf")
    )


class _Visitor:
    """Reads what the checks need from each regular file as its layer streams by."""

    def __init__(self, layer: ImageLayer, record: bool) -> None:
        self.layer = layer
        self.record = record
        self.result = _LayerResult(LayerListing(layer.index), {}, {}, {})

    def __call__(self, entry: FsEntry, tar: TarStream) -> None:
        deployed = _deployed(entry.path)
        hashing = deployed and self.record
        keep = _keep(entry.path, entry.size)
        elf_wanted = deployed or is_library_name(posixpath.basename(entry.path))
        if not (hashing or keep or elf_wanted) or entry.size == 0:
            if hashing:
                empty = record_hash(hashlib.sha256().digest(), "sha256")
                self.result.read[entry.offset] = _Read(digest=empty)
            return
        hasher = hashlib.sha256() if hashing else None
        kept = bytearray() if keep else None
        scanner: ELFScanner | None = None
        head = b""
        decided = False
        for chunk in tar.chunks():
            if not decided:
                head += chunk
                if len(head) < 4 and len(head) < entry.size:
                    continue
                decided = True
                chunk, head = head, b""
                if elf_wanted and is_elf(chunk):
                    # keep as much as the zip scanner may (KEEP_PREFIX_MAX, 16 MiB): a miss
                    # means streaming the layer again up to the file, not one member
                    prefix = min(entry.size, KEEP_PREFIX_MAX)
                    scanner = ELFScanner(entry.size, name=self._label(entry), keep_prefix=prefix)
                elif hasher is None and kept is None:
                    return
            if hasher is not None:
                hasher.update(chunk)
            if kept is not None:
                kept += chunk
            if scanner is not None:
                scanner.feed(chunk)
                if scanner.satisfied and hasher is None and kept is None:
                    break
        self._finish(entry, deployed, hasher, kept, scanner)

    def _label(self, entry: FsEntry) -> str:
        return f"{self.layer.store.label}@{self.layer.short}:{entry.path}"

    def _finish(
        self,
        entry: FsEntry,
        deployed: bool,
        hasher: Any,
        kept: bytearray | None,
        scanner: ELFScanner | None,
    ) -> None:
        if deployed:
            self.result.read[entry.offset] = _Read(
                digest=None if hasher is None else record_hash(hasher.digest(), "sha256"),
                data=None if kept is None else bytes(kept),
            )
        elif kept is not None:
            self.result.texts[entry.offset] = bytes(kept)
        if scanner is None:
            return
        try:
            info = scanner.result(reopen=lambda: open_member(self.layer, entry))
        except ELFError:
            if deployed:
                raise  # as for a zip member: the file is named, exit 2
            return  # a broken file of the image's own: not ours to judge
        if info is not None:
            self.result.elves[entry.offset] = info


def read_limit() -> int:
    """Most bytes one image (or one of its layers) is read to: Lambda's image quota + 1 GiB.

    Past it the image cannot deploy anyway; stopping there bounds the time a gzip bomb (or a
    wrong file) can take, and the disk a spooled stdin can use.
    """
    return quotas().container_image + 1024**3


def _stream(layer: ImageLayer, record: bool, progress: Step | None) -> _LayerResult:
    visitor = _Visitor(layer, record)
    told = None if progress is None else lambda f, b: progress.advance(files=f, bytes=b)
    visitor.result.listing = list_layer(
        layer, visit=visitor, hash_content=record, progress=told, max_bytes=read_limit()
    )
    return visitor.result


def _stream_all(
    image: Image, record: bool, workers: int | None, progress: Step | None
) -> list[_LayerResult]:
    """Every layer streamed once; layers in parallel (inflate and hashing release the GIL)."""
    n = min(workers or min(4, os.cpu_count() or 1), len(image.layers)) or 1
    if n == 1:
        return [_stream(layer, record, progress) for layer in image.layers]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda layer: _stream(layer, record, progress), image.layers))


# -- the deployment inside the image ------------------------------------------------------------


def _mode(e: FsEntry) -> int:
    kind = {DIRECTORY: stat.S_IFDIR, SYMLINK: stat.S_IFLNK}.get(e.kind, stat.S_IFREG)
    return kind | (e.mode & 0o7777)


def _opener(image: Image, e: FsEntry, data: bytes | None) -> Callable[[], BinaryIO]:
    if data is not None:
        return lambda: io.BytesIO(data)
    if e.kind == SYMLINK:
        link = e.link.encode("utf-8", "surrogateescape")
        return lambda: io.BytesIO(link)
    if e.kind != REGULAR:
        return lambda: io.BytesIO(b"")
    layer = image.layers[e.layer]
    return lambda: open_member(layer, e)


def origin_label(image: Image, layer: int, mount: str) -> str:
    """``app.tar@sha256:0123456789ab/var/task``: image, layer (diff_id), mount."""
    return f"{image.source}@{image.layers[layer].short}{mount}"


def _entries(image: Image, fs: FileSystem, reads: dict[tuple[int, int], _Read]) -> list[LayerEntry]:
    out = []
    for mount in _MOUNTS:
        for e in fs.walk(mount):
            if e.kind not in (REGULAR, DIRECTORY, SYMLINK):
                continue
            got = reads.get((e.layer, e.offset))
            size = len(e.link.encode()) if e.kind == SYMLINK else e.size
            out.append(
                LayerEntry(
                    path=e.path[len(mount) + 1 :],
                    size=size,
                    mode=_mode(e),
                    is_symlink=e.kind == SYMLINK,
                    is_dir=e.kind == DIRECTORY,
                    origin=origin_label(image, e.layer, mount),
                    mount=mount,
                    open=_opener(image, e, None if got is None else got.data),
                    input_index=e.layer,
                )
            )
    return out


def _rehash(state: CheckState) -> None:
    """Files whose RECORD line uses another algorithm than sha256 (rare): hash them again."""
    for d in state.dists:
        if d.vendored:
            continue
        for path, (digest, _size) in d.record.items():
            algo = digest.split("=", 1)[0] if "=" in digest else ""
            entry = state.files.get(path)
            if algo in ("", "sha256") or entry is None or entry.is_symlink:
                continue
            if algo not in hashlib.algorithms_guaranteed or algo.startswith("shake_"):
                continue
            h = hashlib.new(algo)
            with entry.open() as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            state.digests[path] = record_hash(h.digest(), algo)


def _state(image: Image, fs: FileSystem, results: list[_LayerResult], record: bool) -> CheckState:
    reads = {(r.listing.index, off): v for r in results for off, v in r.read.items()}
    entries = _entries(image, fs, reads)
    files = {e.abs_path: e for e in entries if not e.is_dir}
    elves_by = {(r.listing.index, off): v for r in results for off, v in r.elves.items()}
    state = CheckState(
        entries=entries,
        files=files,
        layers=sorted({e.origin for e in entries if e.mount == LAYER_MOUNT}),
        function=next((e.origin for e in entries if e.mount == FUNCTION_MOUNT), None),
        dists=[],
        elves={},
        digests={},
        symlinks={},
        extra_sys_path=[],
        extra_library_path=[],
        generic=[],
        zip_sizes=[],
    )
    for path, entry in files.items():
        fe = fs.files[path]
        key = (fe.layer, fe.offset)
        if entry.is_symlink:
            state.symlinks[path] = fe.link
        elif key in elves_by:
            state.elves[path] = elves_by[key]
        got = reads.get(key)
        if got is not None and got.digest is not None and not entry.is_symlink:
            state.digests[path] = got.digest
    state.dists = load_dists(files)
    mark_vendored(state.dists)
    if record:
        _rehash(state)
    state.bytes_read = sum(r.listing.read for r in results)
    return state


# -- sizes and the image's own findings ---------------------------------------------------------


def _largest_dirs(entries: Sequence[LayerEntry], top: int = 10) -> list[tuple[str, int]]:
    sizes: dict[str, int] = defaultdict(int)
    for e in entries:
        if e.is_dir:
            continue
        parts = e.abs_path.split("/")[1:-1]
        for depth in (3, 4, 5):
            if len(parts) >= depth:
                sizes["/" + "/".join(parts[:depth]) + "/"] += e.size
    return sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:top]


def _sizes(
    image: Image, results: list[_LayerResult], state: CheckState
) -> tuple[list[Finding], SizeReport]:
    limit = quotas().container_image
    per_layer = [
        (f"{image.source}@{image.layers[r.listing.index].short}", r.listing.bytes) for r in results
    ]
    total = sum(n for _p, n in per_layer)
    found = []
    if total > limit:
        found.append(
            finding(
                "image-too-large",
                image.source,
                f"the image's layers add up to {total:,} bytes uncompressed; Lambda allows "
                f"{limit:,} for a container image",
                size=total,
                limit=limit,
            )
        )
    report = SizeReport(
        zipped=((image.source, image.given_bytes),),
        unzipped=tuple(per_layer),
        unzipped_total=total,
        unzipped_limit=limit,
        direct_upload_limit=0,
        layers=len(image.layers),
        layers_limit=0,
        largest_dirs=tuple(_largest_dirs(state.entries)),
    )
    return found, report


def _unsafe(image: Image, results: list[_LayerResult]) -> list[Finding]:
    return [
        finding(
            "unsafe-path",
            f"{image.source}@{image.layers[r.listing.index].short}:{name}",
            f"layer member {name!r} would be written outside the root file system",
        )
        for r in results
        for name in r.listing.unsafe
    ]


@dataclass
class ImageCheck:
    """An image read for checking: the state, the target it is judged as, what it says.

    The image stays open (entries re-read their bytes from it): :meth:`close` it.
    """

    state: CheckState
    target: Target
    generic: list[Finding]
    sizes: SizeReport
    truth: dict[str, Any]
    image: dict[str, Any]
    inputs: tuple[dict[str, Any], ...]
    handle: Image

    def close(self) -> None:
        """Release the image file."""
        self.handle.close()


def _report(image: Image, results: list[_LayerResult], target: Target) -> dict[str, Any]:
    return {
        "format": image.format,
        "tags": list(image.tags),
        "architecture": target.arch,
        "os": target.runtime.os,
        "python": target.python_str,
        "layers": [
            {
                "index": layer.index,
                "diff_id": layer.diff_id,
                "digest": layer.digest,
                "media_type": layer.media_type,
                "compression": r.listing.compression,
                "bytes": r.listing.bytes,
                "blob_bytes": layer.size,
            }
            for layer, r in zip(image.layers, results, strict=True)
        ],
    }


def read_image(
    path: str,
    *,
    arch: str | None = None,
    python: str | None = None,
    runtime: str | None = None,
    record: bool = True,
    workers: int | None = None,
    progress: Step | None = None,
) -> ImageCheck:
    """Read the image at ``path`` (``-``: stdin) into everything :func:`check` judges.

    ``progress`` (the ``scan`` step) counts members and uncompressed bytes as layers stream.
    """
    oci_arch = _ARCH_TO_OCI.get(normalize_arch(arch)) if arch else None
    image = open_image(path, arch=oci_arch, spool_limit=read_limit())
    try:
        if progress is not None:
            progress.update(item=image.source)
        return _read(image, arch, python, runtime, record, workers, progress)
    except BaseException:
        image.close()
        raise


def _read(
    image: Image,
    arch: str | None,
    python: str | None,
    runtime: str | None,
    record: bool,
    workers: int | None,
    progress: Step | None,
) -> ImageCheck:
    results = _stream_all(image, record, workers, progress)
    fs = FileSystem()
    for r in results:
        fs.apply(r.listing)
    facts_ = ImageFacts(
        elves={(r.listing.index, o): v for r in results for o, v in r.elves.items()},
        texts={(r.listing.index, o): v for r in results for o, v in r.texts.items()},
    )
    arch_name, arch_from = image_arch(image, arch)
    system = ImageSystem(image, fs, facts_, _MACHINES[arch_name])
    py, py_from = system.python(python)
    claimed = claimed_runtime(py, py_from, runtime)
    rt = image_runtime(system, f"image {image.tags[0]}" if image.tags else "image", py, arch_name)
    target = Target(runtime=rt, arch=arch_name, python=py)
    state = _state(image, fs, results, record)
    if not any(not e.is_dir for e in state.entries):
        workdir = image.config.working_dir or "/"
        raise InputError(
            f"{image.source}: nothing in /var/task or /opt to check (the image's WorkingDir is "
            f"{workdir}); Lambda images keep the function in /var/task (LAMBDA_TASK_ROOT)"
        )
    state.image = system
    generic = _unsafe(image, results)
    found, sizes = _sizes(image, results, state)
    generic.extend(found)
    if claimed is not None:
        generic.extend(disagreements(rt, claimed, target, image.source))
    truth = describe(system, rt, py_from, arch_from)
    truth["claimed_runtime"] = None if claimed is None else claimed.name
    inputs = (
        {
            "path": image.source,
            "kind": "image",
            "role": "image",
            "mount": "/",
            "shape": image.format,
            "shape_name": image.tags[0] if image.tags else None,
            "described": f"container image ({image.format}, {len(image.layers)} layers)",
        },
    )
    report = _report(image, results, target)
    return ImageCheck(state, target, generic, sizes, truth, report, inputs, image)
