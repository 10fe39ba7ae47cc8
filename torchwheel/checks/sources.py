"""Directories as check inputs: a build directory judged exactly like the zip of its contents.

``sam build`` leaves ``.aws-sam/build/<Resource>/``, ``cdk synth`` stages
``cdk.out/asset.<hash>/``; both are zipped as they are at deploy time. :func:`read_tree`
walks such a directory without following symlinks and returns the same
:class:`~torchwheel.checks.model.LayerEntry` objects a zip of it would give (a symlink is an
entry whose content is its target, as ``zip -y`` stores it, so one pointing outside the tree is
``unsafe-path`` like in a zip). Special files (FIFOs, sockets, devices) are never opened:
they are reported and left out, as zip tools leave them out.

:func:`tree_shape` recognises the SAM and CDK shapes from the path, and :func:`refuse_root`
turns the tools' build roots (``.aws-sam/build`` itself, ``cdk.out`` itself), which hold
several deployments, into one clear error naming what to pass instead.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError
from .model import FUNCTION_MOUNT, LAYER_MOUNT, WARNING, Finding, LayerEntry, finding

__all__ = [
    "MAX_TREE_ENTRIES",
    "Tree",
    "TreeShape",
    "describe_inputs",
    "facts_truth",
    "read_tree",
    "refuse_root",
    "tree_shape",
]

#: A directory with more entries than this is refused (a zip cannot hold more than 2**32 either,
#: and nothing deployable to Lambda comes close).
MAX_TREE_ENTRIES = 2_000_000

_CDK_ASSET_RE = re.compile(r"^asset\.[0-9a-f]{64}$")


@dataclass(frozen=True)
class TreeShape:
    """A recognised build-output shape: ``sam-build`` or ``cdk-asset``, and its name."""

    kind: str  # "sam-build" | "cdk-asset"
    name: str  # the SAM logical id, or the CDK asset hash
    root: str  # the tool's output root (.aws-sam/build, cdk.out)

    def describe(self) -> str:
        """``SAM build output of resource TorchLayer`` for messages."""
        if self.kind == "sam-build":
            return f"SAM build output of resource {self.name}"
        return f"CDK asset {self.name[:12]}… staged by cdk synth"


@dataclass
class Tree:
    """A directory read as a layer or function: entries (relative paths) and findings."""

    path: str
    shape: TreeShape | None
    has_python_dir: bool
    findings: list[Finding] = field(default_factory=list)
    _items: list[tuple[str, os.stat_result, str | None]] = field(default_factory=list)

    @property
    def looks_like_function(self) -> bool:
        """A recognised build output without ``python/`` at its top is function code."""
        return self.shape is not None and not self.has_python_dir

    def entries(self, mount: str, index: int) -> list[LayerEntry]:
        """The entries, mounted at ``mount`` (what the zip of the directory would hold)."""
        out = []
        for rel, st, link in self._items:
            full = os.path.join(self.path, rel)
            if link is not None:
                data = link.encode("utf-8", "surrogateescape")
                opener: Callable[[], BinaryIO] = _bytes_opener(data)
                size = len(data)
            else:
                opener = _file_opener(full)
                size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
            out.append(
                LayerEntry(
                    path=rel,
                    size=size,
                    mode=st.st_mode,
                    is_symlink=link is not None,
                    is_dir=stat.S_ISDIR(st.st_mode),
                    origin=self.path,
                    mount=mount,
                    open=opener,
                    input_index=index,
                )
            )
        return out


def _bytes_opener(data: bytes) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        return io.BytesIO(data)

    return opener


def _file_opener(full: str) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        # a regular file only: the tree may have changed since it was walked (never block on
        # a FIFO put in place of a file, never follow a symlink swapped in)
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(full, flags)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputError(f"{full}: no longer a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    return opener


def tree_shape(path: str | Path) -> TreeShape | None:
    """The SAM / CDK shape of a directory from where it lies, or None for a plain directory."""
    p = Path(path).resolve()
    parent = p.parent
    if parent.name == "build" and parent.parent.name == ".aws-sam":
        return TreeShape("sam-build", p.name, str(parent))
    if _CDK_ASSET_RE.match(p.name) and (
        parent.name == "cdk.out" or (parent / "manifest.json").is_file()
    ):
        return TreeShape("cdk-asset", p.name[len("asset.") :], str(parent))
    return None


def _subdirs(p: Path, pattern: re.Pattern[str] | None = None) -> list[str]:
    names = sorted(
        c.name
        for c in p.iterdir()
        if c.is_dir() and not c.is_symlink() and (pattern is None or pattern.match(c.name))
    )
    return names


def refuse_root(path: str | Path) -> None:
    """Raise :class:`InputError` for SAM's / CDK's output root (it holds several deployments)."""
    p = Path(path)
    real = p.resolve()
    if real.name == "build" and real.parent.name == ".aws-sam" and (p / "template.yaml").exists():
        names = _subdirs(p)
        example = " ".join(str(p / n) for n in names[:2]) or f"{p}/<Resource>"
        raise InputError(
            f"{path}: is SAM's build directory ({len(names)} resource(s): "
            f"{', '.join(names[:8]) or 'none'}); check each function with its layers, "
            f"e.g. torchwheel check {example}"
        )
    if (p / "manifest.json").is_file() and ((p / "cdk.out").is_file() or real.name == "cdk.out"):
        assets = _subdirs(p, _CDK_ASSET_RE)
        example = " ".join(str(p / n) for n in assets[:2]) or f"{p}/asset.<hash>"
        raise InputError(
            f"{path}: is CDK's cloud assembly ({len(assets)} directory asset(s)); check each "
            f"function's code asset with its layers' assets, e.g. torchwheel check {example}"
        )


def _special(full: str, rel: str, origin: str, st: os.stat_result) -> Finding:
    kind = (
        "FIFO" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode) else "device"
    )
    return finding(
        "suspicious-archive",
        f"{origin}:{rel}",
        f"{rel} is a {kind}, not a file: zip tools leave it out, so it is not deployed",
        severity=WARNING,
        kind=kind.lower(),
    )


def _walk(root: str, tree: Tree) -> None:
    """Depth-first, sorted, symlinks not followed; fills ``tree._items`` and findings."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
            children = sorted(it, key=lambda d: d.name)
        subdirs = []
        for d in children:
            rel = f"{rel_dir}/{d.name}" if rel_dir else d.name
            st = d.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                tree._items.append((rel, st, os.readlink(d.path)))
            elif stat.S_ISDIR(st.st_mode):
                tree._items.append((rel, st, None))
                subdirs.append(rel)
            elif stat.S_ISREG(st.st_mode):
                tree._items.append((rel, st, None))
            else:
                tree.findings.append(_special(d.path, rel, tree.path, st))
            if len(tree._items) > MAX_TREE_ENTRIES:
                raise InputError(
                    f"{tree.path}: more than {MAX_TREE_ENTRIES:,} entries; not a Lambda "
                    "deployment directory"
                )
        stack.extend(reversed(subdirs))


