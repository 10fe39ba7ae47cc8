"""What the checks produce and share: findings and their codes, entries, reports, the state.

Pure data: nothing here reads a zip. :func:`finding` is how every check module makes a
:class:`Finding` (the severity defaults to the code's entry in :data:`CODES`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from packaging.utils import canonicalize_name

from ..elf import ELFInfo
from ..targets import Target, facts
from ..zipread import ZipMember, ZipReader

__all__ = [
    "CODES",
    "ERROR",
    "FUNCTION_MOUNT",
    "INFO",
    "LAYER_MOUNT",
    "WARNING",
    "CheckReport",
    "CheckState",
    "Expander",
    "Expansion",
    "ExtraCheck",
    "Finding",
    "InstalledDist",
    "LayerEntry",
    "SizeReport",
    "TargetVerdict",
    "dist_label",
    "finding",
    "rel_in_zip",
]

ERROR = "error"
WARNING = "warning"
INFO = "info"

#: Every finding code with its default severity, in the order used to pick a target's
#: "first reason" (most fundamental first).
CODES: dict[str, str] = {
    "unsafe-path": ERROR,
    "suspicious-archive": ERROR,
    "elf-arch-mismatch": ERROR,
    "wrong-python-dir": ERROR,
    "abi-mismatch": ERROR,
    "tag-incompatible": ERROR,
    "glibc-too-new": ERROR,
    "glibcxx-too-new": ERROR,
    "version-not-found": ERROR,
    "missing-shared-library": ERROR,
    "unconfirmed-system-library": WARNING,
    "missing-dependency": ERROR,
    "not-on-sys-path": ERROR,
    "wheel-not-extracted": ERROR,
    "record-mismatch": ERROR,
    "packed-manifest": ERROR,
    "unzipped-too-large": ERROR,
    "image-too-large": ERROR,
    "too-many-layers": ERROR,
    "nested-zip": WARNING,
    "foreign-pycache": WARNING,
    "zipped-over-direct-upload": WARNING,
    "ephemeral-storage": WARNING,
    "gpu-build": WARNING,
    "image-differs-from-runtime": WARNING,
    "crc-not-checked": INFO,
}

#: Where Lambda mounts layers and the function's code (facts file, ``layer``).
LAYER_MOUNT: str = facts()["layer"]["mount"]
FUNCTION_MOUNT: str = facts()["layer"]["function_mount"]


@dataclass(frozen=True)
class Finding:
    """One problem found: a stable ``code``, a ``severity``, the ``path`` it is about."""

    code: str
    severity: str
    path: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (docs/json-schema.md, "check")."""
        return {
            "code": self.code,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "detail": self.detail,
        }


def finding(
    code: str, path: str, message: str, severity: str | None = None, **detail: Any
) -> Finding:
    """A :class:`Finding` with ``code``'s default severity unless ``severity`` is given."""
    return Finding(
        code=code, severity=severity or CODES[code], path=path, message=message, detail=detail
    )


@dataclass(frozen=True)
class LayerEntry:
    """One file (or symlink / directory) of the deployment, wherever it comes from.

    ``path`` is relative to ``mount`` (``/opt`` for layers, ``/var/task`` for the function,
    wherever an expander's loader unpacks). ``open`` returns a fresh binary stream of the
    content (seekable; cheap forward, costly backward for deflated members); ``chunks``
    (optional) yields the whole content fast.
    """

    path: str
    size: int
    mode: int | None
    is_symlink: bool
    is_dir: bool
    origin: str
    mount: str
    open: Callable[[], BinaryIO]
    compressed_size: int | None = None
    input_index: int = 0
    expanded_from: str | None = None
    chunks: Callable[[], Iterator[bytes]] | None = None
    zip_source: tuple[ZipReader, ZipMember] | None = field(default=None, compare=False)
    #: where the file lands on Lambda (``/opt/python/x.py``); computed from mount + path
    abs_path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "abs_path", posixpath.join(self.mount, self.path))

    @property
    def label(self) -> str:
        """``layer.zip:python/x.py`` for messages."""
        return f"{self.origin}:{self.path}"


@dataclass(frozen=True)
class Expansion:
    """What an expander adds: entries and the directories its loader puts on the paths."""

    entries: Sequence[LayerEntry]
    sys_path: tuple[str, ...] = ()
    library_path: tuple[str, ...] = ()


#: An expander turns one entry (e.g. a packed archive) into more entries, or returns None.
Expander = Callable[[LayerEntry], "Expansion | None"]


@dataclass
class InstalledDist:
    """An installed distribution found in the deployment (a ``*.dist-info`` directory).

    Not :class:`torchwheel.layer.DistInfo` (what the layer builder installed): this one is
    read back from a zip made by any tool, so every field may be incomplete.
    """

    name: str
    version: str
    site: str  # absolute directory holding the .dist-info
    dist_info: str  # absolute path of the .dist-info directory
    requires: tuple[str, ...]
    tags: tuple[str, ...]
    record: dict[str, tuple[str, int | None]]  # absolute path -> (hash "algo=b64", size)
    origin: str
    vendored: bool = False  # inside another distribution's package (setuptools/_vendor/...)
    record_error: str | None = None  # why RECORD could not be read, when it could not

    @property
    def key(self) -> str:
        """Canonical project name."""
        return str(canonicalize_name(self.name))


