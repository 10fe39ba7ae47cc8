"""Check Lambda deployment zips (layers, function code) before deploy, without extracting them.

:func:`check` reads each zip's central directory, then only what it needs: ``.dist-info``
files, the members listed in ``RECORD`` (hashed while streaming) and ELF files (their
headers, dynamic section and version tables through :class:`~torchwheel.elf.ELFScanner`)
— see :mod:`.scan`. Members are inflated by :mod:`torchwheel.zipread` (isal when installed)
on a small thread pool; memory is bounded by the largest member read plus the ELF scanner's
windows.

Facts gathered once are then judged per target (pure logic: :mod:`.layout`, :mod:`.deps`,
:mod:`.libraries`), so a matrix over every runtime × architecture costs little more than one
target.

Several zips are one deployment, in Lambda's order: an optional function zip (mounted at
``/var/task``; the first of several zips that has no top-level ``python/`` directory, or the
one given as ``function=``), then layers mounted at ``/opt`` in order, later layers
overriding earlier ones. Sizes add up; dependencies may be met by any of them.

Extension hooks (for layers whose content is not plain files, e.g. packed layers, which are
registered here from :mod:`.packed`):

* :data:`EXPANDERS` — functions ``expander(entry) -> Expansion | None``. Each is called with
  every :class:`LayerEntry` read from a zip; returning an :class:`Expansion` adds the entries
  it lists (e.g. the members of a ``.tar.zst`` that a loader unpacks into ``/tmp``) with
  their own ``mount``, plus directories to put first on ``sys.path`` / the library path.
  Expanded entries take part in every content check (RECORD, dependencies, ELF, layout
  within their mount) but not in the zip size quotas.
* :data:`EXTRA_CHECKS` — functions ``check(state, target) -> Iterable[Finding]`` called once
  with ``target=None`` (target-independent findings) and once per target.

Finding codes are stable (see docs/json-schema.md); severities are ``error`` (fails on
Lambda), ``warning`` (works, but worth knowing; fatal with ``--strict`` unless informational:
:mod:`.policy`) and ``info``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..image import is_image
from ..progress import ProgressCallback, step
from ..targets import Target, all_targets, make_target, normalize_arch, parse_python
from ..tarstream import gzip_backend
from ..zipread import ZipReader, inflate_backend
from .contents import ContentScan
from .deps import dist_findings
from .gpu import gpu_findings
from .image import read_image
from .layout import layout_findings, symlink_findings, target_layout_findings
from .libraries import elf_findings
from .model import (
    CODES,
    ERROR,
    INFO,
    WARNING,
    CheckReport,
    CheckState,
    Expander,
    ExtraCheck,
    Finding,
    SizeReport,
    TargetVerdict,
    dist_label,
)
from .packed import expand_packed_archive, packed_findings
from .record import record_findings
from .scan import gather
from .sizes import size_findings
from .sources import describe_inputs, facts_truth

# CheckReport and Finding: what check() returns, re-exported for callers of this module.
__all__ = ["EXPANDERS", "EXTRA_CHECKS", "CheckReport", "Finding", "check"]

#: Hook: expanders turning one entry (e.g. a packed archive) into more entries.
EXPANDERS: list[Expander] = [expand_packed_archive]
#: Hook: extra checks, called with target=None once and once per target.
EXTRA_CHECKS: list[ExtraCheck] = [packed_findings, gpu_findings]


def _targets(
    runtime: str | None, arch: str | None, python: str | None
) -> tuple[list[Target], bool]:
    if runtime is not None:
        return [make_target(arch or "x86_64", python, runtime=runtime)], True
    py = None if python is None else parse_python(python)
    targets = all_targets(provided_python=py)
    if arch is not None:
        a = normalize_arch(arch)
        targets = [t for t in targets if t.arch == a]
    return targets, False


def _ignored(ignore: Iterable[str]) -> tuple[str, ...]:
    ignored = tuple(sorted(set(ignore)))
    unknown = [c for c in ignored if c not in CODES]
    if unknown:
        raise InputError(f"unknown finding code(s) {', '.join(unknown)}; known: {', '.join(CODES)}")
    return ignored


def _first_reason(findings: Sequence[Finding]) -> str | None:
    order = {c: i for i, c in enumerate(CODES)}
    errors = [f for f in findings if f.severity == ERROR]
    if not errors:
        return None
    first = min(errors, key=lambda f: order.get(f.code, len(order)))
    return f"{first.code}: {first.message}"


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for f in findings:
        key = (f.code, f.path, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _sorted(findings: Iterable[Finding]) -> list[Finding]:
    sev = {ERROR: 0, WARNING: 1, INFO: 2}
    order = {c: i for i, c in enumerate(CODES)}
    return sorted(
        findings, key=lambda f: (sev.get(f.severity, 3), order.get(f.code, len(order)), f.path)
    )


def _generic_findings(
    state: CheckState, record: bool, ignored: tuple[str, ...]
) -> tuple[list[Finding], SizeReport]:
    """The target-independent findings (minus ``ignored``) and the sizes."""
    generic = state.generic  # the archive-safety findings; extra checks see the rest too
    generic.extend(layout_findings(state.entries))
    generic.extend(symlink_findings(state))
    generic.extend(record_findings(state, record))
    found, sizes = size_findings(state)
    generic.extend(found)
    for extra in EXTRA_CHECKS:
        generic.extend(extra(state, None))
    return [f for f in generic if f.code not in ignored], sizes


def _judge_target(state: CheckState, target: Target) -> list[Finding]:
    return [
        *target_layout_findings(state, target),
        *dist_findings(state, target),
        *elf_findings(state, target),
    ]


def _verdict(
    state: CheckState, target: Target, generic: list[Finding], ignored: tuple[str, ...]
) -> TargetVerdict:
    own = _judge_target(state, target)
    for extra in EXTRA_CHECKS:
        own.extend(extra(state, target))
    own = [f for f in own if f.code not in ignored]
    every = _dedupe([*generic, *own])
    reason = _first_reason(every)
    return TargetVerdict(
        target=target.label,
        runtime=target.runtime.name,
        arch=target.arch,
        python=target.python_str,
        works=reason is None,
        reason=reason,
        findings=tuple(_sorted(every)),
    )


def _distributions(state: CheckState) -> tuple[dict[str, str], ...]:
    """The report's ``distributions``: name, version and where each was found."""
    return tuple(
        {"name": d.name, "version": d.version, "path": dist_label(d, state)} for d in state.dists
    )


