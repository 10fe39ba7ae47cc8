"""Where files land: Python files off ``sys.path``, archives left unextracted, escaping symlinks
(target-independent), and per target: site-packages for another Python, extension modules and
``.pyc`` files for another ABI.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..targets import Target, facts
from .model import ERROR, LAYER_MOUNT, WARNING, CheckState, Finding, LayerEntry, finding

__all__ = [
    "SITE_RE",
    "layout_findings",
    "on_sys_path",
    "symlink_findings",
    "sys_path",
    "target_layout_findings",
]

SITE_RE = re.compile(r"^python/lib/python(\d)\.(\d+)/site-packages(/|$)")
_EXT_RE = re.compile(r"\.cpython-(\d)(\d+)([a-z]*)-(.+)\.so$")
_PYC_RE = re.compile(r"\.(cpython|pypy)-?(\d)(\d+)[^.]*(\.opt-\d)?\.pyc$")
_PYLIB_RE = re.compile(r"^(?:python/)?lib/python(\d)\.(\d+)/")
_ARCHIVE_SUFFIXES = (".whl", ".egg", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


# -- target-independent --------------------------------------------------------------------------


def _pythonish(path: str) -> bool:
    base = posixpath.basename(path)
    return (
        base.endswith((".py", ".pyc", ".pth"))
        or bool(_EXT_RE.search(base))
        or ".dist-info/" in path
        or base.endswith(".abi3.so")
    )


def _off_path_group(p: str) -> str:
    """The directory a misplaced Python file is reported under."""
    m = _PYLIB_RE.match(p)
    if m and "/site-packages/" in p:
        return m.group(0) + "site-packages/"
    return p.split("/", 1)[0] + ("/" if "/" in p else "")


def _off_path_hint(origin: str, group: str) -> str:
    if origin.endswith(".whl"):
        return "a wheel is not a layer: install it under python/ (torchwheel build)"
    if group.startswith("lib/python"):
        return f"the zip lacks the python/ prefix: use python/{group}"
    if group == "site-packages/":
        return "use python/lib/python3.X/site-packages/ (or python/)"
    return "put packages under python/ or python/lib/python3.X/site-packages/"


def _not_on_sys_path(entries: Sequence[LayerEntry]) -> list[Finding]:
    off_path: dict[tuple[str, str], int] = defaultdict(int)
    for e in entries:
        if e.is_dir or e.mount != LAYER_MOUNT or e.expanded_from:
            continue
        if e.path.startswith("python/") or not _pythonish(e.path):
            continue
        off_path[(e.origin, _off_path_group(e.path))] += 1
    return [
        finding(
            "not-on-sys-path",
            f"{origin}:{group}",
            f"{n} Python file(s) under {group} are not on sys.path (layers land in /opt); "
            f"{_off_path_hint(origin, group)}",
            files=n,
        )
        for (origin, group), n in sorted(off_path.items())
    ]


def _archives(entries: Sequence[LayerEntry]) -> list[Finding]:
    findings: list[Finding] = []
    for e in entries:
        if e.is_dir:
            continue
        base = posixpath.basename(e.path).lower()
        if base.endswith(_ARCHIVE_SUFFIXES):
            in_site = e.path.startswith("python/") or e.mount != LAYER_MOUNT
            findings.append(
                finding(
                    "wheel-not-extracted",
                    e.label,
                    f"{e.path} is an archive, not an installed package: Python cannot import "
                    "from it; install it (pip install --target / torchwheel build) instead",
                    severity=ERROR if in_site else WARNING,
                )
            )
        elif base.endswith(".zip") and not e.expanded_from:
            findings.append(
                finding(
                    "nested-zip",
                    e.label,
                    f"{e.path} is a zip inside the zip: Lambda does not extract nested archives",
                )
            )
    return findings


def layout_findings(entries: Sequence[LayerEntry]) -> list[Finding]:
    """``not-on-sys-path``, ``wheel-not-extracted`` and ``nested-zip``."""
    return [*_not_on_sys_path(entries), *_archives(entries)]


def symlink_findings(state: CheckState) -> list[Finding]:
    """``unsafe-path`` for symlinks pointing outside their mount."""
    findings = []
    for path, target in sorted(state.symlinks.items()):
        entry = state.files[path]
        if target.startswith("/"):
            resolved = posixpath.normpath(target)
        else:
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        mount = entry.mount.rstrip("/") + "/"
        if not resolved.startswith(mount):
            severity = ERROR if not target.startswith("/") else WARNING
            findings.append(
                finding(
                    "unsafe-path",
                    entry.label,
                    f"symlink {entry.path} -> {target} points outside {entry.mount}",
                    severity=severity,
                    target=target,
                )
            )
    return findings


# -- per target ----------------------------------------------------------------------------------


def sys_path(target: Target, state: CheckState) -> list[str]:
    """The target's sys.path directories that can hold deployment files, in order."""
    x = target.python_str
    dirs = [d.replace("{X}", x) for d in facts()["layer"]["sys_path"]]
    return [*state.extra_sys_path, *dirs]


