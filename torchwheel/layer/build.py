"""Build a Lambda layer: the whole pipeline, driven by one frozen :class:`BuildOptions`.

    resolve the closure (:mod:`torchwheel.deps`) → fetch each wheel → install each wheel
    (:class:`~torchwheel.layer.install.LayerTree`) → slim → strip → compile (``--compile``)
    → RECORD files → pack (``--packed``) → zip (:func:`torchwheel.zipwrite.write_layer_zip`)
    and/or publish the tree → :class:`~torchwheel.layer.report.LayerReport`

Each step is usable alone; this module only runs them in order, times them and cleans up
(nothing is left half-written on error).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..atomic import check_output_dir, clean_stale, normalize_modes, signals_deferred, temp_dir
from ..deps import Closure, Pin
from ..errors import TorchwheelError
from ..index import IndexClient
from ..packed import DEFAULT_LEVEL as PACKED_DEFAULT_LEVEL
from ..packed import (
    MEASURE_STEM,
    PACKED_STEM,
    PackInfo,
    make_packed_tree,
)
from ..progress import ProgressCallback, Step
from ..report import human_bytes
from ..targets import make_target
from ..zipwrite import DEFAULT_COMPRESSLEVEL, ZipResult, write_layer_zip
from . import bytecode, slimming, stripping
from .getting import Fetched, StepClock, resolve_and_fetch, resolve_zstandard
from .install import LayerTree
from .older import find_older_release
from .options import BuildOptions, requirements
from .report import (
    LayerReport,
    OlderRelease,
    PackageSize,
    QuotaCheck,
    StepResult,
    quota_checks,
    suggestions,
)

__all__ = ["BuildOptions", "build_layer", "resolve_zstandard", "run_build"]

#: Temp trees of a zip-only build: ``torchwheel-layer-<pid>-<random>`` in the temp directory.
_TEMP_STEM = "torchwheel-layer"


def build_layer(
    packages: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = ("torch",),
    *,
    arch: str,
    python: str | tuple[int, int] | None = None,
    runtime: str | None = None,
    version: str | None = None,
    output: str | os.PathLike[str] | None = None,
    tree: str | os.PathLike[str] | None = None,
    slim: bool = False,
    strip: bool = False,
    no_deps: bool = False,
    include_runtime_packages: bool = False,
    layout: str = "site-packages",
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    index_url: str | None = None,
    extra_index_urls: Sequence[str] = (),
    find_links: Sequence[str] = (),
    no_index: bool = False,
    offline: bool = False,
    client: httpx.Client | None = None,
    index: IndexClient | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    prereleases: bool | None = None,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    packed: bool = False,
    zstd_level: int | None = None,
    compile_bytecode: bool = False,
    variant: str = "cpu",
    verify_elf: bool = False,
) -> LayerReport:
    """Build a Lambda layer for ``packages``: a requirement string or local ``.whl`` path, or
    a sequence of them (anything else raises :class:`TypeError`).

    Resolves the ``Requires-Dist`` closure for the target (``runtime``/``arch``/``python``;
    see :func:`torchwheel.make_target`) unless ``no_deps``, downloads and verifies each
    wheel, installs them into a tree, optionally slims and strips it, and writes ``output``
    (a zip) and/or ``tree`` (the unzipped directory). ``version`` pins the first package
    (``"2.5.1"`` or a specifier like ``">=2.5,<2.6"``). ``index`` is an
    :class:`~torchwheel.index.IndexClient` (built from the index options otherwise).
    Returns a :class:`LayerReport`; nothing is left half-written on error.

    ``packed`` ships the tree as a zstd archive (level ``zstd_level``) plus a loader that
    unpacks it into ``/tmp`` (see :mod:`torchwheel.packed`, docs/packed-layers.md).

    ``compile_bytecode`` adds unchecked-hash ``.pyc`` files for every ``.py`` after slimming
    and stripping (see :func:`~torchwheel.layer.bytecode.compile_bytecode`); it needs the
    running interpreter to be the target's CPython and raises :class:`InputError` before any
    download otherwise.

    ``variant`` is the torch build to take (``cpu``: a CUDA/ROCm/XPU build is never chosen;
    ``cuda``, ``rocm``, ``xpu`` or ``any`` to opt in); ``verify_elf`` reads every wheel's ELF
    needs before choosing it (``linux_*`` wheels always): see :mod:`torchwheel.screen`.

    The keywords make a :class:`BuildOptions`; :func:`run_build` takes one directly.
    """
    options = BuildOptions(
        target=make_target(arch, python, runtime=runtime),
        packages=requirements(packages),
        version=version,
        output=Path(output) if output is not None else None,
        tree=Path(tree) if tree is not None else None,
        layout=layout,
        slim=slim,
        strip=strip,
        compile_bytecode=compile_bytecode,
        no_deps=no_deps,
        include_runtime_packages=include_runtime_packages,
        prereleases=prereleases,
        compresslevel=compresslevel,
        packed=packed,
        zstd_level=zstd_level,
        workers=workers,
        index_url=index_url,
        extra_index_urls=tuple(extra_index_urls),
        find_links=tuple(find_links),
        no_index=no_index,
        offline=offline,
        cache_dir=Path(cache_dir) if cache_dir else None,
        variant=variant,
        verify_elf=verify_elf,
    )
    return run_build(options, index=index, client=client, progress=progress)


# ---------------------------------------------------------------------------------------------
# the steps
# ---------------------------------------------------------------------------------------------


@dataclass
class _Built:
    """The installed, edited tree and what was written from it."""

    tree: LayerTree
    steps: list[StepResult]
    slim_would_save: int
    pack_info: PackInfo | None
    zipped: ZipResult | None


def _materialize(options: BuildOptions) -> Callable[[str], bool] | None:
    """Which files a zip-only build writes to disk: what strip rewrites, what compile reads.
    Everything else is verified while streaming and zipped straight from the wheels (the
    same bytes either way); a tree or packed build writes every file."""
    if options.tree is not None or options.packed:
        return None

    def on_disk(rp: str) -> bool:
        return (options.strip and stripping.is_shared_object(rp)) or (
            options.compile_bytecode and rp.endswith(".py")
        )

    return on_disk


def _install(
    options: BuildOptions, wheels: list[tuple[Pin, Path]], root: Path, clock: StepClock
) -> LayerTree:
    with clock.step("install") as s:
        lt = LayerTree(
            root,
            options.prefix,
            workers=options.workers,
            slim=options.slim,
            materialize=_materialize(options),
        )
        for pin, path in wheels:
            s.update(item=pin.name)
            lt.install(
                path,
                requested=pin.requested,
                source_url=pin.candidate.url,
                sha256=pin.candidate.sha256,
                progress=s,
            )
    return lt


def _edit(options: BuildOptions, lt: LayerTree, clock: StepClock) -> tuple[list[StepResult], int]:
    """Slim (or measure what slimming would save), strip, compile; the steps and the saving."""
    steps: list[StepResult] = []
    with clock.step("slim") as s:
        if options.slim:
            slimmed = slimming.slim(lt)
            steps.extend(slimmed)
            would_save = 0
            _summarize(s, slimmed, "removed")
        else:
            would_save = sum(r.bytes_saved for r in slimming.slim(lt, dry_run=True))
            s.note = f"not asked; --slim would save {human_bytes(would_save)}"
    if options.strip:
        with clock.step("strip") as s:
            stripped = stripping.strip(lt, workers=options.workers, progress=s)
            steps.append(stripped)
            s.note = f"saved {human_bytes(stripped.bytes_saved)}"
    if options.compile_bytecode:  # after slim: slim removes __pycache__
        with clock.step("compile") as s:
            compiled = bytecode.compile_bytecode(lt, options.target, workers=options.workers)
            steps.append(compiled)
            _summarize(s, [compiled], "added")
    return steps, would_save


def _summarize(s: Step, results: Sequence[StepResult], verb: str) -> None:
    """A finished edit step's counts for its progress line."""
    s.update(files_done=sum(r.files for r in results))
    saved = sum(r.bytes_added if verb == "added" else r.bytes_saved for r in results)
    s.note = f"{verb} {human_bytes(saved)}"


