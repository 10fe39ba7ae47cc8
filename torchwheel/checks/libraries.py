"""ELF files per target: machine, GLIBC / GLIBCXX / CXXABI, other symbol versions, NEEDED.

Where each ``DT_NEEDED`` library comes from is decided by the loader model in :mod:`.ldso`
(glibc's ``_dl_map_object``, documented there) walking the real load graph:

* **roots** are the Python extension modules importable from the target's ``sys.path``
  (function zip, layers, expanders' directories): first those with an extension-module tag
  (``.cpython-311-x86_64-linux-gnu.so``, ``.abi3.so``), then plain ``name.so`` modules that
  no tagged module loads;
* each root is loaded cold with the runtime's ``LD_LIBRARY_PATH`` and image
  (:class:`.system.LambdaSystem`); a library reached from several roots is judged on each
  chain, and a finding names the chain (``numpy/…/_multiarray_umath…so → libgfortran… →
  libquadmath…``);
* ELF files nothing loads (executables, ``dlopen`` plugins) are loaded on their own: judged
  for machine and versions like the rest, but a library missing for them is a warning
  ("only if loaded"), not an error.

Findings: ``elf-arch-mismatch``; ``glibc-too-new`` / ``glibcxx-too-new`` for version needs
on libraries that come from the image (or from nowhere); ``version-not-found`` when the
library a need resolves to does not define the version (the image's zlib 1.2.7 and
``ZLIB_1.2.9``, or a bundled copy without it); ``missing-shared-library``; and one
``unconfirmed-system-library`` per library and deployment for libraries assumed on the
image without a documented source, listing the files that need them.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..elf import ELFInfo, version_tuple
from ..targets import Target, ld_library_path
from .layout import sys_path
from .ldso import (
    Environment,
    LoadResult,
    SystemProvider,
    Tree,
    VersionProblem,
    load,
    version_problems,
)
from .model import ERROR, WARNING, CheckState, Finding, LayerEntry, finding
from .scan import is_library_name
from .system import LambdaSystem, library_fact

__all__ = ["elf_findings", "extension_suffixes", "python_roots"]

_LOADABLE = ("DYN", "EXEC")


# -- roots ---------------------------------------------------------------------------------------


def extension_suffixes(target: Target) -> tuple[str, ...]:
    """CPython's ``EXTENSION_SUFFIXES`` on the target, most specific first."""
    major, minor = target.python
    abi = f"cpython-{major}{minor}{'m' if (major, minor) < (3, 8) else ''}"
    return (f".{abi}-{target.machine}-linux-gnu.so", ".abi3.so", ".so")


def _module_suffix(rel: str, suffixes: Sequence[str]) -> str | None:
    """The extension suffix that makes ``rel`` (relative to a sys.path entry) importable."""
    *packages, name = rel.split("/")
    if not all(p.isidentifier() for p in packages):
        return None
    for suffix in suffixes:
        if name.endswith(suffix) and name[: -len(suffix)].isidentifier():
            return suffix
    return None


def python_roots(state: CheckState, target: Target) -> tuple[list[str], list[str]]:
    """Importable extension modules: (tagged ones, plain ``name.so`` ones), in path order."""
    suffixes = extension_suffixes(target)
    dirs = [d.rstrip("/") + "/" for d in sys_path(target, state)]
    tagged: list[str] = []
    plain: list[str] = []
    for path in sorted(state.elves):
        d = next((d for d in dirs if path.startswith(d)), None)
        suffix = None if d is None else _module_suffix(path[len(d) :], suffixes)
        if suffix is not None:
            (plain if suffix == ".so" else tagged).append(path)
    return tagged, plain


# -- loading every root for a target -------------------------------------------------------------


@dataclass
class _Judged:
    """What the loads of one target say about each ELF file (keys: absolute paths)."""

    reached: set[str] = field(default_factory=set)
    missing: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    image_needs: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    problems: dict[str, dict[tuple[str, str], tuple[tuple[str, ...], VersionProblem]]] = field(
        default_factory=dict
    )
    unconfirmed: dict[str, list[str]] = field(default_factory=dict)


