"""Lambda layers from wheels, one step per module (each usable alone):

- :mod:`.install` — :class:`LayerTree`: wheels installed as ``installer`` would, hash-checked
- :mod:`.slimrules`, :mod:`.slimming` — ``--slim``: what CPU inference never loads, removed
- :mod:`.stripping` — ``--strip``: ``strip --strip-unneeded`` on shared objects
- :mod:`.bytecode` — ``--compile``: reproducible unchecked-hash ``.pyc`` files
- :mod:`.report` — step results, package sizes, quotas, suggestions (:class:`LayerReport`)
- :mod:`.older` — the network probe for an older release that fits
- :mod:`.build` — ``build_layer``: the pipeline, driven by one ``BuildOptions`` (import it
  from :mod:`torchwheel.layer.build` or :mod:`torchwheel`; this package does not, because
  :mod:`.build` imports :mod:`torchwheel.packed`, which imports :mod:`.install`)

The zip itself is written by :mod:`torchwheel.zipwrite` (re-exported here).
"""

from __future__ import annotations

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

__all__ = [
    "DEFAULT_COMPRESSLEVEL",
    "LAYOUTS",
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
    "check_compile_target",
    "compile_bytecode",
    "compress_backend",
    "layer_prefix",
    "quota_checks",
    "slim",
    "slim_rule_for",
    "slim_rules",
    "strip",
    "suggestions",
    "write_layer_zip",
    "zip_date_time",
]
