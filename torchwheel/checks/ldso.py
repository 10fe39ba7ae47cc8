"""glibc's shared-library lookup as a pure model: which file each ``DT_NEEDED`` entry loads.

Nothing here reads a file: the inputs are ELF facts per absolute path (:class:`Tree`), the
loader's environment (:class:`Environment`) and a :class:`SystemProvider` answering "is
library X in directory D of the system, and which symbol versions does it define". The
Lambda checks feed it a deployment (zips, directories) plus the facts file's image
libraries; a container-image check feeds it the image's own files with an empty provider.

The reference is glibc itself — ``_dl_map_object`` in ``elf/dl-load.c`` (the search order,
unchanged from glibc 2.3 to 2.41), ``_dl_map_object_deps`` in ``elf/dl-deps.c`` (dependencies
are loaded breadth-first, each with the object that first needed it as its *loader*),
``elf/get-dynamic-info.h`` ("If both RUNPATH and RPATH are given, the latter is ignored"),
``elf/dl-version.c`` (version checks) — and the ld.so(8) manual page. For a ``DT_NEEDED``
name N of object O (the *requester*), :func:`load` answers, in glibc's order:

1. **an object already loaded** whose requested name or ``DT_SONAME`` is N (glibc looks
   among the loaded objects before any search); the same file reached under another name or
   through a symlink is the same object;
2. N **contains a slash**: that path, after token expansion, relative to the current
   directory (``/var/task`` on Lambda) when not absolute — no search;
3. only when O has **no DT_RUNPATH**: the ``DT_RPATH`` of O, then of the object that loaded
   O, and so on **up the loading chain** to the root (each with its own ``$ORIGIN``; an
   object with DT_RUNPATH contributes no DT_RPATH). This is what auditwheel-repaired wheels
   rely on: ``numpy/core/_multiarray_umath…so`` has ``DT_RPATH $ORIGIN/../../numpy.libs``,
   the libraries in ``numpy.libs/`` have none, and ``libgfortran`` finds ``libquadmath``
   through the extension module's RPATH;
4. ``LD_LIBRARY_PATH`` (:attr:`Environment.ld_library_path`);
5. ``DT_RUNPATH`` of O only — never inherited;
6. ``/etc/ld.so.cache`` and the default directories: :attr:`Environment.default_dirs` in the
   tree, then :meth:`SystemProvider.default`.

In every directory (steps 3–6) the tree is asked first, then :meth:`SystemProvider.find`. A
file of another machine or ELF class is skipped and the search goes on (glibc's
``open_verify``). ``$ORIGIN``, ``$LIB`` and ``$PLATFORM`` (also ``${…}``) are expanded in
search paths and in names with a slash.

What the model does not see (docs/checks.md): objects the process loaded before the root —
each root (a Python extension module) is loaded *cold*, the conservative case; the
executable's own ``DT_RPATH``; ``glibc-hwcaps`` and ``tls`` subdirectories; anything loaded
at run time by ``dlopen`` (``ctypes.CDLL``, plugins) or ``LD_PRELOAD``.

:func:`version_problems` then checks each version need (``.gnu.version_r``) against the
object that need's library resolved to, as ``_dl_check_map_versions`` does: a library with
version definitions must define the version (weak needs excepted); one without any passes.
"""

from __future__ import annotations

import posixpath
import re
from collections import deque
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..elf import ELFInfo

__all__ = [
    "NO_SYSTEM",
    "Edge",
    "Environment",
    "LoadResult",
    "Loaded",
    "SystemLibrary",
    "SystemProvider",
    "Tree",
    "VersionProblem",
    "expand_tokens",
    "load",
    "split_version",
    "version_problems",
]

#: glibc gives up on a symlink chain after this many hops (``ELOOP``; Linux's limit is 40).
MAX_SYMLINK_HOPS = 40

_VERSION_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*?)_(\d+(?:\.\d+)*)$")
_TOKEN_RE = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")


