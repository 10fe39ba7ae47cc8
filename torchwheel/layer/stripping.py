"""``--strip``: ``strip --strip-unneeded`` on a layer tree's shared objects, in parallel.

A layer is usually built for another machine than the one building it (an arm64 layer on an
x86_64 laptop or CI runner), and binutils' ``strip`` only reads its own machine's ELF files.
So each file is stripped by a program that knows *its* ELF machine, found on ``PATH``:

1. ``llvm-strip`` (or a versioned ``llvm-strip-N``): every ELF machine;
2. ``<triple>-strip`` (``aarch64-linux-gnu-strip``, ``x86_64-linux-gnu-strip``): that machine;
3. ``strip``: when it says so — LLVM's, or GNU's listing the machine's BFD target among its
   ``supported targets`` (binutils-multiarch) — and otherwise only for the host's machine.

:func:`require_strip` refuses up front (one line naming what to install) when no program on
``PATH`` handles the target's machine, so ``build --strip`` fails before any download instead
of shipping unstripped files. Messages name files by their path in the layer, never by the
temporary directory they were built in.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import platform
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..elf import parse_elf
from ..errors import InputError
from ..progress import Step
from .install import LayerTree
from .report import StepResult

__all__ = [
    "StripTool",
    "find_strip_tool",
    "host_machine",
    "is_shared_object",
    "require_strip",
    "strip",
]

_SO_RE = re.compile(r"\.so(\.[0-9]+)*$")
_DESCRIPTION = "strip --strip-unneeded on shared objects"

#: ELF machine (as :mod:`torchwheel.elf` names it) → (GNU triple, binutils BFD target name)
_TOOLCHAIN: dict[str, tuple[str, str]] = {
    "x86_64": ("x86_64-linux-gnu", "elf64-x86-64"),
    "aarch64": ("aarch64-linux-gnu", "elf64-littleaarch64"),
}
_HOST_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def is_shared_object(record_path: str) -> bool:
    """True for the names :func:`strip` considers: ``*.so`` and ``*.so.N``."""
    return bool(_SO_RE.search(record_path))


def host_machine() -> str:
    """The machine this process runs on, spelled as ELF files are (``x86_64``, ``aarch64``)."""
    m = platform.machine().lower()
    return _HOST_ALIASES.get(m, m)


@dataclass(frozen=True)
class StripTool:
    """A strip program and why it is trusted with a machine's files."""

    path: str
    name: str  # what the user sees: llvm-strip, aarch64-linux-gnu-strip, strip

    def __str__(self) -> str:
        return self.name


def _llvm_strips() -> list[str]:
    """``llvm-strip`` and versioned ``llvm-strip-N`` on PATH (newest version first)."""
    found = []
    if (plain := shutil.which("llvm-strip")) is not None:
        found.append(plain)
    versioned: list[tuple[int, str]] = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        try:
            names = os.listdir(d or ".")
        except OSError:
            continue
        for n in names:
            m = re.fullmatch(r"llvm-strip-(\d+)", n)
            if m and (p := shutil.which(n, path=d or ".")) is not None:
                versioned.append((int(m.group(1)), p))
    found.extend(p for _v, p in sorted(versioned, reverse=True))
    return found


