"""CPU, CUDA, ROCm or XPU: which build of a torch-family wheel this is, before downloading it.

Lambda has no GPU, and a GPU build of torch is at best hundreds of MB of dead weight and
usually gigabytes of ``nvidia-*`` requirements. The evidence, cheapest first, as
``data/lambda.json`` (``pytorch.variants``) describes it:

1. the local version label — ``2.5.1+cpu``, ``+cu126``, ``+rocm6.2``, ``+xpu`` (free);
2. ``Requires-Dist`` evaluated with the *target's* markers: ``nvidia-*``/``cuda-toolkit``
   (CUDA, whose version the ``nvidia-cuda-runtime``/``cuda-toolkit`` pin gives),
   ``pytorch-triton-rocm`` (ROCm), ``pytorch-triton-xpu`` (XPU) — from the index's PEP 658
   metadata (one small request) or the wheel's ``METADATA`` read by ranges. A GPU requirement
   is conclusive; its absence is not (PyPI's aarch64 releases mark their ``nvidia-*``
   requirements ``platform_machine == "x86_64"``; old releases bundle CUDA inside);
3. the central directory (one or two range requests): ``libtorch_cuda*.so``, ``libcudart*``,
   ``libnccl*``, ``libamdhip64*``, ``libtorch_xpu.so``… or none of them.

:class:`Variant` is the answer with its evidence. :class:`WheelFacts` is what was learnt about
one wheel whatever the target (its Requires-Dist, its GPU libraries, sizes, ELF needs);
:class:`FactsCache` keeps it on disk per sha256, so a second resolve of the same wheels costs
no request. :class:`WheelProbe` does the reading (injected ``httpx.Client``, optional
:class:`~torchwheel.index.IndexClient` for PEP 658 metadata) and counts requests and bytes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import posixpath
import re
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .atomic import atomic_write
from .elfneeds import MAX_BYTES as ELF_MAX_BYTES
from .elfneeds import MAX_REQUESTS as ELF_MAX_REQUESTS
from .elfneeds import ElfNeeds, read_elf_needs
from .errors import DataError
from .index import Candidate, IndexClient
from .remote import RangesIgnored, RemoteWheel
from .targets import Target, facts
from .wheelfile import parse_metadata

__all__ = [
    "GPU_KINDS",
    "KINDS",
    "WANTS",
    "FactsCache",
    "Variant",
    "WheelFacts",
    "WheelProbe",
    "classify",
    "from_label",
    "from_members",
    "from_requirements",
    "gpu_requirement_kind",
    "is_variant_project",
]

KINDS = ("cpu", "cuda", "rocm", "xpu")
GPU_KINDS = ("cuda", "rocm", "xpu")
#: What ``--variant`` accepts: one kind, or any.
WANTS = (*KINDS, "any")
_NAMES = {"cpu": "CPU", "cuda": "CUDA", "rocm": "ROCm", "xpu": "XPU", "unknown": "unknown"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Variant:
    """The build of one wheel, and the evidence for it."""

    kind: str  # cpu, cuda, rocm, xpu, or unknown
    version: str | None = None  # "12.8" for CUDA 12.8, "6.2" for ROCm 6.2
    evidence: str = "none"  # label, metadata, central-directory, none
    detail: str = ""  # what was seen: "+cu128", "requires nvidia-cudnn-cu13 …", a library name
    gpu_libraries: tuple[tuple[str, int], ...] = ()  # (member, unzipped bytes) inside the wheel
    requirements: tuple[str, ...] = ()  # GPU Requires-Dist entries for the target (no markers)

    @property
    def is_gpu(self) -> bool:
        """True for CUDA, ROCm and XPU builds."""
        return self.kind in GPU_KINDS

    @property
    def gpu_bytes(self) -> int:
        """Unzipped bytes of the GPU libraries inside the wheel (0 when not read)."""
        return sum(n for _, n in self.gpu_libraries)

    @property
    def name(self) -> str:
        """``"CPU"``, ``"CUDA 12.8"``, ``"ROCm 6.2"``, ``"XPU"``, ``"unknown"``."""
        base = _NAMES.get(self.kind, self.kind)
        return f"{base} {self.version}" if self.version else base

    def accepted_by(self, want: str) -> bool:
        """Does ``--variant want`` take this build? Unknown builds are taken (with a warning)."""
        return want == "any" or self.kind in (want, "unknown")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (docs/json-schema.md, "variant")."""
        return {
            "kind": self.kind,
            "version": self.version,
            "name": self.name,
            "evidence": self.evidence,
            "detail": self.detail,
            "gpu_bytes": self.gpu_bytes,
            "gpu_libraries": [{"name": n, "size": s} for n, s in self.gpu_libraries],
            "requirements": list(self.requirements),
        }


