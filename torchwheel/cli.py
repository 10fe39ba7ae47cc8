"""Command-line entry point: ``main(argv) -> int``.

One module per sub-command lives in ``torchwheel/commands``; each has
``configure(parser)`` and ``run(args) -> int``. Exceptions are mapped to exit codes here
and nowhere else: 0 ok, 1 a real finding, 2 usage / input / network error (an
:class:`~torchwheel.errors.TorchwheelError`, or an ``OSError`` naming its path), 3 an
internal error — a bug: one line, and the traceback only with ``--debug`` or
``TORCHWHEEL_DEBUG=1``. An unexpected exception never exits 1, the code of a real finding.
SIGTERM unwinds like Ctrl-C (every temp file and tree is removed on the way out) and exits
143; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

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
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an internal error (also TORCHWHEEL_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, doc in COMMANDS.items():
        p = sub.add_parser(name, help=doc, description=doc)
        # accepted after the sub-command too; main() reads it from argv itself
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the traceback of an internal error",
        )
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


#: Exit status of an internal error (a bug in torchwheel, never a finding about the input).
EXIT_INTERNAL = 3
#: Exit status after SIGTERM (128 + 15, as a shell reports it).
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM: it unwinds exactly as Ctrl-C does, so every
    ``finally`` and ``except BaseException`` that cleans up runs."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _os_error_line(exc: OSError) -> str:
    """``<path>: <strerror>`` (both paths for a rename), without Python's ``[Errno N]``."""
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None and exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {what}"
    if exc.filename is not None:
        return f"{exc.filename}: {what}"
    return what


def _debug_requested(args_list: Sequence[str]) -> bool:
    return "--debug" in args_list or os.environ.get("TORCHWHEEL_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        parser = build_parser(_command_in(args_list))
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # argparse: --help (0) or usage error (2)
            return int(exc.code or 0)
        return int(args._run(args))

    if threading.current_thread() is not threading.main_thread():
        return run_guarded(run, debug=_debug_requested(args_list))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run_guarded(run, debug=_debug_requested(args_list))
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_guarded(fn: Callable[[], int], *, debug: bool = False) -> int:
    """Call ``fn`` and turn what it raises into one stderr line and an exit status.

    ``TorchwheelError`` → its ``exit_code``; ``OSError`` → 2 with the path; Ctrl-C → 130;
    SIGTERM (:class:`Terminated`) → 143; anything else is a bug → :data:`EXIT_INTERNAL`
    (traceback only when ``debug``).
    """
    try:
        return fn()
    except TorchwheelError as exc:
        print(f"torchwheel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("torchwheel: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("torchwheel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        print(f"torchwheel: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            traceback.print_exc()
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        print(
            f"torchwheel: internal error: {type(exc).__name__}"
            + (f": {detail}" if detail else "")
            + " — this is a bug in torchwheel, please report it"
            + ("" if debug else " (run with --debug for the traceback)"),
            file=sys.stderr,
        )
        return EXIT_INTERNAL