def read_tree(path: str) -> Tree:
    """Walk the directory ``path`` (the root itself may be a symlink to a directory)."""
    refuse_root(path)
    root = os.path.realpath(path)
    if not os.path.isdir(root):
        raise InputError(f"{path}: not a directory")
    tree = Tree(path=path, shape=tree_shape(path), has_python_dir=False)
    _walk(root, tree)
    tree.has_python_dir = any(rel == "python" for rel, _st, _l in tree._items)
    return tree


def describe_inputs(paths: Sequence[str], function: str | None) -> tuple[dict[str, Any], ...]:
    """For the report: each zip / directory, its role (function or layer), mount and shape."""
    out = []
    for p in paths:
        is_dir = os.path.isdir(p)
        shape = tree_shape(p) if is_dir else None
        role = "function" if p == function else "layer"
        out.append(
            {
                "path": p,
                "kind": "directory" if is_dir else "zip",
                "role": role,
                "mount": FUNCTION_MOUNT if role == "function" else LAYER_MOUNT,
                "shape": None if shape is None else shape.kind,
                "shape_name": None if shape is None else shape.name,
                "described": None if shape is None else shape.describe(),
            }
        )
    return tuple(out)


def facts_truth() -> dict[str, Any]:
    """The report's ``truth`` for zips and directories: every runtime fact from the facts file."""
    return {
        "source": "facts",
        "file": "torchwheel/data/lambda.json",
        "about": "glibc, libstdc++, CPython, system libraries and paths of each runtime, "
        "each with its source",
    }
