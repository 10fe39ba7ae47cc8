"""The ``Requires-Dist`` closure of a set of requirements, for a Lambda target.

:func:`resolve_closure` runs ``resolvelib`` (the resolver pip uses) with a provider that

- finds candidates through an :class:`~torchwheel.index.IndexClient` and judges every wheel
  with :func:`torchwheel.resolution.select` (the same tag / Requires-Python / yanked /
  pre-release rules as for torch itself);
- reads each candidate's core metadata without downloading the wheel where it can: the PEP
  658 ``.metadata`` file when the index offers one, else a range read of the wheel's
  ``METADATA`` member (central directory + one member, via HTTP ``Range``), else the whole
  wheel through :func:`torchwheel.download.fetch` (cached, so the later install reuses it);
- evaluates environment markers with the *target's* marker environment
  (:meth:`Target.marker_environment`: Lambda's CPython version, ``linux``, the target's
  machine), never the host's; extras (``pkg[extra]``) are handled the usual resolvelib way
  (an extras candidate depends on its base at the same version);
- leaves out packages the Lambda ``python3.X`` runtime already ships (boto3 and its
  dependencies, ``facts()["layer"]["runtime_packages"]``) unless they were asked for by
  name, and reports them. ``provided.*`` runtimes ship none;
- screens candidates before offering them to the resolver (:class:`torchwheel.screen.Screener`,
  lazily, best first): a GPU build of torch is not offered unless ``variant`` asks for it, and
  a ``linux_*`` wheel is offered only once its ELF needs, read by ranges, fit the target.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from resolvelib import AbstractProvider, BaseReporter, Resolver
from resolvelib.resolvers import ResolutionImpossible, ResolutionTooDeep

from .download import fetch
from .errors import ArchiveError, InputError, NetworkError, NoCompatibleWheel
from .index import Candidate, IndexClient
from .probe import WheelProbe
from .remote import read_remote_metadata
from .resolution import cpu_index_advice, parse_specifier, select, summarize
from .screen import Screened, Screener
from .targets import Target, facts
from .verdict import evaluate
from .wheelfile import (
    MAX_METADATA_BYTES,
    Metadata,
    marker_holds,
    parse_metadata,
    parse_requirement,
    parse_wheel,
)
from .zipread import ZipReader

__all__ = [
    "Closure",
    "Pin",
    "resolve_closure",
    "runtime_packages",
]


@dataclass(frozen=True)
class Pin:
    """One distribution of the closure and the wheel chosen for it."""

    name: str  # canonical
    version: Version
    candidate: Candidate
    requested: bool
    extras: tuple[str, ...] = ()
    required_by: tuple[str, ...] = ()
    metadata_source: str = ""  # "pep658", "range", "wheel", "local"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "version": str(self.version),
            "wheel": self.candidate.filename,
            "url": self.candidate.url,
            "sha256": self.candidate.sha256,
            "requested": self.requested,
            "extras": list(self.extras),
            "required_by": list(self.required_by),
            "metadata_source": self.metadata_source,
        }


@dataclass(frozen=True)
class Closure:
    """The resolved closure: pins (requested packages first) and what was left out."""

    pins: tuple[Pin, ...]
    skipped_runtime: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    metadata_requests: int = 0
    screened: Mapping[str, Screened] = field(default_factory=dict)  # URL -> screening outcome


def runtime_packages(target: Target) -> frozenset[str]:
    """Canonical names of the packages the target's runtime ships (none for provided.*)."""
    if target.runtime.python is None:
        return frozenset()
    return frozenset(canonicalize_name(n) for n in facts()["layer"]["runtime_packages"])


# -- metadata ----------------------------------------------------------------------------------


def _local_metadata(path: Path) -> bytes:
    with ZipReader(path) as zr:
        meta = [
            m
            for m in zr.members
            if m.name.count("/") == 1
            and m.name.split("/")[0].endswith(".dist-info")
            and m.name.endswith("/METADATA")
        ]
        if len(meta) != 1:
            raise ArchiveError(f"{path.name}: no single *.dist-info/METADATA in the wheel")
        # one byte over the cap, which the parser refuses: never the whole of a bomb
        return zr.read(meta[0], limit=MAX_METADATA_BYTES + 1)


