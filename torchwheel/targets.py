"""The Lambda runtime model: runtimes loaded from ``data/lambda.json``, and targets.

A :class:`Runtime` is one Lambda runtime identifier (``python3.12``, ``provided.al2023``) with
its OS facts. A :class:`Target` is a runtime + architecture + CPython version: what a wheel is
judged against. Everything here is pure data; nothing sniffs the host.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from packaging.tags import Tag

from .errors import DataError, UnknownRuntime
from .tags import marker_environment, platform_tags, target_tags

__all__ = [
    "Quotas",
    "Runtime",
    "SystemLibraryFact",
    "Target",
    "facts",
    "get_runtime",
    "ld_library_path",
    "make_target",
    "normalize_arch",
    "parse_python",
    "quotas",
    "runtimes",
    "system_libraries",
    "system_library_dirs",
]

Version2 = tuple[int, int]


def _v(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@dataclass(frozen=True, repr=False)
class Runtime:
    """One Lambda runtime and the facts torchwheel knows about its image."""

    name: str
    os: str
    os_short: str
    python: Version2 | None
    glibc: Version2
    glibcxx: tuple[int, ...]
    cxxabi: tuple[int, ...]
    architectures: tuple[str, ...]
    deprecated: _dt.date | None
    unconfirmed: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def glibc_str(self) -> str:
        """glibc version as text, e.g. ``"2.26"``."""
        return ".".join(map(str, self.glibc))

    @property
    def glibcxx_str(self) -> str:
        """Highest ``GLIBCXX_`` symbol version available, e.g. ``"3.4.24"``."""
        return ".".join(map(str, self.glibcxx))

    @property
    def cxxabi_str(self) -> str:
        """Highest ``CXXABI_`` symbol version available, e.g. ``"1.3.11"``."""
        return ".".join(map(str, self.cxxabi))

    @property
    def python_str(self) -> str | None:
        """CPython version of the runtime as ``"3.12"``, None for ``provided.*``."""
        return None if self.python is None else f"{self.python[0]}.{self.python[1]}"

    def is_deprecated(self, today: _dt.date | None = None) -> bool:
        """True when the runtime's deprecation date has passed (``today`` defaults to now)."""
        if self.deprecated is None:
            return False
        return (today or _dt.date.today()) >= self.deprecated

    def deprecation_note(self, today: _dt.date | None = None) -> str | None:
        """``"python3.8 is deprecated since 2024-10-14"`` once it is, else None (one wording
        for resolve and build)."""
        if self.deprecated is None or not self.is_deprecated(today):
            return None
        return f"{self.name} is deprecated since {self.deprecated.isoformat()}"

    def notes(self) -> list[str]:
        """Human notes on facts that are conservative rather than confirmed."""
        table = facts()["unconfirmed_notes"]
        return [table[key] for key in self.unconfirmed if key in table]

    def __repr__(self) -> str:
        return f"<Runtime {self.name} ({self.os_short}, glibc {self.glibc_str})>"


