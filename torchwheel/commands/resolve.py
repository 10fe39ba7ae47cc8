"""Find the torch wheel that will install on a Lambda runtime, and why the others won't."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table
from rich.text import Text

from ..errors import NetworkError, NoCompatibleWheel
from ..index import IndexClient
from ..plan import Plan
from ..probe import WheelProbe
from ..remote import RemoteSize
from ..report import console, human_bytes, print_json
from ..resolution import Resolution, parse_specifier, resolve_target
from ..targets import Target, all_targets, make_target, parse_python, quotas, runtimes
from ._options import add_index_arguments, index_client_from_args
from ._plan import add_variant_arguments, closure_plan, render_plan
from ._rejected import summarize
from .tags import add_target_arguments

#: Rejected wheels shown in the human table without --verbose.
SHOWN_REJECTED = 12


def configure(p: argparse.ArgumentParser) -> None:
    """Add the ``resolve`` arguments."""
    add_target_arguments(p)
    p.add_argument("--package", default="torch", help="project to resolve (default torch)")
    p.add_argument(
        "--version",
        metavar="SPEC",
        dest="version_spec",
        help="PEP 440 specifier, e.g. '<2.6' or '==2.5.1' (a bare version means ==)",
    )
    p.add_argument("--pre", action="store_true", help="consider pre-releases")
    p.add_argument(
        "--all",
        action="store_true",
        help="resolve every runtime × architecture into one matrix (provided.* need --python)",
    )
    p.add_argument(
        "--include-deprecated",
        action="store_true",
        help="with --all: also the deprecated runtimes",
    )
    p.add_argument(
        "--size",
        action="store_true",
        help="plan the chosen wheel's closure: every package's variant, download and unzipped "
        "size from its zip directory (HTTP ranges, no download), and what it fits",
    )
    add_variant_arguments(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true", help="list every rejected wheel")
    add_index_arguments(p)


def _screening_json(res: Resolution, url: str) -> dict[str, Any]:
    """The variant and ELF needs learnt about one wheel before download (null when not read)."""
    s = res.screened.get(url)
    return {
        "variant": s.variant.to_dict() if s is not None and s.variant is not None else None,
        "elf": s.elf.to_dict() if s is not None and s.elf is not None else None,
    }


def resolution_json(
    res: Resolution, size: RemoteSize | None = None, plan: Plan | None = None
) -> dict[str, Any]:
    """The documented JSON object of one resolution (docs/json-schema.md, "resolve")."""
    chosen: dict[str, Any] | None = None
    if res.wheel is not None and res.verdict is not None:
        w = res.wheel
        chosen = {
            "filename": w.filename,
            "version": str(w.version),
            "url": w.url,
            "sha256": w.sha256,
            "size": size.zipped if size is not None else w.size,
            "unzipped_size": size.unzipped if size is not None else None,
            "tag": res.verdict.best_tag,
            "requires_python": w.requires_python,
            "unverified": res.verdict.unverified,
            "warnings": list(res.verdict.warnings),
            "largest": (
                [{"name": n, "size": s} for n, s in size.largest] if size is not None else None
            ),
            "source": w.source,
            **_screening_json(res, w.url),
        }
    t = res.target
    return {
        "package": res.package,
        "runtime": t.runtime.name,
        "arch": t.arch,
        "python": t.python_str,
        "specifier": str(res.specifier) if res.specifier else None,
        "chosen": chosen,
        "summary": res.summary,
        "also_compatible": [
            {"filename": c.filename, "version": str(c.version), "tag": v.best_tag}
            for c, v in res.compatible[1:]
        ],
        "rejected": [
            {
                "filename": c.filename,
                "reasons": list(v.reasons),
                "variant": _screening_json(res, c.url)["variant"],
            }
            for c, v in res.rejected
        ],
        "notes": list(res.notes),
        "sources": list(res.sources),
        "variant": res.variant,
        "read_before_download": {"requests": res.probe_requests, "bytes": res.probe_bytes},
        "plan": plan.to_dict() if plan is not None else None,
    }


def hidden_targets(args: argparse.Namespace) -> list[dict[str, str]]:
    """What ``--all`` leaves out, why, and the option that shows it."""
    hidden = []
    for rt in runtimes(include_deprecated=True):
        if rt.is_deprecated() and not args.include_deprecated:
            since = rt.deprecated.isoformat() if rt.deprecated else "?"
            hidden.append(
                {
                    "runtime": rt.name,
                    "why": f"deprecated since {since}",
                    "show_with": "--include-deprecated",
                }
            )
        elif rt.python is None and not args.python:
            hidden.append(
                {
                    "runtime": rt.name,
                    "why": "brings no Python of its own",
                    "show_with": "--python 3.X",
                }
            )
    return hidden


def _targets(args: argparse.Namespace) -> list[Target]:
    if not args.all:
        return [make_target(args.arch, args.python, runtime=args.runtime)]
    provided = parse_python(args.python) if args.python else None
    return all_targets(include_deprecated=args.include_deprecated, provided_python=provided)


def _sizes(results: list[Resolution], idx: IndexClient, want: bool) -> dict[str, RemoteSize]:
    """The chosen wheels' sizes from their central directories (kept per sha256)."""
    sizes: dict[str, RemoteSize] = {}
    if not want:
        return sizes
    probe = WheelProbe.for_index(idx)
    for r in results:
        if r.wheel is not None and r.wheel.url not in sizes:
            f = probe.sizes(r.wheel)
            if f.files is None or f.zipped is None or f.unzipped is None:
                continue  # the server ignores Range
            sizes[r.wheel.url] = RemoteSize(
                url=r.wheel.url,
                zipped=f.zipped,
                unzipped=f.unzipped,
                members=f.files,
                largest=f.largest,
                requests=0,
                ranged=True,
            )
    return sizes


