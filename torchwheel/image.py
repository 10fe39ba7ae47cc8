"""Container images — ``docker save`` tarballs and OCI image layouts — read without extracting.

Formats (OCI image spec v1.1: image-layout.md, manifest.md, config.md, layer.md):

* ``docker save`` writes a tar with ``manifest.json`` — ``[{"Config": ..., "RepoTags": [...],
  "Layers": [...]}]`` — naming the config and the layer tars in order (``<id>/layer.tar``,
  uncompressed, before docker 25; ``blobs/sha256/<hex>`` since, next to an OCI layout).
* An OCI image layout (a directory, or a tar of one: ``skopeo copy … oci-archive:``,
  ``docker buildx --output type=oci``) has ``oci-layout`` and ``index.json``, whose
  descriptors lead to an image manifest (through an image index for multi-platform images:
  the platform is chosen by architecture), which names the config and the layer blobs
  (``tar``, ``tar+gzip`` or ``tar+zstd``) under ``blobs/<alg>/<hex>``.

Applying the layers (OCI whiteouts) is :mod:`torchwheel.imagefs`.

Nothing is extracted: layer blobs are streamed (:mod:`torchwheel.tarstream`) from the image
file by offset; an image on stdin (or a gzip-compressed tarball) is first spooled to an
unlinked temporary file, refused beyond ``spool_limit`` bytes. Every JSON document is bounded
(:data:`MAX_JSON_BYTES`), the config's and manifest's digests are verified, and each layer's
uncompressed digest is checked against the config's ``rootfs.diff_ids`` while it is read
(unless the caller skips hashing).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .errors import ArchiveError, InputError
from .limits import open_regular
from .tarstream import (
    REGULAR,
    Decompressed,
    TarStream,
    looks_like_tar,
    member_name,
)

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_LAYERS",
    "SPOOL_LIMIT",
    "Image",
    "ImageConfig",
    "ImageLayer",
    "is_image",
    "open_image",
]

#: Largest manifest / index / config document read.
MAX_JSON_BYTES = 8 * 1024 * 1024
#: Most layers in one image (docker refuses more than 127).
MAX_LAYERS = 256
#: Largest image accepted on stdin (or decompressed from a .tar.gz), spooled to a temp file.
SPOOL_LIMIT = 32 * 1024**3

_MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


# -- reading the image file ---------------------------------------------------------------------


class _Region(io.RawIOBase):
    """A read-only, seekable window ``[offset, offset + size)`` of a file descriptor (pread)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd, self._off, self._size, self._pos = fd, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._off + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _region(fd: int, offset: int, size: int) -> BinaryIO:
    return io.BufferedReader(_Region(fd, offset, size), buffer_size=1 << 20)


