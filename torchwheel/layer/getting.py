"""Getting the wheels of a layer build: the index, the resolved closure, verified downloads
(reported as the ``resolve`` and ``download`` steps), and the zstandard wheel a packed layer
needs before Python 3.14. :class:`StepClock` times and reports every build step."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..deps import Closure, Pin, resolve_closure
from ..download import fetch
from ..errors import NoCompatibleWheel
from ..index import IndexClient
from ..packed import needs_zstandard
from ..progress import ProgressCallback, Step, bytes_callback
from ..progress import step as progress_step
from ..resolution import DEFAULT_INDEX_URL, resolve_target
from ..targets import Target
from .options import BuildOptions

__all__ = [
    "Fetched",
    "StepClock",
    "fetch_all",
    "open_index",
    "resolve_and_fetch",
    "resolve_zstandard",
]


@dataclass
class StepClock:
    """Seconds per step, for the report's ``timings``; each step also reports its progress
    (:mod:`torchwheel.progress`) under ``shown`` (default: the timing's name)."""

    progress: ProgressCallback | None = None
    start: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(
        self,
        name: str,
        *,
        since_start: bool = False,
        shown: str | None = None,
        unit: str = "files",
        files_total: int | None = None,
        bytes_total: int | None = None,
    ) -> Iterator[Step]:
        t = self.start if since_start else time.perf_counter()
        shown = shown or name
        with progress_step(
            self.progress, shown, unit=unit, files_total=files_total, bytes_total=bytes_total
        ) as s:
            yield s
        self.timings[name] = time.perf_counter() - t


@dataclass
class Fetched:
    """The resolved closure and the verified local wheels."""

    index: IndexClient
    closure: Closure
    wheels: list[tuple[Pin, Path]]
    zstd_wheel: Path | None


def open_index(options: BuildOptions, client: httpx.Client | None) -> IndexClient:
    return IndexClient(
        options.index_url or os.environ.get("TORCHWHEEL_INDEX_URL") or None,
        options.extra_index_urls,
        options.find_links,
        no_index=options.no_index,
        client=client,
        cache_dir=options.cache_dir,
        offline=options.offline,
        default_index_url=DEFAULT_INDEX_URL,
    )


def fetch_all(
    options: BuildOptions, pins: Sequence[Pin], http: httpx.Client, clock: StepClock
) -> list[tuple[Pin, Path]]:
    """Fetch (or find in the cache) each pinned wheel, reported as the ``download`` step."""
    sizes = [pin.candidate.size for pin in pins]
    total = sum(s for s in sizes if s is not None) if None not in sizes else None
    wheels = []
    with clock.step(
        "fetch", shown="download", unit="wheels", files_total=len(pins), bytes_total=total
    ) as s:
        for pin in pins:
            base = s.bytes_done
            s.update(item=pin.name)
            path = fetch(
                pin.candidate,
                cache_dir=options.cache_dir,
                client=http,
                progress=bytes_callback(s, base=base),
                offline=options.offline,
            )
            s.update(bytes_done=base + path.stat().st_size)
            s.advance(files=1)
            wheels.append((pin, path))
    return wheels


def resolve_and_fetch(
    options: BuildOptions,
    index: IndexClient | None,
    client: httpx.Client | None,
    clock: StepClock,
    closure: Closure | None = None,
) -> Fetched:
    """Resolve the closure (unless given) and fetch every wheel (and zstandard for a packed
    layer)."""
    own_index = index is None
    idx = index if index is not None else open_index(options, client)
    try:
        if closure is None:  # given: resolved (and reported) by the caller
            with clock.step("resolve", since_start=True, unit="packages") as s:
                closure = resolve_closure(
                    list(options.packages),
                    options.target,
                    idx,
                    version=options.version,
                    no_deps=options.no_deps,
                    include_runtime_packages=options.include_runtime_packages,
                    prereleases=options.prereleases,
                    cache_dir=options.cache_dir,
                    variant=options.variant,
                    verify_elf=options.verify_elf,
                )
                s.update(files_done=len(closure.pins))
        http = idx.client if client is None else client
        wheels = fetch_all(options, closure.pins, http, clock)
        zstd_wheel = None
        if options.packed and needs_zstandard(options.target):
            zstd_wheel = resolve_zstandard(
                options.target,
                idx,
                cache_dir=options.cache_dir,
                client=http,
                offline=options.offline,
            )
    finally:
        if own_index:
            idx.close()
    return Fetched(idx, closure, wheels, zstd_wheel)


def resolve_zstandard(
    target: Target,
    index: IndexClient,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    client: httpx.Client | None = None,
    offline: bool = False,
) -> Path:
    """The ``zstandard`` wheel for ``target`` (same verdict rules as torch), fetched and verified.

    ``index`` is an :class:`~torchwheel.index.IndexClient`. Raises
    :class:`~torchwheel.errors.NoCompatibleWheel` when no zstandard wheel fits the target.
    """
    res = resolve_target(target, index, package="zstandard")
    if res.wheel is None:
        raise NoCompatibleWheel(
            f"no zstandard wheel fits {target.label} (needed to unpack a packed layer before "
            f"Python 3.14): {res.summary}",
            res.candidates,
            res,
        )
    http = client if client is not None else index.client
    return fetch(res.wheel, cache_dir=cache_dir, client=http, offline=offline)
