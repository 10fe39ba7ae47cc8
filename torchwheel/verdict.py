"""Wheel filename (+ Requires-Python, yanked) × Target → Verdict. Pure: no I/O.

A verdict says whether the target's CPython would install the wheel (tag membership in
``target.tags()``, as pip decides), how good the match is (``rank``: the index of the best
tag, lower is better) and, when it is rejected, why, in words a user can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.version import Version

from .tags import LEGACY_TO_GLIBC
from .targets import Target
from .wheelfile import ParsedWheel, parse_wheel

# ParsedWheel and parse_wheel live in wheelfile; re-exported here for the callers that judge wheels
__all__ = ["ParsedWheel", "Verdict", "evaluate", "parse_wheel"]

LINUX_UNVERIFIED = (
    "{platform} promises nothing about glibc: compatible by tag but unverified; "
    "run `torchwheel check` on the built layer to read its ELF files"
)


@dataclass(frozen=True)
class Verdict:
    """The judgement of one wheel for one target."""

    filename: str
    compatible: bool
    rank: int | None
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    best_tag: str | None = None
    unverified: bool = False
    needs_glibc: tuple[int, int] | None = field(default=None)

    def explain(self) -> str:
        """One line: ``ok (tag)`` or the reasons joined by ``; ``."""
        if self.compatible:
            extra = f" — {'; '.join(self.warnings)}" if self.warnings else ""
            return f"compatible ({self.best_tag}){extra}"
        return "; ".join(self.reasons)


@lru_cache(maxsize=64)
def _rank_table(target: Target) -> dict[Tag, int]:
    ranks: dict[Tag, int] = {}
    for i, tag in enumerate(target.tags()):
        ranks.setdefault(tag, i)
    return ranks


@lru_cache(maxsize=64)
def _pairs_table(target: Target) -> frozenset[tuple[str, str]]:
    return frozenset((t.interpreter, t.abi) for t in _rank_table(target))


@lru_cache(maxsize=64)
def _platforms_table(target: Target) -> frozenset[str]:
    return frozenset(target.platforms()) | {"any"}


# Numbers in tags are at most 9 digits: a longer one (int() refuses 4,300+) is no real tag.
_MANYLINUX_RE = re.compile(r"^manylinux_([0-9]{1,9})_([0-9]{1,9})_(.+)$")
_LEGACY_RE = re.compile(r"^(manylinux1|manylinux2010|manylinux2014)_(.+)$")
_CP_RE = re.compile(r"^cp([0-9])([0-9]{1,9})$")


def platform_glibc(platform: str) -> tuple[tuple[int, int], str] | None:
    """``manylinux_2_28_x86_64`` → ``((2, 28), "x86_64")``; legacy aliases too; else None."""
    m = _MANYLINUX_RE.match(platform)
    if m:
        return (int(m.group(1)), int(m.group(2))), m.group(3)
    m = _LEGACY_RE.match(platform)
    if m:
        return LEGACY_TO_GLIBC[m.group(1)], m.group(2)
    return None


def _platform_reason(platform: str, target: Target) -> tuple[str, tuple[int, int] | None]:
    """Why one platform tag does not fit; second item: glibc it needs, when that is why."""
    machine = target.machine
    rt = target.runtime
    if platform.startswith(("win", "cygwin")):
        return "Windows wheel", None
    if platform.startswith("macosx"):
        return "macOS wheel", None
    if platform.startswith(("ios", "android", "emscripten", "pyodide", "wasi")):
        return f"{platform.split('_')[0]} wheel; Lambda runs Linux", None
    if platform.startswith("musllinux"):
        return "musllinux (Alpine); Lambda uses glibc", None
    gl = platform_glibc(platform)
    if gl is not None:
        need, arch = gl
        if arch != machine:
            return f"built for {arch}; target is {machine}", None
        if need > rt.glibc:
            return (
                f"needs glibc {need[0]}.{need[1]} ({platform.rsplit('_' + arch, 1)[0]}); "
                f"{rt.name} on {rt.os_short} has glibc {rt.glibc_str}"
            ), need
        return f"{platform} is not accepted by {target.label}", None
    if platform.startswith("linux_"):
        arch = platform[len("linux_") :]
        if arch != machine:
            return f"built for {arch}; target is {machine}", None
    return f"platform {platform[:80]} is not Linux/{machine}", None


def _python_reason(interp: str, abi: str, target: Target) -> str:
    py = target.python
    want = f"CPython {target.python_str}"
    if interp.startswith("pp"):
        return f"PyPy wheel ({interp}); Lambda runs CPython"
    if interp.startswith(("ip", "jy", "gp")):
        return f"{interp} wheel; Lambda runs CPython"
    if abi.startswith("cp") and abi.endswith("t") and _CP_RE.match(abi[:-1]):
        return f"free-threaded ABI {abi}; Lambda runs the default build"
    if abi.startswith("cp") and abi.endswith("d") and _CP_RE.match(abi[:-1]):
        return f"debug ABI {abi}; Lambda runs a release build"
    m = _CP_RE.match(interp)
    if abi == "abi3" and m:
        need = (int(m.group(1)), int(m.group(2)))
        if need > py:
            return f"abi3 wheel for CPython >= {need[0]}.{need[1]}; target is {want}"
    if m:
        return f"{interp} wheel; target is {want}"
    pm = re.match(r"^py([0-9])([0-9]{0,9})$", interp)
    if pm:
        if int(pm.group(1)) != py[0]:
            return f"Python {pm.group(1)} wheel; target is {want}"
        if pm.group(2) and (int(pm.group(1)), int(pm.group(2))) > py:
            return f"{interp} wheel; target is {want}"
    return f"{interp}-{abi} is not accepted by {want}"


def _platform_reasons(
    wheel: ParsedWheel, target: Target
) -> tuple[list[str], tuple[int, int] | None]:
    """Why none of the wheel's platform tags fits (empty when one does), and the lowest glibc
    it needs when that is why."""
    if any(p in _platforms_table(target) for p in wheel.platform_tags):
        return [], None
    reasons: list[str] = []
    glibc_needs: list[tuple[int, int]] = []
    for p in wheel.platform_tags:
        reason, need = _platform_reason(p, target)
        if need is not None:
            glibc_needs.append(need)
        if reason not in reasons:
            reasons.append(reason)
    if not glibc_needs:
        return reasons, None
    lowest = min(glibc_needs)
    # a wheel tagged for several glibcs is rejected for its lowest one
    reasons = [
        r
        for r in reasons
        if not r.startswith("needs glibc") or r.startswith(f"needs glibc {lowest[0]}.{lowest[1]} ")
    ]
    return reasons, lowest


def _python_reasons(wheel: ParsedWheel, target: Target) -> list[str]:
    """Why none of the wheel's interpreter-ABI pairs fits (empty when one does)."""
    pairs = [(i, a) for i in wheel.python_tags for a in wheel.abi_tags]
    if any(pair in _pairs_table(target) for pair in pairs):
        return []
    reasons: list[str] = []
    for i, a in pairs:
        reason = _python_reason(i, a, target)
        if reason not in reasons:
            reasons.append(reason)
    return reasons


