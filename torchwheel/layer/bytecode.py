"""``--compile``: unchecked-hash ``.pyc`` files for the target CPython, recorded in RECORD.

The compiler runs in fresh ``python -S -s`` workers (see :data:`_COMPILE_WORKER`) so that the
bytes depend on the sources only, never on the process that builds the layer.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from ..errors import InputError, TorchwheelError
from ..targets import Target
from ..zipread import ZipReader
from .install import LayerTree
from .report import StepResult

__all__ = ["check_compile_target", "compile_bytecode"]

#: the compiler worker: a fresh ``python -S -s`` reading ``[[source, pyc, dfile], ...]`` as JSON
#: on stdin, answering one JSON list (null: compiled; else why not). Plain subprocesses rather
#: than multiprocessing: nothing of the caller's ``__main__`` is re-imported.
#:
#: Reproducibility: marshal sets a reference flag on objects whose refcount is above 1 and
#: writes a string as interned when it is, so a ``.pyc`` can depend on the state of the process
#: that wrote it (bpo-34093). Each worker therefore starts from the same state (clean
#: environment, fixed hash seed, no site, the 256 one-character strings interned up front)
#: and compiles a fixed run of files, whatever the number of workers.
_COMPILE_CHUNK = 100  # files per worker process

_COMPILE_WORKER = r"""
import sys
del sys.path[0]  # -c puts the working directory first
for _i in range(256):
    sys.intern(chr(_i))
import json, py_compile
out = []
for src, pyc, dfile in json.load(sys.stdin):
    try:
        py_compile.compile(src, cfile=pyc, dfile=dfile, doraise=True, optimize=0,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError as exc:
        out.append(exc.exc_type_name + ": " + (str(exc.exc_value).splitlines() or [""])[0])
    else:
        out.append(None)
json.dump(out, sys.stdout)
"""

#: one compile job: source path, .pyc path, the file name written into the code objects
_Job = tuple[str, str, str]


def check_compile_target(target: Target) -> None:
    """Raise :class:`InputError` unless this interpreter can write bytecode for ``target``:
    it must be CPython with the target's (major, minor) (``.pyc`` files are version-specific)."""
    impl = platform.python_implementation()
    here = sys.version_info[:2]
    if impl != "CPython" or here != tuple(target.python):
        raise InputError(
            f"--compile needs CPython {target.python_str} to write bytecode for {target.label}; "
            f"this is {impl} {here[0]}.{here[1]}"
        )


def _pyc_record_path(record_path: str, tag: str) -> str:
    head, _, name = record_path.rpartition("/")
    pyc = f"__pycache__/{name[:-3]}.{tag}.pyc"
    return f"{head}/{pyc}" if head else pyc


def _compile_chunk(jobs: list[_Job]) -> list[str | None]:
    """Run one compiler worker on ``jobs``; per job None (compiled) or the reason it was not."""
    env = {"PYTHONHASHSEED": "0", "PYTHONUTF8": "1", "PATH": os.environ.get("PATH", "")}
    proc = subprocess.run(
        [sys.executable, "-S", "-s", "-c", _COMPILE_WORKER],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        check=False,
        env=env,
        encoding="utf-8",
    )
    try:
        res = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        res = None
    if not isinstance(res, list) or len(res) != len(jobs):
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise TorchwheelError(f"the bytecode compiler ({sys.executable}) failed: {last}")
    return [r if isinstance(r, str) else None for r in res]


def _sources(tree: LayerTree) -> list[str]:
    """The ``.py`` files to compile (sorted; no symlinks, caches or ``.dist-info``)."""
    return sorted(
        rp
        for rp, tf in tree.files.items()
        if rp.endswith(".py")
        and tf.symlink is None
        and "__pycache__" not in rp.split("/")
        and not rp.split("/", 1)[0].endswith(".dist-info")
    )


def _write_out_virtual(tree: LayerTree, sources: list[str]) -> None:
    """Write out the sources a zip-only build left in their wheels (they stay zipped from
    there; the compiler needs a file)."""
    by_wheel: dict[Path, list[str]] = {}
    for rp in sources:
        tf = tree.files[rp]
        if tf.virtual and tf.raw is not None and not (tree.site / rp).exists():
            by_wheel.setdefault(tf.raw.wheel, []).append(rp)
    for wheel, rps in by_wheel.items():
        with ZipReader(wheel) as zr:
            for rp in rps:
                raw = tree.files[rp].raw
                assert raw is not None
                path = tree.site / rp
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(zr.read(raw.member))


def _compile_all(jobs: list[_Job], workers: int) -> dict[str, str | None]:
    """Source path → None (compiled) or why not, from fixed runs of ``_COMPILE_CHUNK`` files
    (see :data:`_COMPILE_WORKER`; a process costs ~20 ms to start)."""
    chunks = [jobs[i : i + _COMPILE_CHUNK] for i in range(0, len(jobs), _COMPILE_CHUNK)]
    with cf.ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(_compile_chunk, chunks))
    results: dict[str, str | None] = {}
    for chunk, answer in zip(chunks, answers, strict=True):
        for job, res in zip(chunk, answer, strict=True):
            results[job[0]] = res
    return results


def compile_bytecode(tree: LayerTree, target: Target, *, workers: int | None = None) -> StepResult:
    """Compile every ``.py`` of the tree into ``__pycache__/<name>.cpython-3XY.pyc`` and add
    each ``.pyc`` to its distribution's RECORD (as pip does).

    The ``.pyc`` files are unchecked-hash (PEP 552: no source mtime, never revalidated, so
    valid on a read-only ``/opt``), optimization level 0, and carry ``/opt/<tree path>`` as
    their file name: the bytes depend on the sources only. Files that fail to compile (Python 2
    syntax in test data, say) are skipped and counted in the note. Run it after slimming
    (which removes ``__pycache__``) and stripping; raises :class:`InputError` when the
    running interpreter is not the target's CPython (:func:`check_compile_target`).
    """
    check_compile_target(target)
    tag = f"cpython-{target.python[0]}{target.python[1]}"
    sources = _sources(tree)
    _write_out_virtual(tree, sources)
    jobs: list[_Job] = []
    for rp in sources:
        pyc_rp = _pyc_record_path(rp, tag)
        if pyc_rp in tree.files:  # cannot happen after slim/install; never clobber a file
            continue
        (tree.site / pyc_rp).parent.mkdir(exist_ok=True)
        jobs.append((str(tree.site / rp), str(tree.site / pyc_rp), f"/opt/{tree.prefix}/{rp}"))
    results = _compile_all(jobs, max(1, workers or tree.workers))
    added = done = 0
    failed: list[str] = []
    for src, pyc, _ in jobs:
        rp = os.path.relpath(src, tree.site).replace(os.sep, "/")
        why = results[src]
        if why is not None:
            failed.append(f"{rp} ({why})")
            continue
        os.chmod(pyc, 0o644)  # py_compile copies the source's mode
        pyc_rp = os.path.relpath(pyc, tree.site).replace(os.sep, "/")
        added += tree.add_file(pyc_rp, tree.files[rp].dist, Path(pyc).read_bytes()).size
        done += 1
    tree.prune_empty_dirs()  # __pycache__ of sources that all failed
    note = None
    if failed:
        note = f"{len(failed)} file(s) did not compile, left as source (first: {failed[0]})"
    return StepResult(
        "compile",
        f"bytecode for CPython {target.python_str} (unchecked-hash .pyc, optimization 0)",
        done,
        0,
        note=note,
        bytes_added=added,
    )