# -- resolvelib provider -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Req:
    name: str  # canonical
    extras: frozenset[str]
    specifier: SpecifierSet
    text: str
    local: Candidate | None = None  # a local wheel given on the command line

    @property
    def ident(self) -> str:
        return _ident(self.name, self.extras)


@dataclass(frozen=True)
class _Cand:
    name: str
    version: Version
    extras: frozenset[str]
    wheel: Candidate | None = field(compare=False)  # None for the target's Python
    filename: str = ""

    @property
    def ident(self) -> str:
        return _ident(self.name, self.extras)


#: resolvelib identifier of the target's Python (Requires-Python becomes a requirement on it,
#: as in pip: a release whose metadata excludes the target is backtracked over).
PYTHON = "<python>"


def _ident(name: str, extras: frozenset[str]) -> str:
    return f"{name}[{','.join(sorted(extras))}]" if extras else name


class _Provider(AbstractProvider["_Req", "_Cand", str]):
    def __init__(
        self,
        target: Target,
        index: IndexClient,
        *,
        prereleases: bool | None,
        no_deps: bool,
        skip: frozenset[str],
        http: httpx.Client | None,
        cache_dir: str | os.PathLike[str] | None,
        screener: Screener | None = None,
    ) -> None:
        self.target = target
        self.screener = screener
        self.index = index
        self.prereleases = prereleases
        self.no_deps = no_deps
        self.skip = skip
        self.runtime_set = runtime_packages(target)
        self.http = http
        self.cache_dir = cache_dir
        self.env = target.marker_environment()
        self.skipped: dict[str, set[str]] = {}
        self.metadata: dict[str, Metadata] = {}
        self.metadata_source: dict[str, str] = {}
        self.metadata_requests = 0
        self._cands: dict[str, list[Candidate]] = {}
        self.notes: list[str] = []
        major, minor = target.python
        self.python_cand = _Cand(PYTHON, Version(f"{major}.{minor}"), frozenset(), None)

    def python_ok(self, spec: SpecifierSet) -> bool:
        """Does the target's CPython (any patch release of X.Y) satisfy ``spec``?"""
        x, y = self.target.python
        return any(spec.contains(Version(f"{x}.{y}.{p}"), prereleases=True) for p in (0, 99))

    # identify / preference -------------------------------------------------------------

    def identify(self, requirement_or_candidate: _Req | _Cand) -> str:
        return requirement_or_candidate.ident

    def get_preference(
        self,
        identifier: str,
        resolutions: Mapping[str, _Cand],
        candidates: Mapping[str, Iterator[_Cand]],
        information: Mapping[str, Iterator[Any]],
        backtrack_causes: Sequence[Any],
    ) -> tuple[int, int, str]:
        infos = list(information[identifier])
        pinned = any(
            any(s.operator in ("==", "===") for s in i.requirement.specifier) for i in infos
        )
        direct = any(i.parent is None for i in infos)
        if identifier == PYTHON:
            return (-1, 0, identifier)
        return (0 if direct else 1, 0 if pinned else 1, identifier)

    # candidates ------------------------------------------------------------------------

    def _all(self, name: str) -> list[Candidate]:
        if name not in self._cands:
            self._cands[name] = self.index.candidates(name)
        return self._cands[name]

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[_Req]],
        incompatibilities: Mapping[str, Iterator[_Cand]],
    ) -> list[_Cand] | Callable[[], Iterator[_Cand]]:
        reqs = list(requirements[identifier])
        if identifier == PYTHON:
            ok = all(self.python_ok(r.specifier) for r in reqs)
            return [self.python_cand] if ok else []
        bad = {c.version for c in incompatibilities[identifier]}
        name = reqs[0].name if reqs else identifier.split("[", 1)[0]
        extras = frozenset().union(*(r.extras for r in reqs)) if reqs else frozenset()
        local = next((r.local for r in reqs if r.local is not None), None)
        spec = SpecifierSet()
        for r in reqs:
            spec &= r.specifier
        pool = [local] if local is not None else self._all(name)
        _, judged = select(pool, self.target, specifier=spec or None, prereleases=self.prereleases)
        # a wheel named on the command line was asked for: not screened
        screener = self.screener if local is None else None

        def matches() -> Iterator[_Cand]:  # lazy: screening a wheel costs requests
            offered = [(c, v) for c, v in judged if v.compatible and c.version not in bad]
            if screener is not None:
                screener.prefetch(offered)
            seen: set[Version] = set()
            for cand, verdict in offered:  # compatible ones come first, best first
                if cand.version in seen:
                    continue
                if screener is not None and not screener.screen(cand, verdict).verdict.compatible:
                    continue
                seen.add(cand.version)
                yield _Cand(name, cand.version, extras, cand, cand.filename)

        return matches

    def is_satisfied_by(self, requirement: _Req, candidate: _Cand) -> bool:
        if requirement.name == PYTHON:
            return self.python_ok(requirement.specifier)
        if requirement.local is not None:
            return candidate.filename == requirement.local.filename
        return requirement.specifier.contains(candidate.version, prereleases=True)

    # dependencies ----------------------------------------------------------------------

    def _metadata(self, cand: _Cand) -> Metadata:
        w = cand.wheel
        assert w is not None
        key = w.url
        if key in self.metadata:
            return self.metadata[key]
        data: bytes | None = None
        source = ""
        if w.url.startswith("file:") or "://" not in w.url:
            data = _local_metadata(fetch(w, cache_dir=self.cache_dir))
            source = "local"
        if data is None and w.has_metadata:
            self.metadata_requests += 1
            data = self.index.get_metadata(w)
            source = "pep658"
        if data is None and self.http is not None:
            self.metadata_requests += 1
            try:
                data = read_remote_metadata(self.http, w.url)
            except ArchiveError:
                data = None
            source = "range"
        if data is None:
            self.metadata_requests += 1
            data = _local_metadata(fetch(w, cache_dir=self.cache_dir, client=self.http))
            source = "wheel"
        meta = parse_metadata(data, source=w.filename)
        if canonicalize_name(meta.name) != cand.name:
            raise InputError(f"{w.filename}: metadata names {meta.name!r}, not {cand.name!r}")
        try:
            if Version(meta.version) != cand.version:
                raise InputError(
                    f"{w.filename}: metadata version {meta.version} differs from the file name"
                )
        except ValueError:  # InvalidVersion, or a version int() will not read
            raise InputError(f"{w.filename}: invalid version {meta.version[:80]!r}") from None
        self.metadata[key] = meta
        self.metadata_source[key] = source
        return meta

    def get_dependencies(self, candidate: _Cand) -> list[_Req]:
        deps: list[_Req] = []
        if candidate.wheel is None:  # the target's Python
            return deps
        if candidate.extras:
            # an extras candidate depends on its base at the same version
            deps.append(
                _Req(
                    candidate.name,
                    frozenset(),
                    SpecifierSet(f"=={candidate.version}"),
                    f"{candidate.name}=={candidate.version}",
                )
            )
        if self.no_deps:
            return deps
        meta = self._metadata(candidate)
        if meta.requires_python:
            try:
                rp = SpecifierSet(meta.requires_python)
            except InvalidSpecifier:
                self.notes.append(
                    f"{candidate.filename}: ignored invalid Requires-Python "
                    f"{meta.requires_python!r}"
                )
            else:
                deps.append(_Req(PYTHON, frozenset(), rp, f"Requires-Python {rp}"))
        for text in meta.requires_dist:
            req = parse_requirement(text, source=f"{candidate.filename}: Requires-Dist")
            if not self._marker_ok(req, candidate.extras, candidate.filename):
                continue
            rname = str(canonicalize_name(req.name))
            if rname in self.skip and candidate.name not in self.runtime_set:
                # a runtime package's own deps stay: a newer boto3 needs its botocore
                self.skipped.setdefault(rname, set()).add(candidate.name)
                continue
            deps.append(
                _Req(
                    rname, frozenset(canonicalize_name(e) for e in req.extras), req.specifier, text
                )
            )
        return deps

    def _marker_ok(self, req: Requirement, extras: frozenset[str], filename: str) -> bool:
        if req.marker is None:
            return not extras  # unconditional deps belong to the base candidate
        source = f"{filename}: Requires-Dist"
        base = marker_holds(req, self.env, source=source)
        if not extras:
            return base
        return not base and any(marker_holds(req, self.env, e, source=source) for e in extras)


