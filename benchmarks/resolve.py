"""Resolve: every Lambda target against one loopback index, torchwheel vs uv vs pip.

All in one run, against the same loopback PEP 503/691 index (``tests.support.indexserver``,
a real ``http.server`` on 127.0.0.1) holding a PyTorch-CPU-shaped ``torch`` project: tiny real
wheels whose file names have the shapes of download.pytorch.org/whl/cpu (``+cpu`` local
versions and ``linux_x86_64`` up to 2.5.1, ``manylinux_2_28`` from 2.6, ``manylinux2014``
aarch64, ``cp313t``, Windows, macOS), 1.13.1 → 2.9.1. For every python3.X runtime × arch:

1. torchwheel, in-process: one ``IndexClient`` and ``resolve_target`` per target;
2. torchwheel CLI: ``python -m torchwheel resolve --all --include-deprecated --json`` (one
   process, interpreter start-up included);
3. ``uv pip compile`` with ``--python-platform``/``--python-version`` and ``--no-deps``, one
   process per target (uv's platforms stop at manylinux_2_17 below glibc 2.28, so the
   Amazon Linux 2 targets are expressed as ``*-manylinux_2_17``);
4. ``pip install --dry-run --ignore-installed --no-deps --only-binary=:all: --report`` with
   ``--python-version`` and the target's exact ``--platform`` list (pip 23 does not expand
   ``manylinux_2_X`` itself), one process per target.

Counted from the server's log: index page fetches, ``.metadata`` fetches, wheel downloads.
Each tool gets an empty cache. With ``--with-torch`` it also measures the size of the real
torch 2.13.0 CPU wheel (``pip download``): ``remote_wheel_size`` (range reads) vs downloading
the wheel with ``pip download`` from the same loopback index.

Usage::

    python benchmarks/resolve.py [--with-torch] [--write-docs]

``--write-docs`` rewrites the "Resolve" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _docs import write_section

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.indexserver import IndexServer  # noqa: E402
from tests.support.wheels import make_wheel  # noqa: E402
from torchwheel.index import IndexClient  # noqa: E402
from torchwheel.remote import remote_wheel_size  # noqa: E402
from torchwheel.resolution import resolve_target  # noqa: E402
from torchwheel.targets import Target, all_targets  # noqa: E402

BEGIN = "<!-- resolve:begin -->"
END = "<!-- resolve:end -->"

# version → (CPython minors, requires-python); shapes follow the PyTorch CPU index
RELEASES: dict[str, tuple[tuple[int, ...], str]] = {
    "1.13.1": ((7, 8, 9, 10), ">=3.7.0"),
    "2.0.1": ((8, 9, 10, 11), ">=3.8.0"),
    "2.1.2": ((8, 9, 10, 11), ">=3.8.0"),
    "2.2.2": ((8, 9, 10, 11, 12), ">=3.8.0"),
    "2.3.1": ((8, 9, 10, 11, 12), ">=3.8.0"),
    "2.4.1": ((8, 9, 10, 11, 12), ">=3.8.0"),
    "2.5.1": ((9, 10, 11, 12, 13), ">=3.8.0"),
    "2.6.0": ((9, 10, 11, 12, 13), ">=3.9.0"),
    "2.7.1": ((9, 10, 11, 12, 13), ">=3.9.0"),
    "2.8.0": ((9, 10, 11, 12, 13), ">=3.9.0"),
    "2.9.1": ((10, 11, 12, 13, 14), ">=3.10"),
}


def shapes() -> list[tuple[str, str, str]]:
    """(version, tags, requires-python) of every synthetic wheel."""
    out: list[tuple[str, str, str]] = []
    for version, (minors, rp) in RELEASES.items():
        new = tuple(int(x) for x in version.split(".")[:2]) >= (2, 6)
        for m in minors:
            cp = f"cp3{m}"
            main_abi = f"{cp}m" if m < 8 else cp  # cp37m: pymalloc ABI before 3.8
            abis = [main_abi] + ([f"{cp}t"] if new and m >= 13 else [])
            for abi in abis:
                x86 = "manylinux_2_28_x86_64" if new else "linux_x86_64"
                arm = (
                    "manylinux_2_28_aarch64"
                    if new
                    else "manylinux_2_17_aarch64.manylinux2014_aarch64"
                )
                out.append((f"{version}+cpu", f"{cp}-{abi}-{x86}", rp))
                out.append((version, f"{cp}-{abi}-{arm}", rp))
                if abi == main_abi:
                    out.append((f"{version}+cpu", f"{cp}-{abi}-win_amd64", rp))
                    out.append((version, f"{cp}-none-macosx_11_0_arm64", rp))
    return out


def build_index(server: IndexServer, work: Path) -> int:
    """Write the synthetic wheels and register them; returns the number of files."""
    from tests.support.indexserver import IndexFile

    entries = []
    for version, tags, rp in shapes():
        w = make_wheel(work / "wheels", "torch", version, tags=tags, requires_python=rp)
        entries.append(IndexFile(w.name, w, requires_python=rp))
    server.add_project("torch", entries)
    return len(entries)


@dataclass
class ToolRun:
    """One tool over every target."""

    name: str
    seconds: float = 0.0
    processes: int = 0
    pages: int = 0
    metadata: int = 0
    wheels: int = 0
    wheel_bytes: int = 0
    ranges: int = 0  # range requests into wheel files (central directories, ELF prefixes)
    range_bytes: int = 0
    answers: dict[str, str] = field(default_factory=dict)  # target label → version or filename
    note: str = ""


def _counts(server: IndexServer, run: ToolRun) -> None:
    run.pages = server.count("/simple/")
    server.wait_idle()
    reqs = [r for r in server.requests if r.path.startswith("/files/")]
    run.metadata = sum(1 for r in reqs if r.path.endswith(".metadata"))
    whole = [r for r in reqs if not r.path.endswith(".metadata") and "range" not in r.headers]
    ranged = [r for r in reqs if not r.path.endswith(".metadata") and "range" in r.headers]
    run.wheels = len(whole)
    run.wheel_bytes = sum(r.sent for r in whole)
    run.ranges = len(ranged)
    run.range_bytes = sum(r.sent for r in ranged)
    server.clear_log()


def targets() -> list[Target]:
    """Every python3.X runtime × arch (provided.* have no Python to compare)."""
    return [t for t in all_targets(include_deprecated=True) if t.runtime.python is not None]


def run_torchwheel(server: IndexServer, tlist: list[Target]) -> ToolRun:
    run = ToolRun("torchwheel (library, one process)", processes=0)
    t0 = time.perf_counter()
    with IndexClient(server.url, backoff=0) as idx:
        for t in tlist:
            r = resolve_target(t, idx)
            run.answers[t.label] = r.wheel.filename if r.wheel else "none"
    run.seconds = time.perf_counter() - t0
    _counts(server, run)
    return run


def run_torchwheel_cli(server: IndexServer, tlist: list[Target], cache: Path) -> ToolRun:
    run = ToolRun("torchwheel resolve --all (CLI, one process)", processes=1)
    cmd = [
        sys.executable,
        "-m",
        "torchwheel",
        "resolve",
        "--all",
        "--include-deprecated",
        "--json",
        "--index-url",
        server.url,
        "--cache-dir",
        str(cache),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    run.seconds = time.perf_counter() - t0
    docs = json.loads(proc.stdout)["results"]  # schema torchwheel.resolve-matrix/1
    wanted = {t.label for t in tlist}
    for d in docs:
        label = f"{d['runtime']}/{d['arch']}"
        if label in wanted:
            run.answers[label] = d["chosen"]["filename"] if d["chosen"] else "none"
    _counts(server, run)
    return run


def uv_platform(t: Target) -> str:
    """The closest ``--python-platform`` uv accepts (never above the runtime's glibc)."""
    supported = [17, 28, *range(31, 41)]
    minor = max(m for m in supported if m <= t.runtime.glibc[1])
    return f"{t.machine}-manylinux_2_{minor}"


def run_uv(server: IndexServer, tlist: list[Target], work: Path) -> ToolRun:
    uv = shutil.which("uv")
    run = ToolRun("uv pip compile (one process per target)")
    if uv is None:
        run.note = "uv not installed"
        return run
    req = work / "requirements.in"
    req.write_text("torch\n")
    cache = work / "uv-cache"
    env = {**os.environ, "UV_NO_CONFIG": "1"}
    t0 = time.perf_counter()
    for t in tlist:
        cmd = [
            uv,
            "pip",
            "compile",
            str(req),
            "--python-platform",
            uv_platform(t),
            "--python-version",
            t.python_str,
            "--index-url",
            server.url,
            "--no-deps",
            "--no-header",
            "--no-annotate",
            "--quiet",
            "--cache-dir",
            str(cache),
            "--python",
            sys.executable,
            "--no-python-downloads",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        run.processes += 1
        if proc.returncode not in (0, 1):
            run.note = proc.stderr.strip().splitlines()[-1][:120] if proc.stderr.strip() else ""
        pins = [ln for ln in proc.stdout.splitlines() if ln.startswith("torch==")]
        run.answers[t.label] = pins[0].split("==", 1)[1] if pins else "none"
    run.seconds = time.perf_counter() - t0
    _counts(server, run)
    return run


def run_pip(server: IndexServer, tlist: list[Target], work: Path) -> ToolRun:
    run = ToolRun("pip install --dry-run --report (one process per target)")
    cache = work / "pip-cache"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    t0 = time.perf_counter()
    for t in tlist:
        report = work / f"pip-{t.runtime.name}-{t.arch}.json"
        plats = [arg for p in t.platforms() for arg in ("--platform", p)]
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--target",
            str(work / "pip-target"),
            "--ignore-installed",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            t.python_str,
            "--implementation",
            "cp",
            *plats,
            "--index-url",
            server.url,
            "--cache-dir",
            str(cache),
            "--report",
            str(report),
            "--quiet",
            "torch",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        run.processes += 1
        answer = "none"
        if proc.returncode == 0 and report.exists():
            inst = json.loads(report.read_text()).get("install", [])
            if inst:
                answer = inst[0]["download_info"]["url"].rsplit("/", 1)[-1].replace("%2B", "+")
        run.answers[t.label] = answer
    run.seconds = time.perf_counter() - t0
    _counts(server, run)
    return run


def _version_of(answer: str) -> str:
    if answer.endswith(".whl"):
        return answer.split("-")[1]
    return answer


def size_section(server: IndexServer, work: Path) -> list[str]:
    """remote_wheel_size on the real torch wheel vs downloading it with pip."""
    dest = work / "torch-real"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "torch==2.13.0",
            "--no-deps",
            "-q",
            "-d",
            str(dest),
        ],
        capture_output=True,
        text=True,
    )
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        return [f"(real torch wheel not available: {proc.stderr.strip()[-200:]})"]
    w = wheels[0]
    server.add_project("torch", [w])  # after the resolve runs: they are not affected
    server.clear_log()
    url = server.file_url("torch", w.name)
    t0 = time.perf_counter()
    rs = remote_wheel_size(url)
    t_rs = time.perf_counter() - t0
    sent_rs = server.bytes_sent("/files/")
    server.clear_log()
    dl = work / "pip-dl"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "-q",
            "-d",
            str(dl),
            "--index-url",
            server.url,
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_28_x86_64",
            "torch==2.13.0+cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    t_pip = time.perf_counter() - t0
    sent_pip = server.bytes_sent("/files/")
    server.clear_log()
    mb = 1024 * 1024
    return [
        f"Size before download, real `{w.name}` ({rs.zipped / mb:.0f} MiB zipped, "
        f"{rs.unzipped / mb:.0f} MiB unzipped, {rs.members} files), same loopback server:",
        "",
        "| method | requests | bytes transferred | wall time |",
        "|---|---:|---:|---:|",
        f"| `remote_wheel_size` (central directory, HTTP ranges) | {rs.requests} | "
        f"{sent_rs / mb:.2f} MiB | {t_rs:.2f} s |",
        f"| `pip download --no-deps` then measure | 1+ | {sent_pip / mb:.1f} MiB | {t_pip:.2f} s |",
        "",
        f"Ratio: {sent_pip / max(sent_rs, 1):.0f}× fewer bytes, {t_pip / max(t_rs, 1e-9):.1f}× "
        "less time — and on a real network the bytes are what costs.",
    ]


