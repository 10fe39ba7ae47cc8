"""Sizes against Lambda's quotas: unzipped total, direct-upload size, layer count."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ..targets import quotas
from .layout import SITE_RE
from .model import CheckState, Finding, LayerEntry, SizeReport, finding

__all__ = ["size_findings"]


def _largest_dirs(entries: Sequence[LayerEntry], top: int = 10) -> list[tuple[str, int]]:
    sizes: dict[str, int] = defaultdict(int)
    for e in entries:
        if e.is_dir or e.expanded_from:
            continue
        parts = e.path.split("/")[:-1]
        m = SITE_RE.match(e.path)
        root = 4 if m else (1 if parts and parts[0] == "python" else 0)
        for depth in (root, root + 1, root + 2):
            if depth >= 1 and len(parts) >= depth:
                sizes[f"{e.origin}:{'/'.join(parts[:depth])}/"] += e.size
    ranked = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:top]


def size_findings(state: CheckState) -> tuple[list[Finding], SizeReport]:
    """Quota findings and the :class:`SizeReport` (expanded entries do not count)."""
    q = quotas()
    findings: list[Finding] = []
    per_zip: dict[str, int] = defaultdict(int)
    for e in state.entries:
        if not e.is_dir and not e.expanded_from:
            per_zip[e.origin] += e.size
    total = sum(per_zip.values())
    if total > q.unzipped:
        findings.append(
            finding(
                "unzipped-too-large",
                ", ".join(per_zip),
                f"function + layers unzip to {total:,} bytes; Lambda allows {q.unzipped:,} "
                "(slim it, use a packed layer, or a container image)",
                size=total,
                limit=q.unzipped,
            )
        )
    for path, zipped in state.zip_sizes:
        if zipped > q.direct_upload_zipped:
            findings.append(
                finding(
                    "zipped-over-direct-upload",
                    path,
                    f"{zipped:,} bytes zipped is over the {q.direct_upload_zipped:,}-byte direct "
                    "upload limit: upload it through S3",
                    size=zipped,
                    limit=q.direct_upload_zipped,
                )
            )
    if len(state.layers) > q.layers_per_function:
        findings.append(
            finding(
                "too-many-layers",
                ", ".join(state.layers),
                f"{len(state.layers)} layers; a function can use at most {q.layers_per_function}",
            )
        )
    report = SizeReport(
        zipped=tuple(state.zip_sizes),
        unzipped=tuple(per_zip.items()),
        unzipped_total=total,
        unzipped_limit=q.unzipped,
        direct_upload_limit=q.direct_upload_zipped,
        layers=len(state.layers),
        layers_limit=q.layers_per_function,
        largest_dirs=tuple(_largest_dirs(state.entries)),
    )
    return findings, report