class _Reporter(BaseReporter["_Req", "_Cand", str]):
    pass


# -- entry point -------------------------------------------------------------------------------


def _local_candidate(path: Path) -> Candidate:
    w = parse_wheel(path.name)
    return Candidate(
        filename=path.name,
        url=path.resolve().as_uri(),
        project=str(canonicalize_name(w.name)),
        version=w.version,
        sha256=None,
        requires_python=None,
        yanked=False,
        metadata_sha256=None,
        has_metadata=False,
        size=path.stat().st_size,
        source=str(path.parent),
    )


def parse_requirements(
    packages: Sequence[str], target: Target, *, version: str | None = None
) -> list[_Req]:
    """Command-line requirement strings (or local ``.whl`` paths) → provider requirements.

    ``version`` is applied to the first requirement when it carries no specifier of its own.
    Requirements whose marker is false for the target are dropped.
    """
    out: list[_Req] = []
    env = target.marker_environment()
    for i, text in enumerate(packages):
        if text.endswith(".whl") and (os.path.sep in text or "/" in text or Path(text).exists()):
            p = Path(text)
            if not p.is_file():
                raise InputError(f"{text}: no such wheel file")
            cand = _local_candidate(p)
            out.append(_Req(cand.project, frozenset(), SpecifierSet(), text, local=cand))
            continue
        req = parse_requirement(text, source="command line")
        if req.url:
            raise InputError(f"{text!r}: URL requirements are not supported; use --find-links")
        if not marker_holds(req, env, source="command line"):
            continue
        spec = req.specifier
        if i == 0 and version and not str(spec):
            parsed = parse_specifier(version)
            spec = parsed if parsed is not None else spec
        out.append(
            _Req(
                str(canonicalize_name(req.name)),
                frozenset(canonicalize_name(e) for e in req.extras),
                spec,
                text,
            )
        )
    if not out:
        raise InputError("no package to build (every requirement's marker is false)")
    return out