@dataclass(frozen=True)
class SizeReport:
    """Sizes against Lambda's quotas."""

    zipped: tuple[tuple[str, int], ...]
    unzipped: tuple[tuple[str, int], ...]
    unzipped_total: int
    unzipped_limit: int
    direct_upload_limit: int
    layers: int
    layers_limit: int
    largest_dirs: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "zipped": [{"path": p, "bytes": n} for p, n in self.zipped],
            "unzipped": [{"path": p, "bytes": n} for p, n in self.unzipped],
            "unzipped_total": self.unzipped_total,
            "unzipped_limit": self.unzipped_limit,
            "direct_upload_limit": self.direct_upload_limit,
            "layers": self.layers,
            "layers_limit": self.layers_limit,
            "largest_dirs": [{"path": p, "bytes": n} for p, n in self.largest_dirs],
        }


@dataclass(frozen=True)
class TargetVerdict:
    """Whether the deployment works on one target, and why not."""

    target: str
    runtime: str
    arch: str
    python: str
    works: bool
    reason: str | None
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        """Number of error findings (target-independent ones included)."""
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        """Number of warning findings."""
        return sum(1 for f in self.findings if f.severity == WARNING)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "target": self.target,
            "runtime": self.runtime,
            "arch": self.arch,
            "python": self.python,
            "works": self.works,
            "reason": self.reason,
            "errors": self.errors,
            "warnings": self.warnings,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True, repr=False)
class CheckReport:
    """The result of :func:`torchwheel.check`.

    ``findings``: for one target, every finding; for a matrix, the target-independent ones
    (each verdict carries its own full list). ``ok``: no errors (and, for a matrix, at least
    one target works).
    """

    paths: tuple[str, ...]
    single_target: bool
    findings: tuple[Finding, ...]
    verdicts: tuple[TargetVerdict, ...]
    sizes: SizeReport
    distributions: tuple[dict[str, str], ...]
    elf_files: int
    members: int
    bytes_read: int
    record_checked: bool
    inflate: str
    seconds: float
    ignored: tuple[str, ...] = ()
    #: each input: path, kind (zip / directory / image), role, mount, shape (SAM / CDK)
    inputs: tuple[dict[str, Any], ...] = ()
    #: where the runtime facts came from: the facts file, or the container image's own files
    truth: dict[str, Any] = field(default_factory=dict)
    #: for a container image: its layers, sizes, architecture and what it provides
    image: dict[str, Any] | None = None

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Error findings."""
        return tuple(f for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """Warning findings."""
        return tuple(f for f in self.findings if f.severity == WARNING)

    def __repr__(self) -> str:
        verdict = "ok" if self.ok else "failed"
        return (
            f"<CheckReport {', '.join(self.paths)}: {verdict}, {len(self.errors)} error(s), "
            f"{len(self.warnings)} warning(s), {len(self.verdicts)} target(s)>"
        )

    @property
    def ok(self) -> bool:
        """True when the deployment works (single target) / works somewhere (matrix)."""
        if self.errors:
            return False
        return any(v.works for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (docs/json-schema.md, "check")."""
        return {
            "schema": "torchwheel.check/1",
            "paths": list(self.paths),
            "mode": "target" if self.single_target else "matrix",
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "verdicts": [v.to_dict() for v in self.verdicts],
            "sizes": self.sizes.to_dict(),
            "distributions": list(self.distributions),
            "stats": {
                "members": self.members,
                "elf_files": self.elf_files,
                "bytes_read": self.bytes_read,
                "record_checked": self.record_checked,
                "inflate": self.inflate,
                "seconds": round(self.seconds, 3),
            },
            "ignored": list(self.ignored),
            "inputs": list(self.inputs),
            "truth": self.truth,
            "image": self.image,
        }


@dataclass
class CheckState:
    """Everything gathered from the inputs; judged per target. Passed to extra checks."""

    entries: list[LayerEntry]
    files: dict[str, LayerEntry]  # absolute path -> effective entry (later layers win)
    layers: list[str]
    function: str | None
    dists: list[InstalledDist]
    elves: dict[str, ELFInfo]  # absolute path -> info
    digests: dict[str, str]  # absolute path -> "algo=b64"
    symlinks: dict[str, str]  # absolute path -> link target
    extra_sys_path: list[str]
    extra_library_path: list[str]
    generic: list[Finding]
    zip_sizes: list[tuple[str, int]]
    bytes_read: int = 0
    cache: dict[str, Any] = field(default_factory=dict)  # per-run memo for the judges
    #: a container image's own files as the system (checks.image.ImageSystem), else None
    image: Any = None


#: An extra check: called once with ``target=None`` (target-independent findings) and once
#: per target.
ExtraCheck = Callable[[CheckState, "Target | None"], Iterable[Finding]]


def rel_in_zip(abs_path: str, origin: str, state: CheckState) -> str:
    """``abs_path`` relative to the mount of the zip ``origin`` (its path inside that zip)."""
    for e in state.entries:
        if e.origin == origin:
            return posixpath.relpath(abs_path, e.mount)
    return abs_path


def dist_label(d: InstalledDist, state: CheckState) -> str:
    """``layer.zip:python/x-1.0.dist-info`` for messages about a distribution."""
    return f"{d.origin}:{rel_in_zip(d.dist_info, d.origin, state)}"
