"""Progress of long steps, reported through an injected callback (library code never prints).

A step that can take more than a second — resolving the closure, downloading, installing,
slimming, stripping, compiling, packing, zipping, ``check``'s scan — reports what it has done
as :class:`ProgressEvent` values passed to a :data:`ProgressCallback` its caller injects
(``progress=`` on :func:`torchwheel.build_layer`, :func:`torchwheel.check` ...). The CLI turns
them into a rich display on a terminal and one plain line per finished step otherwise
(``zip: 5,360 files, 439.0 MiB, 21.0 s``); a library user may collect them, log them or
ignore them (``progress=None``, the default, costs next to nothing).

Library code opens a step with :func:`step` and reports through the :class:`Step` it yields::

    with step(progress, "zip", files_total=len(members), bytes_total=size) as s:
        for m in members:
            ...
            s.advance(files=1, bytes=m.size)

Events of one step come in order: one ``"start"``, any number of ``"update"`` (throttled to
about ten a second; :meth:`Step.advance` is safe to call from worker threads), then one
``"end"`` carrying the final counts and the step's seconds — or ``"fail"`` when the step
raised (the error itself propagates unchanged). Steps do not nest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "STEPS",
    "EventKind",
    "ProgressCallback",
    "ProgressEvent",
    "Step",
    "bytes_callback",
    "step",
]

#: The step names torchwheel reports, in pipeline order (a callback may see others later).
STEPS: tuple[str, ...] = (
    "resolve",
    "download",
    "install",
    "slim",
    "strip",
    "compile",
    "pack",
    "zip",
    "tree",
    "scan",
)

EventKind = Literal["start", "update", "end", "fail"]

#: Seconds between two ``"update"`` events of one step (``"start"``/``"end"`` always go out).
UPDATE_INTERVAL = 0.1


@dataclass(frozen=True)
class ProgressEvent:
    """Where one step stands.

    ``item`` names what the step is on now (a package being downloaded, a zip being
    scanned), ``None`` when nothing in particular. ``bytes_total``/``files_total`` are
    ``None`` when unknown. ``seconds`` is the time since the step started. ``note`` is a
    short free-text summary a step may add at its end (``"saved 12.0 MiB"``). ``unit`` is
    what the step counts in ``files_*`` (``"files"``, ``"wheels"``, ``"packages"``).
    """

    kind: EventKind
    step: str
    item: str | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    files_done: int = 0
    files_total: int | None = None
    seconds: float = 0.0
    note: str | None = None
    unit: str = "files"


#: What library code calls with each event; exceptions it raises propagate into the step.
ProgressCallback = Callable[[ProgressEvent], None]


class Step:
    """One running step: counts bytes and files and reports them to the callback.

    Made by :func:`step`; thread-safe. With no callback the counts are still kept (a step's
    totals may be read back from :attr:`bytes_done`/:attr:`files_done`).
    """

    def __init__(
        self,
        callback: ProgressCallback | None,
        name: str,
        *,
        item: str | None = None,
        bytes_total: int | None = None,
        files_total: int | None = None,
        unit: str = "files",
        interval: float = UPDATE_INTERVAL,
    ) -> None:
        self.name = name
        self.unit = unit
        self.item = item
        self.bytes_done = 0
        self.files_done = 0
        self.bytes_total = bytes_total
        self.files_total = files_total
        self.note: str | None = None
        self._callback = callback
        self._interval = interval
        self._lock = threading.Lock()
        self._start = time.perf_counter()
        self._last = float("-inf")

    @property
    def seconds(self) -> float:
        """Seconds since the step started."""
        return time.perf_counter() - self._start

    def event(self, kind: EventKind) -> ProgressEvent:
        """The step's state as an event of ``kind``."""
        return ProgressEvent(
            kind=kind,
            step=self.name,
            item=self.item,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            files_done=self.files_done,
            files_total=self.files_total,
            seconds=self.seconds,
            note=self.note,
            unit=self.unit,
        )

    def advance(self, *, bytes: int = 0, files: int = 0, item: str | None = None) -> None:
        """Add ``bytes``/``files`` done (and say what the step is on now, if ``item``)."""
        with self._lock:
            self.bytes_done += bytes
            self.files_done += files
            if item is not None:
                self.item = item
            self._maybe_emit()

    def update(
        self,
        *,
        bytes_done: int | None = None,
        files_done: int | None = None,
        bytes_total: int | None = None,
        files_total: int | None = None,
        item: str | None = None,
    ) -> None:
        """Set counts or totals outright (for a caller that knows absolute numbers)."""
        with self._lock:
            if bytes_done is not None:
                self.bytes_done = bytes_done
            if files_done is not None:
                self.files_done = files_done
            if bytes_total is not None:
                self.bytes_total = bytes_total
            if files_total is not None:
                self.files_total = files_total
            if item is not None:
                self.item = item
            self._maybe_emit()

    def _maybe_emit(self) -> None:  # holds the lock
        if self._callback is None:
            return
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self._callback(self.event("update"))

    def _emit(self, kind: EventKind) -> None:
        if self._callback is not None:
            with self._lock:
                self._callback(self.event(kind))


@contextmanager
def step(
    callback: ProgressCallback | None,
    name: str,
    *,
    item: str | None = None,
    bytes_total: int | None = None,
    files_total: int | None = None,
    unit: str = "files",
) -> Iterator[Step]:
    """Run one step: ``"start"`` now, ``"end"`` (or ``"fail"`` on an exception) after.

    ``callback`` ``None`` reports nothing. The :class:`Step` yielded takes the counts;
    ``unit`` names what ``files`` counts.
    """
    s = Step(callback, name, item=item, bytes_total=bytes_total, files_total=files_total, unit=unit)
    s._emit("start")
    try:
        yield s
    except BaseException:
        s._emit("fail")
        raise
    s.item = None
    s._emit("end")


def bytes_callback(s: Step, *, base: int = 0) -> Callable[[int, int | None], None]:
    """A ``(bytes done, total or None)`` callback (the shape :func:`torchwheel.fetch` takes)
    that sets ``s``'s bytes to ``base + done``."""

    def update(done: int, total: int | None) -> None:
        s.update(bytes_done=base + done)

    return update
