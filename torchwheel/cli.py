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

# Sub-command name → one-line help (in --help order). Each lives in torchwheel.commands.<name>.
COMMANDS: dict[str, str] = {
    "resolve": "Pick the torch wheel that installs on a Lambda target, and say why not the others.",
    "build": "Build a Lambda layer zip (or tree) from wheels, verified and reproducible.",
    "check": "Check layer zips before deploy: layout, tags, RECORD, ELF versions, sizes.",
    "runtimes": "List the Lambda runtimes torchwheel knows, with glibc / libstdc++ ceilings.",
    "tags": "Print the wheel tags a Lambda target accepts, one per line, best first.",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argparse tree; with ``only``, just that sub-command's module is imported.

    Importing one command's module (and so only the libraries it needs) keeps start-up
    short for CI gates such as ``torchwheel check``.
    """
    parser = argparse.ArgumentParser(
        prog="torchwheel",
        description="Get PyTorch onto AWS Lambda: resolve wheels, build and check layers.",
    )
    parser.add_argument("--version", action="version", version=f"torchwheel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, doc in COMMANDS.items():
        p = sub.add_parser(name, help=doc, description=doc)
        if only is None or name == only:
            mod = importlib.import_module(f"torchwheel.commands.{name}")
            mod.configure(p)
            p.set_defaults(_run=mod.run)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(args_list))
    try:
        args = parser.parse_args(args_list)
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
