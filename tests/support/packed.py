"""Fixtures and helpers for packed-layer tests (pytest plugin).

- ``zstandard_wheel`` (session): the real ``zstandard`` wheel for CPython 3.11 manylinux x86_64,
  fetched with ``pip download`` (skips when it cannot be had);
- ``native_wheel`` (session): a wheel holding a real CPython extension module compiled with
  gcc for the running interpreter;
- :func:`lambda_start`: run code in a fresh interpreter (``-I -S``) whose ``sys.path`` is laid
  out as on Lambda (function dir, ``/opt/python/lib/python3.X/site-packages``, ``/opt/python``)
  with the loader's unpack dir pointed at a temp "tmp".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.torch import pip_download
from tests.support.wheels import make_wheel

PY = f"{sys.version_info[0]}.{sys.version_info[1]}"

_EXT_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *twice(PyObject *self, PyObject *args) {
    long v;
    if (!PyArg_ParseTuple(args, "l", &v)) return NULL;
    return PyLong_FromLong(2 * v);
}
static PyMethodDef methods[] = {{"twice", twice, METH_VARARGS, "2*v"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};
PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&mod); }
"""


@pytest.fixture(scope="session")
def zstandard_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real zstandard wheel for cp311 manylinux2014 x86_64 (the test targets' decompressor)."""
    dest = tmp_path_factory.mktemp("zstandard-wheel")
    wheels = pip_download(
        [
            "zstandard",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux2014_x86_64",
        ],
        dest,
    )
    return wheels[0]


@pytest.fixture(scope="session")
def native_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel with a gcc-built extension module ``nativepkg._native`` for this interpreter."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    work = tmp_path_factory.mktemp("native-wheel")
    src = work / "native.c"
    src.write_text(_EXT_SOURCE)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    so = work / f"_native{suffix}"
    proc = subprocess.run(
        [
            gcc,
            "-shared",
            "-fPIC",
            "-O1",
            f"-I{sysconfig.get_paths()['include']}",
            str(src),
            "-o",
            str(so),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot compile a CPython extension: {proc.stderr.strip()[-300:]}")
    cp = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    return make_wheel(
        work / "dist",
        "nativepkg",
        "1.0",
        tags=f"{cp}-{cp}-manylinux2014_x86_64",
        files={
            "nativepkg/__init__.py": b"from ._native import twice\n",
            f"nativepkg/_native{suffix}": so.read_bytes(),
        },
    )


def unzip_layer(layer_zip: Path, opt: Path) -> Path:
    """Extract a layer zip into ``opt`` as Lambda does (modes kept); return ``opt``."""
    opt.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(layer_zip) as zf:
        for info in zf.infolist():
            out = zf.extract(info, opt)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(out, mode)
    return opt


def zip_tree(root: Path, out: Path) -> Path:
    """Zip a layer tree (plain stdlib zip; the build command writes the reproducible one)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, path.relative_to(root).as_posix())
    return out


def lambda_sys_path(opt: Path, function_dir: Path, python: str = PY) -> list[str]:
    """``sys.path`` entries as the Lambda runtime puts them before its own."""
    return [
        str(function_dir),
        str(opt / "python" / "lib" / f"python{python}" / "site-packages"),
        str(opt / "python"),
    ]


def lambda_start(
    opt: Path,
    tmp: Path,
    code: str,
    *,
    function_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh ``-I -S`` interpreter with Lambda's ``sys.path`` layout."""
    fdir = function_dir or (opt.parent / "task")
    fdir.mkdir(parents=True, exist_ok=True)
    prelude = f"import sys\nsys.path[:0] = {lambda_sys_path(opt, fdir)!r}\n"
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TORCHWHEEL_UNPACK_DIR": str(tmp),
        "LANG": "C.UTF-8",
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + code],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=str(fdir),
    )


@pytest.fixture
def lambda_dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(opt, tmp) directories for one simulated Lambda execution environment."""
    opt = tmp_path / "opt"
    tmp = tmp_path / "tmp"
    opt.mkdir()
    tmp.mkdir()
    yield opt, tmp
