"""``torchwheel build --compile``: unchecked-hash bytecode in plain and packed layers."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.indexserver import IndexServer
from tests.support.packed import lambda_start, unzip_layer
from tests.support.wheels import make_wheel
from torchwheel import build_layer
from torchwheel.cli import main
from torchwheel.errors import InputError

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
TAG = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
OTHER_PY = "3.12" if PY != "3.12" else "3.11"
TARGET = ["--runtime", "provided.al2023", "--python", PY, "--arch", "x86_64"]
SITE = f"python/lib/python{PY}/site-packages"

needs_cpython = pytest.mark.skipif(
    platform.python_implementation() != "CPython", reason="--compile needs CPython"
)

SOURCES = {
    "cpkg/__init__.py": b"from .sub import VALUE\n",
    "cpkg/sub.py": b'VALUE = "compiled"\n\n\ndef twice(x):\n    return 2 * x\n',
    "cpkg/tools/__init__.py": b"",
    "cpkg/tools/helper.py": b"import os\nHERE = os.path.basename(__file__)\n",
    "cpkg/testdata/legacy.py": b"print 'python 2 only'\n",  # does not compile: skipped
    "cpkg/data.json": b"{}\n",
    # constants whose marshalled form depends on the writing process's state (bpo-34093)
    "cpkg/tricky.py": b'BRACES = ("{", "}", "%", "~")\n\n\ndef linuxish(p):\n'
    b'    return p in {"linux", "android"} or p == "{"\n',
    # enough modules for several compiler processes
    **{
        f"cpkg/many/m{i:03d}.py": f"N = {i}\n\n\ndef f(x):\n    return x + N\n".encode()
        for i in range(150)
    },
}
COMPILED = sorted([r for r in SOURCES if r.endswith(".py") and "legacy" not in r] + ["cdep.py"])


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["build", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def cpkg(index_server: IndexServer, tmp_path: Path) -> IndexServer:
    w = make_wheel(tmp_path / "wheels", "cpkg", "1.0", files=dict(SOURCES), requires_dist=["cdep"])
    dep = make_wheel(
        tmp_path / "wheels",
        "cdep",
        "2.0",
        files={"cdep.py": b"NAME = 'cdep'\n", "cdep_stubs/__init__.pyi": b"NAME: str\n"},
    )
    index_server.add_project("cpkg", [w])
    index_server.add_project("cdep", [dep])
    return index_server


def _record(site: Path, dist_info: str) -> dict[str, tuple[str, str]]:
    text = (site / dist_info / "RECORD").read_text()
    return {row[0]: (row[1], row[2]) for row in csv.reader(text.splitlines()) if row}


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _pyc_for(rel: str) -> str:
    head, _, name = rel.rpartition("/")
    return (
        f"{head}/__pycache__/{name[:-3]}.{TAG}.pyc"
        if head
        else f"__pycache__/{name[:-3]}.{TAG}.pyc"
    )


@needs_cpython
def test_tree_has_recorded_unchecked_hash_pycs_that_imports_use(
    cpkg: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    rc, out, err = run(
        capsys,
        "cpkg",
        *TARGET,
        "--index-url",
        cpkg.url,
        "--tree",
        str(tree),
        "--slim",
        "--compile",
        "--json",
    )
    assert rc == 0, err
    rep = json.loads(out)
    site = tree / SITE
    compiled = COMPILED
    pycs = {rel: site / _pyc_for(rel) for rel in compiled}
    # every compilable .py has its pyc, named as the running interpreter would look for it
    for rel, pyc in pycs.items():
        assert pyc.is_file(), rel
        assert importlib.util.cache_from_source(str(site / rel)) == str(pyc)
        head = pyc.read_bytes()[:16]
        assert head[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(head[4:8], "little") == 0b01  # hash-based, unchecked
        assert head[8:16] == importlib.util.source_hash((site / rel).read_bytes())
    assert not (site / "cpkg/testdata/__pycache__").exists()  # legacy.py failed: no empty dir
    assert sorted(p.relative_to(site).as_posix() for p in site.rglob("*.pyc")) == sorted(
        _pyc_for(r) for r in compiled
    )
    # RECORD lists each pyc with its hash and size, under the distribution of its source
    rec = _record(site, "cpkg-1.0.dist-info")
    for rel in compiled:
        if rel == "cdep.py":
            continue
        data = pycs[rel].read_bytes()
        assert rec[_pyc_for(rel)] == (_hash(data), str(len(data)))
    assert _pyc_for("cdep.py") in _record(site, "cdep-2.0.dist-info")
    assert _pyc_for("cdep.py") not in rec
    # the report: one compile step after the slim steps, with the failure counted
    steps = rep["steps"]
    assert steps[-1]["step"] == "compile"
    assert any(s["step"] == "slim: type stubs" and s["files"] == 1 for s in steps)
    comp = steps[-1]
    assert comp["files"] == len(compiled) and comp["bytes_saved"] == 0
    assert comp["bytes_added"] == sum(p.stat().st_size for p in pycs.values())
    assert "1 file(s) did not compile" in comp["note"] and "legacy.py" in comp["note"]
    assert rep["unzipped_bytes"] == sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert "compile" in rep["timings"]
    # the import uses the pyc: the sources change, the unchecked pyc is still what runs
    # (-B: nothing new is written; read-only tree as /opt is on Lambda)
    (site / "cpkg/sub.py").write_bytes(b'VALUE = "source"\n')
    for p in sorted(site.rglob("*"), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); import cpkg, cpkg.tools.helper, "
        "cdep; print(cpkg.VALUE, cpkg.sub.twice(21), cpkg.tools.helper.HERE, cdep.NAME, "
        "cpkg.sub.__file__ == cpkg.sub.__spec__.origin)"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-B", "-c", code], capture_output=True, text=True
        )
    finally:
        for p in sorted(site.rglob("*")):
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["compiled", "42", "helper.py", "cdep", "True"]
    # human output: the compile row
    rc, out, _ = run(
        capsys, "cpkg", *TARGET, "--index-url", cpkg.url, "-o", str(tmp_path / "h.zip"), "--compile"
    )
    assert rc == 0
    line = next(ln for ln in out.splitlines() if "compile" in ln)
    assert f" {len(compiled)} " in line and "+" in line


@needs_cpython
def test_compile_zip_is_reproducible_and_passes_check(
    cpkg: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c = tmp_path / "a.zip", tmp_path / "b.zip", tmp_path / "c.zip"
    base = ["cpkg", *TARGET, "--index-url", cpkg.url, "--compile"]
    assert run(capsys, *base, "-o", str(a))[0] == 0
    assert run(capsys, *base, "-o", str(b))[0] == 0
    # the zip-only build (sources left in the wheels) equals the build that writes the tree
    assert run(capsys, *base, "-o", str(c), "--tree", str(tmp_path / "t"))[0] == 0
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()
    with zipfile.ZipFile(a) as zf:
        names = set(zf.namelist())
        assert f"{SITE}/{_pyc_for('cpkg/sub.py')}" in names
        pyc = zf.read(f"{SITE}/{_pyc_for('cpkg/sub.py')}")
        # the file name in the code object is where the layer is mounted, not the build dir
        assert f"/opt/{SITE}/cpkg/sub.py".encode() in pyc
        assert str(tmp_path).encode() not in pyc
    # a fresh interpreter makes the same bytes (the compiler workers start from one state)
    proc = subprocess.run(
        [sys.executable, "-m", "torchwheel", "build", *base, "-o", str(tmp_path / "d.zip")],
        capture_output=True,
        text=True,
        env={**os.environ, "TORCHWHEEL_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d.zip").read_bytes() == a.read_bytes()
    # one compiler process at a time or several in parallel: same bytes
    one = build_layer(
        ["cpkg"],
        arch="x86_64",
        runtime="provided.al2023",
        python=PY,
        index_url=cpkg.url,
        output=tmp_path / "one.zip",
        compile_bytecode=True,
        workers=1,
    )
    assert one.sha256 == hashlib.sha256(a.read_bytes()).hexdigest()
    # torchwheel check: nothing to report about the bytecode or RECORD
    from torchwheel.checks.driver import check

    report = check([a], runtime="provided.al2023", arch="x86_64", python=PY)
    assert list(report.findings) == [], [(f.code, f.message) for f in report.findings]
    assert main(["check", str(a), *TARGET]) == 0
    capsys.readouterr()


def test_mismatched_python_is_refused_before_any_download(
    cpkg: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpkg.clear_log()
    out_zip = tmp_path / "x.zip"
    rc, _, err = run(
        capsys,
        "cpkg",
        "--runtime",
        "provided.al2023",
        "--python",
        OTHER_PY,
        "--index-url",
        cpkg.url,
        "-o",
        str(out_zip),
        "--compile",
    )
    assert rc == 2
    line = err.strip()
    here = f"{platform.python_implementation()} {PY}"
    assert "\n" not in line
    assert (
        f"--compile needs CPython {OTHER_PY} to write bytecode for provided.al2023/x86_64 "
        f"(CPython {OTHER_PY}); this is {here}"
    ) in line
    assert cpkg.requests == [] and not out_zip.exists()
    with pytest.raises(InputError, match="--compile needs CPython"):
        build_layer(
            ["cpkg"],
            arch="x86_64",
            runtime="python3.12" if PY != "3.12" else "python3.11",
            index_url=cpkg.url,
            output=out_zip,
            compile_bytecode=True,
        )
    assert cpkg.requests == []


@needs_cpython
def test_packed_layer_carries_the_pycs(
    cpkg: IndexServer, zstandard_wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if PY != "3.11" or platform.machine() != "x86_64":
        pytest.skip("the zstandard test wheel is for CPython 3.11 x86_64")
    from torchwheel.packed import ARCHIVE_NAME, MANIFEST_DIR

    cpkg.add_project("zstandard", [zstandard_wheel])
    out = tmp_path / "packed.zip"
    argv = [
        "cpkg",
        *TARGET,
        "--index-url",
        cpkg.url,
        "-o",
        str(out),
        "--packed",
        "--compile",
        "--json",
    ]
    rc, text, err = run(capsys, *argv)
    assert rc == 0, err
    rep: dict[str, Any] = json.loads(text)
    assert rep["steps"][-1]["step"] == "compile" and rep["steps"][-1]["files"] == len(COMPILED)
    opt = unzip_layer(out, tmp_path / "opt")
    import zstandard

    raw = (opt / "python" / MANIFEST_DIR / ARCHIVE_NAME).read_bytes()
    data = zstandard.ZstdDecompressor().stream_reader(raw).read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        names = set(tar.getnames())
    assert _pyc_for("cpkg/sub.py") in names and _pyc_for("cdep.py") in names
    rc2, _, _ = run(capsys, *argv[:-1], "-o", str(tmp_path / "again.zip"))
    assert rc2 == 0 and (tmp_path / "again.zip").read_bytes() == out.read_bytes()
    # nothing written at import: the pyc next to the unpacked source came from the archive
    proc = lambda_start(
        opt,
        tmp_path / "tmp",
        "sys.dont_write_bytecode = True\n"
        "import os, torchwheel_loader, cpkg\n"
        "print(cpkg.VALUE, os.path.isfile(cpkg.sub.__cached__))",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["compiled", "True"]
    from torchwheel.checks.driver import check

    report = check([out], runtime="provided.al2023", arch="x86_64", python=PY)
    assert [f.code for f in report.findings] == ["ephemeral-storage"]
