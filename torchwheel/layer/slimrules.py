"""The ``--slim`` rules: which installed files CPU inference never loads (pure).

A rule is a predicate on RECORD paths (relative to the site directory). The install step
uses them to leave files out while installing (``LayerTree(slim=True)``), :func:`slim
<torchwheel.layer.slim>` to remove them from a tree, and the older-release probe to estimate
a wheel's slimmed size from its central directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

__all__ = ["SlimRule", "slim_rule_for", "slim_rules"]


@dataclass(frozen=True)
class SlimRule:
    """One slimming step: a name, what it removes, and the predicate on RECORD paths."""

    name: str
    description: str
    match: Callable[[str], bool]


_HEADER_RE = re.compile(r"\.(h|hh|hpp|hxx|cuh|inl)$", re.IGNORECASE)
_TEST_LIB_RE = re.compile(r"^torch/lib/lib[^/]*_test\.so(\.[0-9.]+)?$")


def slim_rules() -> list[SlimRule]:
    """The ``--slim`` steps, in the order they are applied (first match counts)."""
    return [
        SlimRule(
            "torch/test",
            "torch's C++ test executables (torch/test/)",
            lambda p: p.startswith("torch/test/"),
        ),
        SlimRule(
            "torch/include",
            "C++ headers for building extensions (torch/include/)",
            lambda p: p.startswith("torch/include/"),
        ),
        SlimRule(
            "torch/bin",
            "test binaries, protoc and test models in torch/bin/ (torch_shm_manager is kept)",
            lambda p: p.startswith("torch/bin/") and p != "torch/bin/torch_shm_manager",
        ),
        SlimRule(
            "torch test libraries",
            "test-only libraries torch/lib/lib*_test.so",
            lambda p: bool(_TEST_LIB_RE.match(p)),
        ),
        SlimRule(
            "caffe2 leftovers",
            "caffe2/ and CMake package files (caffe2, torch/share/cmake/)",
            lambda p: p.startswith(("caffe2/", "torch/share/cmake/")),
        ),
        SlimRule("static libraries", "static archives (*.a)", lambda p: p.endswith(".a")),
        SlimRule(
            "headers",
            "C/C++ headers of compiled code (*.h, *.hpp, ...)",
            lambda p: bool(_HEADER_RE.search(p)),
        ),
        SlimRule("type stubs", "type stubs (*.pyi)", lambda p: p.endswith(".pyi")),
        SlimRule(
            "__pycache__",
            "bytecode caches (__pycache__/)",
            lambda p: "__pycache__" in p.split("/")[:-1],
        ),
    ]


@cache
def _rules() -> tuple[SlimRule, ...]:
    return tuple(slim_rules())


def slim_rule_for(record_path: str) -> SlimRule | None:
    """The first ``--slim`` rule that removes ``record_path`` (never a ``.dist-info`` file)."""
    if record_path.split("/", 1)[0].endswith(".dist-info"):
        return None
    for rule in _rules():
        if rule.match(record_path):
            return rule
    return None
