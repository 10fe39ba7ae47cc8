"""ELF files per target: machine, GLIBC / GLIBCXX / CXXABI versions, NEEDED libraries.

Where a NEEDED library comes from is decided by one function, :func:`find_library` (the
library lookup model); everything else here only judges its answers: a version need counts
against the runtime when the library it names comes from the image (or is missing), not when
the deployment bundles its own copy (that copy's needs are checked where it lies).
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from dataclasses import dataclass, field

from ..elf import ELFInfo
from ..targets import Target, facts
from .model import ERROR, WARNING, CheckState, Finding, LayerEntry, finding
from .scan import is_library_name

__all__ = ["SYSTEM", "UNCONFIRMED_SYSTEM", "elf_findings", "find_library"]

#: :func:`find_library`'s answer for a library of the runtime image.
SYSTEM = "system"
#: :func:`find_library`'s answer for a library assumed on the image without a source.
UNCONFIRMED_SYSTEM = "system (unconfirmed)"


# -- the lookup model ----------------------------------------------------------------------------


def _library_dirs(state: CheckState) -> list[str]:
    return [*state.extra_library_path, *facts()["layer"]["ld_library_path"]]


def _expand_origin(p: str, origin_dir: str) -> str:
    return posixpath.normpath(p.replace("${ORIGIN}", origin_dir).replace("$ORIGIN", origin_dir))


def _runtime_libpython(lib: str, target: Target) -> bool:
    """``/var/lang/lib/libpython3.X.so.1.0`` of the python3.X runtimes."""
    return target.runtime.python is not None and lib.startswith(f"libpython{target.python_str}.so")


def find_library(
    lib: str, path: str, info: ELFInfo, state: CheckState, target: Target
) -> str | None:
    """Where ``lib``, a NEEDED entry of the ELF file ``path``, is found on ``target``.

    Returns the absolute path of a copy in the deployment, :data:`SYSTEM`,
    :data:`UNCONFIRMED_SYSTEM`, or None (missing). The model: ``libpython3.X.so`` comes with
    the python3.X runtimes; a name with a slash is that path (``$ORIGIN`` expanded); else the
    first of DT_RPATH (only without DT_RUNPATH), ``LD_LIBRARY_PATH`` (the expanders' library
    directories first, then the runtime's), DT_RUNPATH that holds the name; else the image's
    system libraries (confirmed, then unconfirmed).
    """
    if _runtime_libpython(lib, target):
        return SYSTEM
    system = facts()["system_libraries"]
    origin_dir = posixpath.dirname(path)
    if "/" in lib:
        p = _expand_origin(
            lib if lib.startswith("/") else posixpath.join(origin_dir, lib), origin_dir
        )
        return p if p in state.files else None
    dirs: list[str] = []
    if not info.runpath:
        dirs += [_expand_origin(p, origin_dir) for p in info.rpath]
    dirs += _library_dirs(state)
    dirs += [_expand_origin(p, origin_dir) for p in info.runpath]
    for d in dirs:
        candidate = posixpath.join(d, lib)
        if candidate in state.files:
            return candidate
    if lib in system["names"]:
        return SYSTEM
    if lib in system.get("unconfirmed", {}):
        return UNCONFIRMED_SYSTEM
    return None


# -- judging one ELF file ------------------------------------------------------------------------


@dataclass
class _Libraries:
    """Per-run memo: library file names in the deployment, and target-independent lookups."""

    names: dict[str, list[str]]  # basename -> absolute paths
    found: dict[tuple[str, str], str | None] = field(default_factory=dict)


def _memo(state: CheckState) -> _Libraries:
    cached = state.cache.get("libraries")
    if isinstance(cached, _Libraries):
        return cached
    names: dict[str, list[str]] = defaultdict(list)
    for path in state.files:
        names[posixpath.basename(path)].append(path)
    memo = _Libraries(names=dict(names))
    state.cache["libraries"] = memo
    return memo


def _locate(lib: str, path: str, info: ELFInfo, state: CheckState, target: Target) -> str | None:
    """:func:`find_library`, memoised where the answer does not depend on the target."""
    if _runtime_libpython(lib, target):  # the one target-dependent answer
        return SYSTEM
    found = _memo(state).found
    key = (lib, path)
    if key not in found:
        found[key] = find_library(lib, path, info, state, target)
    return found[key]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _version_str(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _image_version_needs(path: str, info: ELFInfo, state: CheckState, target: Target) -> list[str]:
    """The version needs (``GLIBC_2.28`` ...) on libraries that do not come with the layers."""
    by_file: dict[str, list[str]] = defaultdict(list)
    for need in info.version_needs:
        by_file[need.file].append(need.name)
    needs: list[str] = []
    for lib, names in by_file.items():
        if _locate(lib, path, info, state, target) in (None, SYSTEM, UNCONFIRMED_SYSTEM):
            needs.extend(names)
        # else a bundled copy: its own needs are checked where it lies
    return needs


def _too_new(needs: list[str], target: Target) -> tuple[tuple[int, ...] | None, list[str]]:
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


def _version_findings(
    entry: LayerEntry, info: ELFInfo, state: CheckState, target: Target
) -> list[Finding]:
    """``glibc-too-new`` and ``glibcxx-too-new``."""
    rt = target.runtime
    needs = _image_version_needs(entry.abs_path, info, state, target)
    glibc, cxx = _too_new(needs, target)
    out: list[Finding] = []
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


def _missing_finding(
    entry: LayerEntry, missing: list[str], state: CheckState, target: Target
) -> Finding:
    names = _memo(state).names
    elsewhere = {lib: names[lib][:3] for lib in missing if lib in names}
    hint = ""
    if elsewhere:
        lib, spots = next(iter(elsewhere.items()))
        hint = f" ({lib} is in the layer at {spots[0]} but not on the search path)"
    library = is_library_name(posixpath.basename(entry.abs_path))
    return finding(
        "missing-shared-library",
        entry.label,
        f"{entry.path} needs {', '.join(missing)}, found neither in the layers nor "
        f"on the {target.runtime.os_short} image{hint}"
        + ("" if library else " (an executable: fails only when run)"),
        severity=ERROR if library else WARNING,
        libraries=missing,
    )


def _needed_findings(
    entry: LayerEntry, info: ELFInfo, state: CheckState, target: Target
) -> list[Finding]:
    """``unconfirmed-system-library`` and ``missing-shared-library``."""
    missing: list[str] = []
    assumed: list[str] = []
    for lib in info.needed:
        where = _locate(lib, entry.abs_path, info, state, target)
        if where is None:
            missing.append(lib)
        elif where == UNCONFIRMED_SYSTEM:
            assumed.append(lib)
    notes = facts()["system_libraries"].get("unconfirmed", {})
    out = [
        finding(
            "unconfirmed-system-library",
            entry.label,
            f"{entry.path} needs {lib}, not in the layers; {notes[lib]}",
            libraries=[lib],
        )
        for lib in assumed
    ]
    if missing:
        out.append(_missing_finding(entry, missing, state, target))
    return out


def _file_findings(
    entry: LayerEntry, info: ELFInfo, state: CheckState, target: Target
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
    if info.type not in ("DYN", "EXEC"):
        return []
    return [
        *_version_findings(entry, info, state, target),
        *_needed_findings(entry, info, state, target),
    ]


def elf_findings(state: CheckState, target: Target) -> list[Finding]:
    """Every ELF finding for ``target``, file by file in path order."""
    out: list[Finding] = []
    for path, info in sorted(state.elves.items()):
        entry = state.files.get(path)
        if entry is not None:
            out.extend(_file_findings(entry, info, state, target))
    return out
