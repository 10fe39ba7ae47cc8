"""Per target: wheel tags of the installed distributions, and their ``Requires-Dist``.

A distribution counts when its site directory is on the target's ``sys.path`` (earlier
entries win, as at import time); dependencies may be met by any layer or, on the managed
Python runtimes, by the packages the runtime ships (boto3 ...).
"""

from __future__ import annotations

import re
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ..errors import ArchiveError, InvalidWheelFilename
from ..targets import Target, facts
from ..verdict import evaluate
from ..wheelfile import marker_holds, parse_requirement
from .layout import sys_path
from .model import WARNING, CheckState, Finding, InstalledDist, dist_label, finding

__all__ = ["dist_findings"]


def _runtime_provides(target: Target, state: CheckState) -> set[str]:
    if state.image is not None:  # a container image: what its runtime site-packages hold
        names: set[str] = state.image.runtime_packages(target.python)
        return names
    if target.runtime.python is None:
        return set()
    return {str(canonicalize_name(n)) for n in facts()["layer"]["runtime_packages"]}


def _tag_findings(d: InstalledDist, target: Target, state: CheckState) -> list[Finding]:
    if not d.tags:
        return []
    reasons: list[str] = []
    name = re.sub(r"[-_.]+", "_", d.name) or "x"
    for tag in d.tags:
        try:
            verdict = evaluate(f"{name}-0-{tag}.whl", target)
        except InvalidWheelFilename:
            continue
        if verdict.compatible:
            return []
        reasons.extend(r for r in verdict.reasons if r not in reasons)
    if not reasons:
        return []
    return [
        finding(
            "tag-incompatible",
            dist_label(d, state),
            f"{d.name} {d.version} is tagged {', '.join(d.tags)}: {reasons[0]}",
            tags=list(d.tags),
            reasons=reasons,
        )
    ]


def _applies(text: str, env: dict[str, Any]) -> Requirement | None:
    """The requirement when its marker holds on the target (no extras); one that cannot be
    read or evaluated raises :class:`ArchiveError` (see
    :func:`~torchwheel.wheelfile.parse_requirement`)."""
    req = parse_requirement(text)
    return req if marker_holds(req, env) else None


def _version_ok(req: Requirement, have: InstalledDist) -> bool:
    if not req.specifier or not have.version:
        return True
    try:
        return req.specifier.contains(Version(have.version), prereleases=True)
    except ValueError:  # InvalidVersion, or a version int() will not read
        return True


def _dep_findings(
    d: InstalledDist,
    target: Target,
    installed: dict[str, InstalledDist],
    label: str,
    provided: set[str],
) -> list[Finding]:
    out: list[Finding] = []
    env = target.marker_environment()
    for text in d.requires:
        try:
            req = _applies(text, env)
        except ArchiveError as exc:  # pip would refuse the wheel; Lambda imports it anyway
            out.append(
                finding(
                    "missing-dependency",
                    label,
                    f"{d.name} {d.version}: {exc}; that dependency is not checked",
                    severity=WARNING,
                    requirement=text[:200],
                    dist=d.name,
                )
            )
            continue
        if req is None:
            continue
        key = str(canonicalize_name(req.name))
        have = installed.get(key)
        if have is None:
            if key in provided:
                continue
            out.append(
                finding(
                    "missing-dependency",
                    label,
                    f"{d.name} {d.version} requires {req}, which is in no layer"
                    + ("" if target.runtime.python is None else " nor the runtime"),
                    requirement=str(req),
                    dist=d.name,
                )
            )
        elif not _version_ok(req, have):
            out.append(
                finding(
                    "missing-dependency",
                    label,
                    f"{d.name} {d.version} requires {req}; the layer has "
                    f"{have.name} {have.version}",
                    requirement=str(req),
                    dist=d.name,
                    found=have.version,
                )
            )
    return out


def dist_findings(state: CheckState, target: Target) -> list[Finding]:
    """``tag-incompatible`` and ``missing-dependency`` for the distributions ``target`` sees."""
    path_dirs = sys_path(target, state)
    visible = [d for d in state.dists if d.site in path_dirs and not d.vendored]
    installed: dict[str, InstalledDist] = {}
    for d in reversed(visible):  # earlier sys.path entries win
        installed[d.key] = d
    findings: list[Finding] = []
    provided = _runtime_provides(target, state)
    for d in sorted(installed.values(), key=lambda d: d.key):
        findings.extend(_tag_findings(d, target, state))
        findings.extend(_dep_findings(d, target, installed, dist_label(d, state), provided))
    return findings
