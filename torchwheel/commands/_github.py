"""``check --format github``: findings as GitHub Actions workflow commands.

One ``::error`` / ``::warning`` / ``::notice`` line per finding (the zip as ``file=``, the code
as ``title=``), which GitHub shows as annotations on the run and the pull request, then one
plain summary line. Escaping follows GitHub's workflow-command rules: ``%``, CR and LF in the
message; also ``:`` and ``,`` in properties.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..checks import ERROR, WARNING, CheckReport, Finding
from ..checks.policy import INFORMATIONAL

__all__ = ["annotation", "github_lines"]


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def _file_of(f: Finding, paths: Iterable[str]) -> tuple[str | None, str]:
    """(the input the finding is in, the path inside it) — ``layer.zip:python/x`` split."""
    for p in sorted(paths, key=len, reverse=True):
        if f.path.startswith(f"{p}:"):
            return p, f.path[len(p) + 1 :]
        if f.path == p:
            return p, ""
    return None, f.path


def annotation(f: Finding, paths: Iterable[str], *, target: str | None = None) -> str:
    """``::error file=layer.zip,title=wheel-not-extracted::python/x.whl: ...`` for ``f``."""
    kind = {ERROR: "error", WARNING: "warning"}.get(f.severity, "notice")
    if kind == "warning" and f.code in INFORMATIONAL:
        kind = "notice"  # informational: shown, never a reason to fail (docs/ci.md)
    file, inner = _file_of(f, paths)
    props = []
    if file is not None:
        props.append(f"file={_escape_property(file)}")
    title = f.code if target is None else f"{f.code} ({target})"
    props.append(f"title={_escape_property(title)}")
    text = f"{inner}: {f.message}" if inner else f.message
    return f"::{kind} {','.join(props)}::{_escape_data(text)}"


def github_lines(report: CheckReport, code: int) -> list[str]:
    """Every annotation of ``report`` (per target for a matrix), then a summary line."""
    lines = [annotation(f, report.paths) for f in report.findings]
    if not report.single_target:
        generic = set(report.findings)
        for v in report.verdicts:
            lines.extend(
                annotation(f, report.paths, target=v.target)
                for f in v.findings
                if f not in generic and f.severity == ERROR
            )
    works = [v.target for v in report.verdicts if v.works]
    verdict = "OK" if code == 0 else "FAIL"
    lines.append(
        f"torchwheel check: {verdict}: {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s); works on {', '.join(works) or 'no target'}"
    )
    return lines