def _environment(state: CheckState, target: Target) -> Environment:
    if state.image is not None:  # a container image: its own LD_LIBRARY_PATH and directories
        env: Environment = state.image.environment()
        return env
    return Environment(
        machine=target.machine,
        ld_library_path=(*state.extra_library_path, *ld_library_path(target.runtime)),
    )


def _system(state: CheckState, target: Target) -> SystemProvider:
    image = getattr(state, "image", None)  # a container image's own files (issue 14)
    if isinstance(image, SystemProvider):
        return image
    return LambdaSystem(target)


def _loader(state: CheckState, target: Target) -> tuple[Tree, Environment, SystemProvider]:
    tree = Tree(files=state.files, elves=state.elves, symlinks=state.symlinks)
    return tree, _environment(state, target), _system(state, target)


def _load(state: CheckState, root: str, target: Target) -> LoadResult:
    """:func:`ldso.load`, memoised per run on what the answer depends on."""
    tree, env, system = _loader(state, target)
    memo: dict[tuple[object, ...], LoadResult] = state.cache.setdefault("ldso", {})
    key = (root, env, getattr(system, "key", id(system)))
    if key not in memo:
        memo[key] = load(root, tree, env, system)
    return memo[key]


def _record(judged: _Judged, result: LoadResult, only: Iterable[str] | None) -> None:
    """Add what ``result`` says about its objects (``only`` those, when given)."""
    keep = None if only is None else set(only)
    needs_by: dict[tuple[str, str], str | None] = {}
    for e in result.edges:
        needs_by[(e.requester, e.name)] = e.found
        if keep is not None and e.requester not in keep:
            continue
        if e.found is None:
            judged.missing.setdefault(e.requester, {}).setdefault(e.name, result.chain(e.requester))
        else:
            lib = result.objects[e.found].system
            if lib is not None and not lib.confirmed:
                users = judged.unconfirmed.setdefault(lib.name, [])
                if e.requester not in users:
                    users.append(e.requester)
    for obj in result.objects.values():
        if obj.elf is None or (keep is not None and obj.key not in keep):
            continue
        for need in obj.elf.version_needs:
            found = needs_by.get((obj.key, need.file))
            if found is None or result.objects[found].system is not None:
                judged.image_needs[obj.key].add(need.name)
    for p in version_problems(result):
        if keep is None or p.requester in keep:
            judged.problems.setdefault(p.requester, {}).setdefault(
                (p.library, p.version), (result.chain(p.requester), p)
            )


def _judge(state: CheckState, target: Target) -> _Judged:
    """Load every root, then every ELF file nothing loaded, and gather the answers."""
    judged = _Judged()
    tagged, plain = python_roots(state, target)
    for root in tagged:
        result = _load(state, root, target)
        judged.reached.update(k for k in result.objects if k in state.elves)
        _record(judged, result, None)
    for root in plain:
        if root not in judged.reached:
            result = _load(state, root, target)
            judged.reached.update(k for k in result.objects if k in state.elves)
            _record(judged, result, None)
    covered = set(judged.reached)
    for path, info in sorted(state.elves.items()):
        if path in covered or info.machine != target.machine or info.type not in _LOADABLE:
            continue
        result = _load(state, path, target)
        alone = [k for k in result.objects if k in state.elves and k not in covered]
        covered.update(alone)
        _record(judged, result, alone)
    return judged


# -- findings ------------------------------------------------------------------------------------


def _version(text: str) -> tuple[int, ...]:
    """A dotted version as numbers, read by :func:`~torchwheel.elf.version_tuple` (the one
    validated reading); () for anything else (``2.28x``, 5,000 digits)."""
    return version_tuple(text, "") or ()


