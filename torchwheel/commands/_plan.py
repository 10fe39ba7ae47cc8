"""Options and rendering shared by ``resolve`` and ``build`` for builds and plans (issue 11).

``--variant`` (which torch build to accept: CPU by default) and ``--verify-elf`` (read every
wheel's glibc / libstdc++ needs by HTTP ranges, not only ``linux_*`` ones'), the closure plan
(:func:`closure_plan`) and its table (:func:`render_plan`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from ..deps import Closure, resolve_closure
from ..index import IndexClient
from ..plan import Plan, make_plan
from ..probe import WheelProbe
from ..report import console, human_bytes
from ..targets import Target, quotas
from ..variants import WANTS

__all__ = ["add_variant_arguments", "closure_plan", "render_plan"]


def add_variant_arguments(p: argparse.ArgumentParser) -> None:
    """``--variant`` and ``--verify-elf``."""
    p.add_argument(
        "--variant",
        choices=WANTS,
        default="cpu",
        help="torch build to accept: cpu (default; Lambda has no GPU), cuda, rocm, xpu or any",
    )
    p.add_argument(
        "--verify-elf",
        action="store_true",
        help="read every wheel's glibc/libstdc++ needs by HTTP ranges before choosing it "
        "(linux_* wheels always are)",
    )


def closure_plan(
    packages: Sequence[str],
    target: Target,
    index: IndexClient,
    *,
    variant: str = "cpu",
    verify_elf: bool = False,
    version: str | None = None,
    no_deps: bool = False,
    include_runtime_packages: bool = False,
    prereleases: bool | None = None,
) -> tuple[Closure, Plan]:
    """Resolve the closure of ``packages`` for ``target`` and plan it (nothing downloaded)."""
    probe = WheelProbe.for_index(index)
    closure = resolve_closure(
        list(packages),
        target,
        index,
        version=version,
        no_deps=no_deps,
        include_runtime_packages=include_runtime_packages,
        prereleases=prereleases,
        cache_dir=index.cache.directory.parent if index.cache is not None else None,
        variant=variant,
        verify_elf=verify_elf,
        probe=probe,
    )
    return closure, make_plan(closure, target, probe, variant=variant)


_FITS = {
    "plain": ("fits a plain layer", "green"),
    "packed": ("fits only a packed layer (--packed: zstd archive unpacked into /tmp)", "yellow"),
    "neither": ("fits neither a plain nor a packed layer", "red"),
}


def render_plan(plan: Plan) -> None:
    """The plan table: packages with version, variant, download and unzipped size; the fit."""
    out = console()
    t = plan.target
    table = Table(
        title=f"Plan for {t.runtime.name}/{t.arch} (CPython {t.python_str}), before download",
        title_justify="left",
    )
    for col in ("package", "version", "variant", "download", "unzipped", ""):
        table.add_column(col, justify="right" if col in ("download", "unzipped") else "left")
    for i in plan.items:
        variant = i.variant.name if i.variant is not None else ""
        note = Text(i.gpu, style="red") if i.gpu else Text("" if i.requested else "dependency")
        table.add_row(
            i.name,
            i.version,
            variant,
            human_bytes(i.download_bytes),
            human_bytes(i.unzipped_bytes),
            note,
        )
    table.add_row(
        Text("total", style="bold"),
        "",
        "",
        human_bytes(plan.download_bytes),
        human_bytes(plan.unzipped_bytes),
        f"{len(plan.items)} packages",
    )
    out.print(table)
    text, style = _FITS[plan.fits]
    out.print(
        Text(
            f"{text}: {human_bytes(plan.unzipped_bytes)} unzipped, packed archive about "
            f"{human_bytes(plan.packed_estimate)}; Lambda allows {human_bytes(quotas().unzipped)}",
            style=style,
        )
    )
    out.print(
        f"read before download: {plan.requests} request(s), "
        f"{human_bytes(plan.bytes_received)} ({plan.seconds:.1f} s)"
    )
    for n in plan.notes:
        out.print(f"note: {n}")
    for b in plan.blockers:
        out.print(Text(f"stop: {b}", style="bold red"))
