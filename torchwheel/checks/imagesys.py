"""A container image's own files as "the system": libraries, glibc, libstdc++, CPython, arch.

For a Lambda zip the runtime's facts come from ``torchwheel/data/lambda.json``. A container
image carries better evidence: its own ``libc.so.6`` (the ``GLIBC_2.x`` versions its
``DT_VERDEF`` defines), ``libstdc++.so.6`` (``GLIBCXX_`` / ``CXXABI_``), every other library
in its library directories, ``/var/lang/bin/python3.X``, and the architecture and
``LD_LIBRARY_PATH`` in its config. :class:`ImageSystem` answers the loader model's
:class:`~torchwheel.checks.ldso.SystemProvider` questions ("is library X in directory D, and
which versions does it define") from those files; :func:`image_runtime` turns the image into
the :class:`~torchwheel.targets.Runtime` it is judged as; :func:`disagreements` compares it
with the facts file's runtime the image claims to be (``python3.X``), as warnings.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from ..elf import ELFInfo, version_tuple
from ..errors import InputError
from ..image import Image
from ..imagefs import FileSystem
from ..targets import Runtime, Target, facts, get_runtime, normalize_arch, parse_python
from ..tarstream import REGULAR
from .ldso import Environment, SystemLibrary, split_version
from .model import FUNCTION_MOUNT, LAYER_MOUNT, WARNING, Finding, finding

__all__ = [
    "DEFAULT_DIRS",
    "ImageFacts",
    "ImageSystem",
    "disagreements",
    "image_runtime",
]

#: glibc's trusted directories on a 64-bit system (after ld.so.cache); multiarch for Debian.
DEFAULT_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
_MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
#: Lambda's python_bin (facts file), then where other images keep a CPython.
_LAMBDA_PYTHON_BIN: str = facts()["runtime_paths"]["python_bin"]
_PYTHON_DIRS = (_LAMBDA_PYTHON_BIN, "/usr/local/bin", "/usr/bin")
_PYTHON_RE = re.compile(r"python3\.([0-9]{1,4})")
_DEPLOYED = (FUNCTION_MOUNT + "/", LAYER_MOUNT + "/")
_JUDGED_FAMILIES = frozenset({"GLIBC", "GLIBCXX", "CXXABI"})


@dataclass
class ImageFacts:
    """What was read from the image's files while its layers streamed by."""

    elves: dict[tuple[int, int], ELFInfo] = field(default_factory=dict)  # (layer, offset)
    texts: dict[tuple[int, int], bytes] = field(default_factory=dict)


