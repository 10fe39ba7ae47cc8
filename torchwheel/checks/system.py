"""A Lambda image as the loader model's system: the facts file's libraries per runtime.

:class:`LambdaSystem` answers :class:`~torchwheel.checks.ldso.SystemProvider`'s questions
from ``system_libraries`` in ``torchwheel/data/lambda.json``:

* a library documented on the image (``present: yes``: glibc, libstdc++, libgcc_s) is in
  ``/lib64`` and ``/usr/lib64`` — so it is found *there*, in ``LD_LIBRARY_PATH`` order,
  before a copy in ``/opt/lib`` or a ``DT_RUNPATH`` directory, as on Lambda;
* a library seen on the image but not documented (``present: unconfirmed``: libz, OpenSSL,
  …) is assumed present only when the deployment has no copy the loader would find: it is
  the ld.so.cache answer, after every search directory, and labelled unconfirmed;
* ``present: no`` (libgomp) and unknown names are not provided;
* the python3.X runtimes' ``libpython3.X.so*`` is in ``/var/lang/lib``.

Version ceilings (``ZLIB_1.2.7`` on Amazon Linux 2 …) come along as
:attr:`~torchwheel.checks.ldso.SystemLibrary.ceilings`; GLIBC / GLIBCXX / CXXABI are judged
against the runtime's own ceilings by :mod:`.libraries`, not here.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ..targets import (
    SystemLibraryFact,
    Target,
    facts,
    system_libraries,
    system_library_dirs,
)
from .ldso import SystemLibrary

__all__ = ["RUNTIME_LIB_DIR", "LambdaSystem", "library_fact"]

#: Where the python3.X runtimes keep their libpython (first entry of their LD_LIBRARY_PATH).
RUNTIME_LIB_DIR: str = facts()["runtime_paths"]["python_lib"]


def _as_library(fact: SystemLibraryFact, directory: str) -> SystemLibrary:
    return SystemLibrary(
        name=fact.name,
        path=posixpath.join(directory, fact.name),
        label=fact.package,
        ceilings=dict(fact.versions),
        confirmed=fact.present == "yes",
        conservative=fact.conservative,
        note=fact.note,
    )


def library_fact(target: Target, name: str) -> SystemLibraryFact | None:
    """What the facts file says about library ``name`` on ``target``'s image, if anything."""
    return system_libraries(target.runtime).get(name)


@dataclass(frozen=True)
class LambdaSystem:
    """The system libraries of one Lambda runtime (a hashable :class:`SystemProvider`)."""

    target: Target

    @property
    def key(self) -> tuple[str, str, tuple[int, int]]:
        """What the answers depend on: runtime, architecture, CPython version."""
        return (self.target.runtime.name, self.target.arch, self.target.python)

    def _libpython(self, name: str) -> SystemLibrary | None:
        rt = self.target.runtime
        if rt.python is None or not name.startswith(f"libpython{rt.python_str}.so"):
            return None
        return SystemLibrary(
            name=name,
            path=posixpath.join(RUNTIME_LIB_DIR, name),
            label=f"the {rt.name} runtime's libpython",
        )

    def find(self, directory: str, name: str) -> SystemLibrary | None:
        """Documented libraries in ``/lib64`` / ``/usr/lib64``; libpython in /var/lang/lib."""
        if directory == RUNTIME_LIB_DIR:
            return self._libpython(name)
        dirs = system_library_dirs()
        if directory not in dirs:
            return None
        fact = library_fact(self.target, name)
        if fact is None or fact.present != "yes":
            return None
        return _as_library(fact, dirs[0])

    def default(self, name: str) -> SystemLibrary | None:
        """Any library the image has or is assumed to have (unconfirmed ones too)."""
        fact = library_fact(self.target, name)
        if fact is None or fact.present == "no":
            return self._libpython(name)
        return _as_library(fact, system_library_dirs()[0])
