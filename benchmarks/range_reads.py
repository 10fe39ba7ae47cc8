"""Range reads: what knowing a torch wheel before download costs (issue 11's budget).

1. **Verified glibc needs** of the real torch 2.13.0 CPU wheel (``pip download``, cached like
   the tests' fixture) served by the loopback index (``tests.support.indexserver``, single
   HTTP ranges): :func:`torchwheel.elfneeds.read_elf_needs` — requests, bytes received,
   seconds — against the budget (≤ 16 MB, ≤ 12 requests per torch wheel), and checked
   member by member against a full parse of every shared object (the whole wheel inflated).
2. **Sizes and build variant** of the same wheel without PEP 658 metadata (its central
   directory by ranges), and again from the per-sha256 facts cache (must cost no request).
3. With ``--pypi``: the same on real PyPI wheels (reachable from this machine): the ELF needs
   of ``torch-2.10.0-cp312-cp312-manylinux_2_28_aarch64`` (CPU build) and
   ``torch-2.15.0-cp312-cp312-manylinux_2_28_x86_64`` (CUDA build), and ``resolve`` for
   python3.12 arm64 / x86_64 against PyPI, cold and warm cache.

Usage::

    python benchmarks/range_reads.py [--pypi] [--write-docs]

``--write-docs`` rewrites the "Range reads" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from _docs import write_section

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.indexserver import IndexFile, IndexServer  # noqa: E402
from torchwheel.elf import parse_elf  # noqa: E402
from torchwheel.elfneeds import (  # noqa: E402
    MAX_BYTES,
    MAX_REQUESTS,
    ElfNeeds,
    needs_summary,
    read_elf_needs,
)
from torchwheel.errors import NoCompatibleWheel  # noqa: E402
from torchwheel.index import IndexClient  # noqa: E402
from torchwheel.probe import WheelProbe  # noqa: E402
from torchwheel.remote import RemoteWheel  # noqa: E402
from torchwheel.resolution import resolve_target  # noqa: E402
from torchwheel.targets import make_target  # noqa: E402

MARKER = "range-reads"
PYPI = "https://pypi.org/simple"
PYPI_WHEELS = (
    "torch-2.10.0-cp312-cp312-manylinux_2_28_aarch64.whl",
    "torch-2.15.0-cp312-cp312-manylinux_2_28_x86_64.whl",
)
MB = 1_000_000


def torch_wheel(cache: Path) -> Path:
    """The torch 2.13.0 CPU wheel, ``pip download``-ed once into ``cache``."""
    found = sorted(cache.glob("torch-2.13.0*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "torch==2.13.0", "--no-deps"]
    subprocess.run([*cmd, "-d", str(cache)], check=True)
    return sorted(cache.glob("torch-2.13.0*.whl"))[0]


@dataclass
class ElfRun:
    """One wheel's ELF needs read by ranges."""

    wheel: str
    size: int
    needs: ElfNeeds
    seconds: float
    exact: str  # "yes (N objects)", or what differed, or "not checked"


def _read(url: str) -> tuple[ElfNeeds, float]:
    t0 = time.perf_counter()
    with RemoteWheel(url, max_requests=MAX_REQUESTS) as rw:
        needs = read_elf_needs(rw)
    return needs, time.perf_counter() - t0


def _exact(path: Path, needs: ElfNeeds) -> str:
    """Compare with a full parse of every shared object (the whole wheel inflated)."""
    wrong = []
    with zipfile.ZipFile(path) as zf:
        for f in needs.files:
            truth = sorted({n.name for n in parse_elf(zf.read(f.member)).version_needs})
            if list(f.versions) != truth:
                wrong.append(f.member)
    return f"no: {', '.join(wrong)}" if wrong else f"yes ({len(needs.files)} objects)"


def local_elf(wheel: Path) -> tuple[ElfRun, float]:
    """ELF needs of ``wheel`` over loopback; also the seconds of the full parse."""
    with IndexServer(root=Path(tempfile.mkdtemp(prefix="range-bench-"))) as server:
        server.add_project("torch", [wheel])
        needs, secs = _read(server.file_url("torch", wheel.name))
        assert needs.requests == server.count("/files/")
        assert needs.bytes_received == server.bytes_sent("/files/")
    t0 = time.perf_counter()
    exact = _exact(wheel, needs)
    full = time.perf_counter() - t0
    return ElfRun(wheel.name, wheel.stat().st_size, needs, secs, exact), full


@dataclass
class VariantRun:
    """The variant of one wheel without PEP 658, cold then from the facts cache."""

    kind: str
    evidence: str
    requests: int
    received: int
    seconds: float
    warm_requests: int


def local_variant(wheel: Path) -> VariantRun:
    cache = Path(tempfile.mkdtemp(prefix="range-bench-facts-"))
    with IndexServer(root=Path(tempfile.mkdtemp(prefix="range-bench-"))) as server:
        server.add_project("torch", [IndexFile(wheel.name, wheel, metadata=None)])
        with IndexClient(server.url) as idx:
            (cand,) = idx.candidates("torch")
            # the +cpu label would decide for free: ask for what the ranges show
            probe = WheelProbe(idx.client, index=idx, cache_dir=cache)
            t0 = time.perf_counter()
            facts = probe.sizes(cand)
            secs = time.perf_counter() - t0
            cold = (probe.requests, probe.bytes_received)
        with IndexClient(server.url) as idx:
            (cand,) = idx.candidates("torch")
            warm = WheelProbe(idx.client, index=idx, cache_dir=cache)
            warm.sizes(cand)
    return VariantRun(
        str(facts.gpu_kind), "central-directory", cold[0], cold[1], secs, warm.requests
    )