def _plan(
    res: Resolution, idx: IndexClient, args: argparse.Namespace
) -> tuple[Plan | None, str | None]:
    """The plan of the chosen wheel's closure, or why there is none."""
    if res.wheel is None or not args.size or args.all:
        return None, None
    pinned = f"{res.package}=={res.wheel.version}"
    try:
        _, plan = closure_plan(
            [pinned],
            res.target,
            idx,
            variant=args.variant,
            verify_elf=args.verify_elf,
            prereleases=True if args.pre else None,
        )
    except (NoCompatibleWheel, NetworkError) as exc:
        return None, f"no plan for the closure of {pinned}: {exc}"
    return plan, None


def run(args: argparse.Namespace) -> int:
    """Resolve, print, and exit 0 (all targets have a wheel) or 1 (some have none)."""
    spec = parse_specifier(args.version_spec)
    targets = _targets(args)
    prereleases = True if args.pre else None
    with index_client_from_args(args) as idx:
        results = [
            resolve_target(
                t,
                idx,
                package=args.package,
                version=spec,
                prereleases=prereleases,
                variant=args.variant,
                verify_elf=args.verify_elf,
            )
            for t in targets
        ]
        sizes = _sizes(results, idx, args.size)
        plan, plan_error = _plan(results[0], idx, args)
        hosts = idx.hosts  # every host contacted, for --json
    if plan_error is not None:
        results[0].notes.append(plan_error)
    missing = sum(1 for r in results if r.wheel is None)
    if args.json:
        docs = [
            resolution_json(r, sizes.get(r.wheel.url) if r.wheel else None, plan) for r in results
        ]
        if args.all:
            print_json(
                {
                    "schema": "torchwheel.resolve-matrix/1",
                    "results": docs,
                    "hidden": hidden_targets(args),
                    "hosts": hosts,
                }
            )
        else:
            print_json({"schema": "torchwheel.resolve/1", **docs[0], "hosts": hosts})
    elif args.all:
        _print_matrix(results, sizes, args)
    else:
        _print_one(results[0], sizes, args)
        if plan is not None:
            render_plan(plan)
    return 1 if missing else 0


# -- human output --------------------------------------------------------------------------------


def _size_notes(size: RemoteSize) -> list[str]:
    q = quotas()
    notes = [
        f"{human_bytes(size.zipped)} zipped, {human_bytes(size.unzipped)} unzipped "
        f"({size.members} files, read from the zip directory by HTTP ranges)"
    ]
    if size.unzipped > q.unzipped:
        notes.append(
            f"unzipped it is over Lambda's {human_bytes(q.unzipped)} limit for a function and "
            "all its layers: slim it, ship it compressed and unpack into /tmp, or use a "
            "container image"
        )
    if size.largest:
        top = ", ".join(f"{n} {human_bytes(s)}" for n, s in size.largest[:3])
        notes.append(f"largest members: {top}")
    return notes


