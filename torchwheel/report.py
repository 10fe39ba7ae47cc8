"""Rendering helpers shared by the sub-commands: rich consoles, JSON output, byte sizes.

Library functions return data; only the CLI layer (``torchwheel/commands``) prints, through
these helpers.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

__all__ = ["console", "err_console", "human_bytes", "print_json"]


def console() -> Console:
    """Console for results on stdout (plain text when stdout is not a terminal)."""
    tty = sys.stdout.isatty()
    return Console(soft_wrap=not tty, highlight=False, width=None if tty else 160)


def err_console() -> Console:
    """Console for notes and progress on stderr."""
    return Console(stderr=True, soft_wrap=True, highlight=False)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (stable key order as given)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human_bytes(n: int | None) -> str:
    """``262144000`` → ``"250.0 MiB"`` (AWS's MB is MiB)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