class _Store:
    """Named blobs of an image: members of a tar file, or files below a directory."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.fd = -1
        self.members: dict[str, tuple[int, int]] = {}  # name -> (offset, size)
        self.root: str | None = None

    def has(self, name: str) -> bool:
        if self.root is not None:
            return os.path.isfile(self._path(name))
        return name in self.members

    def _path(self, name: str) -> str:
        assert self.root is not None
        clean = posixpath.normpath(name)
        if clean.startswith(("/", "..")) or "/../" in clean:
            raise ArchiveError(f"{self.label}: blob path {name!r} leaves the layout")
        return os.path.join(self.root, clean)

    def size(self, name: str) -> int:
        if self.root is not None:
            return os.stat(self._path(name)).st_size
        return self.members[name][1]

    def open(self, name: str) -> BinaryIO:
        if self.root is not None:
            path = self._path(name)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise ArchiveError(f"{self.label}: {name} is not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        if name not in self.members:
            raise ArchiveError(f"{self.label}: no {name} in the image")
        offset, size = self.members[name]
        return _region(self.fd, offset, size)

    def read(self, name: str, limit: int = MAX_JSON_BYTES) -> bytes:
        if not self.has(name):
            raise ArchiveError(f"{self.label}: no {name} in the image")
        if self.size(name) > limit:
            raise ArchiveError(f"{self.label}: {name} is over {limit:,} bytes")
        with self.open(name) as f:
            return f.read()

    def json(self, name: str, digest: str | None = None) -> Any:
        data = self.read(name)
        if digest is not None:
            _verify(data, digest, f"{self.label}: {name}")
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise ArchiveError(f"{self.label}: {name} is not valid JSON") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _verify(data: bytes, digest: str, what: str) -> None:
    alg, _, hexdigest = digest.partition(":")
    if alg not in ("sha256", "sha512"):
        return
    if hashlib.new(alg, data).hexdigest() != hexdigest:
        raise ArchiveError(f"{what}: content does not match its digest {digest}")


def _index_tar(fd: int, label: str) -> dict[str, tuple[int, int]]:
    raw = _region(fd, 0, os.fstat(fd).st_size)
    tar = TarStream(Decompressed(raw, source=label), source=label)
    members: dict[str, tuple[int, int]] = {}
    for m in tar:
        name = member_name(m.name)
        if name and m.kind == REGULAR:
            members[name] = (m.offset, m.size)
    return members


def _spool(src: BinaryIO, label: str, limit: int) -> int:
    """Copy ``src`` (gunzipped when it is gzip) into an unlinked temp file; return its fd."""
    fd, path = tempfile.mkstemp(prefix="torchwheel-image-")
    os.unlink(path)  # nothing is left behind, whatever happens
    try:
        stream = Decompressed(src, source=label, max_bytes=limit)
        while chunk := stream.read_some(1 << 20):
            _write_all(fd, chunk)
        return fd
    except ArchiveError as exc:
        os.close(fd)
        if "inflates past" in str(exc):
            raise InputError(
                f"{label}: more than {limit:,} bytes; Lambda images are at most 10 GB"
            ) from None
        raise
    except BaseException:
        os.close(fd)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _is_gzip(fd: int) -> bool:
    return os.pread(fd, 2, 0) == b"\x1f\x8b"


def _open_store(path: str, spool_limit: int) -> tuple[_Store, int]:
    """The store for ``path`` (``-``: stdin) and the size of what was given."""
    label = "<stdin>" if path == "-" else path
    store = _Store(label)
    if path != "-" and os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "oci-layout")):
            raise InputError(f"{path}: a directory without oci-layout is not an OCI image layout")
        store.root = path
        blobs = os.path.join(path, "blobs", "sha256")
        given = sum(e.stat().st_size for e in os.scandir(blobs)) if os.path.isdir(blobs) else 0
        return store, given
    if path == "-":
        fd = _spool(sys.stdin.buffer, label, spool_limit)
        given = os.fstat(fd).st_size
        if os.pread(fd, 4, 0) == b"PK\x03\x04":
            os.close(fd)
            raise InputError(f"{label}: a zip, not an image; pass zips as files (check layer.zip)")
    else:
        fd = open_regular(path)
        given = os.fstat(fd).st_size
        if _is_gzip(fd):
            with os.fdopen(fd, "rb") as f:
                fd = _spool(f, label, spool_limit)
    store.fd = fd
    try:
        store.members = _index_tar(fd, label)
    except BaseException:
        store.close()
        raise
    return store, given


# -- config and manifests -----------------------------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """What the image config says (OCI config.md): platform, environment, layers' diff_ids."""

    architecture: str | None
    os: str | None
    variant: str | None
    env: tuple[tuple[str, str], ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    working_dir: str | None
    labels: tuple[tuple[str, str], ...]
    diff_ids: tuple[str, ...]

    def getenv(self, name: str) -> str | None:
        """The value of an environment variable the image sets, or None."""
        for key, value in self.env:
            if key == name:
                return value
        return None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def parse_config(data: Any, label: str) -> ImageConfig:
    """An :class:`ImageConfig` from the config JSON (validated by shape)."""
    if not isinstance(data, dict):
        raise ArchiveError(f"{label}: image config is not a JSON object")
    cfg = data.get("config") or {}
    rootfs = data.get("rootfs") or {}
    if not isinstance(cfg, dict) or not isinstance(rootfs, dict):
        raise ArchiveError(f"{label}: image config has a malformed config / rootfs")
    env = []
    for item in _strings(cfg.get("Env")):
        key, _, value = item.partition("=")
        env.append((key, value))
    labels = cfg.get("Labels") or {}
    return ImageConfig(
        architecture=data.get("architecture")
        if isinstance(data.get("architecture"), str)
        else None,
        os=data.get("os") if isinstance(data.get("os"), str) else None,
        variant=data.get("variant") if isinstance(data.get("variant"), str) else None,
        env=tuple(env),
        entrypoint=_strings(cfg.get("Entrypoint")),
        cmd=_strings(cfg.get("Cmd")),
        working_dir=cfg.get("WorkingDir") if isinstance(cfg.get("WorkingDir"), str) else None,
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items()))
        if isinstance(labels, dict)
        else (),
        diff_ids=_strings(rootfs.get("diff_ids")),
    )