def _ld_so_conf_dirs(fs: FileSystem, facts_: ImageFacts) -> list[str]:
    """Directories named by /etc/ld.so.conf and /etc/ld.so.conf.d/*.conf (one include level)."""
    dirs: list[str] = []
    files = [
        "/etc/ld.so.conf",
        *(p for p in fs.listdir("/etc/ld.so.conf.d") if p.endswith(".conf")),
    ]
    for path in files:
        e = fs.files.get(path)
        text = facts_.texts.get((e.layer, e.offset)) if e is not None else None
        for line in (text or b"").decode("utf-8", "replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("/") and line not in dirs:
                dirs.append(posixpath.normpath(line))
    return dirs


def _ceilings(info: ELFInfo) -> dict[str, tuple[int, ...] | None]:
    """Per version family the newest version ``info`` defines (DT_VERDEF).

    GLIBC / GLIBCXX / CXXABI are left out: they are judged against the image's glibc and
    libstdc++ ceilings (``glibc-too-new``, ``glibcxx-too-new``), not twice.
    """
    out: dict[str, tuple[int, ...] | None] = {}
    for name in info.version_defs:
        split = split_version(name)
        if split is None or split[0] in _JUDGED_FAMILIES:
            continue
        family, version = split
        best = out.get(family)
        if best is None or version > best:
            out[family] = version
    return out


class ImageSystem:
    """The image's files as the loader model's system (:class:`~.ldso.SystemProvider`)."""

    def __init__(self, image: Image, fs: FileSystem, facts_: ImageFacts, machine: str) -> None:
        self.image = image
        self.fs = fs
        self.facts = facts_
        self.machine = machine
        triplet = _MULTIARCH.get(machine)
        multiarch = (f"/lib/{triplet}", f"/usr/lib/{triplet}") if triplet else ()
        self.default_dirs = tuple(
            dict.fromkeys([*_ld_so_conf_dirs(fs, facts_), *DEFAULT_DIRS, *multiarch])
        )
        env = image.config.getenv("LD_LIBRARY_PATH")
        self.ld_library_path_from = "image config" if env is not None else "facts file"
        if env is None:
            env = ":".join(facts()["layer"]["ld_library_path"])
        self.ld_library_path = tuple(d for d in env.split(":") if d.startswith("/"))
        self._cache: dict[str, SystemLibrary | None] = {}

    @property
    def key(self) -> tuple[str, str]:
        """What the answers depend on (for the loader model's memo)."""
        return ("image", self.image.source)

    def environment(self) -> Environment:
        """The loader's environment inside the image (its LD_LIBRARY_PATH, default dirs)."""
        return Environment(
            machine=self.machine,
            ld_library_path=self.ld_library_path,
            default_dirs=self.default_dirs,
        )

    def elf(self, path: str) -> ELFInfo | None:
        """The ELF facts of a regular file of the image, if it is one that was parsed."""
        e = self.fs.files.get(path)
        return None if e is None else self.facts.elves.get((e.layer, e.offset))

    def layer_of(self, path: str) -> str:
        """The short digest of the layer that brought ``path``."""
        e = self.fs.files.get(path)
        return "" if e is None else self.image.layers[e.layer].short

    def _library(self, path: str, name: str) -> SystemLibrary | None:
        if path in self._cache:
            return self._cache[path]
        real = self.fs.resolve(path)
        entry = self.fs.files.get(real) if real is not None else None
        lib = None
        if (
            real is not None
            and entry is not None
            and entry.kind == REGULAR
            and not real.startswith(_DEPLOYED)
        ):
            info = self.facts.elves.get((entry.layer, entry.offset))
            if info is not None and info.machine == self.machine:
                lib = SystemLibrary(
                    name=name,
                    path=real,
                    label=f"{real} (layer {self.image.layers[entry.layer].short})",
                    ceilings=_ceilings(info),
                )
        self._cache[path] = lib
        return lib

    def find(self, directory: str, name: str) -> SystemLibrary | None:
        """``name`` in the image's ``directory`` (symlinks resolved), if an ELF of this machine.

        Files under /var/task and /opt are the deployment's, found by the model itself.
        """
        return self._library(posixpath.join(directory, name), name)

    def default(self, name: str) -> SystemLibrary | None:
        """``name`` in the default directories (ld.so.conf's, then /lib64, /usr/lib64 …)."""
        for d in self.default_dirs:
            lib = self.find(d, name)
            if lib is not None:
                return lib
        return None

    # -- what the image is ------------------------------------------------------------------

    def python(self, wanted: str | None) -> tuple[tuple[int, int], str]:
        """The CPython version (and where it was read): ``wanted`` (``--python``) or the image's."""
        found: list[tuple[tuple[int, int], str]] = []
        for d in _PYTHON_DIRS:
            for path in self.fs.listdir(d):
                m = _PYTHON_RE.fullmatch(posixpath.basename(path))
                if m and self.fs.resolve(path) is not None:
                    found.append(((3, int(m.group(1))), path))
            if found:
                break
        found.sort(reverse=True)
        if wanted is not None:
            from_user = parse_python(wanted)
            if found and from_user not in {v for v, _p in found}:
                raise InputError(
                    f"{self.image.source}: the image runs CPython {found[0][0][0]}.{found[0][0][1]}"
                    f" ({found[0][1]}), not {wanted}"
                )
            return from_user, "--python"
        if not found:
            raise InputError(
                f"{self.image.source}: no python3.X in {', '.join(_PYTHON_DIRS)};"
                " name the CPython version with --python 3.X"
            )
        return found[0]

    def newest(self, lib: str, prefix: str) -> tuple[tuple[int, ...] | None, str | None]:
        """The newest ``prefix`` version ``lib`` defines, and the file that defines it."""
        found = self.default(lib)
        info = None if found is None else self.elf(found.path)
        if found is None or info is None:
            return None, None
        best: tuple[int, ...] | None = None
        for v in info.version_defs:
            t = version_tuple(v, prefix)
            if t is not None and (best is None or t > best):
                best = t
        return best, found.path

    def os_name(self) -> str:
        """``PRETTY_NAME`` of /etc/os-release (or /usr/lib/os-release), else "Linux"."""
        for path in ("/etc/os-release", "/usr/lib/os-release", "/etc/system-release"):
            real = self.fs.resolve(path)
            e = self.fs.files.get(real) if real else None
            text = self.facts.texts.get((e.layer, e.offset)) if e is not None else None
            if text is None:
                continue
            for line in text.decode("utf-8", "replace").splitlines():
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"') or "Linux"
            if path.endswith("system-release"):
                return text.decode("utf-8", "replace").strip() or "Linux"
        return "Linux"

    def runtime_packages(self, python: tuple[int, int]) -> set[str]:
        """Canonical names of the distributions in the image's runtime site-packages."""
        site = facts()["runtime_paths"]["site_packages"].replace("3.{X}", f"3.{python[1]}")
        names = set()
        for path in self.fs.listdir(site):
            base = posixpath.basename(path)
            if base.endswith(".dist-info"):
                names.add(re.sub(r"[-_.]+", "-", base[: -len(".dist-info")].split("-")[0]).lower())
        return names


def image_arch(image: Image, wanted: str | None) -> tuple[str, str]:
    """The architecture (AWS spelling) and where it was read: the config, else ``--arch``."""
    arch: str | None = None
    try:
        arch = normalize_arch(image.config.architecture) if image.config.architecture else None
    except InputError:
        arch = None
    if wanted is not None:
        want = normalize_arch(wanted)
        if arch is not None and arch != want:
            raise InputError(f"{image.source}: the image is {arch} (its config), not {want}")
        if arch is None:
            return want, "--arch"
    if arch is None:
        raise InputError(f"{image.source}: the config names no architecture; give --arch")
    return arch, "image config"


def image_runtime(system: ImageSystem, name: str, python: tuple[int, int], arch: str) -> Runtime:
    """The image as a :class:`Runtime`: glibc and libstdc++ ceilings from its own files."""
    glibc, libc_path = system.newest("libc.so.6", "GLIBC_")
    if glibc is None or len(glibc) < 2:
        where = libc_path or "its library directories"
        raise InputError(
            f"{system.image.source}: no libc.so.6 defining GLIBC_2.x versions in {where} "
            "(not a glibc image?)"
        )
    glibcxx, cxx_path = system.newest("libstdc++.so.6", "GLIBCXX_")
    cxxabi, _ = system.newest("libstdc++.so.6", "CXXABI_")
    os_name = system.os_name()
    # not a facts-file OS name: nothing the facts file says about that OS applies here
    os_short = f"{os_name} container"
    sources = {
        "glibc": f"{libc_path} in layer {system.layer_of(libc_path or '')}",
        "glibcxx": f"{cxx_path} in layer {system.layer_of(cxx_path)}" if cxx_path else "none",
        "architectures": "image config",
    }
    return Runtime(
        name=name,
        os=os_name,
        os_short=os_short,
        python=python,
        glibc=(glibc[0], glibc[1]),
        glibcxx=glibcxx or (0,),
        cxxabi=cxxabi or (0,),
        architectures=(arch,),
        deprecated=None,
        unconfirmed=(),
        sources=sources,
    )


def claimed_runtime(python: tuple[int, int], python_from: str, given: str | None) -> Runtime | None:
    """The Lambda runtime the image claims to be: ``--runtime``, else ``python3.X`` when the
    image's CPython is the Lambda base images' ``/var/lang/bin/python3.X``."""
    if given is not None:
        return get_runtime(given)
    if not python_from.startswith(_LAMBDA_PYTHON_BIN + "/"):
        return None
    try:
        return get_runtime(f"python{python[0]}.{python[1]}")
    except InputError:
        return None


def _v(t: tuple[int, ...]) -> str:
    return ".".join(map(str, t)) if t and t != (0,) else "none"


def disagreements(image_rt: Runtime, claimed: Runtime, target: Target, label: str) -> list[Finding]:
    """One ``image-differs-from-runtime`` warning listing where the image's files contradict
    the facts file's entry for the runtime it claims (an empty list when they agree)."""
    pairs: list[tuple[str, str, str, str]] = []  # what, image, facts, where read
    glibc_from = image_rt.sources.get("glibc", "")
    cxx_from = image_rt.sources.get("glibcxx", "")
    if image_rt.glibc != claimed.glibc:
        pairs.append(("glibc", _v(image_rt.glibc), claimed.glibc_str, glibc_from))
    if image_rt.glibcxx != claimed.glibcxx:
        pairs.append(("GLIBCXX", _v(image_rt.glibcxx), claimed.glibcxx_str, cxx_from))
    if image_rt.cxxabi != claimed.cxxabi:
        pairs.append(("CXXABI", _v(image_rt.cxxabi), claimed.cxxabi_str, cxx_from))
    if claimed.python is not None and claimed.python != target.python:
        pairs.append(("CPython", target.python_str, claimed.python_str or "", "the image"))
    if target.arch not in claimed.architectures:
        pairs.append(("architecture", target.arch, "/".join(claimed.architectures), "config"))
    if not pairs:
        return []
    has = ", ".join(f"{what} {image} ({where})" for what, image, _f, where in pairs)
    says = ", ".join(f"{what} {facts_}" for what, _i, facts_, _w in pairs)
    return [
        finding(
            "image-differs-from-runtime",
            label,
            f"the image claims to be {claimed.name}, which the facts file describes as "
            f"{claimed.os_short} with {says}; the image's own files have {has} — judged by "
            "the image's files",
            severity=WARNING,
            runtime=claimed.name,
            differences=[
                {"what": what, "image": image, "facts": facts_, "from": where}
                for what, image, facts_, where in pairs
            ],
        )
    ]


def describe(system: ImageSystem, rt: Runtime, python_from: str, arch_from: str) -> dict[str, Any]:
    """The report's ``truth`` for an image: every fact and the file it was read from."""
    return {
        "source": "image",
        "about": "glibc, libstdc++ and system libraries from the image's own files, CPython "
        "from its interpreter, architecture and LD_LIBRARY_PATH from its config; the image "
        "size quota from the facts file",
        "glibc": rt.glibc_str,
        "glibc_from": rt.sources.get("glibc"),
        "glibcxx": _v(rt.glibcxx),
        "cxxabi": _v(rt.cxxabi),
        "libstdcxx_from": rt.sources.get("glibcxx"),
        "python": f"{rt.python[0]}.{rt.python[1]}" if rt.python else None,
        "python_from": python_from,
        "architecture": rt.architectures[0],
        "architecture_from": arch_from,
        "os": rt.os,
        "ld_library_path": list(system.ld_library_path),
        "ld_library_path_from": system.ld_library_path_from,
        "default_dirs": list(system.default_dirs),
        "quota_from": "torchwheel/data/lambda.json (quotas.container_image_bytes, aws-quotas)",
    }