# -- the rules (data/lambda.json) ---------------------------------------------------------------


@dataclass(frozen=True)
class _Rules:
    projects: frozenset[str]
    labels: tuple[tuple[str, re.Pattern[str]], ...]
    requirements: tuple[tuple[str, tuple[str, ...]], ...]
    payload: tuple[str, ...]
    cuda_version: tuple[str, ...]
    libraries: tuple[tuple[str, tuple[str, ...]], ...]


@cache
def _rules() -> _Rules:
    data = facts()
    v = data["pytorch"].get("variants")
    if not isinstance(v, dict):
        raise DataError("lambda.json: pytorch.variants missing")
    for one in str(v.get("source", "")).split(";"):
        if one.strip() not in data["sources"]:
            raise DataError(f"lambda.json: pytorch.variants cites unknown source {one.strip()!r}")
    return _Rules(
        projects=frozenset(str(canonicalize_name(p)) for p in v["projects"]),
        labels=tuple((k, re.compile(p)) for k, p in v["labels"].items()),
        requirements=tuple((k, tuple(p)) for k, p in v["requirements"].items()),
        payload=tuple(v["gpu_payload_requirements"]),
        cuda_version=tuple(v["cuda_version_requirements"]),
        libraries=tuple((k, tuple(p)) for k, p in v["libraries"].items()),
    )


def is_variant_project(name: str) -> bool:
    """torch, torchvision, torchaudio: projects built per CPU/CUDA/ROCm/XPU variant."""
    return str(canonicalize_name(name)) in _rules().projects


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def gpu_requirement_kind(name: str) -> str | None:
    """``"cuda"`` for ``nvidia-cudnn-cu12``, ``"rocm"``/``"xpu"`` likewise, ``"payload"`` for
    a GPU-only package that names no vendor (``triton``), None for anything else."""
    canon = str(canonicalize_name(name))
    for kind, patterns in _rules().requirements:
        if _matches(canon, patterns):
            return kind
    return "payload" if _matches(canon, _rules().payload) else None


# -- evidence (pure) ----------------------------------------------------------------------------


def _label_version(kind: str, match: re.Match[str]) -> str | None:
    if kind == "cuda" and match.group(1):
        digits = match.group(1)
        return f"{digits[:-1]}.{digits[-1]}" if len(digits) > 1 else digits
    if kind == "rocm" and match.group(1):
        return match.group(1)
    return None


def from_label(version: Version) -> Variant | None:
    """The variant a local version label names (``+cpu``, ``+cu128``, ``+rocm6.2``), or None."""
    local = version.local
    if not local:
        return None
    for kind, pattern in _rules().labels:
        m = pattern.fullmatch(local)
        if m:
            return Variant(kind, _label_version(kind, m), "label", f"+{local}")
    return None


def _cuda_version(reqs: Sequence[Requirement]) -> str | None:
    for r in reqs:
        if not _matches(str(canonicalize_name(r.name)), _rules().cuda_version):
            continue
        pins = [s.version for s in r.specifier if s.operator in ("==", "~=", "===")]
        if pins:
            parts = pins[0].split(".")
            return ".".join(parts[:2])
    for r in reqs:
        m = re.search(r"-cu(\d+)$", str(canonicalize_name(r.name)))
        if m:
            return m.group(1)
    return None


def _without_marker(req: Requirement) -> str:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def from_requirements(
    requires_dist: Sequence[str], env: Mapping[str, str]
) -> tuple[Variant | None, tuple[str, ...]]:
    """The GPU variant ``Requires-Dist`` implies for the marker environment ``env``.

    Returns (variant or None, the GPU requirements that apply, markers dropped). None means
    "no GPU requirement for this target" — not proof of a CPU build.
    """
    kinds: dict[str, list[Requirement]] = {}
    applying: list[str] = []
    for text in requires_dist:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        kind = gpu_requirement_kind(req.name)
        if kind is None:
            continue
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        kinds.setdefault(kind, []).append(req)
        applying.append(_without_marker(req))
    vendor = [k for k in GPU_KINDS if k in kinds]
    if not vendor:
        return None, tuple(applying)
    kind = max(vendor, key=lambda k: len(kinds[k]))
    names = [str(canonicalize_name(r.name)) for r in kinds[kind]]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    version = _cuda_version(kinds[kind]) if kind == "cuda" else None
    return Variant(kind, version, "metadata", f"requires {shown}"), tuple(applying)


