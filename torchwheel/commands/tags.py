"""Print the wheel tags a Lambda target accepts, one per line, best first."""

from __future__ import annotations

import argparse

from ..report import print_json
from ..targets import make_target


def add_target_arguments(p: argparse.ArgumentParser, *, required_runtime: bool = False) -> None:
    """``--runtime``, ``--arch``, ``--python`` as every sub-command spells them."""
    p.add_argument(
        "--runtime",
        required=required_runtime,
        help="Lambda runtime, e.g. python3.12 or provided.al2023",
    )
    p.add_argument(
        "--arch", default="x86_64", help="x86_64 (amd64) or arm64 (aarch64); default x86_64"
    )
    p.add_argument(
        "--python",
        help="CPython version: 3.12, python3.12 or cp312 (required for provided.* runtimes)",
    )


def configure(p: argparse.ArgumentParser) -> None:
    """Add the ``tags`` arguments."""
    add_target_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of tag strings")


def run(args: argparse.Namespace) -> int:
    """Print the tags."""
    target = make_target(args.arch, args.python, runtime=args.runtime)
    tags = [str(t) for t in target.tags()]
    if args.json:
        print_json(
            {
                "schema": "torchwheel.tags/1",
                "runtime": target.runtime.name,
                "arch": target.arch,
                "python": target.python_str,
                "tags": tags,
            }
        )
    else:
        print("\n".join(tags))
    return 0
