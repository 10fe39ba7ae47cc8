"""Command-line entry point: ``main(argv) -> int``.

One module per sub-command lives in ``torchwheel/commands``; each has
``configure(parser)`` and ``run(args) -> int``. Exceptions are mapped to exit codes here
and nowhere else: 0 ok, 1 a real finding, 2 usage / input / network error. Tracebacks are
for bugs only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import TorchwheelError

# Sub-command name → module in torchwheel.commands (in --help order).
COMMANDS: dict[str, str] = {
    "resolve": "resolve",
    "build": "build",
    "check": "check",
    "runtimes": "runtimes",
    "tags": "tags",
}


def _available() -> dict[str, object]:
    mods: dict[str, object] = {}
    for name, modname in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"torchwheel.commands.{modname}")
        except ModuleNotFoundError as exc:
            if exc.name != f"torchwheel.commands.{modname}":
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="torchwheel",
        description="Get PyTorch onto AWS Lambda: resolve wheels, build and check layers.",
    )
    parser.add_argument("--version", action="version", version=f"torchwheel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, mod in _available().items():
        doc = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
        p = sub.add_parser(name, help=doc, description=doc)
        mod.configure(p)  # type: ignore[attr-defined]
        p.set_defaults(_run=mod.run)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or usage error (2)
        return int(exc.code or 0)
    try:
        return int(args._run(args))
    except TorchwheelError as exc:
        print(f"torchwheel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("torchwheel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
