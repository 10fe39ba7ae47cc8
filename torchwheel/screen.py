"""Screen compatible wheels before downloading them: the build variant, and verified ELF needs.

A wheel that is compatible by its tags may still be wrong for Lambda:

- a GPU build of torch (CUDA/ROCm/XPU, :mod:`torchwheel.variants`) — Lambda has no GPU, and
  such a build drags in gigabytes of ``nvidia-*`` requirements. :class:`Screener` rejects it
  unless ``--variant`` asks for that kind (``cpu`` is the default; ``any`` takes every build);
- a ``linux_*`` wheel (or any wheel, with ``verify_elf``), whose tag says nothing about glibc:
  its shared objects' version needs are read by HTTP ranges
  (:mod:`torchwheel.elfneeds`) and judged against the target — rejected with the numbers, or
  marked verified.

Screening costs requests, so :meth:`Screener.pick` screens best-first and stops at the first
wheel that passes (a few at a time, in parallel); labels (``+cpu``, ``+cu126``) are read for
every candidate since they are free. The outcome of each screened wheel is kept in
:attr:`Screener.results` for reports.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .elfneeds import ElfNeeds, needs_reasons, needs_summary
from .errors import InputError
from .index import Candidate
from .probe import WheelProbe
from .report import human_bytes
from .targets import Target
from .variants import WANTS, Variant, from_label, is_variant_project
from .verdict import Verdict

__all__ = ["Judged", "RequirementSizer", "Screened", "Screener", "check_want", "gpu_reason"]

Judged = tuple[Candidate, Verdict]
#: ``sizer(wheel, requirements) -> bytes or None``: download size of a GPU build's requirements.
RequirementSizer = Callable[[Candidate, Sequence[str]], "int | None"]

#: Wheels screened at once by :meth:`Screener.pick` (each costs a few requests).
BATCH = 8
_LINUX_UNVERIFIED = "promises nothing about glibc"
_KIND_NAMES = {"cpu": "CPU", "cuda": "CUDA", "rocm": "ROCm", "xpu": "XPU"}


def check_want(want: str) -> str:
    """Validate a ``--variant`` value (``cpu``, ``cuda``, ``rocm``, ``xpu``, ``any``)."""
    if want not in WANTS:
        raise InputError(f"--variant {want!r}: choose one of {', '.join(WANTS)}")
    return want


@dataclass(frozen=True)
class Screened:
    """One screened wheel: its verdict after screening, its variant and its ELF needs."""

    verdict: Verdict
    variant: Variant | None = None
    elf: ElfNeeds | None = None
    requirements_bytes: int | None = None  # what a rejected GPU build's requirements weigh


def _reject(v: Verdict, *reasons: str) -> Verdict:
    return dataclasses.replace(v, compatible=False, rank=None, reasons=(*v.reasons, *reasons))


def _warn(v: Verdict, warning: str) -> Verdict:
    return dataclasses.replace(v, warnings=(*v.warnings, warning))


def gpu_reason(variant: Variant, requirements_bytes: int | None = None) -> str:
    """``"CUDA 12.8 build: Lambda has no GPU; its requirements add 2.6 GiB"``."""
    line = f"{variant.name} build: Lambda has no GPU"
    if requirements_bytes:
        line += f"; its requirements add {human_bytes(requirements_bytes)}"
    elif variant.requirements:
        line += f"; it requires {len(variant.requirements)} GPU packages"
    if variant.gpu_libraries:
        name, size = variant.gpu_libraries[0]
        line += f"; {name.rsplit('/', 1)[-1]} alone is {human_bytes(size)}"
    return line


class Screener:
    """Screens the compatible wheels of one target (see the module docstring).

    ``probe`` reads wheels (None: only labels are read and ELF needs stay unverified);
    ``want`` is the accepted build variant; ``verify_elf`` reads the ELF needs of every
    wheel, not only ``linux_*`` ones; ``sizer`` weighs a rejected GPU build's requirements
    (for the newest one of each project).
    """

    def __init__(
        self,
        target: Target,
        probe: WheelProbe | None,
        *,
        want: str = "cpu",
        verify_elf: bool = False,
        sizer: RequirementSizer | None = None,
        workers: int = BATCH,
    ) -> None:
        self.target = target
        self.probe = probe
        self.want = check_want(want)
        self.verify_elf = verify_elf
        self.sizer = sizer
        self.workers = workers
        self.results: dict[str, Screened] = {}  # URL -> outcome
        self.candidates: dict[str, Candidate] = {}  # URL -> the screened candidate
        self._lock = threading.Lock()
        self._sized: set[str] = set()

    # -- one wheel ---------------------------------------------------------------------------

    def needs_probe(self, cand: Candidate, verdict: Verdict) -> bool:
        """Would screening ``cand`` cost requests?"""
        if not verdict.compatible or cand.url in self.results:
            return False
        variant_io = is_variant_project(cand.project) and from_label(cand.version) is None
        return variant_io or self.verify_elf or verdict.unverified

    def screen(self, cand: Candidate, verdict: Verdict) -> Screened:
        """The screened verdict of one compatible wheel (remembered per URL)."""
        with self._lock:
            known = self.results.get(cand.url)
        if known is not None:
            return known
        result = self._screen(cand, verdict)
        with self._lock:
            self.results[cand.url] = result
            self.candidates[cand.url] = cand
        return result

    def _variant(self, cand: Candidate) -> Variant | None:
        if not is_variant_project(cand.project):
            return None
        labelled = from_label(cand.version)
        if labelled is not None:
            return labelled
        if self.probe is None:
            return Variant("unknown", None, "none", "not read (no probe)")
        return self.probe.variant(cand, self.target)

    def _screen(self, cand: Candidate, verdict: Verdict) -> Screened:
        if not verdict.compatible:
            return Screened(verdict)
        variant = self._variant(cand)
        v = verdict
        if variant is not None and not variant.accepted_by(self.want):
            return Screened(_reject(v, self._variant_reason(variant)), variant)
        if variant is not None and variant.kind == "unknown" and self.want != "any":
            v = _warn(v, f"build variant unknown ({variant.detail}); check the layer")
        if not (self.verify_elf or v.unverified):
            return Screened(v, variant)
        needs = self.probe.elf_needs(cand) if self.probe is not None else None
        if needs is None:
            return Screened(_warn(v, "its ELF files could not be read before download"), variant)
        reasons = needs_reasons(needs, self.target)
        if reasons:
            return Screened(_reject(v, *reasons), variant, needs)
        line = f"verified before download: {needs_summary(needs)}"
        if needs.complete:
            kept = tuple(w for w in v.warnings if _LINUX_UNVERIFIED not in w)
            v = dataclasses.replace(v, unverified=False, warnings=(*kept, line))
        else:
            v = _warn(v, line)
        return Screened(v, variant, needs)

    def _variant_reason(self, variant: Variant) -> str:
        if variant.is_gpu and self.want in ("cpu", "any"):
            return gpu_reason(variant)
        want = _KIND_NAMES.get(self.want, self.want)
        return f"{variant.name} build; --variant {self.want} asks for a {want} build"

    # -- many wheels -------------------------------------------------------------------------

    def _cost(self, cand: Candidate, verdict: Verdict) -> int:
        """0: free; 1: a variant probe (a request or two); :data:`BATCH`: ELF needs (MBs)."""
        if not self.needs_probe(cand, verdict):
            return 0
        return BATCH if self.verify_elf or verdict.unverified else 1

    def _next_batch(self, out: list[Judged], todo: list[int]) -> list[int]:
        """Indexes of the next wheels to screen: up to :data:`BATCH` variant probes at once
        (ELF reads one at a time), ending early at a wheel that passes for free (``+cpu``)."""
        batch: list[int] = []
        cost = 0
        while todo and cost < BATCH:
            k = todo[0]
            c, v = out[k]
            step = self._cost(c, v)
            if batch and cost + step > BATCH:
                break
            todo.pop(0)
            batch.append(k)
            cost += step
            if step == 0 and self.screen(c, v).verdict.compatible:
                break
        return batch

    def _screen_parallel(self, items: list[Judged]) -> None:
        costly = [(c, v) for c, v in items if self.needs_probe(c, v)]
        if len(costly) > 1 and self.workers > 1:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(costly))) as pool:
                list(pool.map(lambda cv: self.screen(*cv), costly))

    def prefetch(self, items: Sequence[Judged]) -> None:
        """Screen ``items`` (compatible wheels, best first) a batch at a time, in parallel,
        until one passes; later :meth:`screen` calls answer from memory."""
        out = list(items)
        todo = [k for k, (_, v) in enumerate(out) if v.compatible]
        while todo:
            batch = self._next_batch(out, todo)
            self._screen_parallel([out[k] for k in batch])
            if any(self.screen(*out[k]).verdict.compatible for k in batch):
                return

    def pick(self, judged: Sequence[Judged]) -> tuple[Candidate | None, list[Judged]]:
        """The best compatible wheel that passes screening, and every candidate re-judged.

        ``judged`` is :func:`torchwheel.resolution.select`'s list (compatible ones first, best
        first). Wheels after the chosen one are screened by label only.
        """
        out = list(judged)
        todo = [k for k, (_, v) in enumerate(out) if v.compatible]
        chosen: Candidate | None = None
        while todo and chosen is None:
            batch = self._next_batch(out, todo)
            self._screen_parallel([out[k] for k in batch])
            for k in batch:
                c, v = out[k]
                out[k] = (c, self.screen(c, v).verdict)
                if chosen is None and out[k][1].compatible:
                    chosen = c
        out = self._labels_only(out, todo)
        self._size_newest_gpu(out)
        ok = [x for x in out if x[1].compatible]
        if chosen is not None:
            ok.sort(key=lambda x: x[0] is not chosen)
        rest = sorted(
            (x for x in out if not x[1].compatible),
            key=lambda x: (x[0].version, x[0].filename),
            reverse=True,
        )
        return chosen, ok + rest

    def _labels_only(self, out: list[Judged], todo: list[int]) -> list[Judged]:
        """Reject the unscreened compatible wheels whose label names a build not wanted."""
        for j in todo:
            c, v = out[j]
            if not v.compatible or not is_variant_project(c.project):
                continue
            labelled = from_label(c.version)
            if labelled is not None and not labelled.accepted_by(self.want):
                s = Screened(_reject(v, self._variant_reason(labelled)), labelled)
                self.results.setdefault(c.url, s)
                self.candidates.setdefault(c.url, c)
                out[j] = (c, s.verdict)
        return out

    def _newest_gpu(self, out: list[Judged]) -> tuple[Candidate, Screened] | None:
        for c, _ in out:
            s = self.results.get(c.url)
            if s is not None and s.variant is not None and s.variant.is_gpu:
                return None if s.verdict.compatible else (c, s)
        return None

    def _size_newest_gpu(self, out: list[Judged]) -> None:
        """Weigh the requirements of the newest rejected GPU build (reason and report).

        Judged by its central directory alone, its METADATA is read first (the requirements
        and the CUDA version)."""
        found = self._newest_gpu(out) if self.sizer is not None else None
        if found is None or self.want not in ("cpu", "any") or found[0].project in self._sized:
            return
        c, s = found
        self._sized.add(c.project)
        variant = s.variant
        if variant is not None and not variant.requirements and self.probe is not None:
            self.probe.requires_dist(c)
            variant = self.probe.variant(c, self.target)
        size = self.sizer(c, variant.requirements) if self.sizer and variant else None
        if variant is None or not variant.is_gpu:
            return
        old = self._variant_reason(s.variant) if s.variant is not None else ""
        new = gpu_reason(variant, size)
        verdict = dataclasses.replace(
            s.verdict, reasons=tuple(new if r == old else r for r in s.verdict.reasons)
        )
        self.results[c.url] = Screened(verdict, variant, s.elf, size)
        for j, (c2, _) in enumerate(out):
            if c2.url == c.url:
                out[j] = (c2, verdict)

    def gpu_rejections(self, project: str) -> list[tuple[Candidate, Screened]]:
        """The wheels of ``project`` rejected as unwanted builds, newest first."""
        found = [
            (self.candidates[url], s)
            for url, s in self.results.items()
            if s.variant is not None
            and not s.verdict.compatible
            and not s.variant.accepted_by(self.want)
            and self.candidates[url].project == project
        ]
        found.sort(key=lambda x: x[0].version, reverse=True)
        return found
