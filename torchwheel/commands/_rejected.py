"""The rejected wheels of a resolution, as a reader wants them: near misses first, the rest
counted by reason.

A *near miss* is a wheel for the target's own CPython (interpreter and ABI accepted) and its
own machine on Linux, rejected for something narrower — the glibc it needs, ``Requires-
Python``, a yank, a GPU build. Those are the rows that answer "why not this one?"; the hundreds
of wheels for other Pythons, macOS or Windows are only counted, grouped by reason. Pure.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidWheelFilename
from ..index import Candidate
from ..targets import Target
from ..verdict import Verdict
from ..wheelfile import parse_wheel

__all__ = ["RejectedSummary", "reason_group", "summarize"]

#: (pattern on a reason, group label) — the first match names a reason's group
_GROUPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^cp\d+ wheel; target is"), "other CPython versions"),
    (re.compile(r"^abi3 wheel for CPython >="), "abi3 for a newer CPython"),
    (re.compile(r"^Python \d wheel"), "other Python major version"),
    (re.compile(r"^free-threaded ABI"), "free-threaded build (cp3XYt)"),
    (re.compile(r"^debug ABI"), "debug build"),
    (re.compile(r"^(PyPy|ip|jy|gp)"), "not CPython"),
    (re.compile(r"^built for (\S+); target is"), "built for another machine"),
    (re.compile(r"^needs glibc (\d+\.\d+)"), "needs a newer glibc"),
    (re.compile(r"^requires Python "), "Requires-Python excludes it"),
    (re.compile(r"^yanked"), "yanked"),
)


def reason_group(reason: str) -> str:
    """The group a rejection reason is counted in (the reason itself when none fits)."""
    for pattern, label in _GROUPS:
        if pattern.search(reason):
            return label
    return reason


def _near_miss(filename: str, target: Target) -> bool:
    """True when the wheel is for the target's CPython and machine on Linux."""
    try:
        wheel = parse_wheel(filename)
    except InvalidWheelFilename:
        return False
    pairs = {(t.interpreter, t.abi) for t in target.tags()}
    python_ok = any((i, a) in pairs for i in wheel.python_tags for a in wheel.abi_tags)
    machine_ok = any(
        p == "any" or (("linux" in p) and p.endswith(f"_{target.machine}"))
        for p in wheel.platform_tags
    )
    return python_ok and machine_ok


@dataclass(frozen=True)
class RejectedSummary:
    """Near misses (in the resolution's order) and the others counted per reason group."""

    near: tuple[tuple[Candidate, Verdict], ...]
    groups: tuple[tuple[str, int], ...]  # (label, wheels), most first
    others: int

    def line(self) -> str:
        """``958 other wheels: other CPython versions 640, macOS wheel 120, …``."""
        parts = ", ".join(f"{label} {n:,}" for label, n in self.groups)
        return f"{self.others:,} other rejected wheel(s): {parts}" if self.others else ""


def summarize(rejected: Sequence[tuple[Candidate, Verdict]], target: Target) -> RejectedSummary:
    """Split ``rejected`` into near misses and reason groups (see the module docstring)."""
    near = []
    counts: Counter[str] = Counter()
    for c, v in rejected:
        if _near_miss(c.filename, target):
            near.append((c, v))
        else:
            counts[reason_group(v.reasons[0]) if v.reasons else "rejected"] += 1
    groups = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return RejectedSummary(tuple(near), groups, sum(counts.values()))
