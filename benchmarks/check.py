"""Benchmark `torchwheel check` on the real torch layer against the tools users would use.

In one run, each as a child process (wall time, peak RSS from ``os.wait4``):

* ``torchwheel check LAYER --runtime python3.11 --json`` (RECORD hashed: every byte inflated)
* the same with ``--no-record`` (ELF files and metadata only)
* the same without ``--runtime`` (the matrix over every runtime × architecture)
* ``auditwheel show WHEEL`` (reads every ELF file of the wheel with pyelftools)
* a stdlib ``zipfile`` read of every member of the layer (a full inflate, no checks)

The layer is the torch 2.13.0 CPU wheel (``pip download torch==2.13.0 --no-deps``) re-zipped
under ``python/lib/python3.11/site-packages/`` by copying compressed members as they are.
Results go to stdout and, with ``--write``, to the "Check" section of docs/performance.md.

    python benchmarks/check.py --write
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _docs import write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.layers import SITE311, rezip_raw  # noqa: E402
from tests.support.torch import TORCH_REQUIREMENT  # noqa: E402
from torchwheel.elf import parse_elf, scan_version_needs, version_tuple  # noqa: E402
from torchwheel.zipread import ZipReader, inflate_backend  # noqa: E402

ZIPFILE_READ = """
import sys, zipfile
n = 0
with zipfile.ZipFile(sys.argv[1]) as zf:
    for info in zf.infolist():
        with zf.open(info) as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                n += len(b)
