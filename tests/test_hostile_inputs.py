"""Every hostile ``check`` input of issue 13, checked in under tests/data/hostile/, run through
the real CLI in a subprocess: a one-line error with exit 2 or a finding, within 10 s and
300 MB (the child's peak RSS), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.hostile import HOSTILE_DIR, all_inputs

SECONDS = 10.0
MAX_RSS_MB = 300


@dataclass(frozen=True)
class Outcome:
    """What one input must give: the exit status, and a finding code (exit 0/1) or a piece
    of the one stderr line (exit 2)."""

    code: int
    expect: str


OUTCOMES: dict[str, Outcome] = {
    "zip64-locator-offset-2p63.zip": Outcome(2, "outside the 106-byte file"),
    "overlapping-members.zip": Outcome(2, "overlapping members"),
    "elf-verneed-chain-bomb.zip": Outcome(2, "reached twice"),
    "elf-class32-x86_64.zip": Outcome(1, "elf-arch-mismatch"),
    "elf-big-endian-x86_64.zip": Outcome(1, "elf-arch-mismatch"),
    "elf-version-glibc-5000-digits.zip": Outcome(2, "version name of 5,008 bytes"),
    "elf-version-glibcxx-5000-digits.zip": Outcome(2, "version name of 5,012 bytes"),
    "elf-version-cxxabi-5000-digits.zip": Outcome(2, "version name of 5,011 bytes"),
    # a version no glibc / libstdc++ release defines: the loader refuses the file
    "elf-version-glibc-28x.zip": Outcome(1, "version-not-found"),
    "elf-version-glibcxx-x.zip": Outcome(1, "version-not-found"),
    "record-field-131073.zip": Outcome(1, "record-mismatch"),
    "record-bare-cr.zip": Outcome(1, "record-mismatch"),
    "record-size-5000-digits.zip": Outcome(1, "record-mismatch"),  # a size no file has
    "requires-dist-5000-digit-version.zip": Outcome(0, "missing-dependency"),
    "requires-dist-undefined-comparison.zip": Outcome(0, "missing-dependency"),
    "requires-dist-bad-marker.zip": Outcome(0, "missing-dependency"),
    "wheel-tag-manylinux-5000-digits.zip": Outcome(1, "tag-incompatible"),
    "name-markup-close-tag.zip": Outcome(1, "unsafe-path"),
    "name-markup-bold.zip": Outcome(0, ""),
    "packed-2000-members-1mib.zip": Outcome(0, "ephemeral-storage"),
    **{
        f"packed-manifest-{k}.zip": Outcome(1, "packed-manifest")
        for k in (
            "deep",
            "files-5000-digits",
            "files-inf",
            "files-list",
            "files-nan",
            "list",
            "not-utf8",
            "sha256-dict",
        )
    },
}


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float


def run_checks(argvs: list[list[str]]) -> list[Run]:
    """Each ``torchwheel`` command line in its own forked child (tests/support/forkrun.py):
    exit status, output, wall time and that child's peak RSS."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.forkrun"],
        input=json.dumps(argvs).encode(),
        capture_output=True,
        timeout=900,
        env={**os.environ, "TORCHWHEEL_DEBUG": ""},
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return [Run(**r) for r in json.loads(proc.stdout)]


TARGET = ("--runtime", "python3.12", "--arch", "x86_64", "--json", "--quiet")


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    names = sorted(OUTCOMES)
    results = run_checks([["check", str(HOSTILE_DIR / n), *TARGET] for n in names])
    return dict(zip(names, results, strict=True))


def test_every_checked_in_input_is_covered_and_reproducible(tmp_path: Path) -> None:
    built = all_inputs()
    on_disk = {p.name: p.read_bytes() for p in HOSTILE_DIR.iterdir()}
    assert sorted(built) == sorted(on_disk) == sorted(OUTCOMES)
    for name, data in built.items():
        assert len(data) < 200_000, name
        assert on_disk[name] == data, f"{name}: regenerate with python -m tests.support.hostile"


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_hostile_input(name: str, runs: dict[str, Run]) -> None:
    want = OUTCOMES[name]
    run = runs[name]
    assert "Traceback" not in run.stderr
    assert run.code == want.code, (run.code, run.stderr)
    assert run.seconds < SECONDS, f"{name}: {run.seconds:.1f} s"
    assert run.max_rss_mb < MAX_RSS_MB, f"{name}: {run.max_rss_mb:.0f} MB"
    if want.code == 2:
        assert run.stdout == ""
        lines = run.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("torchwheel: error: "), lines
        assert want.expect in lines[0]
        return
    assert run.stderr == ""
    report = json.loads(run.stdout)
    codes = {f["code"] for f in report["findings"]}
    if want.expect:
        assert want.expect in codes, codes


def test_a_fifo_given_as_the_zip_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "layer.zip"
    os.mkfifo(fifo)
    [run] = run_checks([["check", str(fifo), *TARGET]])
    assert run.code == 2 and run.seconds < SECONDS
    assert run.stderr == f"torchwheel: error: {fifo}: not a regular file (a FIFO)\n"