def split_version(name: str) -> tuple[str, tuple[int, ...]] | None:
    """``"ZLIB_1.2.9"`` → ``("ZLIB", (1, 2, 9))``; None for names without a numeric tail
    (``GLIBC_2.28x``) or with a part longer than 9 digits (no library defines such a
    version, and Python's int limit must not turn a hostile name into a crash)."""
    m = _VERSION_RE.match(name)
    if m is None:
        return None
    parts = m.group(2).split(".")
    if any(len(p) > 9 for p in parts):
        return None
    return m.group(1), tuple(int(p) for p in parts)


@dataclass(frozen=True)
class SystemLibrary:
    """A library the system provides (not a file of the tree).

    ``versions``: the exact version names it defines, when known (an image's real file);
    otherwise ``ceilings``: per version family (``"ZLIB"``) the newest version it defines,
    None when it defines none of that family. ``confirmed`` False: assumed present.
    """

    name: str
    path: str
    label: str = ""
    versions: frozenset[str] | None = None
    ceilings: Mapping[str, tuple[int, ...] | None] = field(default_factory=dict)
    confirmed: bool = True
    conservative: bool = False
    note: str = ""

    def defines(self, version: str) -> bool | None:
        """Whether it defines ``version``; None when that cannot be told."""
        if self.versions is not None:
            return version in self.versions
        split = split_version(version)
        if split is None:
            # "GLIBC_2.28x": a family this library has, with a tail no release defines
            family = version.split("_", 1)[0]
            return False if family in self.ceilings else None
        if split[0] not in self.ceilings:
            return None
        ceiling = self.ceilings[split[0]]
        return ceiling is not None and split[1] <= ceiling


@runtime_checkable
class SystemProvider(Protocol):
    """What the system (the image under the deployment) provides."""

    def find(self, directory: str, name: str) -> SystemLibrary | None:
        """The library ``name`` in the system's ``directory``, or None."""

    def default(self, name: str) -> SystemLibrary | None:
        """The library ``name`` from ld.so.cache / the trusted directories, or None."""


class _NoSystem:
    """A system that provides nothing (the tree is the whole file system)."""

    def find(self, directory: str, name: str) -> SystemLibrary | None:
        return None

    def default(self, name: str) -> SystemLibrary | None:
        return None


#: A :class:`SystemProvider` with nothing in it.
NO_SYSTEM: SystemProvider = _NoSystem()


@dataclass(frozen=True)
class Environment:
    """The loader's environment: machine, ``LD_LIBRARY_PATH``, default directories."""

    machine: str  # ELF machine name: "x86_64", "aarch64"
    ld_library_path: tuple[str, ...] = ()
    default_dirs: tuple[str, ...] = ()
    bits: int = 64
    lib: str = "lib64"  # $LIB
    platform: str = ""  # $PLATFORM; defaults to the machine
    cwd: str = "/var/task"  # for relative paths (the Lambda working directory)


@dataclass(frozen=True)
class Tree:
    """The files the loader sees besides the system: which exist, their ELF facts, symlinks.

    ``files`` holds every regular file and symlink (absolute paths); ``elves`` the ELF facts
    of the regular files that are ELF; ``symlinks`` each symlink's target as stored.
    """

    files: Container[str]
    elves: Mapping[str, ELFInfo]
    symlinks: Mapping[str, str] = field(default_factory=dict)

    def realpath(self, path: str) -> str | None:
        """``path`` with every symlink in it resolved; None for a loop or a dangling link."""
        if not self.symlinks:
            return path if path in self.files else None
        parts = [p for p in path.split("/") if p]
        done = "/"
        hops = 0
        while parts:
            here = posixpath.join(done, parts.pop(0))
            target = self.symlinks.get(here)
            if target is None:
                done = here
                continue
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return None
            base = target if target.startswith("/") else posixpath.join(done, target)
            parts = [p for p in posixpath.normpath(base).split("/") if p] + parts
            done = "/"
        return done if done in self.files and done not in self.symlinks else None


def expand_tokens(path: str, origin: str, env: Environment) -> str:
    """``$ORIGIN`` / ``$LIB`` / ``$PLATFORM`` (and ``${…}``) expanded, as ld.so(8) says."""
    if "$" not in path:
        return path
    values = {"ORIGIN": origin, "LIB": env.lib, "PLATFORM": env.platform or env.machine}
    return _TOKEN_RE.sub(lambda m: values[m.group(1) or m.group(2)], path)


