"""Shared by the benchmarks: put a measured section into docs/performance.md."""

from __future__ import annotations

import os
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def write_section(marker: str, heading: str, section: str, doc: Path = DOC) -> None:
    """Replace the text between ``<!-- marker:begin -->`` and ``<!-- marker:end -->``.

    ``section`` must start and end with those markers. When the markers are not in the
    document yet, the section is appended under ``## heading``. Written atomically.
    """
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    if not (section.startswith(begin) and section.rstrip().endswith(end)):
        raise ValueError(f"section for {marker!r} must be wrapped in its markers")
    text = doc.read_text() if doc.exists() else "# Performance\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section.rstrip() + tail
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + section.rstrip() + "\n"
    tmp = doc.with_name(f".{doc.name}.{marker}.tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)
