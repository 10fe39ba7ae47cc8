"""Where a build may write, and what it leaves (issues 12 and 13): -o / --tree validated
before any download, SIGTERM cleans up as SIGINT does, temp trees of killed runs cleaned at
the next start, --tree files with the zip's modes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.wheels import make_wheel
from torchwheel.atomic import (
    check_output_dir,
    check_output_file,
    check_outputs,
    clean_stale,
    normalize_modes,
)
from torchwheel.cli import main
from torchwheel.errors import InputError

TARGET = ["--runtime", "python3.12", "--arch", "x86_64"]


@pytest.fixture
def demo_index(index_server: IndexServer, tmp_path: Path) -> IndexServer:
    index_server.add_project("demo", [make_wheel(tmp_path / "w", "demo", "1.0")])
    return index_server


def _bad_outputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    tree = tmp_path / "tree"
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    return [
        (["-o", str(a_dir)], "is a directory"),
        (["-o", str(a_file / "layer.zip")], "is not a directory"),
        (["-o", "/proc/layer.zip"], "/proc holds no regular files"),
        (["-o", "/proc/self/fd/1"], "/proc holds no regular files"),
        (["-o", "/dev/null"], "/dev holds no regular files"),
        (["-o", ""], "an empty path is not a place to write"),
        (["--tree", ""], "an empty path is not a place to write"),
        (["--tree", str(a_file)], "exists and is not a directory"),
        (["--tree", str(full)], "not empty (keep.txt)"),
        (["--tree", str(tree), "-o", str(tree)], "inside --tree"),
        (["--tree", str(tree), "-o", str(tree / "python" / "layer.zip")], "inside --tree"),
        (["--tree", "/sys/kernel/x"], "/sys holds no regular files"),
    ]


def test_bad_outputs_exit_2_before_any_request(
    demo_index: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, says in _bad_outputs(tmp_path):
        rc = main(["build", "demo", *TARGET, "--index-url", demo_index.url, *args])
        err = capsys.readouterr().err
        assert rc == 2, (args, err)
        assert err.count("\n") == 1 and says in err, (args, err)
    assert demo_index.count("/") == 0  # nothing was asked of the index
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_the_library_refuses_the_same(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        check_output_file(tmp_path)
    link = tmp_path / "link.zip"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="/dev holds no regular files"):
        check_output_file(link)
    with pytest.raises(InputError, match="inside --tree"):
        check_outputs(tmp_path / "t" / "x.zip", tmp_path / "t")
    assert check_output_file(tmp_path / "new" / "deeper" / "x.zip").name == "x.zip"
    assert check_output_dir(tmp_path / "new-tree") == tmp_path / "new-tree"


def test_a_good_output_replaces_a_regular_file(demo_index: IndexServer, tmp_path: Path) -> None:
    out = tmp_path / "layer.zip"
    out.write_text("old")
    assert main(["build", "demo", *TARGET, "--index-url", demo_index.url, "-o", str(out)]) == 0
    assert out.read_bytes()[:2] == b"PK"


# -- signals and stale temp trees ---------------------------------------------------------------


def _wait_for(pattern: str, where: Path, timeout: float = 60) -> list[Path]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = list(where.glob(pattern))
        if found:
            return found
        time.sleep(0.005)
    return []


@pytest.fixture
def big_wheels(tmp_path: Path) -> Path:
    """A find-links dir with one wheel of 4,000 files (installing it takes a moment)."""
    files = {f"demo/m{i:04d}.py": (b"# %d\n" % i) * 200 for i in range(4000)}
    make_wheel(tmp_path / "links", "demo", "1.0", files=files)
    return tmp_path / "links"


def _build_proc(links: Path, tmp: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmp), "TORCHWHEEL_CACHE_DIR": str(tmp.parent / "c")}
    cmd = [sys.executable, "-m", "torchwheel", "build", "demo", *TARGET, "--no-index"]
    return subprocess.Popen(
        [*cmd, "--find-links", str(links), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_cleans_up_exactly_as_sigint(
    big_wheels: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out" / "layer.zip"
    proc = _build_proc(big_wheels, tmp, "-o", str(out), "--tree", str(tmp_path / "tree"))
    assert _wait_for(".tree.*", tmp_path), "the build never started its tree"
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the build finished before the signal landed")
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.strip().endswith(
        "terminated" if sig == signal.SIGTERM else "interrupted"
    )
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [] and list(tmp.iterdir()) == []
    assert not out.exists() and not (tmp_path / "tree").exists()


def test_sigkill_leftovers_are_cleaned_at_the_next_start(big_wheels: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "layer.zip"
    proc = _build_proc(big_wheels, tmp, "-o", str(out))
    found = _wait_for("torchwheel-layer-*", tmp)
    assert found, "the build never made its temp tree"
    proc.kill()
    proc.communicate(timeout=60)
    assert all(p.exists() for p in found)  # SIGKILL: nothing could clean up
    again = _build_proc(big_wheels, tmp, "-o", str(out))
    _o, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert list(tmp.iterdir()) == []
    assert out.read_bytes()[:2] == b"PK"


def test_clean_stale_removes_only_dead_processes_things(tmp_path: Path) -> None:
    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f"torchwheel-layer-{dead_pid}-abc").mkdir()
    (tmp_path / f"torchwheel-layer-{dead_pid}-abc" / "f").write_text("x")
    (tmp_path / f".layer.zip.{dead_pid}.xyz.tmp").write_text("half")
    mine = tmp_path / f"torchwheel-layer-{os.getpid()}-def"
    mine.mkdir()
    parent = tmp_path / f"torchwheel-layer-{os.getppid()}-ghi"  # alive
    parent.mkdir()
    other = tmp_path / "torchwheel-layer-notapid"
    other.mkdir()
    removed = clean_stale(tmp_path, ["torchwheel-layer", ".layer.zip"])
    assert sorted(p.name for p in removed) == sorted(
        [f"torchwheel-layer-{dead_pid}-abc", f".layer.zip.{dead_pid}.xyz.tmp"]
    )
    assert mine.exists() and parent.exists() and other.exists()


def test_tree_files_get_the_zips_modes(
    demo_index: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    args = ["build", "demo", "--runtime", "python3.14", "--arch", "x86_64"]
    rc = main([*args, "--index-url", demo_index.url, "--tree", str(tree), "--packed"])
    assert rc == 0, capsys.readouterr().err
    modes = {str(p.relative_to(tree)): stat.S_IMODE(p.stat().st_mode) for p in tree.rglob("*")}
    assert stat.S_IMODE(tree.stat().st_mode) == 0o755
    assert modes["python/torchwheel_loader.py"] == 0o644
    assert modes["python/torchwheel_packed/manifest.json"] == 0o644
    assert modes["python/torchwheel_packed/site-packages.tar.zst"] == 0o644
    assert modes["python/torchwheel_packed"] == 0o755
    assert set(modes.values()) <= {0o644, 0o755}


def test_normalize_modes_keeps_executables(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "run").write_text("#!/bin/sh\n")
    (tmp_path / "d" / "run").chmod(0o700)
    (tmp_path / "d" / "data").write_text("x")
    (tmp_path / "d" / "data").chmod(0o600)
    normalize_modes(tmp_path / "d")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "d" / "run").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "d" / "data").stat().st_mode) == 0o644
