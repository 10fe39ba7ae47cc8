"""Pre-deploy checks of Lambda layer and function zips; :func:`check` is the entry point.

One module per job: :mod:`.model` (findings, codes, reports), :mod:`.scan` (reading and
hashing members), one module per family of findings (:mod:`.layout`, :mod:`.record`,
:mod:`.libraries`, :mod:`.deps`, :mod:`.sizes`, :mod:`.packed`) and :mod:`.driver`, which
runs them (see its docstring for the deployment model and the extension hooks).
"""

from __future__ import annotations

from .driver import EXPANDERS, EXTRA_CHECKS, check
from .model import (
    CODES,
    ERROR,
    INFO,
    WARNING,
    CheckReport,
    CheckState,
    Expansion,
    Finding,
    InstalledDist,
    LayerEntry,
    SizeReport,
    TargetVerdict,
)

__all__ = [
    "CODES",
    "ERROR",
    "EXPANDERS",
    "EXTRA_CHECKS",
    "INFO",
    "WARNING",
    "CheckReport",
    "CheckState",
    "Expansion",
    "Finding",
    "InstalledDist",
    "LayerEntry",
    "SizeReport",
    "TargetVerdict",
    "check",
]
