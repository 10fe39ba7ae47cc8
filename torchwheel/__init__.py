"""torchwheel: get PyTorch onto AWS Lambda without guesswork.

Pipeline: index → tags/runtimes → verdict → resolve → fetch → layer → check.
"""

from __future__ import annotations

__version__ = "0.1.0"

import sys
import types
from typing import TYPE_CHECKING, Any

# Public name -> module that defines it. Loaded on first use (PEP 562), so that
# `python -m torchwheel check` does not pay for httpx, rich tables or resolvelib.
_EXPORTS: dict[str, str] = {
    "CheckReport": "check", "Finding": "check", "check": "check",
    "InputError": "errors", "InvalidWheelFilename": "errors", "NetworkError": "errors",
    "NoCompatibleWheel": "errors", "TorchwheelError": "errors", "UnknownRuntime": "errors",
    "fetch": "fetch",
    "Candidate": "index", "IndexClient": "index",
    "LayerReport": "layer", "build_layer": "layer",
    "PackInfo": "packed", "make_packed_tree": "packed", "pack_tree": "packed",
    "RemoteSize": "remote", "remote_wheel_size": "remote",
    "Resolution": "resolve", "resolve": "resolve", "select": "resolve",
    "Runtime": "runtimes", "Target": "runtimes", "get_runtime": "runtimes",
    "make_target": "runtimes", "quotas": "runtimes", "runtimes": "runtimes",
    "Verdict": "verdict", "evaluate": "verdict",
}

if TYPE_CHECKING:
    from .check import CheckReport, Finding, check
    from .errors import (
        InputError,
        InvalidWheelFilename,
        NetworkError,
        NoCompatibleWheel,
        TorchwheelError,
        UnknownRuntime,
    )
    from .fetch import fetch
    from .index import Candidate, IndexClient
    from .layer import LayerReport, build_layer
    from .packed import PackInfo, make_packed_tree, pack_tree
    from .remote import RemoteSize, remote_wheel_size
    from .resolve import Resolution, resolve, select
    from .runtimes import Runtime, Target, get_runtime, make_target, quotas, runtimes
    from .verdict import Verdict, evaluate


class _Package(types.ModuleType):
    """Keeps ``torchwheel.resolve`` / ``.check`` / ``.fetch`` / ``.runtimes`` the functions.

    Importing a submodule sets the package attribute of the same name to the module; the
    public API promises the function there (as an eager ``from .resolve import resolve``
    would), so that one assignment is skipped. The submodule stays in ``sys.modules``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """Import the public API lazily (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'torchwheel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Candidate",
    "CheckReport",
    "Finding",
    "IndexClient",
    "InputError",
    "InvalidWheelFilename",
    "LayerReport",
    "NetworkError",
    "NoCompatibleWheel",
    "PackInfo",
    "RemoteSize",
    "Resolution",
    "Runtime",
    "Target",
    "TorchwheelError",
    "UnknownRuntime",
    "Verdict",
    "__version__",
    "build_layer",
    "check",
    "evaluate",
    "fetch",
    "get_runtime",
    "make_packed_tree",
    "make_target",
    "pack_tree",
    "quotas",
    "remote_wheel_size",
    "resolve",
    "runtimes",
    "select",
]
