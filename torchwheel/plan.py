"""The plan of a layer before any download: what the closure is, what it weighs, whether it fits.

:func:`make_plan` takes a resolved :class:`~torchwheel.deps.Closure` and reads every wheel's
central directory by HTTP ranges (in parallel; local wheels in place; answers kept per sha256
by :class:`~torchwheel.variants.WheelProbe`), so it knows for each package its version, its
build variant (CPU, CUDA …), its download size and its unzipped size — then whether the whole
fits a plain layer (Lambda's 250 MiB unzipped quota), a packed layer (an estimated zstd
archive within the quota, unpacked into ``/tmp``), or neither.

A :class:`Plan` is *blocked* — ``build`` stops before downloading anything — when the closure
holds a GPU build nobody asked for (a CUDA/ROCm/XPU torch, ``nvidia-*``/``triton``/
``cuda-*`` packages, wheels carrying GPU libraries) or cannot fit even packed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .deps import Closure, Pin
from .probe import WheelFacts, WheelProbe
from .report import human_bytes
from .screen import Screened, check_want, gpu_reason
from .targets import Target, quotas
from .variants import Variant, from_label, gpu_requirement_kind, is_variant_project

__all__ = ["PACKED_RATIO", "Plan", "PlanItem", "make_plan"]

#: Estimated packed archive size per byte of wheel download: zstd -9 of an unslimmed tree
#: against the deflated wheels. Measured on torch 2.13.0+cpu cp311 x86_64: the wheel is
#: 191.8 MB, zstd -9 of its 699.3 MB of members 135.1 MB (0.70); 0.8 leaves headroom.
PACKED_RATIO = 0.8
#: Central directories read at once.
WORKERS = 8


@dataclass(frozen=True)
class PlanItem:
    """One package of the closure, before download."""

    name: str
    version: str
    filename: str
    url: str
    requested: bool
    source: str  # the index or find-links location
    download_bytes: int | None
    unzipped_bytes: int | None
    files: int | None
    variant: Variant | None  # torch-family wheels, and any wheel carrying GPU libraries
    gpu: str | None  # why this package is GPU-only, None for CPU / plain packages

    def to_dict(self) -> dict[str, Any]:
        """JSON form (docs/json-schema.md, "plan")."""
        return {
            "name": self.name,
            "version": self.version,
            "filename": self.filename,
            "url": self.url,
            "requested": self.requested,
            "source": self.source,
            "download_bytes": self.download_bytes,
            "unzipped_bytes": self.unzipped_bytes,
            "files": self.files,
            "variant": self.variant.to_dict() if self.variant is not None else None,
            "gpu": self.gpu,
        }


@dataclass(frozen=True)
class Plan:
    """A closure's packages, sizes and fit, read before download."""

    target: Target
    variant: str  # the build variant asked for (--variant)
    items: tuple[PlanItem, ...]
    download_bytes: int
    unzipped_bytes: int
    packed_estimate: int  # bytes of the packed archive, estimated (PACKED_RATIO)
    fits: str  # "plain", "packed" or "neither"
    notes: tuple[str, ...]
    requests: int  # HTTP requests spent reading central directories (and metadata)
    bytes_received: int
    seconds: float

    @property
    def gpu_items(self) -> tuple[PlanItem, ...]:
        """Packages that are GPU builds or GPU-only."""
        return tuple(i for i in self.items if i.gpu is not None)

    @property
    def blockers(self) -> tuple[str, ...]:
        """Why ``build`` must not go on: GPU builds nobody asked for, no way to fit."""
        out: list[str] = []
        gpu = self.gpu_items
        if gpu and self.variant == "cpu":
            names = ", ".join(f"{i.name} {i.version}" for i in gpu[:4])
            more = f" and {len(gpu) - 4} more" if len(gpu) > 4 else ""
            size = sum(i.download_bytes or 0 for i in gpu)
            out.append(
                f"the closure holds GPU builds ({names}{more}; {human_bytes(size)} to download): "
                "Lambda has no GPU (--variant cuda|rocm|xpu|any builds them anyway)"
            )
        if self.fits == "neither":
            out.append(
                f"{human_bytes(self.unzipped_bytes)} unzipped cannot fit even packed (an "
                f"estimated {human_bytes(self.packed_estimate)} archive against Lambda's "
                f"{human_bytes(quotas().unzipped)}); use a container image"
            )
        return tuple(out)

    @property
    def blocked(self) -> bool:
        """True when :attr:`blockers` is not empty."""
        return bool(self.blockers)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (docs/json-schema.md, "plan")."""
        q = quotas()
        return {
            "runtime": self.target.runtime.name,
            "arch": self.target.arch,
            "python": self.target.python_str,
            "variant": self.variant,
            "packages": [i.to_dict() for i in self.items],
            "download_bytes": self.download_bytes,
            "unzipped_bytes": self.unzipped_bytes,
            "packed_estimate_bytes": self.packed_estimate,
            "unzipped_limit": q.unzipped,
            "fits": self.fits,
            "blocked": self.blocked,
            "blockers": list(self.blockers),
            "notes": list(self.notes),
            "requests": self.requests,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 3),
        }


def _fits(unzipped: int, packed: int) -> str:
    q = quotas()
    if unzipped <= q.unzipped:
        return "plain"
    if packed <= q.unzipped and unzipped <= q.ephemeral_storage_max_mb * 1024 * 1024:
        return "packed"
    return "neither"


def _gpu_why(pin: Pin, variant: Variant | None, facts_: WheelFacts) -> str | None:
    """Why ``pin`` is GPU-only (None: it is not)."""
    if variant is not None and variant.is_gpu:
        return gpu_reason(variant)
    kind = gpu_requirement_kind(pin.name)
    if kind is not None:
        what = {"cuda": "CUDA", "rocm": "ROCm", "xpu": "XPU"}.get(kind, "GPU")
        return f"{what} package: Lambda has no GPU"
    if facts_.gpu_libraries and facts_.gpu_kind not in (None, "cpu"):
        name, size = facts_.gpu_libraries[0]
        return f"carries GPU libraries ({name.rsplit('/', 1)[-1]}, {human_bytes(size)})"
    return None


def _item(
    pin: Pin, facts_: WheelFacts, screened: Screened | None, probe: WheelProbe, target: Target
) -> PlanItem:
    cand = pin.candidate
    variant = screened.variant if screened is not None else None
    if variant is None and is_variant_project(pin.name):
        variant = from_label(cand.version) or probe.variant(cand, target)
    if variant is None and facts_.gpu_libraries:
        variant = facts_.members_variant()
    return PlanItem(
        name=pin.name,
        version=str(pin.version),
        filename=cand.filename,
        url=cand.url,
        requested=pin.requested,
        source=cand.source,
        download_bytes=facts_.zipped if facts_.zipped is not None else cand.size,
        unzipped_bytes=facts_.unzipped,
        files=facts_.files,
        variant=variant,
        gpu=_gpu_why(pin, variant, facts_),
    )


def make_plan(
    closure: Closure,
    target: Target,
    probe: WheelProbe,
    *,
    variant: str = "cpu",
    screened: Mapping[str, Screened] | None = None,
    workers: int = WORKERS,
) -> Plan:
    """Read the central directory of every wheel of ``closure`` and lay out the plan.

    ``variant`` is what was asked for (GPU builds block the plan only when it is ``cpu``);
    ``screened`` defaults to the closure's own screening outcomes. Raises the probe's
    :class:`~torchwheel.errors.NetworkError` / :class:`~torchwheel.errors.ArchiveError`.
    """
    check_want(variant)
    t0 = time.perf_counter()
    before = (probe.requests, probe.bytes_received)
    outcomes = screened if screened is not None else closure.screened
    pins = list(closure.pins)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pins) or 1))) as pool:
        all_facts = list(pool.map(lambda p: probe.sizes(p.candidate), pins))
    items = tuple(
        _item(p, f, outcomes.get(p.candidate.url), probe, target)
        for p, f in zip(pins, all_facts, strict=True)
    )
    download = sum(i.download_bytes or 0 for i in items)
    unzipped = sum(i.unzipped_bytes or 0 for i in items)
    packed = int(download * PACKED_RATIO)
    return Plan(
        target=target,
        variant=variant,
        items=items,
        download_bytes=download,
        unzipped_bytes=unzipped,
        packed_estimate=packed,
        fits=_fits(unzipped, packed),
        notes=tuple(_notes(items, unzipped)),
        requests=probe.requests - before[0],
        bytes_received=probe.bytes_received - before[1],
        seconds=time.perf_counter() - t0,
    )


def _notes(items: Sequence[PlanItem], unzipped: int) -> list[str]:
    notes: list[str] = []
    unknown = [i.name for i in items if i.unzipped_bytes is None]
    if unknown:
        notes.append(
            f"sizes unknown for {', '.join(unknown)} (the server ignores Range requests): "
            "the totals leave them out"
        )
    if unzipped > quotas().unzipped:
        notes.append(
            "over Lambda's 250 MiB unzipped quota as shipped: --slim drops what CPU inference "
            "never loads, --packed ships a zstd archive unpacked into /tmp"
        )
    return notes
