"""torchwheel: get PyTorch onto AWS Lambda without guesswork.

Pipeline: index → tags/runtimes → verdict → resolve → fetch → layer → check.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

# Public name -> module that defines it. Loaded on first use (PEP 562), so that
# `python -m torchwheel check` does not pay for httpx, rich tables or resolvelib.
_EXPORTS: dict[str, str] = {
    "CheckReport": "checks",
    "Finding": "checks",
    "check": "checks",
    "ArchiveError": "errors",
    "DataError": "errors",
    "ELFError": "errors",
    "HashMismatch": "errors",
    "IndexPageError": "errors",
    "InputError": "errors",
    "InvalidWheelFilename": "errors",
    "NetworkError": "errors",
    "NotFound": "errors",
    "NoCompatibleWheel": "errors",
    "TorchwheelError": "errors",
    "UnknownRuntime": "errors",
    "fetch": "download",
    "Candidate": "index",
    "IndexClient": "index",
    "LayerReport": "layer.report",
    "build_layer": "layer.build",
    "BuildOptions": "layer.build",
    "PackInfo": "packed",
    "make_packed_tree": "packed",
    "pack_tree": "packed",
    "RemoteSize": "remote",
    "remote_wheel_size": "remote",
    "Resolution": "resolution",
    "resolve": "resolution",
    "select": "resolution",
    "Runtime": "targets",
    "Target": "targets",
    "get_runtime": "targets",
    "make_target": "targets",
    "quotas": "targets",
    "runtimes": "targets",
    "Verdict": "verdict",
    "evaluate": "verdict",
}

if TYPE_CHECKING:
    from .checks import CheckReport, Finding, check
    from .download import fetch
    from .errors import (
        ArchiveError,
        DataError,
        ELFError,
        HashMismatch,
        IndexPageError,
        InputError,
        InvalidWheelFilename,
        NetworkError,
        NoCompatibleWheel,
        NotFound,
        TorchwheelError,
        UnknownRuntime,
    )
    from .index import Candidate, IndexClient
    from .layer.build import BuildOptions, build_layer
    from .layer.report import LayerReport
    from .packed import PackInfo, make_packed_tree, pack_tree
    from .remote import RemoteSize, remote_wheel_size
    from .resolution import Resolution, resolve, select
    from .targets import Runtime, Target, get_runtime, make_target, quotas, runtimes
    from .verdict import Verdict, evaluate


def __getattr__(name: str) -> Any:
    """Import the public API lazily (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'torchwheel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API, so ``dir(torchwheel)`` shows it before first use."""
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ArchiveError",
    "BuildOptions",
    "Candidate",
    "CheckReport",
    "DataError",
    "ELFError",
    "Finding",
    "HashMismatch",
    "IndexClient",
    "IndexPageError",
    "InputError",
    "InvalidWheelFilename",
    "LayerReport",
    "NetworkError",
    "NoCompatibleWheel",
    "NotFound",
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