def _the_image(paths: list[str], function: str | Path | None) -> str | None:
    """The container image among ``paths`` (it must be alone), or None."""
    images = [p for p in paths if is_image(p)]
    if not images:
        return None
    if len(paths) > 1 or function is not None:
        raise InputError(
            f"{images[0]}: a container image is checked alone (its /var/task and /opt are "
            "the whole deployment)"
        )
    return images[0]


@dataclass(frozen=True)
class _ImageOptions:
    arch: str | None
    python: str | None
    runtime: str | None
    ignored: tuple[str, ...]
    record: bool
    workers: int | None


def _check_image(
    path: str, opts: _ImageOptions, progress: ProgressCallback | None, t0: float
) -> CheckReport:
    """An image (checks/image.py): one target, the image's own files as the system."""
    ignored, record = opts.ignored, opts.record
    with step(progress, "scan") as s:
        read = read_image(
            path,
            arch=opts.arch,
            python=opts.python,
            runtime=opts.runtime,
            record=record,
            workers=opts.workers,
            progress=s,
        )
    try:
        state = read.state
        generic = [*read.generic, *layout_findings(state.entries), *record_findings(state, record)]
        for extra in EXTRA_CHECKS:
            generic.extend(extra(state, None))
        verdict = _verdict(
            state, read.target, [f for f in generic if f.code not in ignored], ignored
        )
        return CheckReport(
            paths=(path,),
            single_target=True,
            findings=verdict.findings,
            verdicts=(verdict,),
            sizes=read.sizes,
            distributions=_distributions(state),
            elf_files=len(state.elves),
            members=len(state.entries),
            bytes_read=state.bytes_read,
            record_checked=record,
            inflate=gzip_backend(),
            seconds=time.perf_counter() - t0,
            ignored=ignored,
            inputs=read.inputs,
            truth=read.truth,
            image=read.image,
        )
    finally:
        read.close()