def _pack(
    options: BuildOptions, lt: LayerTree, out_root: Path, zstd_wheel: Path | None, clock: StepClock
) -> PackInfo:
    """Lay out the packed layer of the tree ``lt`` in ``out_root``."""
    with clock.step("pack", files_total=len(lt.files), bytes_total=lt.unzipped_bytes()) as s:
        level = PACKED_DEFAULT_LEVEL if options.zstd_level is None else options.zstd_level
        info = make_packed_tree(
            lt.site, out_root, options.target, zstandard_wheel=zstd_wheel, level=level, progress=s
        )
        s.note = f"zstd -{level}: {human_bytes(info.archive_size)} archive"
        if info.unpack_seconds is not None:
            s.note += f", unpacked again in {info.unpack_seconds:.1f} s to verify"
        return info


def _zip(
    options: BuildOptions, output: Path, lt: LayerTree, out_root: Path, clock: StepClock
) -> ZipResult:
    with clock.step("zip") as s:
        if options.packed:  # the archive is zstd already: storing it beats deflating it again
            return write_layer_zip(
                out_root, output, compresslevel=0, workers=options.workers, progress=s
            )
        return write_layer_zip(
            out_root,
            output,
            raw_sources=lt.raw_sources(),
            virtual=lt.virtual_files(),
            compresslevel=options.compresslevel,
            workers=options.workers,
            progress=s,
        )


