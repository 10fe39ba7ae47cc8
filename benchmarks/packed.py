"""Packed layers: archive size and unpack time, zstd levels vs xz and deflate; cold vs warm start.

All in one run, on the same slimmed + stripped torch 2.13.0 CPU layer tree:

1. the tree as one tar compressed with zstd at several levels (``torchwheel.packed.pack_tree``,
   one worker per CPU), with xz (``tar cJf`` / Python's ``lzma``, preset 6) and with deflate
   (``tar czf`` / ``gzip``, level 6) — what a user would otherwise reach for;
2. decompression of each archive in memory on one core, and a full unpack to disk (zstd through
   the loader's own code; xz/gzip through ``tarfile.extractall``, as a hand-written loader
   would);
3. a simulated Lambda start (fresh ``-I -S`` interpreter, Lambda's ``sys.path``): cold (first
   import incl. unpack), warm (tree reused), and a plain unpacked tree for reference.

Usage::

    python benchmarks/packed.py [--tree SITE_PACKAGES] [--levels 1,3,...] [--runs 3]
                                [--work DIR] [--write-docs]

Without ``--tree`` the torch wheel and its dependencies come from ``pip download`` and the tree is
built with ``torchwheel.layer.build_layer(..., slim=True, strip=True)``. ``--write-docs`` rewrites
the "Packed layers" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import lzma
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zstandard
from _docs import write_section

from torchwheel.loader import torchwheel_loader as loader
from torchwheel.packed import (
    DEFAULT_LEVEL,
    MANIFEST_DIR,
    make_packed_tree,
    pack_tree,
    read_manifest,
)
from torchwheel.targets import make_target, quotas

ROOT = Path(__file__).resolve().parents[1]
MARKER = "packed"
MB = 1024 * 1024


@dataclass
class Row:
    """One compression method's numbers."""

    method: str
    size: int
    compress_s: float
    decompress_s: float
    unpack_s: float | None = None


def _pip_download(args: list[str], dest: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "-d", str(dest), *args], check=True
    )


def build_tree(work: Path) -> Path:
    """Slimmed + stripped torch 2.13.0 layer tree for provided.al2023 / 3.11; its site-packages."""
    from torchwheel import build_layer

    wheels = work / "wheels"
    if not list(wheels.glob("torch-*.whl")):
        _pip_download(["torch==2.13.0", "--no-deps"], wheels)
        _pip_download(
            [
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--platform",
                "manylinux_2_28_x86_64",
                "filelock",
                "typing-extensions",
                "sympy",
                "networkx",
                "jinja2",
                "fsspec",
                "MarkupSafe",
                "mpmath",
                "setuptools",
            ],
            wheels,
        )
    tree = work / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    report = build_layer(
        ["torch"],
        runtime="provided.al2023",
        python="3.11",
        arch="x86_64",
        find_links=[str(wheels)],
        no_index=True,
        slim=True,
        strip=True,
        tree=tree,
        cache_dir=work / "cache",
    )
    print(f"built tree: {report.unzipped_bytes / MB:.1f} MiB, {report.files} files")
    return tree / report.prefix


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _drain(reader: Any) -> None:
    while reader.read(1 << 20):
        pass


def _xz_open(data: bytes) -> Any:
    return lzma.LZMAFile(io.BytesIO(data))


def _gz_open(data: bytes) -> Any:
    return gzip.GzipFile(fileobj=io.BytesIO(data))


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, preset=6)


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _scratch(parent: Path | None) -> Path:
    return Path(tempfile.mkdtemp(prefix="tw-bench-", dir=parent))


def compare(
    site: Path, levels: list[int], work: Path, unpack_parent: Path | None
) -> tuple[list[Row], int]:
    """Sizes and times for zstd levels, xz and gzip on the same tar stream (+ the tar size)."""
    rows: list[Row] = []
    tar_bytes = b""
    for level in levels:
        out = work / f"l{level}.tar.zst"
        info = pack_tree(site, out, level=level)
        if not tar_bytes:
            tar_bytes = zstandard.ZstdDecompressor().stream_reader(out.read_bytes()).read()
        data = out.read_bytes()

        def dec(d: bytes = data) -> None:
            _drain(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(d), read_size=1 << 20))

        manifest = {"sha256": info.sha256, "files": info.files, "disk_size": info.disk_size}
        dest = _scratch(unpack_parent)
        t = time.perf_counter()
        loader.unpack(str(out), manifest, str(dest))
        unpack_s = time.perf_counter() - t
        shutil.rmtree(dest)
        rows.append(
            Row(
                f"zstd -{level}",
                info.archive_size,
                info.pack_seconds,
                min(_time(dec) for _ in range(3)),
                unpack_s,
            )
        )
        print(rows[-1], flush=True)
        out.unlink()
    print(f"tar stream: {len(tar_bytes) / MB:.1f} MiB", flush=True)
    methods: list[tuple[str, Callable[[bytes], bytes], Callable[[bytes], Any]]] = [
        ("xz -6 (lzma)", _xz, _xz_open),
        ("gzip -6 (deflate)", _gz, _gz_open),
    ]
    for name, compress, opener in methods:
        t = time.perf_counter()
        blob = compress(tar_bytes)
        compress_s = time.perf_counter() - t
        t = time.perf_counter()
        with opener(blob) as f:
            _drain(f)
        dec_s = time.perf_counter() - t
        dest = _scratch(unpack_parent)
        t = time.perf_counter()
        with opener(blob) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            tar.extractall(dest, filter="data")
        unpack_s = time.perf_counter() - t
        shutil.rmtree(dest)
        rows.append(Row(name, len(blob), compress_s, dec_s, unpack_s))
        print(rows[-1], flush=True)
    return rows, len(tar_bytes)


