"""torchwheel: get PyTorch onto AWS Lambda without guesswork.

Pipeline: index → tags/runtimes → verdict → resolve → fetch → layer → check.
"""

from __future__ import annotations

__version__ = "0.1.0"

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