@dataclass(frozen=True, repr=False)
class Target:
    """A runtime + architecture (AWS spelling) + CPython version: what wheels are judged for."""

    runtime: Runtime
    arch: str  # "x86_64" or "arm64" (AWS spelling)
    python: Version2

    @property
    def machine(self) -> str:
        """The architecture as wheels and ELF files spell it: ``x86_64`` or ``aarch64``."""
        return str(facts()["architectures"]["aws_to_wheel"][self.arch])

    @property
    def python_str(self) -> str:
        """``"3.12"``."""
        return f"{self.python[0]}.{self.python[1]}"

    @property
    def cpython_tag(self) -> str:
        """``"cp312"``."""
        return f"cp{self.python[0]}{self.python[1]}"

    @property
    def glibc(self) -> Version2:
        """The runtime's glibc version."""
        return self.runtime.glibc

    @property
    def site_packages(self) -> str:
        """The layer path for this target: ``python/lib/python3.X/site-packages``."""
        return f"python/lib/python{self.python_str}/site-packages"

    @property
    def label(self) -> str:
        """``python3.12/arm64`` (``provided.al2023/x86_64 (CPython 3.11)`` for provided.*)."""
        if self.runtime.python is None:
            return f"{self.runtime.name}/{self.arch} (CPython {self.python_str})"
        return f"{self.runtime.name}/{self.arch}"

    def __repr__(self) -> str:
        return f"<Target {self.runtime.name}/{self.arch} CPython {self.python_str}>"

    def platforms(self) -> list[str]:
        """Platform tags this image accepts, in packaging's priority order."""
        return platform_tags(self.machine, self.runtime.glibc)

    def tags(self) -> list[Tag]:
        """Ordered tags, as ``packaging.tags.sys_tags()`` returns them on the Lambda image."""
        return target_tags(self.python, self.machine, self.runtime.glibc)

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker environment of the target (not the host)."""
        return marker_environment(self.python, self.machine)


@dataclass(frozen=True)
class Quotas:
    """Lambda size quotas (bytes unless noted)."""

    direct_upload_zipped: int
    unzipped: int
    layers_per_function: int
    container_image: int
    ephemeral_storage_default_mb: int
    ephemeral_storage_max_mb: int


_REQUIRED = (
    "name",
    "os",
    "os_short",
    "python",
    "glibc",
    "glibcxx",
    "cxxabi",
    "architectures",
    "deprecated",
    "unconfirmed",
    "sources",
)


@cache
def facts() -> dict[str, Any]:
    """The raw, validated facts file (``torchwheel/data/lambda.json``)."""
    text = resources.files("torchwheel").joinpath("data/lambda.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    _validate(data)
    return data


def _validate(data: dict[str, Any]) -> None:
    sources = data.get("sources", {})
    seen: set[str] = set()
    for entry in data.get("runtimes", []):
        missing = [k for k in _REQUIRED if k not in entry]
        if missing:
            raise DataError(f"lambda.json: runtime {entry.get('name')!r} lacks {missing}")
        if entry["name"] in seen:
            raise DataError(f"lambda.json: runtime {entry['name']!r} listed twice")
        seen.add(entry["name"])
        for key, src in entry["sources"].items():
            for one in src.split(";"):
                if one.strip() not in sources:
                    raise DataError(
                        f"lambda.json: runtime {entry['name']!r} cites unknown source "
                        f"{one.strip()!r} for {key}"
                    )
        for arch in entry["architectures"]:
            if arch not in data["architectures"]["aws_to_wheel"]:
                raise DataError(f"lambda.json: runtime {entry['name']!r}: unknown arch {arch!r}")
        if not re.fullmatch(r"2\.\d+", entry["glibc"]):
            raise DataError(f"lambda.json: runtime {entry['name']!r}: bad glibc {entry['glibc']!r}")
    for section in (
        "quotas",
        "layer",
        "runtime_paths",
        "architectures",
        "ld_library_path",
        "system_libraries",
        "pytorch",
    ):
        if section not in data or "source" not in data[section]:
            raise DataError(f"lambda.json: section {section!r} missing or without a source")
        _validate_cites(data[section]["source"], sources, f"section {section!r}")
    _validate_library_facts(data, sources)


def _validate_cites(cited: str, sources: dict[str, Any], where: str) -> None:
    for one in cited.split(";"):
        if one.strip() not in sources:
            raise DataError(f"lambda.json: {where} cites unknown source {one.strip()!r}")


_PRESENT = ("yes", "unconfirmed", "no")


def _validate_library_facts(data: dict[str, Any], sources: dict[str, Any]) -> None:
    """``ld_library_path`` for every runtime; ``system_libraries`` for every runtime's OS."""
    paths = data["ld_library_path"]["runtimes"]
    images = data["system_libraries"]["images"]
    for entry in data["runtimes"]:
        dirs = paths.get(entry["name"])
        if not dirs or not all(isinstance(d, str) and d.startswith("/") for d in dirs):
            raise DataError(f"lambda.json: runtime {entry['name']!r} has no LD_LIBRARY_PATH")
        if entry["os_short"] not in images:
            raise DataError(f"lambda.json: no system libraries for {entry['os_short']!r}")
    for os_name, image in images.items():
        _validate_cites(image["glibc"]["source"], sources, f"{os_name} glibc")
        for name, lib in image["libraries"].items():
            where = f"{os_name} {name}"
            if lib.get("present") not in _PRESENT:
                raise DataError(f"lambda.json: {where}: present must be one of {_PRESENT}")
            _validate_cites(lib.get("source", ""), sources, where)
            if lib["present"] != "yes" and not lib.get("note"):
                raise DataError(f"lambda.json: {where} is {lib['present']} but has no note")
            for family, ceiling in lib.get("versions", {}).items():
                if ceiling is not None and not re.fullmatch(r"\d+(\.\d+)*", ceiling):
                    raise DataError(f"lambda.json: {where}: bad {family} ceiling {ceiling!r}")


