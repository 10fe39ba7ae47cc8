"""Real ELF shared objects compiled with the host's gcc / g++, for ELF and check tests.

The host links against glibc 2.36 and libstdc++ from gcc 12, so real symbol versions
newer than the Lambda images exist: ``fcntl64`` (GLIBC_2.28, newer than AL2's 2.26),
``arc4random`` (GLIBC_2.36, newer than AL2023's 2.34) and ``std::__glibcxx_assert_fail``
(GLIBCXX_3.4.30, newer than the 3.4.29 ceiling). The aarch64 object is the plain x86_64
one with ``e_machine`` rewritten to EM_AARCH64 (183): a well-formed ELF file for another
machine, which is all a reader of headers can see.

Fixture ``elves`` (session scope) returns an :class:`Elves` with paths to each file; tests
that need it are skipped when no C compiler is installed.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

EM_AARCH64 = 183

PLAIN_C = r"""
#include <stdio.h>
int plain_answer(void) { puts("plain"); return 42; }
"""

FCNTL64_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
int needs_fcntl64(int fd) { return fcntl64(fd, F_GETFD); }
"""

ARC4RANDOM_C = r"""
#include <stdlib.h>
unsigned int needs_arc4random(void) { return arc4random(); }
"""

DEP_C = r"""
int dep_value(void) { return 7; }
"""

USES_DEP_C = r"""
int dep_value(void);
int uses_dep(void) { return dep_value() + 1; }
"""

CXX_ASSERT_CPP = r"""
#include <string>
#include <vector>
extern "C" int cxx_sum(int n) {
    std::vector<int> v(n + 1);
    std::string s(n, 'x');
    return v[0] + static_cast<int>(s.size());
}
"""

CXX_PLAIN_CPP = r"""
#include <string>
extern "C" int cxx_len(int n) { std::string s(n, 'y'); return static_cast<int>(s.size()); }
"""


@dataclass(frozen=True)
class Elves:
    """Paths of the compiled ELF files."""

    directory: Path
    plain: Path  # needs libc only, GLIBC_2.2.5
    fcntl64: Path  # needs GLIBC_2.28
    arc4random: Path  # needs GLIBC_2.36
    cxx_plain: Path  # needs libstdc++ with an old GLIBCXX version
    cxx_new: Path  # needs GLIBCXX_3.4.30
    dep: Path  # libdep.so.1 (SONAME libdep.so.1)
    uses_dep: Path  # NEEDED libdep.so.1, RUNPATH $ORIGIN
    aarch64: Path  # plain with e_machine = EM_AARCH64
    executable: Path  # a small dynamically linked program

    def read(self, name: str) -> bytes:
        """Bytes of one of the files by attribute name."""
        path: Path = getattr(self, name)
        return path.read_bytes()


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")


def set_machine(data: bytes, machine: int) -> bytes:
    """Return ``data`` (an ELF file) with ``e_machine`` replaced (little endian)."""
    assert data[:4] == b"\x7fELF" and data[5] == 1
    return data[:18] + struct.pack("<H", machine) + data[20:]


def build_elves(directory: Path) -> Elves:
    """Compile every fixture file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    sources = {
        "plain.c": PLAIN_C,
        "fcntl64.c": FCNTL64_C,
        "arc4random.c": ARC4RANDOM_C,
        "dep.c": DEP_C,
        "uses_dep.c": USES_DEP_C,
        "cxx_new.cpp": CXX_ASSERT_CPP,
        "cxx_plain.cpp": CXX_PLAIN_CPP,
        "main.c": '#include <stdio.h>\nint main(void){puts("hi");return 0;}\n',
    }
    for name, text in sources.items():
        (directory / name).write_text(text)
    cc = ["gcc", "-shared", "-fPIC", "-O1"]
    _run([*cc, "plain.c", "-o", "libplain.so"], directory)
    _run([*cc, "fcntl64.c", "-o", "libfcntl64.so"], directory)
    _run([*cc, "arc4random.c", "-o", "libarc4random.so"], directory)
    _run([*cc, "-Wl,-soname,libdep.so.1", "dep.c", "-o", "libdep.so.1"], directory)
    _run(
        [
            *cc,
            "uses_dep.c",
            "-o",
            "libuses_dep.so",
            "-L.",
            "-l:libdep.so.1",
            "-Wl,-rpath,$ORIGIN",
            "-Wl,--enable-new-dtags",
        ],
        directory,
    )
    cxx = ["g++", "-shared", "-fPIC", "-O1"]
    _run([*cxx, "-D_GLIBCXX_ASSERTIONS", "cxx_new.cpp", "-o", "libcxx_new.so"], directory)
    _run([*cxx, "cxx_plain.cpp", "-o", "libcxx_plain.so"], directory)
    _run(["gcc", "-O1", "main.c", "-o", "hello"], directory)
    aarch64 = directory / "libplain_aarch64.so"
    aarch64.write_bytes(set_machine((directory / "libplain.so").read_bytes(), EM_AARCH64))
    return Elves(
        directory=directory,
        plain=directory / "libplain.so",
        fcntl64=directory / "libfcntl64.so",
        arc4random=directory / "libarc4random.so",
        cxx_plain=directory / "libcxx_plain.so",
        cxx_new=directory / "libcxx_new.so",
        dep=directory / "libdep.so.1",
        uses_dep=directory / "libuses_dep.so",
        aarch64=aarch64,
        executable=directory / "hello",
    )


@pytest.fixture(scope="session")
def elves(tmp_path_factory: pytest.TempPathFactory) -> Elves:
    """Compiled ELF fixtures (skips when gcc / g++ are missing)."""
    if shutil.which("gcc") is None or shutil.which("g++") is None:
        pytest.skip("gcc and g++ are needed to compile ELF fixtures")
    return build_elves(tmp_path_factory.mktemp("elves"))