_LIB_VERSION = re.compile(r"\.so\.(\d+)")


def from_members(members: Iterable[tuple[str, int]]) -> Variant:
    """The variant the wheel's file names show: GPU libraries by name, or a CPU build."""
    found: dict[str, list[tuple[str, int]]] = {}
    count = 0
    for name, size in members:
        count += 1
        base = posixpath.basename(name)
        for kind, patterns in _rules().libraries:
            if _matches(base, patterns):
                found.setdefault(kind, []).append((name, size))
                break
    if not found:
        return Variant("cpu", None, "central-directory", f"no GPU library among {count} files")
    kind = max(found, key=lambda k: sum(s for _, s in found[k]))
    libs = tuple(sorted(found[kind], key=lambda x: (-x[1], x[0])))
    version = None
    for name, _ in libs:
        m = _LIB_VERSION.search(posixpath.basename(name))
        if m and ("cudart" in name or "amdhip64" in name):
            version = m.group(1)
            break
    return Variant(kind, version, "central-directory", libs[0][0], gpu_libraries=libs)


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
    """:class:`WheelFacts` on disk, one JSON file per wheel sha256 (atomic writes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory) / "wheel-facts-v1"

    def load(self, sha256: str) -> WheelFacts | None:
        """The stored facts, or None (also for a damaged file)."""
        if not _SHA256.match(sha256):
            return None
        try:
            doc = json.loads((self.directory / f"{sha256}.json").read_text("utf-8"))
            return WheelFacts.from_dict(doc)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store(self, sha256: str, wheel: WheelFacts) -> None:
        """Write the facts (a cache that cannot be written is not an error)."""
        if not _SHA256.match(sha256):
            return
        try:
            data = json.dumps(wheel.to_dict(), sort_keys=True).encode()
            atomic_write(self.directory / f"{sha256}.json", data)
        except OSError:
            pass


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
        stored = self.cache.load(cand.sha256) if self.cache and cand.sha256 else None
        known = stored if stored is not None else WheelFacts(cand.filename)
        with self._lock:
            return self._facts.setdefault(cand.url, known)

    def remember(self, cand: Candidate, wheel: WheelFacts) -> None:
        """Keep ``wheel`` for ``cand`` (and on disk when the wheel's sha256 is known)."""
        with self._lock:
            self._facts[cand.url] = wheel
        if self.cache is not None and cand.sha256:
            self.cache.store(cand.sha256, wheel)

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

    def _read_directory(self, cand: Candidate, wheel: WheelFacts) -> WheelFacts:
        """Central directory (and METADATA when still unknown) by range reads."""
        if self.offline and not _is_local(cand.url):
            return wheel
        try:
            rw = RemoteWheel(cand.url, self.client)
        except RangesIgnored:
            return wheel
        try:
            wheel = _with_members(wheel, rw)
            member = rw.metadata_member() if wheel.requires_dist is None else None
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
            wheel = self._read_directory(cand, wheel)
        self.remember(cand, wheel)
        return classify(cand.version, wheel, env)

    def requires_dist(self, cand: Candidate) -> tuple[str, ...] | None:
        """``cand``'s Requires-Dist: PEP 658 metadata, else its METADATA by range reads."""
        wheel = self.facts(cand)
        if wheel.requires_dist is None:
            wheel = self._pep658(cand, wheel)
        if wheel.requires_dist is None and wheel.files is None:
            wheel = self._read_directory(cand, wheel)
        self.remember(cand, wheel)
        return wheel.requires_dist

    def sizes(self, cand: Candidate) -> WheelFacts:
        """Facts with the central directory read (sizes, largest members, GPU libraries)."""
        wheel = self.facts(cand)
        if wheel.files is None:
            wheel = self._read_directory(cand, wheel)
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