@cache
def _runtime_table() -> dict[str, Runtime]:
    table: dict[str, Runtime] = {}
    for e in facts()["runtimes"]:
        py = _v(e["python"]) if e["python"] else None
        table[e["name"]] = Runtime(
            name=e["name"],
            os=e["os"],
            os_short=e["os_short"],
            python=(py[0], py[1]) if py else None,
            glibc=(_v(e["glibc"])[0], _v(e["glibc"])[1]),
            glibcxx=_v(e["glibcxx"]),
            cxxabi=_v(e["cxxabi"]),
            architectures=tuple(e["architectures"]),
            deprecated=_dt.date.fromisoformat(e["deprecated"]) if e["deprecated"] else None,
            unconfirmed=tuple(e["unconfirmed"]),
            sources=dict(e["sources"]),
        )
    return table


def runtimes(*, include_deprecated: bool = True) -> list[Runtime]:
    """Every known Lambda runtime, in the order of the facts file."""
    rts = list(_runtime_table().values())
    if not include_deprecated:
        rts = [r for r in rts if not r.is_deprecated()]
    return rts


def get_runtime(name: str) -> Runtime:
    """Look a runtime up by its Lambda identifier (``python3.12``; ``3.12`` is accepted too)."""
    key = name.strip().lower()
    table = _runtime_table()
    if key in table:
        return table[key]
    try:
        py = parse_python(key)
    except UnknownRuntime:
        py = None
    if py is not None and f"python{py[0]}.{py[1]}" in table:
        return table[f"python{py[0]}.{py[1]}"]
    raise UnknownRuntime(f"unknown runtime {name!r}; known: {', '.join(table)}")


def normalize_arch(arch: str) -> str:
    """``x86_64``/``amd64`` → ``x86_64``; ``arm64``/``aarch64`` → ``arm64`` (AWS spelling)."""
    aliases: dict[str, str] = facts()["architectures"]["aliases"]
    key = arch.strip().lower()
    if key not in aliases:
        raise UnknownRuntime(f"unknown architecture {arch!r}; use x86_64 or arm64")
    return aliases[key]


_PY_RE = re.compile(r"^(?:python|cp|py)?(\d)\.?(\d{1,2})$")


def parse_python(text: str) -> Version2:
    """``"3.12"``, ``"python3.12"``, ``"cp312"`` → ``(3, 12)``."""
    m = _PY_RE.match(text.strip().lower())
    if not m:
        raise UnknownRuntime(f"cannot read Python version {text!r}; use e.g. 3.12 or cp312")
    return int(m.group(1)), int(m.group(2))