def _prepare_tree_dir(tree: Path) -> Path:
    """A fresh temporary directory next to ``tree``, which is checked again as
    :class:`BuildOptions` checked it (it may have changed during the build)."""
    check_output_dir(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{tree.name}.{os.getpid()}."))


def _publish_tree(tmp_root: Path, tree: Path) -> None:
    normalize_modes(tmp_root)  # the zip's modes, not the temp dir's 0700 / mkstemp's 0600
    if tree.exists():
        old = Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{tree.name}.{os.getpid()}.old."))
        os.replace(tree, old / "x")
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp_root, tree)


def _clean_stale(options: BuildOptions) -> None:
    """Remove what builds killed before they could clean up (SIGKILL) left: temp trees and
    files named with a process id that is gone."""
    clean_stale(Path(tempfile.gettempdir()), (_TEMP_STEM, PACKED_STEM, MEASURE_STEM))
    if options.output is not None:
        clean_stale(Path(os.path.abspath(options.output)).parent, (f".{options.output.name}",))
    if options.tree is not None:
        tree = Path(os.path.abspath(options.tree))
        clean_stale(tree.parent, (f".{tree.name}", PACKED_STEM))


def _assemble(options: BuildOptions, fetched: Fetched, clock: StepClock) -> _Built:
    """Install, edit, pack, zip and publish, in temporary directories removed afterwards."""
    tree = options.tree
    made: list[Path] = []  # temp dirs, removed at the end (a published one is gone already)
    lt: LayerTree | None = None
    done = False
    try:
        with signals_deferred():  # Ctrl-C / SIGTERM land once the dir is in `made`
            made.append(_prepare_tree_dir(tree) if tree is not None else temp_dir(_TEMP_STEM))
        root = out_root = made[0]
        lt = _install(options, fetched.wheels, root, clock)
        steps, would_save = _edit(options, lt, clock)
        lt.finalize()
        pack_info = None
        if options.packed:  # the packed layer is laid out beside the tree (same filesystem)
            with signals_deferred():
                made.append(temp_dir(PACKED_STEM, tree.parent if tree else None))
            out_root = made[-1]
            pack_info = _pack(options, lt, out_root, fetched.zstd_wheel, clock)
        zipped = None
        if options.output is not None:
            zipped = _zip(options, options.output, lt, out_root, clock)
        if tree is not None:
            with signals_deferred():  # the old tree out, the new one in: never half of it
                _publish_tree(out_root, tree)
        done = True
    finally:
        leftovers = [d for d in made if d.exists() and d != tree]  # published: gone already
        if done and leftovers and lt is not None and lt.materialize is None:  # seconds
            with clock.step("cleanup", files_total=len(lt.files)) as s:
                _remove(leftovers)
                s.update(files_done=len(lt.files))
        else:
            _remove(leftovers)
    return _Built(lt, steps, would_save, pack_info, zipped)


def _remove(dirs: Sequence[Path]) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _package_sizes(lt: LayerTree) -> list[PackageSize]:
    """Each distribution's installed size, largest first."""
    pkgs = []
    for d in lt.dists.values():
        size = sum(lt.files[rp].size for rp in d.files if rp in lt.files)
        pkgs.append(
            PackageSize(
                d.display_name,
                d.version,
                d.wheel.name,
                len(d.files),
                size,
                d.wheel_bytes,
                d.requested,
                d.source_url,
                d.sha256,
            )
        )
    pkgs.sort(key=lambda p: -p.unzipped_bytes)
    return pkgs


