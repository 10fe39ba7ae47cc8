"""What fails a check: errors always; with ``strict``, also the warnings a user can act on.

Some warnings describe every real deployment of a kind and have nothing to fix in the layer
(:data:`INFORMATIONAL`); failing a CI gate on them would make ``--strict`` useless. They are
still reported (and still warnings in the JSON), only ``strict`` does not fail on them. To
fail on nothing but errors, leave ``strict`` off; to accept an actionable warning in a
project, ``ignore`` its code (``--ignore`` or ``[tool.torchwheel] ignore``).

Pure: works on a :class:`~torchwheel.checks.CheckReport`.
"""

from __future__ import annotations

from .model import CODES, ERROR, WARNING, CheckReport, Finding

__all__ = ["ACTIONABLE", "INFORMATIONAL", "actionable", "exit_code", "strict_failures"]

#: Warning codes ``strict`` does not fail on, with why (docs/ci.md lists them).
INFORMATIONAL: dict[str, str] = {
    "unconfirmed-system-library": (
        "a library the Lambda image is believed to provide (libz, libgomp ...) but no "
        "source confirms; nothing in the layer would change"
    ),
    "zipped-over-direct-upload": (
        "the zip is over the 50 MB direct-upload limit: deploy it through S3 (SAM, CDK and "
        "Terraform do); the layer itself is fine"
    ),
    "image-differs-from-runtime": (
        "a container image's own glibc / libstdc++ / CPython differ from what the facts file "
        "says of the runtime it claims; the image is judged by its own files, so the finding "
        "is about the facts, not something to change in the image"
    ),
}

#: Warning codes ``strict`` fails on: each names something to change.
ACTIONABLE: dict[str, str] = {
    "nested-zip": "a zip or wheel inside the layer that Lambda will not extract",
    "foreign-pycache": "bytecode for another Python that is dead weight",
    "ephemeral-storage": "a packed layer needs more /tmp than the default: set EphemeralStorage",
    "gpu-build": "a CUDA/ROCm/XPU build or nvidia-* package that Lambda cannot use: build CPU",
}


def actionable(f: Finding) -> bool:
    """True for an error, or a warning whose code is not :data:`INFORMATIONAL`."""
    return f.severity == ERROR or (f.severity == WARNING and f.code not in INFORMATIONAL)


def strict_failures(report: CheckReport) -> tuple[Finding, ...]:
    """The warnings that fail ``strict`` (for one target: its verdict's; for a matrix: the
    target-independent ones)."""
    found = list(report.findings)
    if report.single_target:
        for v in report.verdicts:
            found.extend(v.findings)
    seen: set[tuple[str, str, str]] = set()
    out = []
    for f in found:
        key = (f.code, f.path, f.message)
        if f.severity == WARNING and actionable(f) and key not in seen:
            seen.add(key)
            out.append(f)
    return tuple(out)


def exit_code(report: CheckReport, strict: bool = False) -> int:
    """0 when the deployment works (and, with ``strict``, has no actionable warning), else 1."""
    if not report.ok:
        return 1
    if strict and strict_failures(report):
        return 1
    return 0


def _unclassified() -> list[str]:
    """Warning codes in neither table (a new code must be put in one)."""
    return [c for c, sev in CODES.items() if sev == WARNING and c not in INFORMATIONAL | ACTIONABLE]
