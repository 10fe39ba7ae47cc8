"""Lambda layers from wheels, one step per module (each usable alone):

- :mod:`.install` — :class:`LayerTree`: wheels installed as ``installer`` would, hash-checked
- :mod:`.slimrules`, :mod:`.slimming` — ``--slim``: what CPU inference never loads, removed
- :mod:`.stripping` — ``--strip``: ``strip --strip-unneeded`` on shared objects
- :mod:`.bytecode` — ``--compile``: reproducible unchecked-hash ``.pyc`` files
- :mod:`.report` — step results, package sizes, quotas, suggestions (:class:`LayerReport`)
- :mod:`.older` — the network probe for an older release that fits
- :mod:`.build` — :func:`build_layer`: the pipeline, driven by one :class:`BuildOptions`

The zip itself is written by :mod:`torchwheel.zipwrite` (re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..zipwrite import (
    DEFAULT_COMPRESSLEVEL,
    RawSource,
    ZipResult,
    compress_backend,
    write_layer_zip,
    zip_date_time,
)
from .bytecode import check_compile_target, compile_bytecode
from .install import LAYOUTS, InstalledWheel, LayerTree, TreeFile, layer_prefix
from .report import (
    LayerReport,
    OlderRelease,
    PackageSize,
    QuotaCheck,
    StepResult,
    quota_checks,
    suggestions,
)
from .slimming import slim
from .slimrules import SlimRule, slim_rule_for, slim_rules
from .stripping import strip

if TYPE_CHECKING:
    from .build import BuildOptions, build_layer, run_build

#: names of :mod:`.build`, loaded on first use: it imports :mod:`torchwheel.packed`, which
#: imports :mod:`.install` and :mod:`.stripping` through this package — importing it here
#: would make ``packed`` → ``layer`` → ``layer.build`` → ``packed`` a cycle, and would make
#: every user of :class:`LayerTree` (``check``, ``packed``) load the resolver and httpx.
_BUILD_NAMES = frozenset({"BuildOptions", "build_layer", "run_build"})


def __getattr__(name: str) -> Any:
    """:func:`build_layer`, :class:`BuildOptions` and :func:`run_build` on first use."""
    if name not in _BUILD_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import build

    value = getattr(build, name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_COMPRESSLEVEL",
    "LAYOUTS",
    "BuildOptions",
    "InstalledWheel",
    "LayerReport",
    "LayerTree",
    "OlderRelease",
    "PackageSize",
    "QuotaCheck",
    "RawSource",
    "SlimRule",
    "StepResult",
    "TreeFile",
    "ZipResult",
    "build_layer",
    "check_compile_target",
    "compile_bytecode",
    "compress_backend",
    "layer_prefix",
    "quota_checks",
    "run_build",
    "slim",
    "slim_rule_for",
    "slim_rules",
    "strip",
    "suggestions",
    "write_layer_zip",
    "zip_date_time",
]
