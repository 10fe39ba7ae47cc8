"""A project's torchwheel policy, set once in ``pyproject.toml``::

    [tool.torchwheel]
    runtime = "python3.12"
    arch = "arm64"
    python = "3.12"        # for provided.* runtimes
    ignore = ["foreign-pycache"]
    strict = true

``check`` reads all of it and ``build`` the target (runtime, arch, python), from the first
``pyproject.toml`` in the current directory or above (or ``--config FILE``; ``--no-config``
skips it). Options on the command line win over the file; ``ignore`` lists add up. A section
with an unknown key or a value of the wrong type is an input error naming the file (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "KEYS",
    "ProjectConfig",
    "add_config_arguments",
    "apply_config",
    "find_config",
    "load_config",
]

#: key → the type it must have
KEYS: dict[str, type] = {"runtime": str, "arch": str, "python": str, "ignore": list, "strict": bool}


@dataclass(frozen=True)
class ProjectConfig:
    """The ``[tool.torchwheel]`` section (``None``: not set) and the file it came from."""

    path: Path | None = None
    runtime: str | None = None
    arch: str | None = None
    python: str | None = None
    ignore: tuple[str, ...] = ()
    strict: bool | None = None


def find_config(start: Path | None = None) -> Path | None:
    """The first ``pyproject.toml`` in ``start`` (default: the current directory) or above."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        candidate = d / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _value(path: Path, key: str, value: Any) -> Any:
    want = KEYS.get(key)
    if want is None:
        raise InputError(
            f"{path}: [tool.torchwheel] has an unknown key {key!r} (known: {', '.join(KEYS)})"
        )
    if want is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif isinstance(value, want):
        return value
    kind = {list: "a list of strings", str: "a string", bool: "true or false"}[want]
    if key == "python":  # 3.10 as a TOML number would read as 3.1
        kind = 'a string such as "3.12"'
    raise InputError(f"{path}: [tool.torchwheel] {key} must be {kind}, not {value!r}")


def load_config(path: Path) -> ProjectConfig:
    """Read ``[tool.torchwheel]`` from ``path`` (an empty config when the section is absent)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text: {exc.reason}") from None
    section = data.get("tool", {}).get("torchwheel", {})
    if not isinstance(section, dict):
        raise InputError(f"{path}: [tool.torchwheel] must be a table")
    values = {key: _value(path, key, v) for key, v in section.items()}
    return ProjectConfig(path=path, **values)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--no-config``."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read [tool.torchwheel] (runtime, arch, python, ignore, strict) from FILE "
        "(default: the first pyproject.toml here or above)",
    )
    g.add_argument(
        "--no-config", action="store_true", help="ignore [tool.torchwheel] in pyproject.toml"
    )


def apply_config(args: argparse.Namespace, keys: tuple[str, ...] = tuple(KEYS)) -> ProjectConfig:
    """Fill ``args``' unset target / ``strict`` from the config and add its ``ignore`` codes
    (only the ``keys`` the command takes: ``build`` takes the target alone); return the config
    used (empty with ``--no-config`` or without a file)."""
    if getattr(args, "no_config", False):
        return ProjectConfig()
    path = args.config if getattr(args, "config", None) is not None else find_config()
    if path is None:
        return ProjectConfig()
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    cfg = load_config(path)
    for key in ("runtime", "arch", "python"):
        if key in keys and getattr(args, key, None) is None and getattr(cfg, key) is not None:
            setattr(args, key, getattr(cfg, key))
    if "strict" in keys and cfg.strict is not None and getattr(args, "strict", None) is None:
        args.strict = cfg.strict
    if "ignore" in keys:
        given = getattr(args, "ignore", [])
        args.ignore = [*cfg.ignore, *[c for c in given if c not in cfg.ignore]]
    return cfg
