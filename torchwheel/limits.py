"""The named budgets of torchwheel's readers of untrusted bytes, and the regular-file open.

Every reader of an archive, ELF file, index page or manifest bounds its work by the input's
honest size; the limits that are not proportional to the input are named here (and in
docs/security.md) so they can be found, tested just under and just over, and overridden:

* zip (:class:`ZipLimits`, used by :class:`torchwheel.zipread.ZipReader`): the per-member
  ratio :data:`MAX_RATIO` (above :data:`RATIO_FLOOR`), :data:`MAX_MEMBER` and the total
  inflated by one reader :data:`MAX_TOTAL_INFLATE`; ``TORCHWHEEL_MAX_INFLATE`` (bytes) and
  ``TORCHWHEEL_MAX_RATIO`` override them.

:func:`open_regular` opens a file given by the user for reading only when it is a regular
file, without ever blocking on a FIFO (``O_NONBLOCK`` at open, ``fstat`` before any read).
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ArchiveError, InputError

__all__ = [
    "MAX_MEMBER",
    "MAX_RATIO",
    "MAX_TOTAL_INFLATE",
    "RATIO_FLOOR",
    "ZipLimits",
    "open_regular",
]

#: Most a member may inflate per compressed byte (deflate itself cannot exceed ~1032:1, so a
#: larger declared size is a lie about the member).
MAX_RATIO = 1100.0
#: Members up to this declared size are exempt from :data:`MAX_RATIO` (tiny files of zeros).
RATIO_FLOOR = 1024 * 1024
#: Largest member a reader opens (Lambda unzips 262,144,000 bytes in all).
MAX_MEMBER = 4 * 1024**3
#: Bytes one :class:`ZipReader` may inflate over its life (declared size counted at each open).
MAX_TOTAL_INFLATE = 16 * 1024**3


@dataclass(frozen=True)
class ZipLimits:
    """The budgets of a :class:`ZipReader` (defaults: the module constants)."""

    max_ratio: float = MAX_RATIO
    ratio_floor: int = RATIO_FLOOR
    max_member: int = MAX_MEMBER
    max_total: int = MAX_TOTAL_INFLATE

    @classmethod
    def from_env(cls) -> ZipLimits:
        """The defaults, with ``TORCHWHEEL_MAX_INFLATE`` (bytes) and ``TORCHWHEEL_MAX_RATIO``
        applied when set (an unreadable value raises :class:`~torchwheel.errors.InputError`)."""
        total = _env_number("TORCHWHEEL_MAX_INFLATE")
        ratio = _env_number("TORCHWHEEL_MAX_RATIO")
        return cls(
            max_ratio=MAX_RATIO if ratio is None else float(ratio),
            max_total=MAX_TOTAL_INFLATE if total is None else int(total),
            max_member=MAX_MEMBER if total is None else min(MAX_MEMBER, int(total)),
        )

    def refusal(self, file_size: int, compressed_size: int) -> str | None:
        """Why a member declaring these sizes breaks the limits, or None."""
        if file_size > self.max_member:
            return f"declares {file_size:,} bytes, over the {self.max_member:,}-byte member limit"
        if file_size > self.ratio_floor and file_size > self.max_ratio * max(compressed_size, 1):
            return (
                f"declares {file_size:,} bytes from {compressed_size:,} compressed, over "
                f"the {self.max_ratio:g}:1 ratio limit"
            )
        return None


def _env_number(name: str) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text) if len(text) <= 30 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name}={text[:40]!r} is not a positive number")
    return value


def open_regular(path: Path | str, source: str | None = None) -> int:
    """A read-only descriptor of the regular file ``path``; anything else raises
    :class:`ArchiveError` without blocking (``O_NONBLOCK`` at open, ``fstat`` before any read:
    a FIFO, device or socket is refused, a directory too)."""
    label = source or str(path)
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ArchiveError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ArchiveError(f"{label}: is a directory, not a zip file") from None
    except OSError as exc:
        raise ArchiveError(f"{label}: cannot open ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ArchiveError(f"{label}: is a directory, not a zip file")
        if not stat.S_ISREG(mode):
            raise ArchiveError(f"{label}: not a regular file ({_file_kind(mode)})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a plain file"
