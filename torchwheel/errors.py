"""One exception hierarchy for torchwheel.

The CLI maps these classes to exit codes in one place (:func:`torchwheel.cli.main`):
``InputError`` and ``NetworkError`` exit 2, ``NoCompatibleWheel`` exits 1. Anything else
that escapes is a bug and shows a traceback.
"""

from __future__ import annotations

from typing import Any


class TorchwheelError(Exception):
    """Base class of every error torchwheel raises on purpose."""

    exit_code = 2


class InputError(TorchwheelError, ValueError):
    """Bad input from the user: unknown runtime, malformed file, unsafe archive ... (exit 2)."""

    exit_code = 2


class UnknownRuntime(InputError):
    """A runtime, architecture or Python version that torchwheel does not know."""


class InvalidWheelFilename(InputError):
    """A file name that is not a valid wheel name (PEP 427 / binary distribution format)."""


class DataError(InputError):
    """The bundled facts file failed validation (a packaging bug, or a bad user override)."""


class ArchiveError(InputError):
    """A zip or wheel that cannot be read: truncated, not a zip, unsafe member names."""


class ELFError(InputError):
    """A file that claims to be ELF but cannot be parsed."""


class NetworkError(TorchwheelError):
    """An index or file URL could not be reached or answered wrongly (exit 2)."""

    exit_code = 2


class NotFound(NetworkError):
    """The server answered 404 Not Found or 410 Gone."""

    def __init__(self, url: str, status: int, reason: str = "") -> None:
        reason = reason or ("Gone" if status == 410 else "Not Found")
        super().__init__(f"{url}: HTTP {status} {reason}")
        self.url = url
        self.status = status


class IndexPageError(NetworkError):
    """An index answered with something that is not an index page (or 404 for the project)."""


class HashMismatch(InputError):
    """A downloaded file whose sha256 differs from the one the index promised."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(f"{url}: hash mismatch: expected sha256 {expected}, got {actual}")
        self.url = url
        self.expected = expected
        self.actual = actual


class NoCompatibleWheel(TorchwheelError):
    """No wheel fits the target (exit 1). Carries every candidate with its verdict."""

    exit_code = 1

    def __init__(self, message: str, candidates: Any = (), resolution: Any = None) -> None:
        super().__init__(message)
        self.candidates = list(candidates)
        self.resolution = resolution
