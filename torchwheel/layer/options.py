"""What a layer build is asked to do: one frozen :class:`BuildOptions`, validated when made
(before anything is downloaded), and the normalisation of the packages argument."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..atomic import check_outputs
from ..errors import InputError
from ..packed import check_level
from ..screen import check_want
from ..targets import Target
from ..zipwrite import DEFAULT_COMPRESSLEVEL
from . import bytecode, stripping
from .install import layer_prefix

__all__ = ["BuildOptions", "requirements"]


@dataclass(frozen=True)
class BuildOptions:
    """What to build and how; validated when made, before anything is downloaded.

    ``output`` (a zip) and/or ``tree`` (the unzipped directory) say what to write; the index
    fields say where wheels come from (``index_url`` None: ``$TORCHWHEEL_INDEX_URL`` or
    PyTorch's index). See :func:`build_layer` for the rest.
    """

    target: Target
    packages: tuple[str, ...] = ("torch",)
    version: str | None = None
    output: Path | None = None
    tree: Path | None = None
    layout: str = "site-packages"
    slim: bool = False
    strip: bool = False
    compile_bytecode: bool = False
    no_deps: bool = False
    include_runtime_packages: bool = False
    prereleases: bool | None = None
    compresslevel: int = DEFAULT_COMPRESSLEVEL
    packed: bool = False
    zstd_level: int | None = None
    workers: int | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    offline: bool = False
    cache_dir: Path | None = None
    variant: str = "cpu"  # torch build to accept: cpu, cuda, rocm, xpu, any (issue 11)
    verify_elf: bool = False  # read every wheel's ELF needs before download, not only linux_*

    def __post_init__(self) -> None:
        check_want(self.variant)
        if self.output is None and self.tree is None:
            raise InputError("nothing to write: give an output zip (-o) and/or a tree directory")
        check_outputs(self.output, self.tree)  # a file / new path, never a device or /proc
        layer_prefix(self.target, self.layout)  # an unknown layout raises
        if not 0 <= self.compresslevel <= 9:
            raise InputError(f"compression level {self.compresslevel} is not between 0 and 9")
        if self.packed and self.zstd_level is not None:
            check_level(self.zstd_level)
        if self.compile_bytecode:
            bytecode.check_compile_target(self.target)
        if self.strip:  # before any download: refuse what could not be stripped
            stripping.require_strip(self.target.machine)

    @property
    def prefix(self) -> str:
        """The site directory inside the layer (see :func:`~torchwheel.layer.layer_prefix`)."""
        return layer_prefix(self.target, self.layout)


def requirements(
    packages: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> tuple[str, ...]:
    """``packages`` as a tuple of strings: one requirement or path is one, never its letters."""
    if isinstance(packages, (str, os.PathLike)):
        return (os.fspath(packages),)
    if isinstance(packages, (bytes, bytearray)) or not isinstance(packages, Iterable):
        raise TypeError(
            f"packages: expected a requirement string, a path or a sequence of them, "
            f"not {type(packages).__name__}"
        )
    out = []
    for p in packages:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"packages: expected str or path items, not {type(p).__name__}")
        out.append(os.fspath(p))
    return tuple(out)