def make_target(
    arch: str,
    python: str | Version2 | None = None,
    *,
    runtime: str | Runtime | None = None,
) -> Target:
    """Build a :class:`Target`, filling the runtime from the Python version or vice versa.

    The one target convention of the public API (``resolve``, ``build_layer``, ``check``):
    ``arch`` (``x86_64``/``arm64``, aliases accepted) and ``python`` (``"3.12"``,
    ``"cp312"``, ``(3, 12)``) first, ``runtime=`` by keyword. ``runtime`` defaults to
    ``python3.X`` for the given Python; ``python`` defaults to the runtime's CPython
    (required for ``provided.*``).
    """
    py: Version2 | None
    py = parse_python(python) if isinstance(python, str) else python
    if runtime is None:
        if py is None:
            raise UnknownRuntime("name a runtime (--runtime) or a Python version (--python)")
        rt = get_runtime(f"python{py[0]}.{py[1]}")
    else:
        rt = runtime if isinstance(runtime, Runtime) else get_runtime(runtime)
    if py is None:
        if rt.python is None:
            raise UnknownRuntime(
                f"{rt.name} brings no Python of its own: name the CPython version (--python 3.X)"
            )
        py = rt.python
    elif rt.python is not None and rt.python != py:
        raise UnknownRuntime(f"{rt.name} runs CPython {rt.python_str}, not {py[0]}.{py[1]}")
    a = normalize_arch(arch)
    if a not in rt.architectures:
        raise UnknownRuntime(f"{rt.name} does not run on {a} (only {', '.join(rt.architectures)})")
    return Target(runtime=rt, arch=a, python=py)


def quotas() -> Quotas:
    """Lambda size quotas from the facts file."""
    q = facts()["quotas"]
    return Quotas(
        direct_upload_zipped=q["direct_upload_zipped_bytes"],
        unzipped=q["unzipped_bytes"],
        layers_per_function=q["layers_per_function"],
        container_image=q["container_image_bytes"],
        ephemeral_storage_default_mb=q["ephemeral_storage_default_mb"],
        ephemeral_storage_max_mb=q["ephemeral_storage_max_mb"],
    )


def all_targets(
    *, include_deprecated: bool = False, provided_python: Version2 | None = None
) -> list[Target]:
    """Every runtime × architecture; ``provided.*`` only when ``provided_python`` is given."""
    out: list[Target] = []
    for rt in runtimes(include_deprecated=include_deprecated):
        py = rt.python or provided_python
        if py is None:
            continue
        for arch in rt.architectures:
            out.append(Target(runtime=rt, arch=arch, python=py))
    return out


@dataclass(frozen=True)
class SystemLibraryFact:
    """One library of a Lambda image (``system_libraries`` in the facts file).

    ``present`` is ``"yes"`` (documented), ``"unconfirmed"`` (seen on the image, not
    documented: assumed present) or ``"no"`` (not on the image). ``versions`` maps a
    symbol-version family (``"ZLIB"``) to the newest version the image's copy defines, None
    when it defines none of that family. ``conservative``: the ceiling is the safe lower
    value, not a confirmed one.
    """

    name: str
    present: str
    package: str = ""
    versions: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    conservative: bool = False
    source: str = ""
    note: str = ""


@cache
def _image_libraries(os_short: str) -> dict[str, SystemLibraryFact]:
    image = facts()["system_libraries"]["images"][os_short]
    glibc = image["glibc"]
    out = {
        n: SystemLibraryFact(n, "yes", package=glibc["package"], source=glibc["source"])
        for n in glibc["names"]
    }
    for name, lib in image["libraries"].items():
        out[name] = SystemLibraryFact(
            name=name,
            present=lib["present"],
            package=lib.get("package", ""),
            versions={k: None if v is None else _v(v) for k, v in lib.get("versions", {}).items()},
            conservative=bool(lib.get("conservative", False)),
            source=lib["source"],
            note=lib.get("note", ""),
        )
    return out


def system_libraries(runtime: Runtime) -> dict[str, SystemLibraryFact]:
    """The libraries the runtime's image provides (or is known not to), by file name.

    Empty for an OS the facts file does not describe (a container image judged by its own
    files, see checks/imagesys.py).
    """
    if runtime.os_short not in facts()["system_libraries"]["images"]:
        return {}
    return dict(_image_libraries(runtime.os_short))


def system_library_dirs() -> tuple[str, ...]:
    """The image directories holding its system libraries (``/lib64``, ``/usr/lib64``)."""
    return tuple(facts()["system_libraries"]["dirs"])


def ld_library_path(runtime: Runtime) -> tuple[str, ...]:
    """The runtime's ``LD_LIBRARY_PATH``, in order (facts file, ``ld_library_path``)."""
    return tuple(facts()["ld_library_path"]["runtimes"][runtime.name])
