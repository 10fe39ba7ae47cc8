"""Check layer / function zips before deploy: layout, wheels, RECORD, ELF, sizes, safety."""

from __future__ import annotations

import argparse
from collections import defaultdict

from rich.markup import escape
from rich.table import Table

from ..checks import CODES, ERROR, WARNING, CheckReport, Finding, check, policy
from ..errors import InputError
from ..report import console, human_bytes, print_json
from ._config import add_config_arguments, apply_config
from ._github import github_lines
from ._inputs import input_lines
from ._progress import add_quiet_argument, mode_from_args, renderer
from .tags import add_target_arguments

#: Findings shown per code in the human table before "... and N more".
PER_CODE = 8


def configure(p: argparse.ArgumentParser) -> None:
    """Add the ``check`` arguments."""
    p.add_argument(
        "zips",
        nargs="+",
        metavar="ZIP|DIR|IMAGE",
        help="layer (or function) zips or build directories (sam build, cdk synth), in "
        "deployment order, checked together; or one container image: a docker save tarball "
        "or OCI layout (directory or tar), '-' to read it from stdin",
    )
    add_target_arguments(p)
    p.set_defaults(arch=None)
    p.add_argument(
        "--function",
        metavar="ZIP|DIR",
        help="the function's zip or directory (mounted at /var/task); default: the first of "
        "several inputs without a python/ directory (a SAM/CDK function directory alone too)",
    )
    p.add_argument(
        "--format",
        choices=("text", "json", "github"),
        default=None,
        help="text (default), json (as --json) or github (workflow annotations: "
        "::error file=...::)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="warnings a user can act on fail the check too (informational ones never do: "
        "docs/ci.md); --no-strict overrides the config",
    )
    add_config_arguments(p)
    add_quiet_argument(p)
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="CODE",
        help=f"drop findings with this code (repeatable): {', '.join(CODES)}",
    )
    p.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="do not hash files against RECORD (faster)",
    )


def exit_code(report: CheckReport, strict: bool = False) -> int:
    """0 when the deployment works (no errors; with ``strict`` no actionable warning — see
    :mod:`torchwheel.checks.policy`), else 1."""
    return policy.exit_code(report, strict)


def _output_format(args: argparse.Namespace) -> str:
    if args.json and args.format not in (None, "json"):
        raise InputError(f"--json and --format {args.format} disagree; give one")
    return "json" if args.json else (args.format or "text")


def run(args: argparse.Namespace) -> int:
    """Run the check and print the findings and verdicts."""
    fmt = _output_format(args)
    apply_config(args)
    with renderer(mode_from_args(args)) as progress:
        report = check(
            args.zips,
            runtime=args.runtime,
            arch=args.arch,
            python=args.python,
            ignore=args.ignore,
            record=args.record,
            function=args.function,
            progress=progress,
        )
    strict = bool(args.strict)
    code = exit_code(report, strict)
    if fmt == "json":
        data = report.to_dict()
        data["exit_code"] = code
        data["strict_failures"] = [f.to_dict() for f in policy.strict_failures(report)]
        print_json(data)
        return code
    if fmt == "github":
        print("\n".join(github_lines(report, code)))
        return code
    render(report, code, strict)
    return code


def _findings_table(findings: tuple[Finding, ...], title: str) -> Table:
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("severity")
    table.add_column("code")
    table.add_column("path", overflow="fold")
    table.add_column("message", overflow="fold")
    by_code: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for f in findings:
        by_code[(f.severity, f.code)].append(f)
    for (sev, code), group in by_code.items():
        style = "red" if sev == ERROR else "yellow" if sev == WARNING else ""
        for f in group[:PER_CODE]:
            row = (escape(f.path), escape(f.message))  # names in a zip are not markup
            table.add_row(f"[{style}]{sev}[/]" if style else sev, code, *row)
        if len(group) > PER_CODE:
            table.add_row("", code, "", f"... and {len(group) - PER_CODE} more ({code})")
    return table


def render(report: CheckReport, code: int, strict: bool = False) -> None:
    """Human output: findings grouped by severity, matrix or target verdict, sizes."""
    out = console()
    if report.findings:
        title = "Findings" if report.single_target else "Findings for every target"
        out.print(_findings_table(report.findings, title))
    if not report.single_target:
        matrix = Table(title="Targets")
        matrix.add_column("target")
        matrix.add_column("works")
        matrix.add_column("first reason", overflow="fold")
        for v in report.verdicts:
            matrix.add_row(
                v.target,
                "[green]yes[/]" if v.works else "[red]no[/]",
                escape(v.reason or (f"{v.warnings} warning(s)" if v.warnings else "")),
            )
        out.print(matrix)
    s = report.sizes
    for line in input_lines(report):  # sizes, SAM/CDK shapes, image, which truth was used
        out.print(line, highlight=False, markup=False)
    if s.largest_dirs:
        out.print(
            "largest directories: "
            + ", ".join(f"{p} {human_bytes(n)}" for p, n in s.largest_dirs[:5]),
            markup=False,
        )
    out.print(
        f"read {human_bytes(report.bytes_read)} from {report.members} members "
        f"({report.elf_files} ELF files, RECORD {'checked' if report.record_checked else 'skipped'}"
        f", inflate: {report.inflate}) in {report.seconds:.2f} s"
    )
    if report.single_target:
        v = report.verdicts[0]
        if code == 0:
            out.print(
                f"[green]OK[/]: works on {v.target}"
                + (f" ({v.warnings} warning(s))" if v.warnings else "")
            )
        else:
            n = len(policy.strict_failures(report))
            why = v.reason or f"{n} actionable warning(s) with --strict"
            out.print(f"[red]FAIL[/]: {v.target}: {escape(why)}")
    else:
        works = [v.target for v in report.verdicts if v.works]
        if works and code == 0:
            out.print(f"[green]OK[/]: works on {', '.join(works)}")
        elif works:
            out.print(f"[red]FAIL[/] (--strict: warnings); works on {', '.join(works)}")
        else:
            out.print("[red]FAIL[/]: works on no target")
