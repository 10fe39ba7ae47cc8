"""Write files all at once or not at all: a temp file beside the target, then ``os.replace``.

Every file torchwheel writes for the user or into its caches goes through here, so an
interrupted run never leaves a half-written zip, wheel or cache entry behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_output", "atomic_write"]


@contextmanager
def atomic_output(
    path: Path, *, mode: int | None = None, fsync: bool = False
) -> Iterator[BinaryIO]:
    """Yield a binary file (opened ``w+b``) that becomes ``path`` only if the block succeeds.

    ``mode`` sets the permission bits before the rename; ``fsync`` flushes to disk first.
    On any exception the temp file is removed and ``path`` is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
