"""`python -m torchwheel check`: exit codes, JSON schema, human output, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.elves import Elves
from tests.support.layers import SITE311, install_wheel, make_layer
from tests.support.wheels import make_wheel
from torchwheel.cli import main


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchwheel", "check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def good_layer(tmp_path: Path) -> Path:
    wheel = make_wheel(tmp_path / "w", "good", "1.0")
    return make_layer(tmp_path / "good.zip", install_wheel(wheel, "python/"))


@pytest.fixture
def glibc_layer(tmp_path: Path, elves: Elves) -> Path:
    return make_layer(
        tmp_path / "glibc.zip",
        {
            "python/fast.so": elves.read("fcntl64"),
            "python/__pycache__/x.cpython-39.pyc": b"\x00" * 16,
        },
    )


def test_exit_0_and_verdict_line(good_layer: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(good_layer), "--runtime", "python3.12"]) == 0
    out = capsys.readouterr().out
    assert "OK: works on python3.12/x86_64" in out


def test_exit_1_with_table(glibc_layer: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(glibc_layer), "--runtime", "python3.11"]) == 1
    out = capsys.readouterr().out
    assert "glibc-too-new" in out and "FAIL: python3.11/x86_64: glibc-too-new" in out
    assert "foreign-pycache" in out
    # warnings only: 0, unless --strict
    assert main(["check", str(glibc_layer), "--runtime", "python3.12"]) == 0
    assert main(["check", str(glibc_layer), "--runtime", "python3.12", "--strict"]) == 1
    assert (
        main(
            [
                "check",
                str(glibc_layer),
                "--runtime",
                "python3.12",
                "--strict",
                "--ignore",
                "foreign-pycache",
            ]
        )
        == 0
    )
    assert (
        main(["check", str(glibc_layer), "--runtime", "python3.11", "--ignore", "glibc-too-new"])
        == 0
    )


def test_matrix_output(glibc_layer: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(glibc_layer)]) == 0  # works somewhere
    out = capsys.readouterr().out
    assert "python3.12/x86_64" in out and "python3.11/arm64" in out
    assert "works on python3.12/x86_64" in out


def test_json_schema(glibc_layer: Path) -> None:
    proc = run_cli(glibc_layer, "--runtime", "python3.11", "--json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert (
        data["schema"] == "torchwheel.check/1" and data["mode"] == "target" and data["ok"] is False
    )
    assert data["exit_code"] == 1
    assert set(data) >= {
        "paths",
        "findings",
        "verdicts",
        "sizes",
        "distributions",
        "stats",
        "ignored",
    }
    f = next(f for f in data["findings"] if f["code"] == "glibc-too-new")
    assert set(f) == {"code", "severity", "path", "message", "detail"}
    (v,) = data["verdicts"]
    assert v["target"] == "python3.11/x86_64" and v["works"] is False
    assert v["reason"].startswith("glibc-too-new")
    assert data["sizes"]["unzipped_limit"] == 262_144_000
    assert data["stats"]["elf_files"] == 1
    matrix = json.loads(run_cli(glibc_layer, "--json", "--python", "3.11").stdout)
    assert matrix["mode"] == "matrix"
    targets = {v["target"]: v["works"] for v in matrix["verdicts"]}
    assert targets["provided.al2023/x86_64 (CPython 3.11)"] is True
    assert targets["python3.11/x86_64"] is False


def test_unreadable_inputs_exit_2_one_line(tmp_path: Path, good_layer: Path) -> None:
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good_layer.read_bytes()[:100])
    notzip = tmp_path / "notes.zip"
    notzip.write_text("just text\n")
    for bad, words in (
        (cut, "cut.zip"),
        (notzip, "not a zip"),
        (tmp_path / "missing.zip", "no such file"),
    ):
        proc = run_cli(good_layer, bad)
        assert proc.returncode == 2
        assert words in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = run_cli(good_layer, "--ignore", "bogus")
    assert proc.returncode == 2 and "unknown finding code" in proc.stderr
    proc = run_cli(good_layer, "--runtime", "python9.9")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_no_record_flag(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w", "rec", "1.0", tags="py3-none-any")
    files = install_wheel(wheel, SITE311)
    files[SITE311 + "rec/__init__.py"] = b"changed = 1\n"
    layer = make_layer(tmp_path / "rec.zip", files)
    assert main(["check", str(layer), "--runtime", "python3.11"]) == 1
    assert main(["check", str(layer), "--runtime", "python3.11", "--no-record"]) == 0


def test_malformed_elf_in_layer_exit_2(tmp_path: Path, elves: Elves) -> None:
    broken = elves.read("plain")[:200]  # ELF header and program headers cut short
    layer = make_layer(tmp_path / "broken.zip", {"python/bad.so": broken})
    proc = run_cli(layer, "--runtime", "python3.12")
    assert proc.returncode == 2
    assert "broken.zip:python/bad.so: malformed ELF" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
