"""What a build did and measured: step results, package sizes, Lambda quotas, suggestions.

Pure data and pure functions (the quotas come from the facts file through
:func:`torchwheel.targets.quotas`); printing lives in :mod:`torchwheel.commands.build`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..targets import quotas

__all__ = [
    "LayerReport",
    "OlderRelease",
    "PackageSize",
    "QuotaCheck",
    "StepResult",
    "quota_checks",
    "suggestions",
]


@dataclass(frozen=True)
class StepResult:
    """What one slim/strip/compile step did."""

    step: str
    description: str
    files: int
    bytes_saved: int
    applied: bool = True
    note: str | None = None
    bytes_added: int = 0  # what the step added (compile: the .pyc files)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "step": self.step,
            "description": self.description,
            "files": self.files,
            "bytes_saved": self.bytes_saved,
            "applied": self.applied,
            "note": self.note,
            "bytes_added": self.bytes_added,
        }


@dataclass(frozen=True)
class PackageSize:
    """One distribution in the layer."""

    name: str
    version: str
    wheel: str
    files: int
    unzipped_bytes: int
    wheel_bytes: int
    requested: bool
    source_url: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "version": self.version,
            "wheel": self.wheel,
            "files": self.files,
            "unzipped_bytes": self.unzipped_bytes,
            "wheel_bytes": self.wheel_bytes,
            "requested": self.requested,
            "source_url": self.source_url,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class QuotaCheck:
    """The layer against one Lambda quota."""

    name: str
    limit: int
    actual: int
    fits: bool
    over_by: int
    hard: bool  # True: Lambda refuses the function; False: a workaround exists (S3 upload)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "limit": self.limit,
            "actual": self.actual,
            "fits": self.fits,
            "over_by": self.over_by,
            "hard": self.hard,
        }


@dataclass(frozen=True)
class OlderRelease:
    """An older release of the layer's largest package that would bring it under the quota
    (found by :func:`torchwheel.layer.older.find_older_release`)."""

    package: str
    version: str
    wheel: str
    unzipped_bytes: int  # the wheel's members (after --slim rules when the build slimmed)
    layer_bytes: int  # estimated layer size with it instead of the built version
    probed: int  # wheels whose central directory was read to find it

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "package": self.package,
            "version": self.version,
            "wheel": self.wheel,
            "unzipped_bytes": self.unzipped_bytes,
            "layer_bytes": self.layer_bytes,
            "probed": self.probed,
        }


@dataclass(frozen=True, repr=False)
class LayerReport:
    """Everything :func:`torchwheel.layer.build_layer` did and measured."""

    target: str
    runtime: str
    arch: str
    python: str
    layout: str
    prefix: str
    output: Path | None
    tree: Path | None
    zipped_bytes: int | None
    unzipped_bytes: int
    files: int
    sha256: str | None
    raw_copied: int
    compressed: int
    packages: tuple[PackageSize, ...]
    largest_files: tuple[tuple[str, int], ...]
    steps: tuple[StepResult, ...]
    skipped_runtime_packages: tuple[str, ...]
    quotas: tuple[QuotaCheck, ...]
    suggestions: tuple[str, ...]
    notes: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    packed: dict[str, Any] | None = None
    older_release: OlderRelease | None = None

    def __repr__(self) -> str:
        where = self.output or self.tree
        return (
            f"<LayerReport {self.target} → {where}: {self.files} files, "
            f"{self.unzipped_bytes:,} bytes unzipped"
            + (f", {self.zipped_bytes:,} zipped" if self.zipped_bytes is not None else "")
            + (", over quota" if self.over_quota else "")
            + ">"
        )

    @property
    def over_quota(self) -> bool:
        """True when a hard quota (the 250 MB unzipped limit) is exceeded."""
        return any(q.hard and not q.fits for q in self.quotas)

    def to_dict(self) -> dict[str, Any]:
        """The ``build --json`` document (schema in docs/json-schema.md)."""
        return {
            "schema": "torchwheel.build/1",
            "target": {
                "label": self.target,
                "runtime": self.runtime,
                "arch": self.arch,
                "python": self.python,
            },
            "layout": self.layout,
            "prefix": self.prefix,
            "output": str(self.output) if self.output else None,
            "tree": str(self.tree) if self.tree else None,
            "zipped_bytes": self.zipped_bytes,
            "unzipped_bytes": self.unzipped_bytes,
            "files": self.files,
            "sha256": self.sha256,
            "raw_copied": self.raw_copied,
            "compressed": self.compressed,
            "over_quota": self.over_quota,
            "quotas": [q.to_dict() for q in self.quotas],
            "packages": [p.to_dict() for p in self.packages],
            "largest_files": [{"path": p, "bytes": n} for p, n in self.largest_files],
            "steps": [s.to_dict() for s in self.steps],
            "skipped_runtime_packages": list(self.skipped_runtime_packages),
            "suggestions": list(self.suggestions),
            "notes": list(self.notes),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "packed": self.packed,
            "older_release": self.older_release.to_dict() if self.older_release else None,
        }


def quota_checks(zipped: int | None, unzipped: int) -> list[QuotaCheck]:
    """The layer's sizes against Lambda's quotas (from the facts file)."""
    q = quotas()
    out = [
        QuotaCheck(
            "unzipped (function + all layers)",
            q.unzipped,
            unzipped,
            unzipped <= q.unzipped,
            max(0, unzipped - q.unzipped),
            True,
        )
    ]
    if zipped is not None:
        out.append(
            QuotaCheck(
                "zipped, direct upload",
                q.direct_upload_zipped,
                zipped,
                zipped <= q.direct_upload_zipped,
                max(0, zipped - q.direct_upload_zipped),
                False,
            )
        )
    return out


def suggestions(
    checks: Sequence[QuotaCheck],
    *,
    slimmed: bool,
    stripped: bool,
    slim_would_save: int,
    packages: Sequence[PackageSize],
    human: Callable[[int], str],
    older: OlderRelease | None = None,
    probed_older: bool = False,
) -> list[str]:
    """What would make a layer that misses a quota fit, one sentence each (``human`` formats
    byte counts)."""
    out: list[str] = []
    q = quotas()
    for c in checks:
        if c.fits:
            continue
        if not c.hard:
            out.append(
                f"the zip is {human(c.over_by)} over the {human(c.limit)} direct-upload limit: "
                "publish it from S3 (aws lambda publish-layer-version --content S3Bucket=...)"
            )
            continue
        need = c.over_by
        if not slimmed and slim_would_save:
            verdict = "enough" if slim_would_save >= need else "not enough alone"
            out.append(f"--slim would remove {human(slim_would_save)} ({verdict})")
        if not stripped:
            out.append("--strip shrinks shared objects further (strip --strip-unneeded)")
        big = max(packages, key=lambda p: p.unzipped_bytes, default=None)
        if older is not None:
            out.append(
                f"{older.package} {older.version} fits: about {human(older.layer_bytes)} "
                f"unzipped for the whole layer (`torchwheel build "
                f"'{older.package}=={older.version}' ...`; {older.wheel})"
            )
        elif probed_older and big is not None:
            out.append(
                f"no older {big.name} release found that fits (up to 8 older compatible "
                f"releases checked; {big.name} {big.version} alone is "
                f"{human(big.unzipped_bytes)} unzipped here)"
            )
        out.append(
            "a packed layer (zstd archive unpacked into /tmp at cold start; /tmp holds up to "
            f"{q.ephemeral_storage_max_mb:,} MB) stays under the unzipped limit"
        )
        out.append(f"a container image allows {human(q.container_image)}")
    return out
