"""What a wheel is, learnt before downloading it, with as few requests as possible.

:class:`WheelProbe` reads a wheel's build-variant evidence (:mod:`torchwheel.variants`) —
PEP 658 metadata from the index, else the wheel's ``METADATA`` and central directory by HTTP
ranges (:class:`~torchwheel.remote.RemoteWheel`) — its sizes, and its shared objects'
version needs (:mod:`torchwheel.elfneeds`). What it learns is target-independent
(:class:`WheelFacts`) and kept on disk per sha256 (:class:`FactsCache`), so a second resolve of
the same wheels costs no request; :func:`classify` turns the facts into a :class:`Variant`
for one target's markers. Requests and bytes are counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from packaging.version import Version

from .atomic import atomic_write
from .elfneeds import MAX_BYTES as ELF_MAX_BYTES
from .elfneeds import MAX_REQUESTS as ELF_MAX_REQUESTS
from .elfneeds import ElfNeeds, read_elf_needs
from .index import Candidate, IndexClient
from .remote import RangesIgnored, RemoteWheel
from .targets import Target
from .variants import Variant, from_label, from_members, from_requirements
from .wheelfile import parse_metadata

__all__ = ["FactsCache", "WheelFacts", "WheelProbe", "classify"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# -- what was learnt about one wheel ------------------------------------------------------------


@dataclass
class WheelFacts:
    """Target-independent facts about one wheel file (what :class:`FactsCache` stores)."""

    filename: str
    requires_dist: tuple[str, ...] | None = None  # None: metadata not read
    metadata_source: str | None = None  # pep658, range, local
    files: int | None = None  # None: central directory not read
    zipped: int | None = None
    unzipped: int | None = None
    largest: tuple[tuple[str, int], ...] = ()
    gpu_libraries: tuple[tuple[str, int], ...] = ()
    gpu_kind: str | None = None  # from the central directory: cpu/cuda/rocm/xpu
    gpu_version: str | None = None
    elf: ElfNeeds | None = None
    requirement_bytes: dict[str, int] = field(default_factory=dict)  # target label -> bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the cache file)."""
        return {
            "schema": "torchwheel.wheel-facts/1",
            "filename": self.filename,
            "requires_dist": list(self.requires_dist) if self.requires_dist is not None else None,
            "metadata_source": self.metadata_source,
            "files": self.files,
            "zipped": self.zipped,
            "unzipped": self.unzipped,
            "largest": [list(x) for x in self.largest],
            "gpu_libraries": [list(x) for x in self.gpu_libraries],
            "gpu_kind": self.gpu_kind,
            "gpu_version": self.gpu_version,
            "elf": self.elf.to_dict() if self.elf is not None else None,
            "requirement_bytes": dict(self.requirement_bytes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WheelFacts:
        """Inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError when malformed."""
        if d.get("schema") != "torchwheel.wheel-facts/1":
            raise ValueError("not a wheel-facts document")
        rd = d["requires_dist"]
        return cls(
            filename=str(d["filename"]),
            requires_dist=tuple(str(x) for x in rd) if rd is not None else None,
            metadata_source=d["metadata_source"],
            files=None if d["files"] is None else int(d["files"]),
            zipped=None if d["zipped"] is None else int(d["zipped"]),
            unzipped=None if d["unzipped"] is None else int(d["unzipped"]),
            largest=tuple((str(n), int(s)) for n, s in d["largest"]),
            gpu_libraries=tuple((str(n), int(s)) for n, s in d["gpu_libraries"]),
            gpu_kind=d["gpu_kind"],
            gpu_version=d["gpu_version"],
            elf=ElfNeeds.from_dict(d["elf"]) if d["elf"] is not None else None,
            requirement_bytes={str(k): int(v) for k, v in d["requirement_bytes"].items()},
        )

    def members_variant(self) -> Variant | None:
        """The central directory's verdict, when it was read."""
        if self.files is None or self.gpu_kind is None:
            return None
        if self.gpu_kind == "cpu":
            return Variant(
                "cpu", None, "central-directory", f"no GPU library among {self.files} files"
            )
        first = self.gpu_libraries[0][0] if self.gpu_libraries else ""
        return Variant(
            self.gpu_kind,
            self.gpu_version,
            "central-directory",
            first,
            gpu_libraries=self.gpu_libraries,
        )


def classify(version: Version, wheel: WheelFacts, env: Mapping[str, str]) -> Variant:
    """The variant from the cheapest evidence at hand: label, Requires-Dist, central directory."""
    labelled = from_label(version)
    if labelled is not None:
        return labelled
    by_reqs: Variant | None = None
    reqs: tuple[str, ...] = ()
    if wheel.requires_dist is not None:
        by_reqs, reqs = from_requirements(wheel.requires_dist, env)
    members = wheel.members_variant()
    if by_reqs is not None:
        if members is not None and members.is_gpu:
            by_reqs = dataclasses.replace(by_reqs, gpu_libraries=members.gpu_libraries)
        return dataclasses.replace(by_reqs, requirements=reqs)
    if members is not None:
        return dataclasses.replace(members, requirements=reqs)
    why = "Requires-Dist names no GPU package; " if wheel.requires_dist is not None else ""
    return Variant("unknown", None, "none", f"{why}the central directory could not be read")


class FactsCache:
    """:class:`WheelFacts` on disk, one JSON file per wheel (atomic writes).

    The key is the sha256 the index gave *and* the URL the facts were read from: facts come
    from range reads, never from verified bytes, so an index that claims another wheel's hash
    must not plant facts that a later resolve against another index would take for that
    wheel's.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory) / "wheel-facts-v2"

    def _path(self, sha256: str, url: str) -> Path | None:
        if not _SHA256.match(sha256):
            return None
        where = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return self.directory / f"{sha256}-{where}.json"

    def load(self, sha256: str, url: str) -> WheelFacts | None:
        """The stored facts, or None (also for a damaged file)."""
        path = self._path(sha256, url)
        if path is None:
            return None
        try:
            return WheelFacts.from_dict(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def store(self, sha256: str, url: str, wheel: WheelFacts) -> None:
        """Write the facts (a cache that cannot be written is not an error)."""
        path = self._path(sha256, url)
        if path is None:
            return
        with contextlib.suppress(OSError):  # a cache that cannot be written is not an error
            atomic_write(path, json.dumps(wheel.to_dict(), sort_keys=True).encode())


# -- reading --------------------------------------------------------------------------------------


class WheelProbe:
    """Learns what a wheel is — variant, sizes, ELF needs — with as few requests as it can.

    ``client`` is used for range reads; ``index`` (optional) serves PEP 658 metadata;
    ``cache_dir`` enables the per-sha256 :class:`FactsCache`; ``offline`` answers from the
    cache only (unknown otherwise). ``requests`` and ``bytes_received`` count what the probe
    cost. One probe may serve several targets: facts are target-independent.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        index: IndexClient | None = None,
        cache_dir: Path | None = None,
        offline: bool = False,
    ) -> None:
        self.client = client
        self.index = index
        self.cache = FactsCache(cache_dir) if cache_dir is not None else None
        self.offline = offline
        self.requests = 0
        self.bytes_received = 0
        self._facts: dict[str, WheelFacts] = {}
        self._lock = threading.Lock()  # counters and facts: screening runs probes in threads
        self._index_lock = threading.Lock()  # the IndexClient is not thread-safe

    def _count(self, requests: int, received: int) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_received += received

    @classmethod
    def for_index(cls, index: IndexClient) -> WheelProbe:
        """The probe of ``index`` (made once per IndexClient, on its client, cache directory
        and offline setting), so that resolving several targets reads each wheel once."""
        with _SHARED_LOCK:
            probe = _SHARED.get(index)
            if probe is None:
                cache_dir = index.cache.directory.parent if index.cache is not None else None
                probe = cls(index.client, index=index, cache_dir=cache_dir, offline=index.offline)
                _SHARED[index] = probe
            return probe

    # -- facts -------------------------------------------------------------------------------

    def facts(self, cand: Candidate) -> WheelFacts:
        """What is known about ``cand`` so far (memory, then the disk cache)."""
        with self._lock:
            known = self._facts.get(cand.url)
        if known is not None:
            return known
        stored = self.cache.load(cand.sha256, cand.url) if self.cache and cand.sha256 else None
        known = stored if stored is not None else WheelFacts(cand.filename)
        with self._lock:
            return self._facts.setdefault(cand.url, known)

    def remember(self, cand: Candidate, wheel: WheelFacts) -> None:
        """Keep ``wheel`` for ``cand`` (and on disk when the wheel's sha256 is known)."""
        with self._lock:
            self._facts[cand.url] = wheel
        if self.cache is not None and cand.sha256:
            self.cache.store(cand.sha256, cand.url, wheel)

    def _pep658(self, cand: Candidate, wheel: WheelFacts) -> WheelFacts:
        if self.index is None or not cand.has_metadata or self.offline:
            return wheel
        with self._index_lock:
            before = self.index.request_count
            data = self.index.get_metadata(cand)
            made = self.index.request_count - before
        self._count(made, len(data) if data is not None and made else 0)
        if data is None:
            return wheel
        meta = parse_metadata(data, source=f"{cand.filename} (PEP 658 metadata)")
        return dataclasses.replace(
            wheel, requires_dist=meta.requires_dist, metadata_source="pep658"
        )

    def _read_directory(
        self, cand: Candidate, wheel: WheelFacts, *, metadata: bool | None
    ) -> WheelFacts:
        """Central directory by range reads, and METADATA while Requires-Dist is unknown:
        always (``metadata=True``), never (``False``), or only when the central directory
        shows no GPU library (``None``: a GPU library decides the variant already)."""
        if self.offline and not _is_local(cand.url):
            return wheel
        try:
            rw = RemoteWheel(cand.url, self.client)
        except RangesIgnored:
            return wheel
        try:
            wheel = _with_members(wheel, rw)
            if metadata is None:
                metadata = wheel.gpu_kind == "cpu"
            member = rw.metadata_member() if metadata and wheel.requires_dist is None else None
            if member is not None:
                meta = parse_metadata(rw.read_member(member), source=cand.filename)
                source = "local" if rw.local else "range"
                wheel = dataclasses.replace(
                    wheel, requires_dist=meta.requires_dist, metadata_source=source
                )
        finally:
            self._count(rw.requests, rw.bytes_received)
            rw.close()
        return wheel

    # -- answers -----------------------------------------------------------------------------

    def variant(self, cand: Candidate, target: Target) -> Variant:
        """The build variant of ``cand`` for ``target`` (cheapest evidence first)."""
        labelled = from_label(cand.version)
        if labelled is not None:
            return labelled
        env = target.marker_environment()
        wheel = self.facts(cand)
        if wheel.requires_dist is None:
            wheel = self._pep658(cand, wheel)
        gpu_by_reqs = (
            wheel.requires_dist is not None
            and from_requirements(wheel.requires_dist, env)[0] is not None
        )
        if not gpu_by_reqs and wheel.files is None:
            wheel = self._read_directory(cand, wheel, metadata=None)
        self.remember(cand, wheel)
        return classify(cand.version, wheel, env)

    def requires_dist(self, cand: Candidate) -> tuple[str, ...] | None:
        """``cand``'s Requires-Dist: PEP 658 metadata, else its METADATA by range reads."""
        wheel = self.facts(cand)
        if wheel.requires_dist is None:
            wheel = self._pep658(cand, wheel)
        if wheel.requires_dist is None:
            wheel = self._read_directory(cand, wheel, metadata=True)
        self.remember(cand, wheel)
        return wheel.requires_dist

    def sizes(self, cand: Candidate) -> WheelFacts:
        """Facts with the central directory read (sizes, largest members, GPU libraries)."""
        wheel = self.facts(cand)
        if wheel.files is None:
            wheel = self._read_directory(cand, wheel, metadata=False)
            self.remember(cand, wheel)
        return wheel

    def elf_needs(
        self,
        cand: Candidate,
        *,
        max_bytes: int = ELF_MAX_BYTES,
        max_requests: int = ELF_MAX_REQUESTS,
    ) -> ElfNeeds | None:
        """The version needs of ``cand``'s shared objects, read by ranges (None: impossible —
        the server ignores ``Range``, or offline without a cached answer)."""
        wheel = self.facts(cand)
        if wheel.elf is not None:
            return wheel.elf
        if self.offline and not _is_local(cand.url):
            return None
        try:
            rw = RemoteWheel(cand.url, self.client, max_requests=max_requests)
        except RangesIgnored:
            return None
        try:
            needs = read_elf_needs(rw, max_bytes=max_bytes, max_requests=max_requests)
            wheel = _with_members(wheel, rw)
        finally:
            self._count(rw.requests, rw.bytes_received)
            rw.close()
        self.remember(cand, dataclasses.replace(wheel, elf=needs))
        return needs


_SHARED: weakref.WeakKeyDictionary[IndexClient, WheelProbe] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _is_local(url: str) -> bool:
    return url.startswith("file:") or "://" not in url


def _with_members(wheel: WheelFacts, rw: RemoteWheel) -> WheelFacts:
    if wheel.files is not None:
        return wheel
    size = rw.size_report(top=10)
    files = [(m.name, m.file_size) for m in rw.members if not m.is_dir]
    found = from_members(files)
    return dataclasses.replace(
        wheel,
        files=size.members,
        zipped=size.zipped,
        unzipped=size.unzipped,
        largest=size.largest,
        gpu_libraries=found.gpu_libraries,
        gpu_kind=found.kind,
        gpu_version=found.version,
    )