@dataclass(frozen=True)
class ImageLayer:
    """One layer: its digests, media type and how to open its blob."""

    index: int
    diff_id: str  # sha256 of the uncompressed tar (config rootfs.diff_ids): the layer's name
    digest: str | None  # the blob's digest as the manifest names it (None: docker-save legacy)
    media_type: str | None
    size: int  # blob bytes
    blob: str  # name in the store
    store: _Store = field(repr=False, compare=False)

    @property
    def short(self) -> str:
        """``sha256:0123456789ab`` — the diff_id shortened for labels."""
        return self.diff_id[:19]

    def open(self) -> BinaryIO:
        """The blob (compressed as stored)."""
        return self.store.open(self.blob)


@dataclass
class Image:
    """An opened image: format, config, ordered layers. Close it (or use ``with``)."""

    source: str
    format: str  # "docker-save" | "oci-layout"
    config: ImageConfig
    layers: tuple[ImageLayer, ...]
    tags: tuple[str, ...]
    given_bytes: int  # size of what was given (the tarball / the layout's blobs)
    store: _Store = field(repr=False)

    def close(self) -> None:
        """Release the image file (a spooled copy goes with it)."""
        self.store.close()

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _digest_name(digest: str, label: str) -> str:
    alg, _, hexdigest = digest.partition(":")
    if not alg.isalnum() or not hexdigest or not all(c in "0123456789abcdef" for c in hexdigest):
        raise ArchiveError(f"{label}: malformed digest {digest[:80]!r}")
    return f"blobs/{alg}/{hexdigest}"


def _platform_label(desc: dict[str, Any]) -> str:
    p = desc.get("platform") or {}
    if not isinstance(p, dict):
        return "?"
    return "/".join(str(p[k]) for k in ("os", "architecture", "variant") if p.get(k))


def _is_attestation(desc: dict[str, Any]) -> bool:
    notes = desc.get("annotations") or {}
    p = desc.get("platform") or {}
    return (isinstance(notes, dict) and "vnd.docker.reference.type" in notes) or (
        isinstance(p, dict) and p.get("os") == "unknown"
    )


def _manifests(store: _Store, index: Any, depth: int = 0) -> list[dict[str, Any]]:
    """Image-manifest descriptors below an index (nested indexes followed twice)."""
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError(f"{store.label}: index.json has no manifests list")
    out: list[dict[str, Any]] = []
    for desc in index["manifests"]:
        if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
            raise ArchiveError(f"{store.label}: malformed descriptor in an image index")
        if desc.get("mediaType") in _INDEX_TYPES and depth < 2:
            nested = store.json(_digest_name(desc["digest"], store.label), desc["digest"])
            out.extend(_manifests(store, nested, depth + 1))
        elif not _is_attestation(desc):
            out.append(desc)
    return out


def _architecture(desc: dict[str, Any]) -> object:
    p = desc.get("platform")
    return p.get("architecture") if isinstance(p, dict) else None


def _choose(store: _Store, descs: list[dict[str, Any]], arch: str | None) -> dict[str, Any]:
    if arch is not None and len(descs) > 1:
        same = [d for d in descs if _architecture(d) == arch]
        descs = same or descs
    if len(descs) == 1:
        return descs[0]
    if not descs:
        raise ArchiveError(f"{store.label}: the image index lists no image manifest")
    platforms = ", ".join(_platform_label(d) for d in descs)
    raise InputError(
        f"{store.label}: holds {len(descs)} images ({platforms}); choose one with --arch"
    )


