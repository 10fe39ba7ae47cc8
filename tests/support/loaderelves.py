"""Shared objects built with the host's gcc to test the loader model against the real loader.

Fixture ``loader_elves`` (session; skipped without gcc) compiles, into one directory:

* ``libB.so`` (SONAME libB.so) and two ``libA.so`` that need it — ``liba_plain.so`` without
  any search path, ``liba_runpath.so`` with ``DT_RUNPATH $ORIGIN/nowhere``;
* ``ext_rpath.so``: needs ``libA.so`` with ``DT_RPATH $ORIGIN/../pkg.libs`` (old-style tags,
  as auditwheel writes them) — laid out as ``pkg/_ext…so`` next to ``pkg.libs/``;
* ``libC.so`` and ``ext_c.so`` (needs libC.so, no search path at all);
* ``libzneed.so``: uses ``crc32_z`` from the host's zlib, so it needs ``ZLIB_1.2.9`` from
  ``libz.so.1``; and ``ext_z.so``, which needs it through ``DT_RPATH $ORIGIN/../pkg.libs``.
  Absent (None) when the host's zlib cannot be linked;
* ``oldz/libz.so.1``: a stand-in for an old zlib (Amazon Linux 2's 1.2.7 has no ZLIB_1.2.9):
  SONAME ``libz.so.1``, ``crc32_z`` defined only under ``ZLIB_1.2.0``.

:func:`dlopen` runs ``ctypes.CDLL(path)`` in a fresh ``env -i`` interpreter: the host's own
glibc loader answering whether the layout loads.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

B_C = "int b_value(void) { return 2; }\n"
A_C = "int b_value(void);\nint a_value(void) { return b_value() + 1; }\n"
EXT_C = "int a_value(void);\nint ext_value(void) { return a_value() * 10; }\n"
C_C = "int c_value(void) { return 5; }\n"
EXT_C_C = "int c_value(void);\nint ext_c_value(void) { return c_value(); }\n"
ZNEED_C = (
    "#include <stddef.h>\n#include <zlib.h>\n"
    "unsigned long z_crc(const unsigned char *p, size_t n) { return crc32_z(0, p, n); }\n"
)
OLDZ_C = (
    "unsigned long crc32_z(unsigned long c, const void *p, unsigned long n) { return c + n; }\n"
)
#: an "old zlib": SONAME libz.so.1, crc32_z only under ZLIB_1.2.0 (no ZLIB_1.2.9 node)
OLDZ_MAP = "ZLIB_1.2.0 { global: crc32_z; local: *; };\n"
EXT_Z_C = (
    "#include <stddef.h>\nunsigned long z_crc(const unsigned char *p, size_t n);\n"
    'unsigned long ext_z(void) { return z_crc((const unsigned char *)"x", 1); }\n'
)

OLD_TAGS = "-Wl,--disable-new-dtags"
NEW_TAGS = "-Wl,--enable-new-dtags"


@dataclass(frozen=True)
class LoaderElves:
    """Paths of the compiled objects."""

    directory: Path
    lib_b: Path
    liba_plain: Path
    liba_runpath: Path
    ext_rpath: Path
    lib_c: Path
    ext_c: Path
    libzneed: Path | None
    ext_z: Path | None
    old_libz: Path

    def read(self, name: str) -> bytes:
        """Bytes of one of the files by attribute name."""
        path = getattr(self, name)
        assert isinstance(path, Path), name
        return path.read_bytes()


def _cc(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", *args], cwd=directory, capture_output=True, text=True
    )


def _must(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(proc.args)} failed:\n{proc.stderr}")


def build_loader_elves(d: Path) -> LoaderElves:
    """Compile every object into ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    for name, text in {
        "b.c": B_C,
        "a.c": A_C,
        "ext.c": EXT_C,
        "c.c": C_C,
        "ext_c.c": EXT_C_C,
        "zneed.c": ZNEED_C,
        "ext_z.c": EXT_Z_C,
        "oldz.c": OLDZ_C,
        "oldz.map": OLDZ_MAP,
    }.items():
        (d / name).write_text(text)
    _must(_cc(d, "-Wl,-soname,libB.so", "b.c", "-o", "libB.so"))
    _must(_cc(d, "-Wl,-soname,libA.so", "a.c", "-o", "liba_plain.so", "-L.", "-l:libB.so"))
    _must(
        _cc(
            d,
            "-Wl,-soname,libA.so",
            "a.c",
            "-o",
            "liba_runpath.so",
            "-L.",
            "-l:libB.so",
            NEW_TAGS,
            "-Wl,-rpath,$ORIGIN/nowhere",
        )
    )
    (d / "libA.so").write_bytes((d / "liba_plain.so").read_bytes())  # for linking ext
    _must(
        _cc(
            d,
            "ext.c",
            "-o",
            "ext_rpath.so",
            "-L.",
            "-l:libA.so",
            OLD_TAGS,
            "-Wl,-rpath,$ORIGIN/../pkg.libs",
        )
    )
    _must(_cc(d, "-Wl,-soname,libC.so", "c.c", "-o", "libC.so"))
    _must(_cc(d, "ext_c.c", "-o", "ext_c.so", "-L.", "-l:libC.so"))
    zneed = _cc(d, "-Wl,-soname,libzneed.so", "zneed.c", "-o", "libzneed.so", "-lz")
    ext_z = None
    if zneed.returncode == 0:
        _must(
            _cc(
                d,
                "ext_z.c",
                "-o",
                "ext_z.so",
                "-L.",
                "-l:libzneed.so",
                OLD_TAGS,
                "-Wl,-rpath,$ORIGIN/../pkg.libs",
            )
        )
        ext_z = d / "ext_z.so"
    (d / "oldz").mkdir(exist_ok=True)
    _must(
        _cc(
            d,
            "-Wl,-soname,libz.so.1",
            "-Wl,--version-script=oldz.map",
            "oldz.c",
            "-o",
            "oldz/libz.so.1",
        )
    )
    return LoaderElves(
        directory=d,
        lib_b=d / "libB.so",
        liba_plain=d / "liba_plain.so",
        liba_runpath=d / "liba_runpath.so",
        ext_rpath=d / "ext_rpath.so",
        lib_c=d / "libC.so",
        ext_c=d / "ext_c.so",
        libzneed=d / "libzneed.so" if zneed.returncode == 0 else None,
        ext_z=ext_z,
        old_libz=d / "oldz" / "libz.so.1",
    )


@pytest.fixture(scope="session")
def loader_elves(tmp_path_factory: pytest.TempPathFactory) -> LoaderElves:
    """The compiled objects (skipped when gcc is missing)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to compile the loader fixtures")
    return build_loader_elves(tmp_path_factory.mktemp("loader-elves"))


def lay_out(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``{relative path: bytes}`` under ``root``; return ``root``."""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def dlopen(path: Path, library_path: str | None = None) -> subprocess.CompletedProcess[str]:
    """``ctypes.CDLL(path)`` in a fresh ``env -i`` interpreter (optionally LD_LIBRARY_PATH)."""
    env = {} if library_path is None else {"LD_LIBRARY_PATH": library_path}
    return subprocess.run(
        [sys.executable, "-S", "-c", f"import ctypes; ctypes.CDLL({str(path)!r})"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
