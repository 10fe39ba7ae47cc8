"""Target → ordered wheel tags, and the target's PEP 508 marker environment. Pure.

The tags are built with packaging's own ``cpython_tags`` / ``compatible_tags`` given explicit
platforms, so the order is exactly what ``packaging.tags.sys_tags()`` returns on the Lambda
image. The platform list mirrors ``packaging._manylinux.platform_tags`` with the runtime's
glibc in place of the host's.

One deliberate difference: packaging >= 26.4 ranks ``linux_<arch>`` before the manylinux
tags (on the host, a wheel built there should win). For Lambda a ``linux_`` wheel was built
somewhere else and promises nothing about glibc, so torchwheel keeps it last, where
packaging < 26.4 (and pip's vendored copies of it until then) put it: the verified
manylinux wheel of a release is preferred over its unverified ``linux_`` twin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from packaging import tags as _ptags

if TYPE_CHECKING:
    pass

__all__ = ["LEGACY_MANYLINUX", "marker_environment", "platform_tags", "target_tags"]

# PEP 513 / 571 / 599 legacy aliases (the same table as packaging._manylinux).
LEGACY_MANYLINUX: dict[tuple[int, int], str] = {
    (2, 17): "manylinux2014",
    (2, 12): "manylinux2010",
    (2, 5): "manylinux1",
}
LEGACY_TO_GLIBC: dict[str, tuple[int, int]] = {v: k for k, v in LEGACY_MANYLINUX.items()}


def oldest_manylinux_glibc(machine: str) -> tuple[int, int]:
    """Oldest glibc packaging offers manylinux tags for: 2.5 on x86, 2.17 elsewhere."""
    return (2, 5) if machine in ("x86_64", "i686") else (2, 17)


def platform_tags(machine: str, glibc: tuple[int, int]) -> list[str]:
    """``manylinux_2_X_<machine>`` from ``glibc`` down (with legacy aliases), then ``linux_``."""
    oldest = oldest_manylinux_glibc(machine)
    out: list[str] = []
    for minor in range(glibc[1], oldest[1] - 1, -1):
        out.append(f"manylinux_{glibc[0]}_{minor}_{machine}")
        legacy = LEGACY_MANYLINUX.get((glibc[0], minor))
        if legacy:
            out.append(f"{legacy}_{machine}")
    out.append(f"linux_{machine}")
    return out


def target_tags(python: tuple[int, int], machine: str, glibc: tuple[int, int]) -> list[_ptags.Tag]:
    """Every tag CPython ``python`` on ``machine`` with ``glibc`` accepts, best first.

    The order is ``sys_tags()``'s on such a host (except ``linux_<arch>``, see above).
    """
    platforms = platform_tags(machine, glibc)
    py = python
    interpreter = f"cp{py[0]}{py[1]}"
    # CPython < 3.8 (pymalloc builds, as on Lambda's python3.7) has the ABI tag cp37m
    abi = f"{interpreter}m" if py < (3, 8) else interpreter
    tags = list(_ptags.cpython_tags(py, [abi], platforms))
    tags += list(_ptags.compatible_tags(py, interpreter, platforms))
    return tags


def marker_environment(python: tuple[int, int], machine: str) -> dict[str, str]:
    """PEP 508 environment markers as seen by CPython ``python`` on a Linux ``machine``."""
    major, minor = python
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{major}.{minor}.0",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{major}.{minor}.0",
        "python_version": f"{major}.{minor}",
        "sys_platform": "linux",
    }
