"""Pick the wheel that will install on a Lambda target: candidates × verdicts → Resolution.

:func:`select` is pure: it judges every candidate with :func:`torchwheel.verdict.evaluate`,
applies the version specifier and the pre-release / yanked rules as pip does, and picks the
highest version that has a compatible wheel, then the best-ranked tag (then the highest build
tag). :func:`resolve` adds the index lookup (through :class:`torchwheel.index.IndexClient`);
it raises :class:`~torchwheel.errors.NoCompatibleWheel` when nothing fits, with a summary that
says why (e.g. "torch >= 2.6.0 needs glibc 2.28").

pip's rules followed here:

- versions are filtered with ``SpecifierSet.filter``: local versions (``2.5.1+cpu``) match
  public specifiers (``==2.5.1``); pre-releases are excluded unless ``prereleases=True``, the
  specifier names one (``>=2.9.0.dev0``), or no final release is compatible;
- yanked files (PEP 592) are ignored unless the specifier pins the version with ``==`` /
  ``===`` and nothing else fits;
- among compatible wheels the highest version wins (``2.5.1+cpu`` > ``2.5.1``), then the
  tag with the best priority for the target, then the build tag.

:func:`resolve_target` then screens the compatible wheels best-first
(:class:`torchwheel.screen.Screener`): a GPU build of torch is never the default answer for
Lambda (``variant="cpu"``; ``cuda``/``rocm``/``xpu``/``any`` opt in), and a ``linux_*`` wheel's
glibc / libstdc++ needs are read by HTTP ranges before it is chosen (``verify_elf=True`` does
it for every wheel). When only GPU builds fit, the summary says where CPU builds are.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import httpx
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from .errors import InputError, InvalidWheelFilename, NetworkError, NoCompatibleWheel
from .http import cache_root
from .index import Candidate, IndexClient, normalize_name
from .probe import WheelProbe
from .screen import RequirementSizer, Screened, Screener, check_want
from .targets import Target, facts, make_target
from .variants import marker_holds
from .verdict import Verdict, evaluate
from .wheelfile import parse_wheel

__all__ = [
    "DEFAULT_INDEX_URL",
    "Resolution",
    "parse_specifier",
    "resolve",
    "resolve_target",
    "select",
    "summarize",
]

Judged = tuple[Candidate, Verdict]

#: The PyTorch CPU wheel index (``data/lambda.json``): where torch is looked up by default.
DEFAULT_INDEX_URL: str = str(facts()["pytorch"]["default_index_url"])


def parse_specifier(spec: str | SpecifierSet | None) -> SpecifierSet | None:
    """``"<2.6"``, ``"==2.5.1"``, ``"2.5.1"`` (read as ``==2.5.1``) → SpecifierSet."""
    if spec is None or isinstance(spec, SpecifierSet):
        return spec
    text = spec.strip()
    if not text:
        return None
    if text[0].isdigit():
        text = "==" + text
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise InputError(
            f"{spec!r}: not a PEP 440 version specifier (e.g. '<2.6', '==2.5.1')"
        ) from None


def _pins_exactly(spec: SpecifierSet | None) -> bool:
    return spec is not None and any(
        s.operator in ("==", "===") and "*" not in s.version for s in spec
    )


def _build_key(filename: str) -> tuple[int, str] | tuple[()]:
    try:
        return parse_wheel(filename).build
    except InvalidWheelFilename:
        return ()


def _judge(cand: Candidate, target: Target, *, ignore_yank: bool = False) -> Verdict:
    try:
        return evaluate(
            cand.filename,
            target,
            requires_python=cand.requires_python,
            yanked=False if ignore_yank else cand.yanked,
        )
    except InvalidWheelFilename as exc:
        return Verdict(filename=cand.filename, compatible=False, rank=None, reasons=(str(exc),))


def _reject(v: Verdict, reason: str) -> Verdict:
    return dataclasses.replace(v, compatible=False, rank=None, reasons=(*v.reasons, reason))


def _sort_key(item: Judged) -> tuple[Any, ...]:
    cand, v = item
    rank = v.rank if v.rank is not None else 1 << 30
    return (cand.version, -rank, _build_key(cand.filename))


def select(
    candidates: Sequence[Candidate],
    target: Target,
    *,
    specifier: str | SpecifierSet | None = None,
    prereleases: bool | None = None,
) -> tuple[Candidate | None, list[Judged]]:
    """Choose the best wheel for ``target``; return it (or None) and every candidate judged.

    The list is ordered best first: compatible wheels by preference, then the rest by
    version (newest first). Verdicts of wheels excluded by the specifier or the pre-release
    rule carry that as an extra reason.
    """
    spec = parse_specifier(specifier)
    judged = [(c, _judge(c, target)) for c in candidates]

    # 1. the version specifier (local versions match public specifiers, as in PEP 440)
    after_spec: list[Judged] = []
    for c, v in judged:
        if spec is not None and not spec.contains(c.version, prereleases=True):
            v = _reject(v, f"version {c.version} excluded by {spec}")
        after_spec.append((c, v))

    # 2. pre-releases: allowed when asked for, named by the specifier, or the only option
    allow_pre = prereleases
    if allow_pre is None and spec is not None and spec.prereleases:
        allow_pre = True
    if allow_pre is None:
        allow_pre = not any(v.compatible and not c.version.is_prerelease for c, v in after_spec)
    final: list[Judged] = []
    for c, v in after_spec:
        if v.compatible and c.version.is_prerelease and not allow_pre:
            v = _reject(v, f"pre-release {c.version} (ask with --pre)")
        final.append((c, v))

    # 3. yanked files only for an exact pin with nothing else available (PEP 592)
    if not any(v.compatible for _, v in final) and _pins_exactly(spec):
        rescued: list[Judged] = []
        for c, v in final:
            if c.yanked and spec is not None and spec.contains(c.version, prereleases=True):
                again = _judge(c, target, ignore_yank=True)
                if again.compatible:
                    why = c.yanked if isinstance(c.yanked, str) else "no reason given"
                    v = dataclasses.replace(
                        again,
                        warnings=(
                            *again.warnings,
                            f"yanked ({why}); chosen because {spec} pins it",
                        ),
                    )
            rescued.append((c, v))
        final = rescued

    ok = sorted((x for x in final if x[1].compatible), key=_sort_key, reverse=True)
    rest = sorted(
        (x for x in final if not x[1].compatible),
        key=lambda x: (x[0].version, x[0].filename),
        reverse=True,
    )
    chosen = ok[0][0] if ok else None
    return chosen, ok + rest


@lru_cache(maxsize=64)
def _accepts(target: Target) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
    """(interpreter, abi) pairs and platforms the target accepts."""
    pairs = frozenset((t.interpreter, t.abi) for t in target.tags())
    return pairs, frozenset(target.platforms()) | {"any"}


def _python_and_platform_ok(filename: str, target: Target) -> tuple[bool, bool]:
    try:
        w = parse_wheel(filename)
    except InvalidWheelFilename:
        return False, False
    pairs, plats = _accepts(target)
    py_ok = any((i, a) in pairs for i in w.python_tags for a in w.abi_tags)
    plat_ok = any(p in plats for p in w.platform_tags)
    return py_ok, plat_ok


def _why_not_newer(
    package: str, judged: Sequence[Judged], target: Target, newer_than: Version | None
) -> str | None:
    """The main reason the versions above ``newer_than`` do not fit, in one phrase."""
    newer = [
        (c, v)
        for c, v in judged
        if not v.compatible
        and (newer_than is None or c.version > newer_than)
        and not all(r.startswith("pre-release ") for r in v.reasons)
    ]
    if not newer:
        return None
    fits_otherwise = [
        (c, v)
        for c, v in newer
        if all(_python_and_platform_ok(c.filename, target))
        or (v.needs_glibc is not None and _python_and_platform_ok(c.filename, target)[0])
    ]
    glibc_blocked = [(c, v) for c, v in fits_otherwise if v.needs_glibc is not None]
    if glibc_blocked:
        first = min(c.version for c, _ in glibc_blocked)
        need = min(v.needs_glibc for _, v in glibc_blocked if v.needs_glibc is not None)
        rt = target.runtime
        return (
            f"{package} >= {first.base_version} needs glibc {need[0]}.{need[1]} "
            f"({rt.name} on {rt.os_short} has glibc {rt.glibc_str})"
        )
    flags = [_python_and_platform_ok(c.filename, target) for c, _ in newer]
    what = f"no newer {package}" if newer_than is not None else f"no {package}"
    if not any(py for py, _ in flags):
        return f"{what} wheel is built for CPython {target.python_str}"
    if not any(plat for _, plat in flags):
        return f"{what} wheel is built for Linux {target.machine}"
    if not any(py and plat for py, plat in flags):
        return (
            f"{what} wheel is built for both CPython {target.python_str} and Linux {target.machine}"
        )
    newest = max(c.version for c, _ in fits_otherwise) if fits_otherwise else None
    pool = [v for c, v in fits_otherwise if c.version == newest] if newest else []
    reasons = Counter(r for v in pool for r in v.reasons)
    if reasons:
        reason = reasons.most_common(1)[0][0]
        return f"{package} {newest}: {reason}"
    return None


def summarize(
    package: str,
    target: Target,
    chosen: Candidate | None,
    judged: Sequence[Judged],
    specifier: SpecifierSet | None = None,
) -> str:
    """One line: what was chosen (or not) for ``target`` and why newer versions do not fit."""
    label = target.label
    if not judged:
        return f"no {package} wheels found for {label}"
    if chosen is not None:
        line = f"newest {package} for {label} is {chosen.version}"
        why = _why_not_newer(package, judged, target, chosen.version)
        return f"{line}: {why}" if why else line
    spec_txt = f" {specifier}" if specifier else ""
    line = f"no {package}{spec_txt} wheel fits {label}"
    why = _why_not_newer(package, judged, target, None)
    if why:
        line += f": {why}"
    # what would fit without the version specifier and the pre-release rule?
    best_any = max((c.version for c, v in judged if _judge_plain(v)), default=None)
    if best_any is not None:
        line += f"; newest {package} for {label} is {best_any}"
    return line


def _judge_plain(v: Verdict) -> bool:
    """Compatible except for resolver-level filters (specifier, pre-release)."""
    if v.compatible:
        return True
    extra = [r for r in v.reasons if not r.startswith(("version ", "pre-release "))]
    return not extra


@dataclass(repr=False)
class Resolution:
    """The outcome of resolving one package for one target."""

    package: str
    target: Target
    wheel: Candidate | None
    verdict: Verdict | None
    candidates: list[Judged]
    specifier: SpecifierSet | None = None
    sources: list[str] = field(default_factory=list)
    summary: str = ""
    notes: list[str] = field(default_factory=list)
    why: str | None = None  # why newer versions (or, with no wheel, any) do not fit
    variant: str = "cpu"  # the build variant asked for (--variant)
    screened: dict[str, Screened] = field(default_factory=dict)  # URL -> screening outcome
    probe_requests: int = 0  # requests spent reading wheels before download
    probe_bytes: int = 0

    def __repr__(self) -> str:
        chosen = self.wheel.filename if self.wheel is not None else "no wheel"
        return (
            f"<Resolution {self.package} for {self.target.label}: {chosen} "
            f"({len(self.candidates)} candidates)>"
        )

    @property
    def rejected(self) -> list[Judged]:
        """Every candidate that is not compatible, newest first."""
        return [(c, v) for c, v in self.candidates if not v.compatible]

    @property
    def compatible(self) -> list[Judged]:
        """Every compatible candidate, best first (the chosen one first)."""
        return [(c, v) for c, v in self.candidates if v.compatible]

    def explain(self) -> str:
        """A plain-text account: the choice, the summary, every other wheel with its reasons."""
        lines = [self.summary]
        if self.wheel is not None and self.verdict is not None:
            lines.append(f"chosen: {self.wheel.filename} ({self.verdict.best_tag})")
            lines.append(f"  url: {self.wheel.url}")
            if self.wheel.sha256:
                lines.append(f"  sha256: {self.wheel.sha256}")
        for c, v in self.compatible[1:]:
            lines.append(f"also compatible: {c.filename} ({v.best_tag})")
        for c, v in self.rejected:
            lines.append(f"rejected: {c.filename}: {'; '.join(v.reasons)}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _notes(target: Target, verdict: Verdict | None, chosen: Candidate | None) -> list[str]:
    notes: list[str] = []
    if verdict is not None:
        notes.extend(verdict.warnings)
    if chosen is not None and chosen.version.is_prerelease:
        notes.append(f"{chosen.version} is a pre-release")
    rt = target.runtime
    deprecated = rt.deprecation_note()
    if deprecated is not None:
        notes.append(deprecated)
    notes.extend(rt.notes())
    return notes


def requirement_sizer(
    index: IndexClient, target: Target, probe: WheelProbe | None = None
) -> RequirementSizer:
    """Weighs a wheel's requirements (``"nvidia-cudnn-cu13==9.26.0.51"``) for ``target``: the
    download size of the wheel :func:`select` picks for each, plus, one level down, what their
    extras require (``cuda-toolkit[cublas,...]``, read through ``probe``). Requirements the
    index does not know or whose size it does not say count nothing; None when nothing was
    weighed. The answer is kept with the wheel's facts (per target), so it is asked once.
    """

    def weigh(reqs: list[Requirement], depth: int) -> int:
        total = 0
        for req in reqs:
            try:
                pool = index.candidates(req.name)
            except NetworkError:
                continue
            chosen, _ = select(pool, target, specifier=req.specifier or None)
            if chosen is None:
                continue
            total += chosen.size or 0
            if req.extras and depth == 0 and probe is not None:
                total += weigh(_extra_requirements(probe, chosen, target, req.extras), 1)
        return total

    def size(wheel: Candidate, texts: Sequence[str]) -> int | None:
        known = probe.facts(wheel).requirement_bytes if probe is not None else {}
        if target.label in known:
            return known[target.label] or None
        reqs = []
        for text in texts:
            try:
                reqs.append(Requirement(text))
            except InvalidRequirement:
                continue
        total = weigh(reqs, 0)
        if probe is not None:
            now = probe.facts(wheel)
            weighed = {**now.requirement_bytes, target.label: total}
            probe.remember(wheel, dataclasses.replace(now, requirement_bytes=weighed))
        return total or None

    return size


def _extra_requirements(
    probe: WheelProbe, cand: Candidate, target: Target, extras: set[str]
) -> list[Requirement]:
    """What ``cand``'s extras add to its requirements, for ``target``'s markers."""
    try:
        requires = probe.requires_dist(cand)
    except NetworkError:
        return []
    env = target.marker_environment()
    out: list[Requirement] = []
    for text in requires or ():
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or marker_holds(req, env):
            continue  # not an extra's requirement
        if any(marker_holds(req, env, e) for e in extras):
            out.append(req)
    return out


def cpu_index_advice(package: str, screener: Screener, sources: Sequence[str]) -> str | None:
    """Where CPU builds are, when the only builds that fit are GPU ones."""
    rejected = screener.gpu_rejections(normalize_name(package))
    if screener.want != "cpu" or not rejected:
        return None
    newest, outcome = rejected[0]
    variant = outcome.variant.name if outcome.variant is not None else "GPU"
    line = (
        f"{len(rejected)} compatible {package} wheel(s) are GPU builds (newest {newest.version}, "
        f"{variant}) and Lambda has no GPU"
    )
    if DEFAULT_INDEX_URL.rstrip("/") in (s.rstrip("/") for s in sources):
        return line
    return f"{line}; CPU builds are on the PyTorch CPU index: --index-url {DEFAULT_INDEX_URL}"


def resolve_target(
    target: Target,
    index: IndexClient,
    *,
    package: str = "torch",
    version: str | SpecifierSet | None = None,
    prereleases: bool | None = None,
    variant: str = "cpu",
    verify_elf: bool = False,
    probe: WheelProbe | None = None,
) -> Resolution:
    """Resolve ``package`` for ``target`` through an existing :class:`IndexClient`.

    ``variant`` is the build to accept for torch-family projects (``cpu``, ``cuda``,
    ``rocm``, ``xpu``, ``any``); ``verify_elf`` reads every candidate's ELF needs before
    choosing it, not only ``linux_*`` ones'; ``probe`` reads wheels (one on the index's
    client and cache otherwise). Never raises for "nothing fits": the returned Resolution
    has ``wheel=None`` and a summary.
    """
    spec = parse_specifier(version)
    check_want(variant)
    cands = index.candidates(package)
    chosen, judged = select(cands, target, specifier=spec, prereleases=prereleases)
    probe = probe if probe is not None else WheelProbe.for_index(index)
    before = (probe.requests, probe.bytes_received)
    screener = Screener(
        target,
        probe,
        want=variant,
        verify_elf=verify_elf,
        sizer=requirement_sizer(index, target, probe),
    )
    chosen, judged = screener.pick(judged)
    verdict = judged[0][1] if chosen is not None else None
    name = normalize_name(package)
    summary = summarize(name, target, chosen, judged, spec)
    advice = cpu_index_advice(name, screener, index.sources) if chosen is None else None
    notes = _notes(target, verdict, chosen)
    if advice is not None:
        summary = f"{summary}; {advice}"
    return Resolution(
        package=name,
        target=target,
        wheel=chosen,
        verdict=verdict,
        candidates=judged,
        specifier=spec,
        sources=index.sources,
        summary=summary,
        why=_why_not_newer(name, judged, target, chosen.version if chosen else None),
        notes=notes,
        variant=variant,
        screened=dict(screener.results),
        probe_requests=probe.requests - before[0],
        probe_bytes=probe.bytes_received - before[1],
    )


def resolve(
    arch: str,
    python: str | tuple[int, int] | None = None,
    *,
    package: str = "torch",
    version: str | SpecifierSet | None = None,
    runtime: str | None = None,
    index_url: str = DEFAULT_INDEX_URL,
    extra_index_urls: Sequence[str] = (),
    find_links: Sequence[str] = (),
    no_index: bool = False,
    client: httpx.Client | None = None,
    index: IndexClient | None = None,
    prereleases: bool | None = None,
    variant: str = "cpu",
    verify_elf: bool = False,
) -> Resolution:
    """Which ``package`` wheel installs on Lambda ``runtime``/``arch`` with CPython ``python``.

    ``runtime`` defaults to the ``python3.X`` runtime of ``python``; ``version`` is a PEP 440
    specifier (``"<2.6"``, ``"==2.5.1"``). Pass ``index`` to reuse an :class:`IndexClient`
    (its pages are fetched once), or the index options to build one (``client`` is an
    injectable ``httpx.Client``). ``variant`` and ``verify_elf``: see :func:`resolve_target`
    (a GPU build of torch is chosen only when ``variant`` asks for it). Raises
    :class:`NoCompatibleWheel` (with every candidate and a one-line summary) when nothing
    fits, :class:`NetworkError` when an index fails.
    """
    target = make_target(arch, python, runtime=runtime)
    own = index is None
    idx = index or IndexClient(
        index_url,
        extra_index_urls,
        find_links,
        no_index=no_index,
        client=client,
        cache_dir=cache_root(),
        default_index_url=DEFAULT_INDEX_URL,
    )
    try:
        res = resolve_target(
            target,
            idx,
            package=package,
            version=version,
            prereleases=prereleases,
            variant=variant,
            verify_elf=verify_elf,
        )
    finally:
        if own:
            idx.close()
    if res.wheel is None:
        raise NoCompatibleWheel(res.summary, res.candidates, res)
    return res
