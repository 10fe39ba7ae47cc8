"""torchwheel: get PyTorch onto AWS Lambda without guesswork.

Pipeline: index → tags/runtimes → verdict → resolve → fetch → layer → check.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    InputError,
    InvalidWheelFilename,
    NetworkError,
    NoCompatibleWheel,
    TorchwheelError,
    UnknownRuntime,
)
from .runtimes import Runtime, Target, get_runtime, make_target, quotas, runtimes
from .verdict import Verdict, evaluate

__all__ = [
    "InputError",
    "InvalidWheelFilename",
    "NetworkError",
    "NoCompatibleWheel",
    "Runtime",
    "Target",
    "TorchwheelError",
    "UnknownRuntime",
    "Verdict",
    "__version__",
    "evaluate",
    "get_runtime",
    "make_target",
    "quotas",
    "runtimes",
]
