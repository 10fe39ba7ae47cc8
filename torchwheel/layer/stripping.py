"""``--strip``: ``strip --strip-unneeded`` on a layer tree's shared objects, in parallel."""

from __future__ import annotations

import concurrent.futures as cf
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from ..elf import parse_elf
from ..errors import InputError
from .install import LayerTree
from .report import StepResult

__all__ = ["is_shared_object", "strip"]

_SO_RE = re.compile(r"\.so(\.[0-9]+)*$")
_DESCRIPTION = "strip --strip-unneeded on shared objects"


def is_shared_object(record_path: str) -> bool:
    """True for the names :func:`strip` considers: ``*.so`` and ``*.so.N``."""
    return bool(_SO_RE.search(record_path))


def _elf_machine(path: Path) -> str | None:
    """The ELF machine of ``path`` when torchwheel's ELF reader parses it, else None."""
    try:
        with open(path, "rb") as f:
            return parse_elf(f, name=str(path)).machine
    except (InputError, OSError, ValueError, struct.error):
        return None


def _strip_one(tool: str, tree: LayerTree, rp: str, failures: list[str]) -> int:
    """Strip one file into a temp copy; keep it only when smaller. Returns the bytes saved."""
    path = tree.site / rp
    before = tree.files[rp].size
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".strip-")
    os.close(fd)
    try:
        proc = subprocess.run(
            [tool, "--strip-unneeded", "-o", tmp, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            failures.append(f"{rp}: {proc.stderr.strip().splitlines()[-1:] or ['failed']}")
            return 0
        if os.path.getsize(tmp) >= before:
            return 0
        os.chmod(tmp, 0o755 if tree.files[rp].executable else 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    tree.refresh(rp)
    return before - tree.files[rp].size


def strip(
    tree: LayerTree,
    *,
    strip_tool: str | None = None,
    workers: int | None = None,
) -> StepResult:
    """Run ``strip --strip-unneeded`` on the tree's shared objects (``*.so``, ``*.so.N``).

    Only files the ELF reader parses are touched; a file strip fails on, or that would not
    shrink, is left as it was. Without a ``strip`` program the step is skipped with a note.
    """
    tool = strip_tool or shutil.which("strip")
    if tool is None:
        return StepResult(
            "strip",
            _DESCRIPTION,
            0,
            0,
            applied=False,
            note="no strip program found (install binutils); skipped",
        )
    candidates = [
        rp
        for rp, tf in tree.files.items()
        if tf.symlink is None
        and is_shared_object(rp)
        and not rp.split("/", 1)[0].endswith(".dist-info")
    ]
    machines = {rp: _elf_machine(tree.site / rp) for rp in candidates}
    not_elf = [rp for rp, mach in machines.items() if mach is None]
    todo = sorted(
        (rp for rp, mach in machines.items() if mach is not None),
        key=lambda rp: -tree.files[rp].size,
    )
    failures: list[str] = []
    with cf.ThreadPoolExecutor(workers or tree.workers) as pool:
        saved = list(pool.map(lambda rp: _strip_one(tool, tree, rp, failures), todo))
    notes = []
    if not_elf:
        notes.append(f"{len(not_elf)} file(s) not parsed as ELF, left alone")
    if failures:
        notes.append(f"strip failed on {len(failures)} file(s), left alone: {failures[0]}")
    return StepResult(
        "strip",
        _DESCRIPTION,
        sum(1 for s in saved if s > 0),
        sum(saved),
        note="; ".join(notes) or None,
    )