def _print_one(res: Resolution, sizes: dict[str, RemoteSize], args: argparse.Namespace) -> None:
    out = console()
    t = res.target
    rt = t.runtime
    out.print(
        f"[bold]{res.package}[/bold] for [bold]{rt.name}/{t.arch}[/bold] "
        f"(CPython {t.python_str}, {rt.os_short}, glibc {rt.glibc_str})"
    )
    table = Table(show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("wheel", overflow="fold")
    table.add_column("verdict", overflow="fold")
    if res.wheel is not None and res.verdict is not None:
        table.add_row(
            Text("chosen", style="bold green"),
            res.wheel.filename,
            f"compatible ({res.verdict.best_tag})",
        )
    for c, v in res.compatible[1:6]:
        table.add_row(Text("ok", style="green"), c.filename, f"compatible ({v.best_tag})")
    rejected = res.rejected
    summary = summarize(rejected, t)
    # near misses (this CPython, this machine) first; the rest counted by reason
    shown = list(rejected) if args.verbose else list(summary.near[:SHOWN_REJECTED])
    for c, v in shown:
        table.add_row(Text("no", style="red"), c.filename, "; ".join(v.reasons))
    out.print(table)
    if not args.verbose and len(summary.near) > len(shown):
        out.print(
            f"… and {len(summary.near) - len(shown)} more for CPython {t.python_str}/{t.arch}"
        )
    if not args.verbose and summary.others:
        out.print(f"{summary.line()} (--verbose or --json lists every one)")
    if not res.candidates:
        out.print(f"no {res.package} wheels at all on {', '.join(res.sources)}")
    out.print(Text(res.summary, style="bold" if res.wheel else "bold red"))
    if res.wheel is not None:
        out.print(f"url: {res.wheel.url}")
        if res.wheel.sha256:
            out.print(f"sha256: {res.wheel.sha256}")
    notes = list(res.notes)
    size = sizes.get(res.wheel.url) if res.wheel else None
    if size is not None:
        notes = _size_notes(size) + notes
    elif res.wheel is not None and res.wheel.size:
        notes.insert(0, f"{human_bytes(res.wheel.size)} zipped (--size reads the unzipped size)")
    for n in notes:
        out.print(f"note: {n}")


def _print_matrix(
    results: list[Resolution], sizes: dict[str, RemoteSize], args: argparse.Namespace
) -> None:
    out = console()
    pkg = results[0].package if results else args.package
    table = Table(title=f"{pkg} wheels for every Lambda runtime")
    for col in (
        "runtime",
        "arch",
        "CPython",
        "glibc",
        pkg,
        "wheel tag",
        "why not newer / why none",
    ):
        table.add_column(col, overflow="fold", no_wrap=col in ("runtime", "arch"))
    if args.size:
        table.add_column("unzipped", justify="right")
    notes: list[str] = []
    for r in results:
        t = r.target
        why = r.why or ""
        if r.wheel is not None and r.verdict is not None:
            version = Text(str(r.wheel.version), style="green")
            tag = r.verdict.best_tag or ""
            if r.verdict.unverified:
                tag += " *"
        else:
            version = Text("none", style="bold red")
            tag = "—"
        row: list[Any] = [
            t.runtime.name,
            t.arch,
            t.python_str,
            t.runtime.glibc_str,
            version,
            tag,
            why,
        ]
        if args.size:
            s = sizes.get(r.wheel.url) if r.wheel else None
            row.append(human_bytes(s.unzipped) if s else "—")
        table.add_row(*row)
        for n in r.notes:
            if n not in notes and not n.startswith("linux_"):
                notes.append(n)
    out.print(table)
    if any(r.verdict is not None and r.verdict.unverified for r in results):
        out.print(
            "* linux_* wheels promise nothing about glibc: compatible by tag but unverified; "
            "run `torchwheel check` on the built layer"
        )
    for n in notes:
        out.print(f"note: {n}")
    by_option: dict[str, list[str]] = {}
    for h in hidden_targets(args):
        by_option.setdefault(h["show_with"], []).append(f"{h['runtime']} ({h['why']})")
    for option, names in by_option.items():
        out.print(f"not shown: {', '.join(names)}; {option} shows them")
