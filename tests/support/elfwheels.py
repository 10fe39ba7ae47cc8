"""Wheels whose shared objects have known glibc needs, compiled with the host's gcc (issue 11).

The host links against glibc 2.36, where ``dlopen`` carries the version ``GLIBC_2.34`` (glibc
2.34 merged libdl into libc); ``strlen`` needs only ``GLIBC_2.2.5``. So:

- ``needs234``: a shared object needing ``GLIBC_2.34`` (loads on AL2023, not on AL2's 2.26);
- ``plain``: one needing nothing newer than ``GLIBC_2.2.5`` (loads everywhere, <= 2.17);
- ``big234``: ``needs234`` plus 3 MB of incompressible ``.rodata`` *after* its version table,
  so that reading only a prefix of its deflate stream is visible in the bytes transferred.

:func:`build_elf_objects` compiles them (``pytest.skip`` with the reason without gcc);
:func:`elf_wheel` wraps one in a wheel.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.wheels import make_wheel

NEEDS_234_C = r"""
#include <dlfcn.h>
void *needs_234(const char *p) { return dlopen(p, RTLD_NOW); }
"""

PLAIN_C = r"""
#include <string.h>
int plain_len(const char *s) { return (int)strlen(s); }
"""

BIG_C = r"""
#include <dlfcn.h>
__asm__(".section .rodata\n.global big_blob\nbig_blob:\n.incbin \"blob.bin\"\n.previous\n");
extern const char big_blob[];
void *needs_234(const char *p) { return big_blob[0] ? dlopen(p, RTLD_NOW) : 0; }
"""

#: Incompressible bytes in ``big234`` after its version table.
BLOB_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class ElfObjects:
    """The compiled shared objects' bytes."""

    needs234: bytes
    plain: bytes
    big234: bytes


def build_elf_objects(directory: Path) -> ElfObjects:
    """Compile the three shared objects in ``directory`` (skips the test without gcc)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: no ELF files with known glibc needs")
    directory.mkdir(parents=True, exist_ok=True)
    import hashlib

    blob = bytearray()
    block = b"blob"
    while len(blob) < BLOB_BYTES:
        block = hashlib.sha256(block).digest()
        blob += block
    (directory / "blob.bin").write_bytes(bytes(blob[:BLOB_BYTES]))
    out = {}
    for name, source in (("needs234", NEEDS_234_C), ("plain", PLAIN_C), ("big234", BIG_C)):
        (directory / f"{name}.c").write_text(source)
        proc = subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O1", f"{name}.c", "-o", f"lib{name}.so"],
            cwd=directory,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"gcc cannot build a shared object here: {proc.stderr.strip()[-200:]}")
        out[name] = (directory / f"lib{name}.so").read_bytes()
    return ElfObjects(**out)


def elf_wheel(
    directory: Path,
    name: str,
    version: str,
    so: bytes,
    *,
    tags: str = "py3-none-linux_x86_64",
    so_name: str = "_native.so",
) -> Path:
    """A wheel holding ``<name>/<so_name>`` (and an ``__init__.py``)."""
    return make_wheel(
        directory,
        name,
        version,
        tags=tags,
        files={f"{name}/__init__.py": b"", f"{name}/{so_name}": so},
    )
