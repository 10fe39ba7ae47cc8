"""Build a Lambda layer zip (and/or tree) for torch and its dependencies."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..deps import Closure
from ..errors import InputError
from ..index import IndexClient
from ..layer import DEFAULT_COMPRESSLEVEL, LAYOUTS, LayerReport
from ..layer.build import BuildOptions, run_build
from ..packed import DEFAULT_LEVEL as PACKED_DEFAULT_LEVEL
from ..plan import Plan
from ..progress import ProgressCallback
from ..progress import step as progress_step
from ..report import console, err_console, human_bytes, print_json
from ..targets import make_target
from ._config import add_config_arguments, apply_config
from ._options import add_index_arguments, index_client_from_args, index_settings_from_args
from ._plan import add_variant_arguments, closure_plan, render_plan
from ._progress import add_quiet_argument, mode_from_args, renderer
from .tags import add_target_arguments


def configure(p: argparse.ArgumentParser) -> None:
    """Add the ``build`` arguments."""
    p.add_argument(
        "packages",
        nargs="*",
        metavar="PACKAGE[SPEC]",
        help="requirements to install (default: torch), e.g. 'torch==2.5.1' numpy; "
        "a path to a local .whl works too",
    )
    add_target_arguments(p, required_runtime=False)
    p.set_defaults(arch=None)  # x86_64 unless [tool.torchwheel] names one
    p.add_argument("-o", "--output", type=Path, help="write the layer zip here")
    p.add_argument(
        "--tree",
        type=Path,
        metavar="DIR",
        help="write the unzipped layer tree here (for SAM/CDK ContentUri)",
    )
    p.add_argument(
        "--slim",
        action="store_true",
        help="drop what CPU inference never loads (torch/test, torch/include, "
        "test binaries, headers, *.a, *.pyi)",
    )
    p.add_argument(
        "--strip",
        action="store_true",
        help="strip --strip-unneeded the shared objects (needs binutils' strip)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="add .pyc bytecode (unchecked-hash, reproducible): a bigger layer, "
        "~2 s less cold start for torch; needs this CPython to be the target's",
    )
    p.add_argument(
        "--no-deps",
        action="store_true",
        help="install the named packages only, not their Requires-Dist closure",
    )
    p.add_argument(
        "--include-runtime-packages",
        action="store_true",
        help="also install packages the python3.X runtime ships (boto3, ...)",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="site-packages",
        help="python/lib/python3.X/site-packages (default) or python/",
    )
    p.add_argument(
        "--compression-level",
        type=int,
        default=DEFAULT_COMPRESSLEVEL,
        metavar="0-9",
        help="deflate level for members that are not copied from "
        f"the wheels (0 stores; default {DEFAULT_COMPRESSLEVEL})",
    )
    p.add_argument(
        "--packed",
        action="store_true",
        help="ship the packages as one zstd archive + a loader that unpacks it into "
        "/tmp at the first import (see docs/packed-layers.md)",
    )
    p.add_argument(
        "--zstd-level",
        type=int,
        default=None,
        metavar="1-22",
        help=f"zstd level for --packed (default {PACKED_DEFAULT_LEVEL}; 19 is ~12%% "
        "smaller and ~50x slower to build)",
    )
    p.add_argument("--pre", action="store_true", help="allow pre-releases")
    add_variant_arguments(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (closure, variants, download and unzipped sizes, what it fits) "
        "and stop: nothing is downloaded, no output is written",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_quiet_argument(p)
    add_config_arguments(p)
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when the layer exceeds Lambda's 250 MB unzipped quota",
    )
    add_index_arguments(p)


def _planned(
    options: BuildOptions, index: IndexClient, progress: ProgressCallback | None
) -> tuple[Closure, Plan]:
    """Resolve the closure and plan it (the build's "resolve" step)."""
    with progress_step(progress, "resolve", unit="packages") as s:
        closure, plan = closure_plan(
            options.packages,
            options.target,
            index,
            variant=options.variant,
            verify_elf=options.verify_elf,
            version=options.version,
            no_deps=options.no_deps,
            include_runtime_packages=options.include_runtime_packages,
            prereleases=options.prereleases,
        )
        s.update(files_done=len(closure.pins))
    return closure, plan


def _plan_json(plan: Plan, closure: Closure, hosts: list[str]) -> dict[str, Any]:
    return {
        "schema": "torchwheel.plan/1",
        **plan.to_dict(),
        "closure_notes": list(closure.notes),
        "hosts": hosts,
    }


def _dry_run(args: argparse.Namespace) -> int:
    """``build --dry-run``: the plan only; exit 1 when a build would stop."""
    target = make_target(args.arch, args.python, runtime=args.runtime)
    with index_client_from_args(args) as index:
        closure, plan = closure_plan(
            tuple(args.packages) or ("torch",),
            target,
            index,
            variant=args.variant,
            verify_elf=args.verify_elf,
            no_deps=args.no_deps,
            include_runtime_packages=args.include_runtime_packages,
            prereleases=True if args.pre else None,
        )
        hosts = index.hosts
    if args.json:
        print_json(_plan_json(plan, closure, hosts))
    else:
        render_plan(plan)
        for n in closure.notes:
            console().print(f"note: {n}")
    return 1 if plan.blocked else 0


def run(args: argparse.Namespace) -> int:
    """Build the layer; print the report."""
    apply_config(args, keys=("runtime", "arch", "python"))
    args.arch = args.arch or "x86_64"
    if args.dry_run:
        return _dry_run(args)
    if args.output is None and args.tree is None:
        raise InputError("say where to write the layer: -o layer.zip and/or --tree DIR")
    if args.zstd_level is not None and not args.packed:
        raise InputError("--zstd-level applies to --packed layers only")
    settings = index_settings_from_args(args)
    cache_dir = getattr(args, "cache_dir", None) or settings.cache_dir
    options = BuildOptions(
        target=make_target(args.arch, args.python, runtime=args.runtime),
        packages=tuple(args.packages) or ("torch",),
        output=args.output,
        tree=args.tree,
        layout=args.layout,
        slim=args.slim,
        strip=args.strip,
        compile_bytecode=args.compile,
        no_deps=args.no_deps,
        include_runtime_packages=args.include_runtime_packages,
        prereleases=True if args.pre else None,
        compresslevel=args.compression_level,
        packed=args.packed,
        zstd_level=args.zstd_level,
        offline=settings.offline,
        cache_dir=Path(cache_dir) if cache_dir else None,
        variant=args.variant,
        verify_elf=args.verify_elf,
    )
    index = index_client_from_args(args)
    try:
        with renderer(mode_from_args(args)) as progress:
            closure, plan = _planned(options, index, progress)
            if not args.json:
                render_plan(plan)  # first, before any download
            report = None
            if not plan.blocked:
                report = run_build(options, index=index, progress=progress, closure=closure)
    finally:
        index.close()
    hosts = index.hosts  # every host contacted (index pages and downloads), for --json
    if report is None:  # stopped before any download
        if args.json:
            print_json(_plan_json(plan, closure, hosts))
        for b in plan.blockers:
            err_console().print(f"torchwheel: build stopped before download: {b}")
        return 1
    if args.json:
        print_json({**report.to_dict(), "plan": plan.to_dict(), "hosts": hosts})
    else:
        render(report)
    return 1 if args.strict and report.over_quota else 0


def render(report: LayerReport) -> None:
    """Rich tables: packages, steps, quotas, largest files, notes."""
    from rich.table import Table

    out = console()
    out.print(f"[bold]Layer for {report.target}[/bold] ({report.prefix}/)")
    t = Table(title="Packages", title_justify="left")
    t.add_column("package")
    t.add_column("version")
    t.add_column("unzipped", justify="right")
    t.add_column("wheel", justify="right")
    t.add_column("")
    for p in report.packages:
        t.add_row(
            p.name,
            p.version,
            human_bytes(p.unzipped_bytes),
            human_bytes(p.wheel_bytes),
            "" if p.requested else "dependency",
        )
    out.print(t)
    if report.steps:
        s = Table(title="Slimming", title_justify="left")
        s.add_column("step")
        s.add_column("files", justify="right")
        s.add_column("saved", justify="right")
        s.add_column("note")
        for st in report.steps:
            amount = (
                f"+{human_bytes(st.bytes_added)}" if st.bytes_added else human_bytes(st.bytes_saved)
            )
            s.add_row(st.step, str(st.files), amount, st.note or "")
        out.print(s)
    q = Table(title="Size vs Lambda quotas", title_justify="left")
    q.add_column("quota")
    q.add_column("limit", justify="right")
    q.add_column("layer", justify="right")
    q.add_column("")
    for c in report.quotas:
        status = "fits" if c.fits else f"over by {human_bytes(c.over_by)}"
        style = "green" if c.fits else ("red" if c.hard else "yellow")
        q.add_row(
            c.name, human_bytes(c.limit), human_bytes(c.actual), f"[{style}]{status}[/{style}]"
        )
    out.print(q)
    if report.packed is not None:
        _render_packed(report.packed)
    lf = Table(title="Largest files", title_justify="left")
    lf.add_column("file")
    lf.add_column("size", justify="right")
    for path, size in report.largest_files[:5]:
        lf.add_row(
            path[len(report.prefix) + 1 :] if path.startswith(report.prefix) else path,
            human_bytes(size),
        )
    out.print(lf)
    for n in report.notes:
        out.print(f"note: {n}")
    for s_ in report.suggestions:
        out.print(f"what would fit: {s_}")
    if report.output is not None:
        out.print(
            f"wrote {report.output} ({human_bytes(report.zipped_bytes)}, {report.files} files, "
            f"sha256 {report.sha256})"
        )
    if report.tree is not None:
        out.print(f"wrote tree {report.tree} ({human_bytes(report.unzipped_bytes)})")


def _render_packed(p: dict[str, Any]) -> None:
    """The packed-layer lines: archive, /tmp need, unpack time, the handler line."""
    out = console()
    need = p["ephemeral_storage_needed_mb"]
    default = p["ephemeral_storage_default_mb"]
    out.print(
        f"[bold]Packed[/bold]: {p['archive']} zstd -{p['level']}: "
        f"{human_bytes(p['archive_bytes'])} holding {human_bytes(p['unpacked_bytes'])} "
        f"({p['files']} files); unpacks with {p['decompressor']}"
    )
    tmp_note = (
        f"[yellow]more than the default {default} MB: set EphemeralStorage to "
        f"{p['ephemeral_storage_recommended_mb']} MB[/yellow]"
        if p["needs_ephemeral_storage"]
        else f"within the default {default} MB"
    )
    out.print(f"  /tmp needed: {need} MB, {tmp_note}")
    if p.get("unpack_seconds") is not None:
        out.print(
            f"  unpack measured here ({os.cpu_count()} CPUs, into "
            f"{p['unpack_measured_in']}): {p['unpack_seconds']:.2f} s; a 1-vCPU Lambda "
            "(under 1,769 MB memory) is slower"
        )
    out.print(f"  handler's first line: [bold]{p['handler_line']}[/bold]")
