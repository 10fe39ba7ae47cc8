"""The CLI's one exception → exit-status mapping (torchwheel.cli.run_guarded, main)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from torchwheel.cli import EXIT_INTERNAL, main, run_guarded
from torchwheel.errors import InputError, NoCompatibleWheel


def _bug() -> int:
    empty: dict[str, int] = {}
    return empty["missing"]  # a KeyError: stands for any bug


def test_a_bug_exits_3_with_one_line_and_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_guarded(_bug) == EXIT_INTERNAL == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("torchwheel: internal error: KeyError: 'missing'")
    assert "please report" in err and "--debug" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_guarded(_bug, debug=True) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_bug" in err


def test_torchwheel_errors_keep_their_codes(capsys: pytest.CaptureFixture[str]) -> None:
    def bad_input() -> int:
        raise InputError("layer.zip: not a zip file")

    def nothing_fits() -> int:
        raise NoCompatibleWheel("no torch wheel fits python3.11/x86_64")

    assert run_guarded(bad_input) == 2
    assert capsys.readouterr().err == "torchwheel: error: layer.zip: not a zip file\n"
    assert run_guarded(nothing_fits) == 1


def test_os_error_is_exit_2_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope" / "x"

    def read() -> int:
        missing.read_bytes()
        return 0

    assert run_guarded(read) == 2
    err = capsys.readouterr().err
    assert err == f"torchwheel: error: {missing}: No such file or directory\n"


def test_debug_flag_is_accepted_before_and_after_the_command() -> None:
    assert main(["--debug", "runtimes", "--json"]) == 0
    assert main(["runtimes", "--json", "--debug"]) == 0


def test_torchwheel_debug_environment_variable() -> None:
    code = "from torchwheel.cli import run_guarded\nraise SystemExit(run_guarded(lambda: 1 // 0))"
    env = {"TORCHWHEEL_DEBUG": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3 and "Traceback" not in out.stderr
    # the variable is read by main(), from the environment of the process
    code = "import sys\nfrom torchwheel import cli\nprint(cli._debug_requested([]))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "True"


def test_runtimes_and_tags_json_carry_their_schema(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["runtimes", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "torchwheel.runtimes/1"
    assert "python3.12" in [r["name"] for r in doc["runtimes"]]
    assert main(["tags", "--runtime", "python3.12", "--arch", "arm64", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "torchwheel.tags/1"
    assert (doc["runtime"], doc["arch"], doc["python"]) == ("python3.12", "arm64", "3.12")
    assert doc["tags"][0] == "cp312-cp312-manylinux_2_34_aarch64"
