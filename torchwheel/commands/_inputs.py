"""``check``'s human lines about the inputs: sizes, SAM/CDK shapes, images, and the truth used."""

from __future__ import annotations

from ..checks import CheckReport
from ..report import human_bytes

__all__ = ["input_lines"]


def _image_lines(report: CheckReport) -> list[str]:
    image = report.image or {}
    truth = report.truth
    s = report.sizes
    layers = image.get("layers", [])
    tag = ", ".join(image.get("tags", [])) or "untagged"
    lines = [
        f"image {report.inputs[0]['path'] if report.inputs else ''} ({tag}; "
        f"{image.get('format')}, {len(layers)} layers): {human_bytes(s.unzipped_total)} "
        f"uncompressed of {human_bytes(s.unzipped_limit)} allowed",
        f"judged by the image's own files: glibc {truth.get('glibc')} "
        f"({truth.get('glibc_from')}), GLIBCXX {truth.get('glibcxx')} / CXXABI "
        f"{truth.get('cxxabi')}, CPython {truth.get('python')} ({truth.get('python_from')}), "
        f"{truth.get('architecture')} ({truth.get('architecture_from')}), LD_LIBRARY_PATH from "
        f"the {truth.get('ld_library_path_from')}",
    ]
    if truth.get("claimed_runtime"):
        lines.append(f"the image claims to be {truth['claimed_runtime']} (compared with the facts)")
    return lines


def _shape_lines(report: CheckReport) -> list[str]:
    return [
        f"{i['role']}: {i['path']} ({i['described']})"
        for i in report.inputs
        if i.get("described") and i.get("kind") == "directory"
    ]


def input_lines(report: CheckReport) -> list[str]:
    """The size line(s), recognised build-output shapes, and which truth judged them."""
    if report.truth.get("source") == "image":
        return _image_lines(report)
    s = report.sizes
    zipped = ", ".join(f"{p}: {human_bytes(n)} zipped" for p, n in s.zipped)
    lines = [
        f"unzipped {human_bytes(s.unzipped_total)} of {human_bytes(s.unzipped_limit)}"
        + (f"; {zipped}" if zipped else "")
    ]
    lines.extend(_shape_lines(report))
    if report.truth.get("source") == "facts":
        lines.append(f"judged against the facts file ({report.truth.get('file')})")
    return lines