def resolve_closure(
    packages: Sequence[str],
    target: Target,
    index: IndexClient,
    *,
    version: str | None = None,
    no_deps: bool = False,
    include_runtime_packages: bool = False,
    prereleases: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    client: httpx.Client | None = None,
    max_rounds: int = 2000,
    variant: str = "cpu",
    verify_elf: bool = False,
    probe: WheelProbe | None = None,
) -> Closure:
    """Resolve ``packages`` and their ``Requires-Dist`` closure for ``target``.

    ``variant`` is the torch build to accept (``cpu`` by default; ``cuda``, ``rocm``, ``xpu``,
    ``any``), ``verify_elf`` reads every wheel's ELF needs before offering it (``linux_*``
    wheels always), ``probe`` reads wheels (the index's by default). Raises
    :class:`~torchwheel.errors.NoCompatibleWheel` when no consistent set of compatible wheels
    exists (the message names the package and why), and the index's
    :class:`~torchwheel.errors.NetworkError` when a page cannot be read.
    """
    reqs = parse_requirements(packages, target, version=version)
    asked = {r.name for r in reqs}
    skip = frozenset() if include_runtime_packages else runtime_packages(target) - asked
    http = client if client is not None else getattr(index, "client", None)
    provider = _Provider(
        target,
        index,
        prereleases=prereleases,
        no_deps=no_deps,
        skip=skip,
        http=http,
        cache_dir=cache_dir,
        screener=Screener(
            target,
            probe if probe is not None else WheelProbe.for_index(index),
            want=variant,
            verify_elf=verify_elf,
        ),
    )
    resolver = Resolver(provider, _Reporter())
    try:
        result = resolver.resolve(reqs, max_rounds=max_rounds)
    except ResolutionImpossible as exc:
        raise NoCompatibleWheel(_explain(exc, provider, target)) from None
    except ResolutionTooDeep:
        raise NoCompatibleWheel(
            f"dependency resolution for {target.label} did not finish in {max_rounds} rounds"
        ) from None

    bases: dict[str, _Cand] = {}
    extras: dict[str, set[str]] = {}
    for ident, cand in result.mapping.items():
        if cand.wheel is None:
            continue  # the target's Python
        if cand.extras:
            extras.setdefault(cand.name, set()).update(cand.extras)
        else:
            bases[ident] = cand
    parents: dict[str, set[str]] = {}
    for ident, crit in result.criteria.items():
        name = ident.split("[", 1)[0]
        if ident == PYTHON:
            continue
        for info in crit.information:
            if info.parent is not None and info.parent.name != name:
                parents.setdefault(name, set()).add(info.parent.name)
    order = [r.name for r in reqs]
    names = sorted(bases, key=lambda n: (n not in asked, order.index(n) if n in asked else 0, n))
    pins = tuple(
        Pin(
            name=n,
            version=bases[n].version,
            candidate=_wheel(bases[n]),
            requested=n in asked,
            extras=tuple(sorted(extras.get(n, ()))),
            required_by=tuple(sorted(parents.get(n, ()))),
            metadata_source=provider.metadata_source.get(_wheel(bases[n]).url, ""),
        )
        for n in names
    )
    skipped = tuple(
        f"{n} (required by {', '.join(sorted(by))}; {target.runtime.name} ships it)"
        for n, by in sorted(provider.skipped.items())
    )
    notes = list(provider.notes)
    if skipped:
        notes.append(
            f"left out {len(skipped)} package(s) the {target.runtime.name} runtime ships: "
            f"{', '.join(sorted(provider.skipped))} (name them to include them)"
        )
    return Closure(
        pins=pins,
        skipped_runtime=skipped,
        notes=tuple(notes),
        metadata_requests=provider.metadata_requests,
        screened=dict(provider.screener.results) if provider.screener is not None else {},
    )


