"""List the Lambda runtimes torchwheel knows, with glibc / libstdc++ ceilings."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from rich.table import Table

from ..report import console, print_json
from ..targets import Runtime, runtimes


def configure(p: argparse.ArgumentParser) -> None:
    """Add the ``runtimes`` arguments."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def runtime_json(rt: Runtime) -> dict[str, Any]:
    """The documented JSON form of a runtime (docs/json-schema.md)."""
    return {
        "name": rt.name,
        "os": rt.os,
        "python": rt.python_str,
        "glibc": rt.glibc_str,
        "glibcxx": rt.glibcxx_str,
        "cxxabi": rt.cxxabi_str,
        "architectures": list(rt.architectures),
        "deprecated": rt.deprecated.isoformat() if rt.deprecated else None,
        "is_deprecated": rt.is_deprecated(),
        "unconfirmed": list(rt.unconfirmed),
        "notes": rt.notes(),
        "sources": rt.sources,
    }


def run(args: argparse.Namespace) -> int:
    """Print the runtime table."""
    rts = runtimes()
    if args.json:
        print_json({"schema": "torchwheel.runtimes/1", "runtimes": [runtime_json(r) for r in rts]})
        return 0
    table = Table(title="AWS Lambda Python runtimes")
    for col in ("runtime", "OS", "CPython", "glibc", "GLIBCXX / CXXABI", "arch", "deprecated"):
        table.add_column(col, no_wrap=col in ("runtime", "glibc"))
    today = dt.date.today()
    notes: list[str] = []
    for r in rts:
        dep = r.deprecated.isoformat() if r.deprecated else "—"
        if r.is_deprecated(today):
            dep += " (past)"
        cxx = f"{r.glibcxx_str} / {r.cxxabi_str}" + (" *" if r.unconfirmed else "")
        table.add_row(
            r.name,
            r.os_short,
            r.python_str or "yours",
            r.glibc_str,
            cxx,
            ", ".join(r.architectures),
            dep,
        )
        for n in r.notes():
            if n not in notes:
                notes.append(n)
    out = console()
    out.print(table)
    for n in notes:
        out.print(f"* {n}")
    return 0