def _version_str(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


_IMAGE_FAMILIES = (("GLIBC_", "glibc"), ("GLIBCXX_", "libstdc++"), ("CXXABI_", "libstdc++"))


def _unreadable_needs(needs: Iterable[str]) -> list[str]:
    """GLIBC_ / GLIBCXX_ / CXXABI_ needs whose version starts like a number but is not a
    plain dotted one (``GLIBC_2.28x``): no glibc or libstdc++ release defines them, so the
    loader fails. Named versions such as ``GLIBC_PRIVATE`` are left alone."""
    return [
        n
        for n in needs
        for prefix, _lib in _IMAGE_FAMILIES
        if n.startswith(prefix)
        and n[len(prefix) : len(prefix) + 1].isdigit()
        and not _version(n[len(prefix) :])
    ]


def _too_new(needs: Iterable[str], target: Target) -> tuple[tuple[int, ...] | None, list[str]]:
    """The highest GLIBC need above the runtime's, and the GLIBCXX / CXXABI needs above it."""
    rt = target.runtime
    glibc: tuple[int, ...] | None = None
    cxx: list[str] = []
    for n in needs:
        if n.startswith("GLIBC_") and n[6:7].isdigit():
            v = _version(n[6:])
            if v > rt.glibc and (glibc is None or v > glibc):
                glibc = v
        elif n.startswith("GLIBCXX_") and n[8:9].isdigit():
            if _version(n[8:]) > rt.glibcxx:
                cxx.append(n)
        elif n.startswith("CXXABI_") and n[7:8].isdigit() and _version(n[7:]) > rt.cxxabi:
            cxx.append(n)
    return glibc, cxx


def _glibc_findings(entry: LayerEntry, needs: Iterable[str], target: Target) -> list[Finding]:
    """``glibc-too-new`` and ``glibcxx-too-new``."""
    rt = target.runtime
    needs = list(needs)
    glibc, cxx = _too_new(needs, target)
    out: list[Finding] = []
    for name in _unreadable_needs(needs):
        lib = next(lib for prefix, lib in _IMAGE_FAMILIES if name.startswith(prefix))
        out.append(
            finding(
                "version-not-found",
                entry.label,
                f"{entry.path} needs {name[:80]}, a version no {lib} release defines; "
                f"the loader refuses it on every runtime",
                needs=[name[:200]],
            )
        )
    if glibc is not None:
        out.append(
            finding(
                "glibc-too-new",
                entry.label,
                f"{entry.path} needs GLIBC_{_version_str(glibc)}; {rt.name} on "
                f"{rt.os_short} has glibc {rt.glibc_str}",
                needs=_version_str(glibc),
                has=rt.glibc_str,
            )
        )
    if cxx:
        worst = max(cxx, key=lambda n: _version(n.split("_", 1)[1]))
        out.append(
            finding(
                "glibcxx-too-new",
                entry.label,
                f"{entry.path} needs {worst}; {rt.name} has up to GLIBCXX_{rt.glibcxx_str} / "
                f"CXXABI_{rt.cxxabi_str}",
                needs=sorted(set(cxx)),
            )
        )
    return out


def _short(state: CheckState, key: str) -> str:
    entry = state.files.get(key)
    return posixpath.basename(entry.path if entry is not None else key)


def _chain_text(state: CheckState, chain: Sequence[str]) -> str:
    """``numpy/core/_multiarray_umath…so → libgfortran….so.5`` (root path, then names)."""
    if not chain:
        return ""
    first = state.files.get(chain[0])
    head = first.path if first is not None else chain[0]
    return " → ".join([head, *(_short(state, k) for k in chain[1:])])


def _via(state: CheckState, chain: Sequence[str]) -> str:
    return f" (loaded via {_chain_text(state, chain)})" if len(chain) > 1 else ""


def _hint(state: CheckState, missing: Sequence[str]) -> str:
    names: dict[str, list[str]] = state.cache.get("library-names") or {}
    if not names:
        for path in state.files:
            names.setdefault(posixpath.basename(path), []).append(path)
        state.cache["library-names"] = names
    for lib in missing:
        if lib in names:
            return f" ({lib} is in the layer at {names[lib][0]} but not on the search path)"
    return ""


def _absent_note(target: Target, missing: Sequence[str]) -> str:
    for lib in missing:
        fact = library_fact(target, lib)
        if fact is not None and fact.present == "no":
            return f"; {fact.note}"
    return ""


def _missing_finding(
    entry: LayerEntry,
    missing: dict[str, tuple[str, ...]],
    reached: bool,
    state: CheckState,
    target: Target,
) -> Finding:
    libs = list(missing)
    chain = next(iter(missing.values()))
    if reached:
        severity, tail = ERROR, ""
    elif is_library_name(posixpath.basename(entry.abs_path)):
        severity, tail = WARNING, " (only if loaded: no importable extension module loads it)"
    else:
        severity, tail = WARNING, " (an executable: fails only when run)"
    return finding(
        "missing-shared-library",
        entry.label,
        f"{entry.path} needs {', '.join(libs)}{_via(state, chain)}, found neither in the layers "
        f"nor on the {target.runtime.os_short} image{_absent_note(target, libs)}"
        f"{_hint(state, libs)}{tail}",
        severity=severity,
        libraries=libs,
        chain=[_short(state, k) for k in chain],
    )


def _why_not_defined(state: CheckState, problem: VersionProblem, target: Target) -> str:
    from_system = problem.system
    family = problem.version.rsplit("_", 1)[0]
    if from_system is None:
        return f"{_short(state, problem.provider)} does not define it"
    ceiling = from_system.ceilings.get(family)
    has = f"up to {family}_{_version_str(ceiling)}" if ceiling else f"no {family}_ versions"
    text = f"{target.runtime.os_short} has {from_system.label or from_system.name} ({has})"
    if from_system.conservative:
        text += f" — a conservative ceiling: {from_system.note}"
    return text


def _version_finding(
    entry: LayerEntry,
    problems: dict[tuple[str, str], tuple[tuple[str, ...], VersionProblem]],
    reached: bool,
    state: CheckState,
    target: Target,
) -> Finding:
    (library, version), (chain, first) = next(iter(problems.items()))
    system = first.system is not None
    more = [v for (_lib, v) in problems if v != version]
    also = f" (also {', '.join(more)})" if more else ""
    return finding(
        "version-not-found",
        entry.label,
        f"{entry.path} needs {version} from {library}{_via(state, chain)}; "
        f"{_why_not_defined(state, first, target)}{also}",
        severity=ERROR if reached or system else WARNING,
        needs=sorted({v for (_lib, v) in problems}),
        libraries=sorted({lib for (lib, _v) in problems}),
    )


def _unconfirmed_findings(judged: _Judged, state: CheckState, target: Target) -> list[Finding]:
    """One ``unconfirmed-system-library`` per library, naming the files that need it."""
    out: list[Finding] = []
    for lib, users in sorted(judged.unconfirmed.items()):
        entries = [state.files[u] for u in sorted(users) if u in state.files]
        if not entries:
            continue
        fact = library_fact(target, lib)
        note = fact.note if fact is not None and fact.note else f"{lib} is assumed on the image"
        shown = ", ".join(e.path for e in entries[:3])
        extra = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
        out.append(
            finding(
                "unconfirmed-system-library",
                entries[0].label,
                f"{lib} is not in the layers: {note} (unconfirmed; assumed present). "
                f"Needed by {len(entries)} file{'' if len(entries) == 1 else 's'}: {shown}{extra}",
                libraries=[lib],
                files=[e.label for e in entries],
            )
        )
    return out


def _file_findings(
    entry: LayerEntry, info: ELFInfo, judged: _Judged, state: CheckState, target: Target
) -> list[Finding]:
    if info.machine != target.machine:
        return [  # nothing else about it matters on this target
            finding(
                "elf-arch-mismatch",
                entry.label,
                f"{entry.path} is {info.machine} code; {target.label} runs {target.machine}",
                machine=info.machine,
            )
        ]
    if info.type not in _LOADABLE:
        return []
    path = entry.abs_path
    reached = path in judged.reached
    out = _glibc_findings(entry, sorted(judged.image_needs.get(path, ())), target)
    if path in judged.problems:
        out.append(_version_finding(entry, judged.problems[path], reached, state, target))
    if path in judged.missing:
        out.append(_missing_finding(entry, judged.missing[path], reached, state, target))
    return out


def elf_findings(state: CheckState, target: Target) -> list[Finding]:
    """Every ELF finding for ``target``: file by file in path order, then per library."""
    judged = _judge(state, target)
    out: list[Finding] = []
    for path, info in sorted(state.elves.items()):
        entry = state.files.get(path)
        if entry is not None:
            out.extend(_file_findings(entry, info, judged, state, target))
    out.extend(_unconfirmed_findings(judged, state, target))
    return out