def _probe_older(
    options: BuildOptions,
    pkgs: list[PackageSize],
    unzipped: int,
    checks: list[QuotaCheck],
    index: IndexClient,
    client: httpx.Client | None,
) -> tuple[OlderRelease | None, list[str], bool]:
    """Over the hard quota with a requested package biggest: look for an older release that
    fits. Returns it (or None), notes, and whether the look-up ran to the end."""
    big = pkgs[0] if pkgs else None
    if big is None or not big.requested or not any(c.hard and not c.fits for c in checks):
        return None, [], False
    try:
        older = find_older_release(
            big, unzipped, options.target, index, slimmed=options.slim, client=client
        )
    except (TorchwheelError, httpx.HTTPError) as exc:
        return None, [f"could not look for an older {big.name} that fits: {exc}"], False
    return older, [], True


def _report(
    options: BuildOptions,
    fetched: Fetched,
    built: _Built,
    client: httpx.Client | None,
    timings: dict[str, float],
) -> LayerReport:
    lt, pack_info, zres = built.tree, built.pack_info, built.zipped
    pkgs = _package_sizes(lt)
    unzipped = lt.unzipped_bytes()
    if pack_info is not None and pack_info.layer_bytes is not None:
        unzipped = pack_info.layer_bytes
    largest = sorted(((tf.rel, tf.size) for tf in lt.files.values()), key=lambda x: (-x[1], x[0]))
    checks = quota_checks(zres.zipped_bytes if zres else None, unzipped)
    older, probe_notes, probed_ok = _probe_older(
        options, pkgs, unzipped, checks, fetched.index, client
    )
    advice = suggestions(
        checks,
        slimmed=options.slim,
        stripped=options.strip,
        slim_would_save=built.slim_would_save,
        packages=pkgs,
        human=human_bytes,
        older=older,
        probed_older=probed_ok,
    )
    deprecated = options.target.runtime.deprecation_note()
    notes = [*([deprecated] if deprecated else []), *fetched.closure.notes, *lt.notes, *probe_notes]
    if pack_info is not None:
        notes.extend(pack_info.notes)
    target = options.target
    return LayerReport(
        target=target.label,
        runtime=target.runtime.name,
        arch=target.arch,
        python=target.python_str,
        layout=options.layout,
        prefix=options.prefix,
        output=options.output,
        tree=options.tree,
        zipped_bytes=zres.zipped_bytes if zres else None,
        unzipped_bytes=unzipped,
        files=len(lt.files) if pack_info is None else len(pack_info.extra_files) + 1,
        sha256=zres.sha256 if zres else None,
        raw_copied=zres.raw_copied if zres else 0,
        compressed=zres.compressed if zres else 0,
        packages=tuple(pkgs),
        largest_files=tuple(largest[:10]),
        steps=tuple(built.steps),
        skipped_runtime_packages=tuple(fetched.closure.skipped_runtime),
        quotas=tuple(checks),
        suggestions=tuple(advice),
        notes=tuple(notes),
        timings=timings,
        packed=pack_info.to_json() if pack_info is not None else None,
        older_release=older,
    )


def run_build(
    options: BuildOptions,
    *,
    index: IndexClient | None = None,
    client: httpx.Client | None = None,
    progress: ProgressCallback | None = None,
    closure: Closure | None = None,
) -> LayerReport:
    """Build the layer ``options`` describe (see :func:`build_layer`).

    ``index`` is used as given (and left open); without one an
    :class:`~torchwheel.index.IndexClient` is made from the options' index fields (on
    ``client`` when given) and closed after the downloads. ``closure`` is the closure already
    resolved for these options (``build`` resolves it first to print the plan), so it is not
    resolved again.
    """
    clock = StepClock(progress)
    _clean_stale(options)
    fetched = resolve_and_fetch(options, index, client, clock, closure)
    built = _assemble(options, fetched, clock)
    clock.timings["total"] = time.perf_counter() - clock.start
    return _report(options, fetched, built, client, clock.timings)
