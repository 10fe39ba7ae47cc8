"""The ``gpu-build`` finding: GPU builds in a deployment that runs on Lambda, which has no GPU.

A CUDA/ROCm/XPU build of torch carries libraries nothing on Lambda can load
(``libtorch_cuda.so`` alone is ~500 MB), and its ``nvidia-*``/``triton``/``cuda-*``
requirements are gigabytes more. Such a layer may still import — torch falls back to the CPU
— but it is far over the size quota for no gain. One warning per distribution (or per group
of loose GPU libraries) says which build it is, the bytes its GPU part takes, and where the
CPU build is. Library names and project names come from ``data/lambda.json``
(``pytorch.variants``, through :mod:`torchwheel.variants`).
"""

from __future__ import annotations

import posixpath

from ..report import human_bytes
from ..targets import Target, facts
from ..variants import from_members, gpu_requirement_kind, is_variant_project
from .model import CheckState, Finding, InstalledDist, dist_label, finding

__all__ = ["gpu_findings"]

_KIND = {"cuda": "CUDA", "rocm": "ROCm", "xpu": "XPU", "payload": "GPU-only"}


def _alternative(name: str) -> str:
    if is_variant_project(name):
        cpu_index = facts()["pytorch"]["default_index_url"]
        return f"build {name} from the CPU index (torchwheel build {name} --index-url {cpu_index})"
    return "a CPU build of torch does not require it"


def _dist_finding(
    d: InstalledDist, state: CheckState, claimed: set[str]
) -> tuple[Finding | None, set[str]]:
    """The finding for one distribution, and the files it accounts for."""
    files = {p: state.files[p].size for p in d.record if p in state.files}
    kind = gpu_requirement_kind(d.name)
    label = dist_label(d, state)
    if kind is not None:
        size = sum(files.values())
        what = _KIND.get(kind, "GPU")
        return finding(
            "gpu-build",
            label,
            f"{d.name} {d.version} is a {what} package ({human_bytes(size)}); Lambda has no "
            f"GPU: {_alternative(d.name)}",
            distribution=d.name,
            kind=kind,
            bytes=size,
            files=len(files),
        ), set(files)
    variant = from_members(files.items())
    if not variant.is_gpu:
        return None, set()
    libs = [n for n, _ in variant.gpu_libraries if n not in claimed]
    size = sum(s for n, s in variant.gpu_libraries if n not in claimed)
    first = posixpath.basename(libs[0]) if libs else ""
    more = f" and {len(libs) - 1} more GPU libraries" if len(libs) > 1 else ""
    return finding(
        "gpu-build",
        label,
        f"{d.name} {d.version} is a {variant.name} build: {first}{more} take "
        f"{human_bytes(size)}; Lambda has no GPU: {_alternative(d.name)}",
        distribution=d.name,
        kind=variant.kind,
        bytes=size,
        files=len(libs),
        libraries=libs[:10],
    ), set(libs)


def gpu_findings(state: CheckState, target: Target | None) -> list[Finding]:
    """Extra check (target-independent): one ``gpu-build`` warning per GPU distribution, and
    one for GPU libraries that belong to no distribution."""
    if target is not None:
        return []
    found: list[Finding] = []
    claimed: set[str] = set()
    for d in state.dists:
        f, files = _dist_finding(d, state, claimed)
        if f is not None:
            found.append(f)
            claimed |= files
    loose = from_members(
        (p, e.size) for p, e in state.files.items() if not e.is_dir and p not in claimed
    )
    if loose.is_gpu:
        entry = state.files[loose.gpu_libraries[0][0]]
        found.append(
            finding(
                "gpu-build",
                entry.label,
                f"{len(loose.gpu_libraries)} {loose.name} libraries outside any distribution "
                f"take {human_bytes(loose.gpu_bytes)}; Lambda has no GPU",
                kind=loose.kind,
                bytes=loose.gpu_bytes,
                libraries=[n for n, _ in loose.gpu_libraries[:10]],
            )
        )
    return found