_START = """
import time
t0 = time.perf_counter()
import torchwheel_loader
t1 = time.perf_counter()
import torch
x = (torch.randn(3, 3) @ torch.randn(3, 3)).sum().item()
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""

_PLAIN = """
import time
t0 = time.perf_counter()
import torch
x = (torch.randn(3, 3) @ torch.randn(3, 3)).sum().item()
print(0.0, time.perf_counter() - t0)
"""


def _start(
    extra_path: list[str], code: str, tmp: Path, no_bytecode: bool = False
) -> tuple[float, float, float]:
    prelude = f"import sys\nsys.path[:0] = {extra_path!r}\n"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TORCHWHEEL_UNPACK_DIR": str(tmp)}
    flags = ["-I", "-S"] + (["-B"] if no_bytecode else [])
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *flags, "-c", prelude + code],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"simulated start failed: {proc.stderr.strip()[-500:]}")
    loader_s, torch_s = (float(v) for v in proc.stdout.split())
    return wall, loader_s, torch_s


def starts(
    site: Path, work: Path, runs: int, level: int, unpack_parent: Path | None
) -> dict[str, tuple[float, float, float]]:
    """Median (wall, loader, import torch) of cold, warm-process and plain-layer starts.

    ``plain``: the same tree without ``__pycache__``, run with ``-B`` — like a plain layer in
    read-only ``/opt``, where every cold start compiles torch's Python code in memory. A packed
    layer's first start compiles too but writes the bytecode into its ``/tmp`` tree, so a
    later process in the same execution environment (``warm``) skips it.
    """
    zdir = work / "zstandard"
    if not list(zdir.glob("*.whl")):
        _pip_download(
            [
                "zstandard",
                "--only-binary=:all:",
                "--no-deps",
                "--python-version",
                "3.11",
                "--platform",
                "manylinux2014_x86_64",
            ],
            zdir,
        )
    layer = work / "packed-layer"
    if layer.exists():
        shutil.rmtree(layer)
    info = make_packed_tree(
        site,
        layer,
        make_target("x86_64", "3.11", runtime="provided.al2023"),
        level=level,
        zstandard_wheel=next(zdir.glob("*.whl")),
        measure=False,
    )
    opt_python = layer / "python"
    task = work / "task"
    task.mkdir(exist_ok=True)
    path = [str(task), str(opt_python / "lib" / "python3.11" / "site-packages"), str(opt_python)]
    results: dict[str, list[tuple[float, float, float]]] = {"cold": [], "warm": [], "plain": []}
    manifest = read_manifest(opt_python)
    plain_parent = _scratch(unpack_parent)
    plain = Path(
        loader.unpack(
            str(opt_python / MANIFEST_DIR / str(manifest["archive"])), manifest, str(plain_parent)
        )
    )
    for _ in range(runs):
        tmp = _scratch(unpack_parent)
        results["cold"].append(_start(path, _START, tmp))
        results["warm"].append(_start(path, _START, tmp))
        results["plain"].append(_start([str(task), str(plain)], _PLAIN, tmp, no_bytecode=True))
        shutil.rmtree(tmp)
    shutil.rmtree(plain_parent)
    print(f"packed layer (level {level}): {info.layer_bytes or 0:,} bytes", flush=True)

    def med(rows: list[tuple[float, float, float]]) -> tuple[float, float, float]:
        return (
            statistics.median(r[0] for r in rows),
            statistics.median(r[1] for r in rows),
            statistics.median(r[2] for r in rows),
        )

    return {k: med(v) for k, v in results.items()}


def render(
    rows: list[Row],
    start: dict[str, tuple[float, float, float]],
    tar_size: int,
    site_bytes: int,
    unpack_where: str,
    marker: str = MARKER,
) -> str:
    """The markdown section for docs/performance.md (between ``<!-- marker:begin/end -->``)."""
    q = quotas()
    base = next((r for r in rows if r.method == f"zstd -{DEFAULT_LEVEL}"), rows[0])
    lines = [
        f"<!-- {marker}:begin -->",
        f"Measured by `python benchmarks/packed.py` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, zstandard "
        f"{zstandard.__version__}: the slimmed + stripped torch 2.13.0 CPU layer for "
        f"provided.al2023 / 3.11 with its dependencies ({site_bytes / MB:.0f} MiB of files, "
        f"{tar_size / MB:.0f} MiB as tar). Compression uses every CPU for zstd (its output "
        "does not depend on the worker count) and one thread for xz/gzip (Python's `lzma`/"
        "`gzip`, what a hand-written loader uses); decompression is one thread in memory; "
        f"unpack writes the tree to {unpack_where} (zstd through the loader, xz/gzip through "
        "`tarfile.extractall`).",
        "",
        "| method | archive | vs default | compress | decompress (memory) | unpack to disk |"
        " fits 250 MB with room for |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        room = q.unzipped - r.size
        lines.append(
            f"| {r.method}{' (default)' if r is base else ''} | {r.size / MB:.1f} MiB | "
            f"{r.size / base.size:.2f}× | {r.compress_s:.1f} s | {r.decompress_s:.2f} s | "
            f"{'' if r.unpack_s is None else f'{r.unpack_s:.2f} s'} | "
            f"{room / MB:.0f} MiB |"
        )
    cold, warm, plain = start["cold"], start["warm"], start["plain"]
    lines += [
        "",
        "Simulated Lambda start (fresh `python -I -S`, Lambda's `sys.path`, median of the runs; "
        "`import torch` and one 3×3 matmul; page cache warm, so a real cold start adds the "
        "layer's first read from Lambda's storage). The plain layer runs with `-B` from a tree "
        "without `__pycache__`: `/opt` is read-only on Lambda, so every cold start compiles "
        "torch's Python code; the packed tree in `/tmp` is writable, so its first start writes "
        "the bytecode and a later process in the same environment reuses it:",
        "",
        "| start | wall | `import torchwheel_loader` | `import torch` + matmul |",
        "|---|---:|---:|---:|",
        f"| plain layer, cold (reference; would not fit) | {plain[0]:.2f} s | — | "
        f"{plain[2]:.2f} s |",
        f"| packed, cold (unpack + first import) | {cold[0]:.2f} s | {cold[1]:.2f} s | "
        f"{cold[2]:.2f} s |",
        f"| packed, new process, warm environment | {warm[0]:.2f} s | {warm[1]:.3f} s | "
        f"{warm[2]:.2f} s |",
        "",
        f"Cold-start cost of packing: {cold[0] - plain[0]:+.2f} s against a plain layer here "
        f"(the unpack: {cold[1]:.2f} s); a reused tree costs {warm[1] * 1000:.0f} ms. Warm "
        "invocations in the same process pay nothing (the modules stay imported). A Lambda "
        "with under 1,769 MB of memory has less than one vCPU: expect the unpack to take "
        "proportionally longer there.",
        f"<!-- {marker}:end -->",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=Path, help="an existing site-packages tree to pack")
    p.add_argument("--levels", default="1,3,6,9,12,15,19")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tw-bench-packed")
    p.add_argument(
        "--unpack-dir",
        type=Path,
        default=None,
        help="parent for unpacked trees (default: the system temp dir)",
    )
    p.add_argument("--write-docs", action="store_true")
    p.add_argument(
        "--starts-only",
        action="store_true",
        help="reuse the compression rows saved in --work by an earlier run",
    )
    p.add_argument(
        "--marker",
        default=MARKER,
        help="name of the <!-- NAME:begin/end --> section in docs/performance.md",
    )
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    site = args.tree or build_tree(args.work)
    levels = [int(v) for v in args.levels.split(",")]
    if DEFAULT_LEVEL not in levels:
        levels.append(DEFAULT_LEVEL)
    site_bytes = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    saved = args.work / "rows.json"
    if args.starts_only:
        doc = json.loads(saved.read_text())
        rows, tar_size = [Row(**r) for r in doc["rows"]], int(doc["tar_size"])
    else:
        rows, tar_size = compare(site, levels, args.work, args.unpack_dir)
        saved.write_text(json.dumps({"rows": [asdict(r) for r in rows], "tar_size": tar_size}))
    start = starts(site, args.work, args.runs, DEFAULT_LEVEL, args.unpack_dir)
    where = str(args.unpack_dir or tempfile.gettempdir())
    section = render(rows, start, tar_size, site_bytes, where, args.marker)
    print(section)
    if args.write_docs:
        write_section(args.marker, "Packed layers", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
