"""``build`` and ``check`` report their steps as they happen (issue 12): one plain line per
finished step when stderr is not a terminal, nothing with ``--quiet``, stdout clean for
``--json``. The CLI runs in a subprocess, so stderr is a real pipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.wheels import make_wheel
from torchwheel.progress import ProgressEvent

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
TARGET = ["--runtime", "provided.al2023", "--python", PY, "--arch", "x86_64"]
#: ``zip: 5,360 files, 439.0 MiB, 21.0 s`` — the step, counts, the seconds last
LINE = re.compile(r"^([a-z]+): (?:[^,]+, )*\d+\.\d s$")

needs_host_target = pytest.mark.skipif(
    os.uname().machine != "x86_64", reason="builds the host's native extension for x86_64"
)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchwheel", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )


def _steps(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert all(LINE.match(line) for line in lines), stderr
    return [line.split(":")[0] for line in lines]


@pytest.fixture
def pure_wheel(tmp_path: Path) -> Path:
    return make_wheel(
        tmp_path / "wheels",
        "purepkg",
        "2.0",
        files={
            "purepkg/__init__.py": b"def answer():\n    return 42\n",
            "purepkg/tests/test_x.py": b"assert True\n",
            "purepkg/data/table.txt": b"x" * 100_000,
        },
    )


@needs_host_target
def test_non_tty_build_prints_one_line_per_step_in_order(
    index_server: IndexServer, pure_wheel: Path, native_wheel: Path, tmp_path: Path
) -> None:
    index_server.add_project("purepkg", [pure_wheel])
    index_server.add_project("nativepkg", [native_wheel])
    out = tmp_path / "layer.zip"
    args = ["build", "purepkg", "nativepkg", *TARGET, "--index-url", index_server.url]
    proc = _cli(*args, "--slim", "--strip", "--compile", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert _steps(proc.stderr) == [
        "resolve",
        "download",
        "install",
        "slim",
        "strip",
        "compile",
        "zip",
    ]
    report = json.loads(proc.stdout)  # stdout is the JSON alone
    zip_line = proc.stderr.splitlines()[-1]
    assert zip_line.startswith(f"zip: {report['files']} files, ")
    assert "resolve: 2 packages, " in proc.stderr and "download: 2 wheels, " in proc.stderr
    # --quiet: nothing on stderr, the same report on stdout
    quiet = _cli(*args, "--slim", "-o", str(tmp_path / "q.zip"), "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "wrote " in quiet.stdout


@needs_host_target
def test_packed_build_shows_the_pack_step(
    index_server: IndexServer,
    pure_wheel: Path,
    native_wheel: Path,
    zstandard_wheel: Path,
    tmp_path: Path,
) -> None:
    index_server.add_project("purepkg", [pure_wheel])
    index_server.add_project("nativepkg", [native_wheel])
    index_server.add_project("zstandard", [zstandard_wheel])
    out = tmp_path / "layer.zip"
    proc = _cli(
        "build",
        "purepkg",
        "nativepkg",
        *TARGET,
        "--index-url",
        index_server.url,
        "--packed",
        "--zstd-level",
        "3",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert _steps(proc.stderr) == [
        "resolve",
        "download",
        "install",
        "slim",
        "pack",
        "zip",
        "cleanup",
    ]
    assert re.search(r"^pack: \d+ files, .*zstd -3", proc.stderr, re.M)


def test_build_layer_api_reports_events(
    index_server: IndexServer, pure_wheel: Path, tmp_path: Path
) -> None:
    from torchwheel import build_layer

    index_server.add_project("purepkg", [pure_wheel])
    seen: list[ProgressEvent] = []
    build_layer(
        "purepkg",
        arch="x86_64",
        python="3.12",
        runtime="python3.12",
        index_url=index_server.url,
        output=tmp_path / "l.zip",
        progress=seen.append,
    )
    ends = [e for e in seen if e.kind == "end"]
    assert [e.step for e in ends] == ["resolve", "download", "install", "slim", "zip"]
    install = ends[2]
    assert install.files_done == 5  # 3 files + METADATA + WHEEL (RECORD is written later)
    assert install.bytes_done >= 100_000
    assert next(e.kind for e in seen if e.step == "zip") == "start"


def test_check_reports_its_scan(tmp_path: Path) -> None:
    from tests.support.layers import make_layer
    from torchwheel import check

    layer = make_layer(
        tmp_path / "l.zip", {"python/a.py": b"a = 1\n", "python/b.txt": b"b" * 10_000}
    )
    seen: list[ProgressEvent] = []
    check(layer, runtime="python3.12", progress=seen.append)
    end = seen[-1]
    assert (end.kind, end.step, end.files_done, end.bytes_done) == ("end", "scan", 2, 10_006)
    proc = _cli("check", str(layer), "--runtime", "python3.12", "--no-config")
    assert proc.returncode == 0 and _steps(proc.stderr) == ["scan"]
    assert proc.stderr.startswith("scan: 2 files, ")
    quiet = _cli("check", str(layer), "--runtime", "python3.12", "-q", "--json")
    assert quiet.returncode == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["ok"]