def _paths(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """``paths`` as a list of strings: one path is one input, never its characters."""
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    if isinstance(paths, (bytes, bytearray)) or not isinstance(paths, Iterable):
        raise TypeError(
            f"paths: expected a path or a sequence of paths, not {type(paths).__name__}"
        )
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"paths: expected str or path items, not {type(p).__name__}")
        out.append(os.fspath(p))
    return out


def check(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    arch: str | None = None,
    python: str | None = None,
    runtime: str | None = None,
    ignore: Iterable[str] = (),
    record: bool = True,
    function: str | Path | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> CheckReport:
    """Check zips that make one Lambda deployment; never extracts anything to disk.

    ``paths`` is one zip (a string or path) or a sequence of them (anything else raises
    :class:`TypeError`). ``progress`` receives the ``scan`` step's events
    (:mod:`torchwheel.progress`). A directory is judged like the zip of its contents
    (:mod:`.sources`: ``sam build`` / ``cdk synth`` output). One container image (a ``docker
    save`` tarball, an OCI layout, ``"-"`` for stdin) is checked alone, as one target read from
    the image itself (:mod:`.image`): ``runtime`` then names the runtime it claims to be.

    ``runtime`` (+ ``arch``, ``python``) checks one target; without ``runtime`` every
    non-deprecated runtime × architecture is judged (``provided.*`` too when ``python`` is
    given; only ``arch`` when given). ``ignore`` drops finding codes. ``record=False`` skips
    RECORD hashing (ELF files are still read). ``function`` names the function zip (mounted
    at ``/var/task``); by default the first of several zips without a ``python/`` directory
    is taken as the function. Raises :class:`ArchiveError` for unreadable zips.
    """
    t0 = time.perf_counter()
    paths = _paths(paths)
    if not paths:
        raise InputError("check: name at least one zip file")
    ignored = _ignored(ignore)
    image = _the_image([str(p) for p in paths], function)
    if image is not None:
        opts = _ImageOptions(arch, python, runtime, ignored, record, workers)
        return _check_image(image, opts, progress, t0)
    targets, single = _targets(runtime, arch, python)
    fn_path = str(function) if function is not None else None
    all_paths = [str(p) for p in paths]
    if fn_path is not None and fn_path not in all_paths:
        all_paths.insert(0, fn_path)
    readers: list[ZipReader] = []
    try:
        with ContentScan(record, workers) as contents:
            # the big members inflate while gather parses the dist-info (contents.py)
            state = gather(all_paths, fn_path, EXPANDERS, readers, early=contents.start)
            with step(progress, "scan") as s:
                contents.finish(state, s)
        generic, sizes = _generic_findings(state, record, ignored)
        verdicts = [_verdict(state, t, generic, ignored) for t in targets]
        findings = verdicts[0].findings if single and verdicts else tuple(_sorted(generic))
        return CheckReport(
            paths=tuple(all_paths),
            single_target=single,
            findings=tuple(findings),
            verdicts=tuple(verdicts),
            sizes=sizes,
            distributions=_distributions(state),
            elf_files=len(state.elves),
            members=len(state.entries),
            bytes_read=state.bytes_read,
            record_checked=record,
            inflate=inflate_backend(),
            seconds=time.perf_counter() - t0,
            ignored=ignored,
            inputs=describe_inputs(all_paths, state.function),
            truth=facts_truth(),
        )
    finally:
        for r in readers:
            r.close()