print(n)
"""

GOALS = {"auditwheel": 40.0, "zipfile": 0.6, "rss_mb": 150.0}


def run(cmd: list[str]) -> tuple[float, float, int, str, float]:
    """Run ``cmd``; return (seconds, peak RSS in MiB, exit code, stdout, CPU seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, usage.ru_maxrss / 1024, proc.returncode, out.decode(errors="replace"), cpu


def measure(name: str, cmd: list[str], repeat: int) -> dict[str, float | int | str]:
    times, rss, cpus = [], [], []
    code = 0
    for _ in range(repeat):
        t, r, code, _out, cpu = run(cmd)
        times.append(t)
        rss.append(r)
        cpus.append(cpu)
    best = min(times)
    print(
        f"{name:28s} best {best:7.2f} s  median {statistics.median(times):7.2f} s  "
        f"CPU {min(cpus):7.2f} s  peak RSS {max(rss):6.0f} MiB  exit {code}",
        flush=True,
    )
    return {
        "name": name,
        "best": best,
        "median": statistics.median(times),
        "cpu": min(cpus),
        "rss": max(rss),
        "exit": code,
        "runs": repeat,
    }


def early_versions(
    layer: Path, member: str = "torch/lib/libtorch_cpu.so", head_mb: int = 16
) -> dict[str, float | str]:
    """GLIBC needs of one library: vna_hash scan of its first MB vs the full ELF parse."""
    with ZipReader(layer) as zr:
        m = next(m for m in zr.members if m.name.endswith(member))
        t0 = time.perf_counter()
        with zr.open(m) as f:
            head = f.read(head_mb << 20)
        needs = scan_version_needs(head)
        t_scan = time.perf_counter() - t0
        glibc = max(
            (v for n in needs if n.name and (v := version_tuple(n.name, "GLIBC_"))), default=None
        )
        t0 = time.perf_counter()
        with zr.open(m) as f:
            info = parse_elf(f, name=m.name, size=m.file_size)
        t_full = time.perf_counter() - t0
    where = max(n.file_offset for n in needs) if needs else -1
    return {
        "member": member,
        "scan_s": t_scan,
        "full_s": t_full,
        "scan_glibc": ".".join(map(str, glibc or ())),
        "full_glibc": ".".join(map(str, info.max_version("GLIBC_") or ())),
        "table_at_mb": where / 2**20,
        "size_mb": m.file_size / 2**20,
    }


def get_wheel(work: Path) -> Path:
    dest = work / "wheel"
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            TORCH_REQUIREMENT,
            "--no-deps",
            "--only-binary",
            ":all:",
            "-d",
            str(dest),
            "--quiet",
        ],
        check=True,
    )
    return sorted(dest.glob("torch-*.whl"))[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each fast command")
    ap.add_argument("--write", action="store_true", help="update docs/performance.md")
    ap.add_argument("--skip-auditwheel", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tw-bench-check-") as tmp:
        work = Path(tmp)
        wheel = get_wheel(work)
        t0 = time.perf_counter()
        layer = rezip_raw(wheel, work / "torch-layer.zip", SITE311)
        print(f"layer built in {time.perf_counter() - t0:.2f} s: {layer.stat().st_size:,} bytes")
        py = sys.executable
        rows = [
            measure(
                "torchwheel check",
                [py, "-m", "torchwheel", "check", str(layer), "--runtime", "python3.11", "--json"],
                args.repeat,
            ),
            measure(
                "torchwheel check --no-record",
                [
                    py,
                    "-m",
                    "torchwheel",
                    "check",
                    str(layer),
                    "--runtime",
                    "python3.11",
                    "--json",
                    "--no-record",
                ],
                args.repeat,
            ),
            measure(
                "torchwheel check (matrix)",
                [py, "-m", "torchwheel", "check", str(layer), "--json"],
                args.repeat,
            ),
            measure("stdlib zipfile read all", [py, "-c", ZIPFILE_READ, str(layer)], args.repeat),
        ]
        early = early_versions(layer)
        print(f"vna_hash scan: {early}")
        aw = shutil.which("auditwheel")
        if aw and not args.skip_auditwheel:
            rows.append(measure("auditwheel show", [aw, "show", str(wheel)], 1))
    by = {r["name"]: r for r in rows}
    check_t = float(by["torchwheel check"]["best"])
    norec_t = float(by["torchwheel check --no-record"]["best"])
    zf_t = float(by["stdlib zipfile read all"]["best"])
    lines = [
        "<!-- check:begin -->",
        "`python benchmarks/check.py --write` on the torch 2.13.0 CPU wheel (cp311, 190 MB, "
        "699 MB unzipped, 12,248 members, 136 ELF files) re-zipped as a layer under "
        "`python/lib/python3.11/site-packages/`. Each command is a child process (Python start-up "
        "included); best of the runs shown; peak RSS from `wait4`. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, inflate: {inflate_backend()}; load average when the run "
        f"started: {load0:.1f} (the machine is shared: wall times of the multi-threaded check "
        "suffer more from other load than the single-threaded tools).",
        "",
        "| command | best wall (s) | median wall (s) | CPU user+sys (s) | peak RSS (MiB) | runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {float(r['best']):.2f} | {float(r['median']):.2f} | "
            f"{float(r['cpu']):.2f} | {float(r['rss']):.0f} | {r['runs']} |"
        )
    lines.append("")
    lines.append("| goal | measured | met? |")
    lines.append("|---|---|---|")
    if "auditwheel show" in by:
        aw_t = float(by["auditwheel show"]["best"])
        for name, t in (("check", check_t), ("check --no-record", norec_t)):
            ratio = aw_t / t
            met = "yes" if ratio >= GOALS["auditwheel"] else "no"
            lines.append(
                f"| ≥ {GOALS['auditwheel']:.0f}× faster than `auditwheel show` "
                f"({name}) | {ratio:.1f}× | {met} |"
            )
    for name, t in (("check", check_t), ("check --no-record", norec_t)):
        speed = zf_t / t
        lines.append(
            f"| ≥ {GOALS['zipfile']}× the speed of a stdlib full read ({name}) | "
            f"{speed:.2f}× | {'yes' if speed >= GOALS['zipfile'] else 'no'} |"
        )
    rss = max(
        float(by[n]["rss"])
        for n in ("torchwheel check", "torchwheel check --no-record", "torchwheel check (matrix)")
    )
    lines.append(
        f"| peak RSS ≤ {GOALS['rss_mb']:.0f} MB | {rss:.0f} MiB | "
        f"{'yes' if rss <= GOALS['rss_mb'] else 'no'} |"
    )
    lines.append("")
    lines.append(
        f"Symbol versions without the dynamic section: `elf.scan_version_needs` finds "
        f"`.gnu.version_r` of `{early['member']}` ({float(early['size_mb']):.0f} MB) at "
        f"{float(early['table_at_mb']):.1f} MB and names every need from its `vna_hash`: "
        f"GLIBC {early['scan_glibc']} from the first 16 MB in {float(early['scan_s']):.2f} s, "
        f"against GLIBC {early['full_glibc']} from the full parse (the dynamic section lies "
        f"far behind: everything before it is inflated) in {float(early['full_s']):.2f} s. "
        "`check` still reads up to the dynamic section, because `missing-shared-library` "
        "needs the NEEDED list; the scan serves callers that only need glibc/GLIBCXX "
        "(e.g. a verdict from the first range of a remote member)."
    )
    lines.append("")
    text = "\n".join([*lines, "<!-- check:end -->"]) + "\n"
    print(text)
    if args.write:
        write_section("check", "Check", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