def on_sys_path(path: str, directories: Sequence[str]) -> bool:
    """True when ``path`` lies below one of ``directories``."""
    return any(path.startswith(d.rstrip("/") + "/") for d in directories)


@dataclass
class _PythonFiles:
    """Per-file facts every target needs, computed once per run."""

    site_dirs: dict[tuple[str, str, tuple[int, int]], int]  # (origin, dir, version) -> files
    extensions: list[tuple[str, LayerEntry, tuple[int, int], str, str]]
    pycs: dict[tuple[str, str, tuple[int, int]], int]  # (origin, impl, version) -> files


def _site_dirs(state: CheckState) -> dict[tuple[str, str, tuple[int, int]], int]:
    site_dirs: dict[tuple[str, str, tuple[int, int]], int] = defaultdict(int)
    for e in state.entries:
        if e.is_dir or e.mount != LAYER_MOUNT or not e.path.startswith("python/lib/"):
            continue
        m = SITE_RE.match(e.path)
        if m:
            ver = (int(m.group(1)), int(m.group(2)))
            site_dirs[(e.origin, f"python/lib/python{ver[0]}.{ver[1]}/", ver)] += 1
    return dict(site_dirs)


def _python_files(state: CheckState) -> _PythonFiles:
    cached = state.cache.get("layout")
    if isinstance(cached, _PythonFiles):
        return cached
    extensions = []
    pycs: dict[tuple[str, str, tuple[int, int]], int] = defaultdict(int)
    for path, e in state.files.items():
        base = posixpath.basename(path)
        if base.endswith(".pyc"):
            pm = _PYC_RE.search(base)
            if pm:
                pycs[(e.origin, pm.group(1), (int(pm.group(2)), int(pm.group(3))))] += 1
        elif base.endswith(".so"):
            ext = _EXT_RE.search(base)
            if ext:
                ver = (int(ext.group(1)), int(ext.group(2)))
                extensions.append((path, e, ver, ext.group(3), ext.group(4)))
    pre = _PythonFiles(site_dirs=_site_dirs(state), extensions=extensions, pycs=dict(pycs))
    state.cache["layout"] = pre
    return pre


def target_layout_findings(state: CheckState, target: Target) -> list[Finding]:
    """``wrong-python-dir``, ``abi-mismatch`` and ``foreign-pycache`` for one target."""
    findings: list[Finding] = []
    py = target.python
    pre = _python_files(state)
    for (origin, pdir, ver), n in sorted(pre.site_dirs.items()):
        if ver == py:
            continue
        findings.append(
            finding(
                "wrong-python-dir",
                f"{origin}:{pdir}",
                f"{pdir} ({n} files) is invisible to CPython {target.python_str}: use "
                f"python/lib/python{target.python_str}/site-packages/ or python/",
                files=n,
            )
        )
    path_dirs = sys_path(target, state)
    for path, e, ver, flags, plat in pre.extensions:
        if not on_sys_path(path, path_dirs):
            continue
        if ver != py or flags or plat != f"{target.machine}-linux-gnu":
            findings.append(
                finding(
                    "abi-mismatch",
                    e.label,
                    f"{posixpath.basename(path)} is built for cpython-{ver[0]}{ver[1]}{flags}"
                    f"-{plat}; {target.label} imports only "
                    f"cpython-{py[0]}{py[1]}-{target.machine}-linux-gnu",
                )
            )
    for (origin, impl, ver), n in sorted(pre.pycs.items()):
        if impl == "cpython" and ver == py:
            continue
        findings.append(
            finding(
                "foreign-pycache",
                f"{origin}:__pycache__",
                f"{n} .pyc files for {impl}-{ver[0]}{ver[1]} are dead weight on CPython "
                f"{target.python_str}",
                files=n,
            )
        )
    return findings