@functools.lru_cache(maxsize=32)
def _describe(tool: str) -> tuple[bool, frozenset[str] | None]:
    """(is LLVM's, the BFD targets GNU strip lists or None) for the program at ``tool``."""
    try:
        version = subprocess.run(
            [tool, "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
        if "LLVM" in version:
            return True, None
        helptext = subprocess.run(
            [tool, "--help"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False, frozenset()
    m = re.search(r"supported targets:(.*)", helptext)
    return False, frozenset(m.group(1).split()) if m else None


def _plain_strip_knows(tool: str, machine: str) -> bool:
    """Whether ``strip`` (not obviously LLVM's or a cross one) reads ``machine``'s ELF files."""
    is_llvm, targets = _describe(tool)
    if is_llvm:
        return True
    bfd = _TOOLCHAIN.get(machine, ("", ""))[1]
    if targets:  # GNU lists the targets it was built for (the generic elf64-little fails)
        return bfd in targets
    return machine == host_machine()


def find_strip_tool(machine: str) -> StripTool | None:
    """A strip program on ``PATH`` that handles ``machine``'s ELF files, or None.

    ``machine`` is the ELF spelling (``x86_64``, ``aarch64``; see
    :attr:`torchwheel.Target.machine`). The host's ``strip`` comes first for the host's own
    machine (it is what the layer would get on a native build); then ``llvm-strip``, the
    cross ``<triple>-strip``, and a ``strip`` that lists the machine among its targets.
    """
    plain = shutil.which("strip")
    if plain is not None and machine == host_machine() and _plain_strip_knows(plain, machine):
        return StripTool(plain, "strip")
    for p in _llvm_strips():
        return StripTool(p, Path(p).name)
    triple = _TOOLCHAIN.get(machine, (f"{machine}-linux-gnu", ""))[0]
    if (cross := shutil.which(f"{triple}-strip")) is not None:
        return StripTool(cross, f"{triple}-strip")
    if plain is not None and _plain_strip_knows(plain, machine):
        return StripTool(plain, "strip")
    return None


def require_strip(machine: str) -> StripTool:
    """The strip program for ``machine`` (see :func:`find_strip_tool`), or :class:`InputError`
    in one line naming what to install — for refusing ``--strip`` before any download."""
    tool = find_strip_tool(machine)
    if tool is not None:
        return tool
    triple = _TOOLCHAIN.get(machine, (f"{machine}-linux-gnu", ""))[0]
    if machine == host_machine():
        what = "binutils (strip) or llvm (llvm-strip)"
    else:
        what = f"llvm (llvm-strip) or binutils-{triple} ({triple}-strip)"
    raise InputError(
        f"--strip: no strip program on PATH reads {machine} ELF files (this machine is "
        f"{host_machine()}); install {what}, or build without --strip"
    )


def _elf_machine(path: Path) -> str | None:
    """The ELF machine of ``path`` when torchwheel's ELF reader parses it, else None."""
    try:
        with open(path, "rb") as f:
            return parse_elf(f, name=str(path)).machine
    except (InputError, OSError, ValueError, struct.error):
        return None


def _scrub(text: str, tree: LayerTree, replacements: dict[str, str]) -> str:
    """``text`` with temporary paths replaced by layer paths (and the tree root dropped)."""
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text.replace(f"{tree.root}{os.sep}", "").replace(str(tree.root), ".")


def _strip_one(tool: StripTool, tree: LayerTree, rp: str, failures: list[str]) -> int:
    """Strip one file into a temp copy; keep it only when smaller. Returns the bytes saved."""
    path = tree.site / rp
    before = tree.files[rp].size
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".strip-")
    os.close(fd)
    try:
        proc = subprocess.run(
            [tool.path, "--strip-unneeded", "-o", tmp, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            why = _scrub(lines[-1], tree, {tmp: rp, str(path): rp}) if lines else "failed"
            failures.append(f"{rp}: {tool}: {why}")
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


def _candidates(tree: LayerTree) -> list[str]:
    return [
        rp
        for rp, tf in tree.files.items()
        if tf.symlink is None
        and is_shared_object(rp)
        and not rp.split("/", 1)[0].endswith(".dist-info")
    ]


def _notes(
    not_elf: list[str], no_tool: dict[str, int], failures: list[str], used: set[str]
) -> list[str]:
    notes = []
    if used:
        notes.append(f"with {', '.join(sorted(used))}")
    if not_elf:
        notes.append(f"{len(not_elf)} file(s) not parsed as ELF, left alone")
    for machine, n in sorted(no_tool.items()):
        notes.append(f"{n} {machine} file(s) left unstripped: no strip for {machine} on PATH")
    if failures:
        notes.append(f"strip failed on {len(failures)} file(s), left alone: {failures[0]}")
    return notes


def strip(
    tree: LayerTree,
    *,
    strip_tool: str | None = None,
    workers: int | None = None,
    progress: Step | None = None,
) -> StepResult:
    """Run ``strip --strip-unneeded`` on the tree's shared objects (``*.so``, ``*.so.N``).

    Only files the ELF reader parses are touched, each with a program that knows its ELF
    machine (:func:`find_strip_tool`; ``strip_tool`` forces one program for every file); a
    file strip fails on, or that would not shrink, is left as it was and counted in the note.
    Without any program the step is skipped with a note. ``progress`` counts the files done
    and their bytes before stripping.
    """
    machines = {rp: _elf_machine(tree.site / rp) for rp in _candidates(tree)}
    not_elf = [rp for rp, mach in machines.items() if mach is None]
    forced = StripTool(strip_tool, Path(strip_tool).name) if strip_tool else None
    tools = {mach: forced or find_strip_tool(mach) for mach in set(machines.values()) if mach}
    if tools and not any(tools.values()):
        return StepResult(
            "strip",
            _DESCRIPTION,
            0,
            0,
            applied=False,
            note="no strip program found (install llvm or binutils); skipped",
        )
    no_tool: dict[str, int] = {}
    todo: list[tuple[StripTool, str]] = []
    for rp, mach in machines.items():
        if mach is None:
            continue
        tool = tools[mach]
        if tool is None:
            no_tool[mach] = no_tool.get(mach, 0) + 1
        else:
            todo.append((tool, rp))
    todo.sort(key=lambda item: -tree.files[item[1]].size)
    if progress is not None:
        progress.update(
            files_total=len(todo), bytes_total=sum(tree.files[rp].size for _t, rp in todo)
        )
    failures: list[str] = []

    def one(item: tuple[StripTool, str]) -> int:
        size = tree.files[item[1]].size
        saved = _strip_one(item[0], tree, item[1], failures)
        if progress is not None:
            progress.advance(files=1, bytes=size)
        return saved

    with cf.ThreadPoolExecutor(workers or tree.workers) as pool:
        saved = list(pool.map(one, todo))
    notes = _notes(not_elf, no_tool, sorted(failures), {t.name for t, _rp in todo})
    return StepResult(
        "strip",
        _DESCRIPTION,
        sum(1 for s in saved if s > 0),
        sum(saved),
        note="; ".join(notes) or None,
    )
