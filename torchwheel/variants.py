"""CPU, CUDA, ROCm or XPU: which build of a torch-family wheel this is — the evidence (pure).

Lambda has no GPU, and a GPU build of torch is at best hundreds of MB of dead weight and
usually gigabytes of ``nvidia-*`` requirements. The evidence, cheapest first, as
``data/lambda.json`` (``pytorch.variants``) describes it:

1. the local version label — ``2.5.1+cpu``, ``+cu126``, ``+rocm6.2``, ``+xpu`` (free):
   :func:`from_label`;
2. ``Requires-Dist`` evaluated with the *target's* markers: ``nvidia-*``/``cuda-toolkit``
   (CUDA, whose version the ``nvidia-cuda-runtime``/``cuda-toolkit`` pin gives),
   ``pytorch-triton-rocm`` (ROCm), ``pytorch-triton-xpu`` (XPU): :func:`from_requirements`.
   A GPU requirement is conclusive; its absence is not (PyPI's aarch64 releases mark their
   ``nvidia-*`` requirements ``platform_machine == "x86_64"``; old releases bundle CUDA);
3. the file names of the central directory: ``libtorch_cuda*.so``, ``libcudart*``,
   ``libnccl*``, ``libamdhip64*``, ``libtorch_xpu.so``… or none of them: :func:`from_members`.

:class:`Variant` is the answer with its evidence. Reading the evidence over HTTP (PEP 658
metadata, range reads) and remembering it per wheel is :mod:`torchwheel.probe`'s job; this
module does no I/O, so ``check`` (the ``gpu-build`` finding) uses it without the network stack.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .errors import DataError
from .targets import facts

__all__ = [
    "GPU_KINDS",
    "KINDS",
    "WANTS",
    "Variant",
    "from_label",
    "from_members",
    "from_requirements",
    "gpu_requirement_kind",
    "is_variant_project",
    "marker_holds",
]

KINDS = ("cpu", "cuda", "rocm", "xpu")
GPU_KINDS = ("cuda", "rocm", "xpu")
#: What ``--variant`` accepts: one kind, or any.
WANTS = (*KINDS, "any")
_NAMES = {"cpu": "CPU", "cuda": "CUDA", "rocm": "ROCm", "xpu": "XPU", "unknown": "unknown"}


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
    libraries: tuple[tuple[str, re.Pattern[str]], ...]  # kind -> one regex of its globs


@cache
def _rules() -> _Rules:
    data = facts()
    v = data["pytorch"].get("variants")
    if not isinstance(v, dict):
        raise DataError("lambda.json: pytorch.variants missing")
    for one in str(v.get("source", "")).split(";"):
        if one.strip() not in data["sources"]:
            raise DataError(f"lambda.json: pytorch.variants cites unknown source {one.strip()!r}")
    for kind, globs in v["libraries"].items():
        if not all(".so" in g for g in globs):
            raise DataError(f"lambda.json: pytorch.variants.libraries.{kind}: name shared objects")
    return _Rules(
        projects=frozenset(str(canonicalize_name(p)) for p in v["projects"]),
        labels=tuple((k, re.compile(p)) for k, p in v["labels"].items()),
        requirements=tuple((k, tuple(p)) for k, p in v["requirements"].items()),
        payload=tuple(v["gpu_payload_requirements"]),
        cuda_version=tuple(v["cuda_version_requirements"]),
        libraries=tuple(
            (k, re.compile("|".join(fnmatch.translate(g) for g in p)))
            for k, p in v["libraries"].items()
        ),
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


def marker_holds(req: Requirement, env: Mapping[str, str], extra: str = "") -> bool:
    """Does ``req``'s marker hold in ``env``? A marker that cannot be evaluated (hostile
    metadata: ``python_version ~= "abc"``) holds nowhere."""
    if req.marker is None:
        return True
    try:
        return bool(req.marker.evaluate({**env, "extra": extra}))
    except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName, ValueError):
        return False


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
        if not marker_holds(req, env):
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
    rules = _rules().libraries
    for name, size in members:
        count += 1
        if ".so" not in name:  # every library pattern names a shared object
            continue
        base = posixpath.basename(name)
        for kind, pattern in rules:
            if pattern.match(base):
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