@dataclass
class Loaded:
    """One object of a load: a tree file (``elf`` its facts) or a system library."""

    key: str  # the resolved path (tree) or the system path: the object's identity
    path: str  # the path it was opened by ($ORIGIN is its directory)
    elf: ELFInfo | None
    system: SystemLibrary | None
    loader: str | None  # key of the object that first needed it (None for the root)
    names: set[str] = field(default_factory=set)

    @property
    def soname(self) -> str | None:
        """Its ``DT_SONAME`` (a system library: the name it was asked by)."""
        if self.elf is not None:
            return self.elf.soname
        return self.system.name if self.system is not None else None


@dataclass(frozen=True)
class Edge:
    """One ``DT_NEEDED`` entry of ``requester`` and what it loads.

    ``how``: ``loaded`` (already loaded), ``path`` (a name with a slash), ``rpath``,
    ``ld_library_path``, ``runpath``, ``default``, or ``missing`` (``found`` None).
    ``skipped``: files of the right name but another machine or class, passed over.
    """

    requester: str
    name: str
    how: str
    found: str | None
    skipped: tuple[str, ...] = ()


@dataclass
class LoadResult:
    """Everything one root loads, in glibc's (breadth-first) order."""

    root: str
    objects: dict[str, Loaded]
    edges: list[Edge]

    def chain(self, key: str) -> tuple[str, ...]:
        """The loading chain root → … → ``key`` (object keys)."""
        out: list[str] = []
        here: str | None = key
        while here is not None and here not in out:
            out.append(here)
            here = self.objects[here].loader if here in self.objects else None
        return tuple(reversed(out))

    def missing(self) -> list[Edge]:
        """The needs found nowhere."""
        return [e for e in self.edges if e.found is None]


@dataclass(frozen=True)
class VersionProblem:
    """``requester`` needs ``version`` from ``library``, which ``provider`` does not define."""

    requester: str
    library: str
    version: str
    provider: str
    system: SystemLibrary | None