def _requires_python(requires_python: str, target: Target) -> tuple[str | None, str | None]:
    """(reason to reject, warning) for the index's ``Requires-Python``."""
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return None, f"ignored invalid Requires-Python {requires_python!r}"
    full = Version(f"{target.python_str}.0")
    if not spec.contains(full, prereleases=True) and not spec.contains(
        Version(f"{target.python_str}.99"), prereleases=True
    ):
        return f"requires Python {requires_python}", None
    return None, None


def evaluate(
    wheel_filename: str,
    target: Target,
    *,
    requires_python: str | None = None,
    yanked: bool | str = False,
) -> Verdict:
    """Judge one wheel for one target.

    ``requires_python`` is the index's ``data-requires-python`` (PEP 503 / 691); ``yanked`` is
    ``True`` or the yank reason (PEP 592). Raises :class:`InvalidWheelFilename` for names that
    are not wheels.
    """
    wheel = parse_wheel(wheel_filename)
    ranks = _rank_table(target)
    matched = [(ranks[t], t) for t in wheel.tags if t in ranks]
    reasons: list[str] = []
    warnings: list[str] = []
    needs_glibc: tuple[int, int] | None = None
    rank: int | None = None
    best: Tag | None = None
    if matched:
        rank, best = min(matched, key=lambda rt: rt[0])
    else:
        plat_reasons, needs_glibc = _platform_reasons(wheel, target)
        reasons = _python_reasons(wheel, target) + plat_reasons
        if not reasons:
            reasons = [
                f"no tag of this wheel is among the {len(ranks)} tags {target.label} accepts"
            ]
    if requires_python:
        reason, warning = _requires_python(requires_python, target)
        reasons.extend([reason] if reason else [])
        warnings.extend([warning] if warning else [])
    if yanked:
        why = yanked if isinstance(yanked, str) and yanked.strip() else "no reason given"
        reasons.append(f"yanked: {why}")
    unverified = False
    if best is not None and best.platform.startswith("linux_"):
        unverified = True
        warnings.append(LINUX_UNVERIFIED.format(platform=best.platform))
    return Verdict(
        filename=wheel.filename,
        compatible=not reasons,
        rank=rank if not reasons else None,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        best_tag=str(best) if best is not None else None,
        unverified=unverified,
        needs_glibc=needs_glibc,
    )