def _oci_layers(
    store: _Store, manifest: Any
) -> tuple[str, list[tuple[str, str | None, str | None]]]:
    """(config blob name, [(blob name, digest, media type)]) from an image manifest."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise ArchiveError(f"{store.label}: image manifest has no layers list")
    config = manifest.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
        raise ArchiveError(f"{store.label}: image manifest has no config descriptor")
    layers = []
    for desc in manifest["layers"]:
        if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
            raise ArchiveError(f"{store.label}: malformed layer descriptor")
        media = desc.get("mediaType")
        layers.append(
            (
                _digest_name(desc["digest"], store.label),
                desc["digest"],
                media if isinstance(media, str) else None,
            )
        )
    return config["digest"], layers


def _docker_layout(
    store: _Store,
) -> tuple[Any, list[tuple[str, str | None, str | None]], tuple[str, ...]]:
    data = store.json("manifest.json")
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise ArchiveError(f"{store.label}: manifest.json is not a list of images")
    if len(data) > 1:
        names = ", ".join(t for d in data for t in (_repo_tags(d) or ["<untagged>"]))
        raise InputError(f"{store.label}: holds {len(data)} images ({names}); save one per tarball")
    entry = data[0]
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise ArchiveError(f"{store.label}: manifest.json lacks Config or Layers")
    name = member_name(config_name) or config_name
    digest = "sha256:" + posixpath.basename(name).removesuffix(".json")
    config = store.json(name, digest if len(digest) == 71 else None)
    layers: list[tuple[str, str | None, str | None]] = []
    for ln in layer_names:
        if not isinstance(ln, str):
            raise ArchiveError(f"{store.label}: manifest.json names a layer that is not a string")
        blob = member_name(ln) or ln
        d = "sha256:" + posixpath.basename(blob) if blob.startswith("blobs/sha256/") else None
        layers.append((blob, d, None))
    return config, layers, tuple(_repo_tags(entry))


def _repo_tags(entry: dict[str, Any]) -> list[str]:
    """An image's ``RepoTags`` in manifest.json (none when it is not a list)."""
    tags = entry.get("RepoTags")
    return [str(t) for t in tags] if isinstance(tags, list) else []


def _oci_layout(
    store: _Store, arch: str | None
) -> tuple[Any, list[tuple[str, str | None, str | None]], tuple[str, ...]]:
    index = store.json("index.json")
    desc = _choose(store, _manifests(store, index), arch)
    manifest = store.json(_digest_name(desc["digest"], store.label), desc["digest"])
    config_digest, layers = _oci_layers(store, manifest)
    config = store.json(_digest_name(config_digest, store.label), config_digest)
    notes = desc.get("annotations") or {}
    tag = notes.get("org.opencontainers.image.ref.name") if isinstance(notes, dict) else None
    return config, layers, (str(tag),) if tag else ()


def is_image(path: str) -> bool:
    """True for ``-``, an OCI layout directory, or a file that is a tar (not a zip)."""
    if path == "-":
        return True
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "oci-layout"))
    try:
        fd = open_regular(path)  # never blocks: a FIFO or device is not an image (nor a zip)
    except ArchiveError:
        return False
    with os.fdopen(fd, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b":
        return True  # a gzip-compressed tarball (docker save | gzip)
    return looks_like_tar(head)


def open_image(path: str, *, arch: str | None = None, spool_limit: int = SPOOL_LIMIT) -> Image:
    """Open a ``docker save`` tarball, an OCI layout (directory or tar), or ``-`` (stdin).

    ``arch`` (OCI spelling, ``amd64`` / ``arm64``) picks the platform of a multi-platform
    index. Raises :class:`ArchiveError` / :class:`InputError` naming the image.
    """
    store, given = _open_store(path, spool_limit)
    try:
        if store.has("manifest.json"):
            fmt = "docker-save"
            config_json, layer_refs, tags = _docker_layout(store)
        elif store.has("index.json"):
            fmt = "oci-layout"
            config_json, layer_refs, tags = _oci_layout(store, arch)
        else:
            raise ArchiveError(
                f"{store.label}: neither a docker save tarball (manifest.json) nor an OCI "
                "image layout (index.json)"
            )
        config = parse_config(config_json, store.label)
        if len(layer_refs) > MAX_LAYERS:
            raise ArchiveError(f"{store.label}: {len(layer_refs)} layers (at most {MAX_LAYERS})")
        if len(config.diff_ids) != len(layer_refs):
            raise ArchiveError(
                f"{store.label}: the config lists {len(config.diff_ids)} layer digests, the "
                f"manifest {len(layer_refs)} layers"
            )
        layers = []
        for i, ((blob, digest, media), diff_id) in enumerate(
            zip(layer_refs, config.diff_ids, strict=True)
        ):
            if not store.has(blob):
                raise ArchiveError(f"{store.label}: layer {i + 1} ({blob}) is not in the image")
            layers.append(ImageLayer(i, diff_id, digest, media, store.size(blob), blob, store))
        return Image(store.label, fmt, config, tuple(layers), tags, given, store)
    except BaseException:
        store.close()
        raise