def pypi_elf() -> list[ElfRun]:
    runs = []
    with IndexClient(PYPI) as idx:
        urls = {c.filename: c for c in idx.candidates("torch")}
    for name in PYPI_WHEELS:
        cand = urls[name]
        needs, secs = _read(cand.url)
        runs.append(ElfRun(name, cand.size or 0, needs, secs, "not checked (not downloaded)"))
    return runs


@dataclass
class ResolveRun:
    target: str
    answer: str
    seconds: float
    requests: int
    received: int
    warm_seconds: float
    warm_requests: int


def pypi_resolve() -> list[ResolveRun]:
    runs = []
    cache = Path(tempfile.mkdtemp(prefix="range-bench-pypi-"))
    for arch in ("arm64", "x86_64"):
        target = make_target(arch, "3.12")
        row: list[float | int | str] = []
        for _ in range(2):  # cold cache, then warm
            with IndexClient(PYPI, cache_dir=cache) as idx:
                t0 = time.perf_counter()
                res = resolve_target(target, idx)
                secs = time.perf_counter() - t0
                answer = res.wheel.filename if res.wheel else f"none: {res.summary[-90:]}"
                row += [answer, secs, res.probe_requests, res.probe_bytes]
        runs.append(
            ResolveRun(
                target.label,
                str(row[0]),
                float(row[1]),
                int(row[2]),
                int(row[3]),
                float(row[5]),
                int(row[6]),
            )
        )
    return runs


def _elf_row(r: ElfRun) -> str:
    n = r.needs
    ok = "yes" if n.requests <= MAX_REQUESTS and n.bytes_received <= MAX_BYTES else "**no**"
    return (
        f"| `{r.wheel}` | {r.size / MB:,.1f} MB | {len(n.files)} | {n.requests} | "
        f"{n.bytes_received / MB:,.2f} MB | {r.seconds:.2f} s | {ok} | "
        f"{needs_summary(n).split('need at most ', 1)[-1]} | {r.exact} |"
    )


def render(
    local: ElfRun,
    full_secs: float,
    variant: VariantRun,
    pypi: list[ElfRun],
    resolves: list[ResolveRun],
) -> str:
    lines = [
        f"<!-- {MARKER}:begin -->",
        "Measured by `python benchmarks/range_reads.py"
        + (" --pypi" if pypi else "")
        + f"` on {platform.machine()}, Python {platform.python_version()}. Budget per torch "
        f"wheel for verified glibc needs: ≤ {MAX_BYTES / 1024 / 1024:.0f} MiB received and "
        f"≤ {MAX_REQUESTS} requests, central directory included.",
        "",
        "Verified glibc / libstdc++ needs before download (`read_elf_needs`: one HTTP range per "
        "group of neighbouring shared objects, a prefix of each deflate stream, the version-"
        "need table found by `vna_hash`; objects read whole are parsed exactly):",
        "",
        "| wheel | size | shared objects | requests | received | time | within budget "
        "| needs at most | equal to a full parse |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
        _elf_row(local),
        *(_elf_row(r) for r in pypi),
        "",
        f"The local wheel was served by the loopback index; reading the same needs from the "
        f"whole wheel (every shared object inflated and parsed) took {full_secs:.1f} s here and "
        f"needs all {local.size / MB:,.0f} MB.",
        "",
        f"Sizes and build variant of the same wheel with no PEP 658 file (its central "
        f"directory by ranges): {variant.requests} request(s), {variant.received / MB:.2f} MB, "
        f"{variant.seconds:.2f} s ({variant.kind}); asked again through the per-sha256 facts "
        f"cache: {variant.warm_requests} request(s).",
    ]
    if resolves:
        lines += [
            "",
            "`resolve` against PyPI (python3.12; PyPI as reached from here serves no PEP 658 "
            "files, so each unlabelled torch wheel costs its central directory by ranges, plus "
            "METADATA when it holds no CUDA library and for the newest GPU build, whose "
            "requirements are weighed; 8 wheels at a time in parallel):",
            "",
            "| target | answer | cold: time | wheel requests | received | warm: time | "
            "wheel requests |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in resolves:
            lines.append(
                f"| {r.target} | {r.answer} | {r.seconds:.1f} s | {r.requests} | "
                f"{r.received / MB:.1f} MB | {r.warm_seconds:.1f} s | {r.warm_requests} |"
            )
    lines.append(f"<!-- {MARKER}:end -->")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pypi", action="store_true", help="also measure on real PyPI wheels")
    ap.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "torchwheel-bench")
    args = ap.parse_args()
    wheel = torch_wheel(args.cache)
    local, full = local_elf(wheel)
    variant = local_variant(wheel)
    pypi = pypi_elf() if args.pypi else []
    resolves: list[ResolveRun] = []
    if args.pypi:
        try:
            resolves = pypi_resolve()
        except NoCompatibleWheel as exc:  # pragma: no cover - resolve_target does not raise
            print(f"resolve failed: {exc}", file=sys.stderr)
    section = render(local, full, variant, pypi, resolves)
    print(section)
    if args.write_docs:
        write_section(MARKER, "Range reads", section)
    over = [r for r in [local, *pypi] if r.needs.requests > MAX_REQUESTS]
    over += [r for r in [local, *pypi] if r.needs.bytes_received > MAX_BYTES]
    return 1 if over or not local.exact.startswith("yes") else 0


if __name__ == "__main__":
    raise SystemExit(main())