def render(runs: list[ToolRun], tlist: list[Target], n_files: int, extra: list[str]) -> str:
    base = runs[1] if len(runs) > 1 else runs[0]
    lines = [
        BEGIN,
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} / Python "
        f"{platform.python_version()} / {os.cpu_count()} CPUs, `python benchmarks/resolve.py`. "
        f"{len(tlist)} targets (every python3.X runtime × arch, deprecated included) against one "
        f"loopback index with {n_files} PyTorch-CPU-shaped torch wheels (PEP 691 JSON + PEP 503 "
        "HTML, PEP 658 metadata). Every tool starts with an empty cache.",
        "",
        "| tool | processes | wall time | vs torchwheel CLI | index page fetches | "
        "metadata fetches | wheel downloads (bytes) | range reads (bytes) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if r.note:
            lines.append(f"| {r.name} | — | — | — | — | — | — | {r.note} |")
            continue
        ratio = r.seconds / base.seconds if base.seconds else float("nan")
        lines.append(
            f"| {r.name} | {r.processes} | {r.seconds:.2f} s | {ratio:.1f}× | {r.pages} | "
            f"{r.metadata} | {r.wheels} ({r.wheel_bytes}) | {r.ranges} ({r.range_bytes}) |"
        )
    lines += [
        "",
        "Answers per target (torchwheel's wheel; uv's pin; pip's wheel):",
        "",
        "| target | torchwheel | uv | pip | agree |",
        "|---|---|---|---|---|",
    ]
    tw = runs[0].answers
    uv = next((r.answers for r in runs if r.name.startswith("uv")), {})
    pip = next((r.answers for r in runs if r.name.startswith("pip")), {})
    for t in tlist:
        ours = tw.get(t.label, "?")
        versions = {_version_of(a) for a in (ours, uv.get(t.label, ours), pip.get(t.label, ours))}
        note = "yes" if len(versions) == 1 else "no"
        if t.runtime.glibc[1] not in (17, 28) and t.runtime.glibc[1] < 31:
            note += f" (uv: manylinux_2_17 stands in for glibc {t.runtime.glibc_str})"
        lines.append(
            f"| {t.label} | {ours} | {uv.get(t.label, '—')} | {pip.get(t.label, '—')} | {note} |"
        )
    lines += [
        "",
        "torchwheel answers every target from one fetch of the project page, with no "
        "metadata or wheel download: tags, `Requires-Python` and yanked state are on the page. "
        "pip and uv have no multi-target mode: one process per target. uv keeps the page in "
        "its cache after the first process and needs nothing else with `--no-deps`; it is "
        "the fastest here (a native binary; torchwheel's CLI time is mostly Python start-up "
        "and imports). pip 23 re-fetches the page per process and downloads the chosen wheel "
        "even with `--dry-run --report` — with real torch wheels that is 100–200 MB per "
        'target. uv cannot say "glibc 2.26": its nearest platform below 2.28 is '
        "manylinux_2_17, which gives the same answers here only because nothing on the index "
        "sits between 2_17 and 2_28; pip can be given the exact platform list (as here) but "
        "does not expand `manylinux_2_X` itself.",
    ]
    if extra:
        lines += ["", *extra]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the markdown section (and write it with --write-docs)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--with-torch",
        action="store_true",
        help="also measure the real torch wheel's size (pip download)",
    )
    p.add_argument("--write-docs", action="store_true")
    args = p.parse_args(argv)
    tlist = targets()
    with tempfile.TemporaryDirectory(prefix="tw-bench-resolve-") as tmp:
        work = Path(tmp)
        with IndexServer(root=work / "srv") as server:
            n_files = build_index(server, work)
            runs = [
                run_torchwheel(server, tlist),
                run_torchwheel_cli(server, tlist, work / "tw-cache"),
                run_uv(server, tlist, work),
                run_pip(server, tlist, work),
            ]
            extra = size_section(server, work) if args.with_torch else []
    section = render(runs, tlist, n_files, extra)
    print(section)
    if args.write_docs:
        write_section("resolve", "Resolve", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