class _Loader:
    """One breadth-first load (``_dl_map_object_deps``)."""

    def __init__(self, tree: Tree, env: Environment, system: SystemProvider) -> None:
        self.tree = tree
        self.env = env
        self.system = system
        self.objects: dict[str, Loaded] = {}
        self.by_name: dict[str, str] = {}  # requested name / SONAME -> key
        self.edges: list[Edge] = []

    def add(self, obj: Loaded) -> None:
        self.objects[obj.key] = obj
        for name in (*obj.names, obj.soname):
            if name:
                self.by_name.setdefault(name, obj.key)

    def run(self, root: str) -> LoadResult:
        real = self.tree.realpath(root) or root
        self.add(Loaded(real, root, self.tree.elves.get(real), None, None, {root}))
        queue = deque([real])
        while queue:
            obj = self.objects[queue.popleft()]
            if obj.elf is None:
                continue  # a system library: its own needs are the system's business
            for name in obj.elf.needed:
                edge, new = self.map(name, obj)
                self.edges.append(edge)
                if new is not None:
                    self.add(new)
                    queue.append(new.key)
        return LoadResult(real, self.objects, self.edges)

    def map(self, name: str, requester: Loaded) -> tuple[Edge, Loaded | None]:
        """``_dl_map_object(requester, name)``: an edge, and the object when newly loaded."""
        known = self.by_name.get(name)
        if known is not None:
            return Edge(requester.key, name, "loaded", known), None
        skipped: list[str] = []
        origin = posixpath.dirname(requester.path)
        if "/" in name:
            path = posixpath.join(self.env.cwd, expand_tokens(name, origin, self.env))
            return self.found(name, requester, "path", [posixpath.normpath(path)], skipped)
        for how, directory in self.directories(requester):
            candidate = posixpath.normpath(posixpath.join(directory, name))
            hit = self.found(name, requester, how, [candidate], skipped)
            if hit[0].found is not None:
                return hit
            lib = self.system.find(directory, name)
            if lib is not None:
                return self.system_hit(name, requester, how, lib, skipped)
        lib = self.system.default(name)
        if lib is not None:
            return self.system_hit(name, requester, "default", lib, skipped)
        return Edge(requester.key, name, "missing", None, tuple(skipped)), None

    def directories(self, requester: Loaded) -> Iterator[tuple[str, str]]:
        """The search directories in glibc's order (steps 3-6 of the module docstring)."""
        if requester.elf is not None and not requester.elf.runpath:
            here: str | None = requester.key
            seen: set[str] = set()
            while here is not None and here not in seen:
                seen.add(here)
                obj = self.objects[here]
                if obj.elf is not None and obj.elf.rpath and not obj.elf.runpath:
                    for d in obj.elf.rpath:
                        yield "rpath", self.absolute(expand_tokens(d, _dir(obj.path), self.env))
                here = obj.loader
        for d in self.env.ld_library_path:
            yield "ld_library_path", d
        if requester.elf is not None:
            for d in requester.elf.runpath:
                origin = _dir(requester.path)
                yield "runpath", self.absolute(expand_tokens(d, origin, self.env))
        for d in self.env.default_dirs:
            yield "default", d

    def absolute(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.env.cwd, path))

    def found(
        self, name: str, requester: Loaded, how: str, candidates: list[str], skipped: list[str]
    ) -> tuple[Edge, Loaded | None]:
        """The first of ``candidates`` that exists in the tree for this machine."""
        for path in candidates:
            real = self.tree.realpath(path)
            if real is None:
                continue
            elf = self.tree.elves.get(real)
            if elf is not None and (elf.machine != self.env.machine or elf.bits != self.env.bits):
                skipped.append(path)
                continue
            if real in self.objects:  # the same file under another name
                self.objects[real].names.add(name)
                self.by_name.setdefault(name, real)
                return Edge(requester.key, name, "loaded", real, tuple(skipped)), None
            obj = Loaded(real, path, elf, None, requester.key, {name})
            return Edge(requester.key, name, how, real, tuple(skipped)), obj
        return Edge(requester.key, name, "missing", None, tuple(skipped)), None

    def system_hit(
        self, name: str, requester: Loaded, how: str, lib: SystemLibrary, skipped: list[str]
    ) -> tuple[Edge, Loaded | None]:
        if lib.path in self.objects:
            self.objects[lib.path].names.add(name)
            self.by_name.setdefault(name, lib.path)
            return Edge(requester.key, name, "loaded", lib.path, tuple(skipped)), None
        obj = Loaded(lib.path, lib.path, None, lib, requester.key, {name})
        return Edge(requester.key, name, how, lib.path, tuple(skipped)), obj


def _dir(path: str) -> str:
    return posixpath.dirname(path)


def load(root: str, tree: Tree, env: Environment, system: SystemProvider = NO_SYSTEM) -> LoadResult:
    """Load ``root`` (an absolute path in ``tree``) as ``dlopen`` would, with every dependency.

    Dependencies are mapped breadth-first in ``DT_NEEDED`` order; each need's :class:`Edge`
    says where it was found (or that it was not). System libraries are leaves.
    """
    return _Loader(tree, env, system).run(root)


def _defines(target: Loaded, version: str) -> bool | None:
    if target.system is not None:
        return target.system.defines(version)
    if target.elf is None or not target.elf.version_defs:
        return None  # no version definitions: glibc accepts (at most a verbose note)
    return version in target.elf.version_defs


def version_problems(result: LoadResult) -> list[VersionProblem]:
    """Version needs of every object of ``result`` that the loaded library does not define.

    Needs on a library that was not found are not reported (it is missing anyway), nor weak
    needs, nor needs on a system library whose versions are unknown.
    """
    edges = {(e.requester, e.name): e for e in result.edges}
    out: list[VersionProblem] = []
    for obj in result.objects.values():
        if obj.elf is None:
            continue
        for need in obj.elf.version_needs:
            edge = edges.get((obj.key, need.file))
            if need.weak or edge is None or edge.found is None:
                continue
            target = result.objects[edge.found]
            if _defines(target, need.name) is False:
                out.append(VersionProblem(obj.key, need.file, need.name, target.key, target.system))
    return out