def _wheel(cand: _Cand) -> Candidate:
    assert cand.wheel is not None
    return cand.wheel


def _explain(exc: ResolutionImpossible[_Req, _Cand], provider: _Provider, target: Target) -> str:
    causes: Iterable[Any] = exc.causes
    parts: list[str] = []
    for cause in causes:
        req: _Req = cause.requirement
        parent = cause.parent
        who = f" (required by {parent.name} {parent.version})" if parent is not None else ""
        if req.name == PYTHON:
            line = (
                f"every remaining release needs Python {req.specifier}{who}; "
                f"{target.label} runs CPython {target.python_str}"
            )
            if line not in parts:
                parts.append(line)
            continue
        if req.local is not None:
            verdict = evaluate(req.local.filename, target)
            why = f": {verdict.explain()}" if not verdict.compatible else ""
            parts.append(f"{req.text}: the wheel does not fit {target.label}{why}{who}")
            continue
        try:
            pool = provider._all(req.name)
        except NetworkError:
            raise
        chosen, judged = select(
            pool, target, specifier=req.specifier or None, prereleases=provider.prereleases
        )
        line = summarize(req.name, target, chosen, judged, req.specifier or None)
        advice = _screen_advice(provider, req.name)
        if advice is not None:
            line = f"no {req.name} build for {target.label} passes: {advice}"
        elif chosen is not None:
            line = f"{req.text}{who}: conflicts with another requirement of {req.name}"
        else:
            line = f"{line}{who}"
        if line not in parts:
            parts.append(line)
    return "; ".join(parts) or f"no consistent set of wheels for {target.label}"


def _screen_advice(provider: _Provider, name: str) -> str | None:
    """Why screening left nothing of ``name``: GPU builds only (and where CPU builds are)."""
    screener = provider.screener
    if screener is None:
        return None
    passed = [
        s
        for url, s in screener.results.items()
        if screener.candidates[url].project == name and s.verdict.compatible
    ]
    if passed:
        return None
    return cpu_index_advice(name, screener, provider.index.sources)
