"""Render :mod:`torchwheel.progress` events on stderr (stdout stays clean for ``--json``).

- on a terminal: a rich display per running step (bar, bytes, files, elapsed, ETA), and the
  step's one-line summary once it ends, so the steps stay visible as they happen;
- otherwise (CI logs, pipes): one plain line per finished step, e.g.
  ``zip: 5,360 files, 439.0 MiB, 21.0 s``;
- ``--quiet``: nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, TextIO

from ..progress import ProgressCallback, ProgressEvent
from ..report import err_console, human_bytes

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["Mode", "add_quiet_argument", "mode_from_args", "renderer", "summary_line"]

Mode = Literal["rich", "plain", "quiet"]


def add_quiet_argument(p: argparse.ArgumentParser) -> None:
    """``-q``/``--quiet``: no progress on stderr (errors and the result still print)."""
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress on stderr (a terminal shows a live display, other stderr one line "
        "per finished step)",
    )


def mode_from_args(args: argparse.Namespace, stream: TextIO | None = None) -> Mode:
    """``quiet`` with ``--quiet``, ``rich`` when stderr is a terminal, else ``plain``."""
    if getattr(args, "quiet", False):
        return "quiet"
    stream = sys.stderr if stream is None else stream
    return "rich" if stream.isatty() else "plain"


def summary_line(e: ProgressEvent) -> str:
    """``zip: 5,360 files, 439.0 MiB, 21.0 s`` — one finished step, for logs."""
    parts = []
    if e.files_done or e.files_total:
        unit = e.unit[:-1] if e.files_done == 1 and e.unit.endswith("s") else e.unit
        parts.append(f"{e.files_done:,} {unit}")
    if e.bytes_done:
        parts.append(human_bytes(e.bytes_done))
    if e.note:
        parts.append(e.note)
    parts.append(f"{e.seconds:.1f} s")
    return f"{e.step}: {', '.join(parts)}"


def _plain(stream: TextIO) -> ProgressCallback:
    def on_event(e: ProgressEvent) -> None:
        if e.kind == "end":
            stream.write(summary_line(e) + "\n")
            stream.flush()

    return on_event


class _Rich:
    """One rich task per running step; the summary line printed above it when it ends."""

    def __init__(self, prog: Progress) -> None:
        self.prog = prog
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, e: ProgressEvent) -> None:
        total = e.bytes_total if e.bytes_total is not None else e.files_total
        done = e.bytes_done if e.bytes_total is not None else e.files_done
        desc = f"{e.step} {e.item}" if e.item else e.step
        task = self.tasks.get(e.step)
        if e.kind in ("end", "fail"):
            if task is not None:
                self.prog.remove_task(task)
                del self.tasks[e.step]
            if e.kind == "end":
                self.prog.console.print(summary_line(e), highlight=False)
            return
        if task is None:
            self.tasks[e.step] = self.prog.add_task(desc, total=total, amount=_amount(e))
        else:
            self.prog.update(task, description=desc, completed=done, total=total, amount=_amount(e))


def _amount(e: ProgressEvent) -> str:
    parts = []
    if e.bytes_done or e.bytes_total:
        of = f"/{human_bytes(e.bytes_total)}" if e.bytes_total is not None else ""
        parts.append(f"{human_bytes(e.bytes_done)}{of}")
    if e.files_done or e.files_total:
        of = f"/{e.files_total:,}" if e.files_total is not None else ""
        parts.append(f"{e.files_done:,}{of} {e.unit}")
    return " · ".join(parts)


@contextmanager
def renderer(mode: Mode, stream: TextIO | None = None) -> Iterator[ProgressCallback | None]:
    """A progress callback for ``mode`` (``None`` when quiet), live while the block runs."""
    if mode == "quiet":
        yield None
        return
    if mode == "plain":
        yield _plain(sys.stderr if stream is None else stream)
        return
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=True,
    ) as prog:
        yield _Rich(prog)
