"""RECORD against the files: changed or corrupt files, files gone, files no RECORD lists.

Only installed (not vendored) distributions are compared; hashes come from
:func:`~torchwheel.checks.scan.scan_contents`.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Sequence

from .model import WARNING, CheckState, Finding, InstalledDist, dist_label, finding

__all__ = ["record_findings"]


def _compare(d: InstalledDist, state: CheckState) -> tuple[list[str], list[str]]:
    """The paths of ``d``'s RECORD that differ (size or hash) and those that are missing."""
    bad: list[str] = []
    missing: list[str] = []
    for path, (digest, size) in sorted(d.record.items()):
        entry = state.files.get(path)
        if entry is None:
            if not path.endswith(".pyc") and path.startswith(d.site):
                missing.append(path)
            continue
        if entry.is_symlink or entry.is_dir:
            continue
        if size is not None and size != entry.size:
            bad.append(path)
            continue
        got = state.digests.get(path)
        if digest and got is not None and got != digest:
            bad.append(path)
    return bad, missing


def _dist_findings(d: InstalledDist, state: CheckState) -> list[Finding]:
    bad, missing = _compare(d, state)
    name = f"{d.name} {d.version}".strip()
    label = dist_label(d, state)
    findings: list[Finding] = []
    if d.record_error is not None:
        findings.append(
            finding(
                "record-mismatch",
                label,
                f"{name}: {d.record_error}; none of its files could be compared",
                kind="unreadable",
            )
        )
    if bad:
        rel = [posixpath.relpath(p, d.site) for p in bad]
        findings.append(
            finding(
                "record-mismatch",
                label,
                f"{name}: {len(bad)} file(s) differ from RECORD (first: {rel[0]}); the "
                "layer was modified after install or is corrupt",
                files=rel[:100],
                kind="hash",
            )
        )
    if missing:
        mrel = [posixpath.relpath(p, d.site) for p in missing]
        findings.append(
            finding(
                "record-mismatch",
                label,
                f"{name}: {len(missing)} file(s) listed in RECORD are missing "
                f"(first: {mrel[0]}); slimmed without updating RECORD?",
                severity=WARNING,
                files=mrel[:100],
                kind="missing",
            )
        )
    return findings


def _top_packages(dists: Sequence[InstalledDist]) -> dict[str, set[str]]:
    """Site directory -> the top-level packages (directories) its distributions record."""
    tops: dict[str, set[str]] = defaultdict(set)
    for d in dists:
        for path in d.record:
            if path.startswith(d.site + "/"):
                first = path[len(d.site) + 1 :].split("/", 1)
                if len(first) == 2 and not first[0].endswith((".dist-info", ".data")):
                    tops[d.site].add(first[0])
    return tops


def _site_of(path: str, tops: dict[str, set[str]]) -> str | None:
    """The innermost site directory of ``tops`` that holds ``path``."""
    site = posixpath.dirname(path)
    while site and site != "/" and site not in tops:
        site = posixpath.dirname(site)
    return site if site in tops else None


def _unrecorded_findings(dists: Sequence[InstalledDist], state: CheckState) -> list[Finding]:
    """Files in a distribution's top-level packages that no RECORD lists."""
    claimed: set[str] = set()
    for d in state.dists:  # vendored RECORDs claim their files too
        claimed.update(d.record)
    tops = _top_packages(dists)
    unrecorded: dict[str, list[str]] = defaultdict(list)
    for path, entry in state.files.items():
        if entry.is_dir or path in claimed or path.endswith(".pyc"):
            continue
        site = _site_of(path, tops)
        if site is not None and path[len(site) + 1 :].split("/", 1)[0] in tops[site]:
            unrecorded[site].append(path[len(site) + 1 :])
    return [
        finding(
            "record-mismatch",
            site,
            f"{len(paths)} file(s) under {site} belong to no RECORD (first: {sorted(paths)[0]})",
            severity=WARNING,
            files=sorted(paths)[:100],
            kind="unrecorded",
        )
        for site, paths in sorted(unrecorded.items())
    ]


def record_findings(state: CheckState, record: bool) -> list[Finding]:
    """``record-mismatch`` findings; none when ``record`` is False (``--no-record``)."""
    if not record:
        return []
    dists = [d for d in state.dists if not d.vendored]
    findings: list[Finding] = []
    for d in dists:
        findings.extend(_dist_findings(d, state))
    findings.extend(_unrecorded_findings(dists, state))
    return findings
