"""Write files all at once or not at all, to places that are safe to write; clean what a killed
run left behind.

* :func:`atomic_output` / :func:`atomic_write`: a temp file beside the target, then
  ``os.replace`` — an interrupted run never leaves a half-written zip, wheel or cache entry.
* :func:`check_outputs` (with :func:`check_output_file`, :func:`check_output_dir`): where a
  build may write, validated before any download — a regular file or a new path for the zip,
  a directory (empty but for ``python/``) or a new path for the tree; never a device, FIFO or
  directory as the zip, never a path under a file, never inside ``/proc``, ``/sys`` or
  ``/dev``, never the zip inside the tree.
* Temp names carry the process id (:func:`temp_dir`, the temp files of :func:`atomic_output`)
  so :func:`clean_stale` can remove what a process killed with SIGKILL left behind once that
  process is gone — at the start of the next build.
* :func:`normalize_modes`: a published tree gets the zip's modes (0755 directories and
  executables, 0644 files), not the 0700/0600 of temp directories and files.
* :func:`signals_deferred`: Ctrl-C and SIGTERM wait while a temp directory is made and
  recorded, so the ``finally`` that removes it always knows it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import InputError

__all__ = [
    "PSEUDO_FILESYSTEMS",
    "atomic_output",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "check_outputs",
    "clean_stale",
    "normalize_modes",
    "signals_deferred",
    "temp_dir",
]

#: Directories whose files are not files: never an output.
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


@contextmanager
def atomic_output(
    path: Path, *, mode: int | None = None, fsync: bool = False
) -> Iterator[BinaryIO]:
    """Yield a binary file (opened ``w+b``) that becomes ``path`` only if the block succeeds.

    ``mode`` sets the permission bits before the rename; ``fsync`` flushes to disk first.
    On any exception the temp file is removed and ``path`` is left untouched. The temp file
    is ``.<name>.<pid>.<random>.tmp`` beside ``path`` (see :func:`clean_stale`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path, mode=mode) as f:
        f.write(data)


# -- where outputs may go --------------------------------------------------------------------


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _check_place(path: Path, flag: str) -> Path:
    """The absolute path, after refusing an empty one, one in a pseudo file system, and one
    whose nearest existing ancestor is not a writable directory."""
    if not str(path) or str(path) == ".":
        raise InputError(f"{flag}: an empty path is not a place to write")
    absolute = Path(os.path.abspath(path))
    for where in (absolute, Path(os.path.realpath(absolute))):
        for root in PSEUDO_FILESYSTEMS:
            if where == Path(root) or Path(root) in where.parents:
                raise InputError(f"{flag} {path}: {root} holds no regular files; write elsewhere")
    ancestor = absolute.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{flag} {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: {ancestor} is not writable")
    return absolute


def check_output_file(path: Path, flag: str = "-o") -> Path:
    """Refuse a zip output that is not a regular file or a new path (see the module doc);
    return it absolute."""
    absolute = _check_place(path, flag)
    try:
        mode = os.stat(absolute).st_mode
    except FileNotFoundError:
        return absolute
    except OSError as exc:
        raise InputError(f"{flag} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{flag} {path}: is {_kind(mode)}; give a file name for the zip")
    return absolute


def check_output_dir(path: Path, flag: str = "--tree") -> Path:
    """Refuse a tree output that exists and is not a directory, or holds anything but a
    ``python/`` a build made; return it absolute."""
    absolute = _check_place(path, flag)
    if not os.path.lexists(absolute):
        return absolute
    if absolute.is_symlink() or not absolute.is_dir():
        raise InputError(f"{flag} {path}: exists and is not a directory")
    extra = sorted(p.name for p in absolute.iterdir() if p.name != "python")
    if extra:
        raise InputError(
            f"{flag} {path}: not empty ({', '.join(extra[:3])}); refusing to replace it"
        )
    return absolute


def check_outputs(output: Path | None, tree: Path | None) -> None:
    """Validate the zip and tree outputs of a build together (the zip never in the tree)."""
    out = check_output_file(output) if output is not None else None
    tdir = check_output_dir(tree) if tree is not None else None
    if out is not None and tdir is not None:
        real_out = Path(os.path.realpath(out))
        real_tree = Path(os.path.realpath(tdir))
        if real_out == real_tree or real_tree in real_out.parents:
            raise InputError(
                f"-o {output}: inside --tree {tree}, which the build replaces; write the zip "
                "elsewhere"
            )


# -- temp names and what killed runs leave -----------------------------------------------------


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (main thread, POSIX; a no-op elsewhere):
    a signal that arrives meanwhile is handled right after, once the block's bookkeeping
    (a temp directory made *and* recorded for removal) is done."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def temp_dir(stem: str, parent: Path | None = None) -> Path:
    """A new private directory ``<stem>-<pid>-<random>`` in ``parent`` (default: the temp
    directory), named so :func:`clean_stale` knows whose it is."""
    return Path(tempfile.mkdtemp(prefix=f"{stem}-{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's live process (or a number that is no pid)
    return True


def clean_stale(directory: Path, stems: Iterable[str]) -> list[Path]:
    """Remove this user's temp trees and files in ``directory`` named ``<stem>-<pid>-...`` or
    ``<stem>.<pid>....`` whose process is gone (killed runs); return what was removed."""
    patterns = [re.compile(rf"{re.escape(s)}[.-]([0-9]{{1,9}})[.-]") for s in stems]
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        pid = next((int(m.group(1)) for p in patterns if (m := p.match(entry.name))), None)
        if pid is None or _alive(pid):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def normalize_modes(root: Path) -> None:
    """Give every directory below ``root`` (and ``root``) mode 0755 and every file 0755 when
    any execute bit is set, else 0644 — the modes the layer zip records."""
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            path = os.path.join(dirpath, d)
            if not os.path.islink(path):
                os.chmod(path, 0o755)
        for f in filenames:
            path = os.path.join(dirpath, f)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o755 if st.st_mode & 0o111 else 0o644)
