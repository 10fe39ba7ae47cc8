"""Benchmark `torchwheel check` on the real torch layer against the tools users would use.

In one run, each as a child process (wall time, CPU, peak RSS from ``os.wait4``):

* ``torchwheel check LAYER --runtime python3.11 --json`` (RECORD hashed: every member inflated
  once and CRC-checked, RECORD's files hashed, ELF files parsed)
* the same with ``--no-record`` (ELF files and metadata only)
* the same without ``--runtime`` (the matrix over every runtime × architecture)
* a stdlib ``zipfile`` read of every member of the layer (a zlib inflate of every member with
  its CRC checked, nothing else): the yardstick. Goal: ``check`` in at most 0.6× its time.
* ``auditwheel show WHEEL`` (reads every ELF file of the wheel with pyelftools)

The commands run in rounds, one of each per round, so that a round's ``check`` and ``zipfile``
see the same load (the machine may be shared): the ratio reported is the median of the rounds'
ratios. The package is byte-compiled first (``compileall``), as an installed package is.

The layer is the torch 2.13.0 CPU wheel (``pip download torch==2.13.0 --no-deps``) re-zipped
under ``python/lib/python3.11/site-packages/`` by copying compressed members as they are.
Results go to stdout and, with ``--write``, to the "Check" section of docs/performance.md.

    python benchmarks/check.py --repeat 5 --write
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _docs import write_section

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.layers import SITE311, rezip_raw  # noqa: E402
from tests.support.torch import TORCH_REQUIREMENT  # noqa: E402
from torchwheel.elf import parse_elf, scan_version_needs, version_tuple  # noqa: E402
from torchwheel.zipread import ZipReader, inflate_backend  # noqa: E402
from torchwheel.zipstream import new_inflater  # noqa: E402

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

#: auditwheel: check at least this many times faster; zipfile: check's time at most this
#: share of a stdlib full read's; rss_mb: peak RSS of any check run.
GOALS = {"auditwheel": 40.0, "zipfile": 0.6, "rss_mb": 150.0}


@dataclass
class Runs:
    """The runs of one command."""

    name: str
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    code: int = 0

    @property
    def best(self) -> float:
        return min(self.walls)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    def row(self) -> str:
        return (
            f"| {self.name} | {self.best:.2f} | {self.median:.2f} | {min(self.cpus):.2f} | "
            f"{max(self.rss):.0f} | {len(self.walls)} |"
        )


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


def rounds(commands: dict[str, list[str]], repeat: int) -> dict[str, Runs]:
    """Run every command once per round, ``repeat`` rounds; print each run."""
    runs = {name: Runs(name) for name in commands}
    for i in range(repeat):
        for name, cmd in commands.items():
            t, rss, code, _out, cpu = run(cmd)
            r = runs[name]
            r.walls.append(t)
            r.cpus.append(cpu)
            r.rss.append(rss)
            r.code = code
            print(
                f"round {i + 1}: {name:28s} {t:6.2f} s  CPU {cpu:6.2f} s  RSS {rss:5.0f} MiB  "
                f"exit {code}  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    return runs


def ratios(a: Runs, b: Runs) -> list[float]:
    """``a``'s wall time over ``b``'s, round by round."""
    return [x / y for x, y in zip(a.walls, b.walls, strict=True)]


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


def gil_release(layer: Path) -> dict[str, float]:
    """Main-thread Python progress (loop iterations per second) while another thread is inside
    one long call: ~the free-running rate when the call releases the GIL, far less when not."""
    with ZipReader(layer) as zr:
        m = max(zr.members, key=lambda m: m.file_size)
        raw = zr.read_raw(m)
    data = zlib.decompress(raw, -15)
    calls: dict[str, Callable[[], object]] = {
        f"{inflate_backend()} inflate": lambda: new_inflater().decompress(raw, len(data) + 1),
        "zlib inflate": lambda: zlib.decompressobj(-15).decompress(raw),
        "sha256": lambda: hashlib.sha256(data).digest(),
        "builtin sum over a range (holds the GIL)": lambda: sum(range(20_000_000)),
    }
    rates: dict[str, float] = {}
    for name, call in calls.items():
        done = threading.Event()
        th = threading.Thread(target=lambda c=call, d=done: (c(), d.set()))
        n = 0
        t0 = time.perf_counter()
        th.start()
        while not done.is_set():
            n += 1
        th.join()
        rates[name] = n / (time.perf_counter() - t0)
    return rates


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


def _goal_lines(by: dict[str, Runs]) -> list[str]:
    check, norec = by["torchwheel check"], by["torchwheel check --no-record"]
    zipfile = by["stdlib zipfile read all"]
    lines = ["| goal | measured | met? |", "|---|---|---|"]
    for r in (check, norec):
        rs = ratios(r, zipfile)
        med = statistics.median(rs)
        met = "yes" if med <= GOALS["zipfile"] else "no"
        lines.append(
            f"| {r.name.removeprefix('torchwheel ')} in ≤ {GOALS['zipfile']}× the time of a "
            f"stdlib zipfile read of every member (median of the rounds' ratios; per round: "
            f"{', '.join(f'{x:.2f}' for x in rs)}) | {med:.2f}× | {met} |"
        )
    cpu = [c / z for c, z in zip(check.cpus, zipfile.cpus, strict=True)]
    lines.append(
        f"| (for reference, not a goal) check's CPU user+sys over zipfile's, median of the "
        f"rounds: the wall ratio an unloaded 2-CPU machine allows is about half of it at best "
        f"| {statistics.median(cpu):.2f}× | — |"
    )
    if "auditwheel show" in by:
        aw = by["auditwheel show"].best
        for r in (check, norec):
            speed = aw / r.best
            met = "yes" if speed >= GOALS["auditwheel"] else "no"
            lines.append(
                f"| {r.name.removeprefix('torchwheel ')} ≥ {GOALS['auditwheel']:.0f}× faster "
                f"than `auditwheel show` | {speed:.1f}× | {met} |"
            )
    rss = max(max(r.rss) for n, r in by.items() if n.startswith("torchwheel"))
    met = "yes" if rss <= GOALS["rss_mb"] else "no"
    lines.append(f"| peak RSS of check ≤ {GOALS['rss_mb']:.0f} MB | {rss:.0f} MiB | {met} |")
    return lines


def _early_text(early: dict[str, float | str]) -> str:
    return (
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


def _gil_text(gil: dict[str, float]) -> str:
    rates = "; ".join(f"{name}: {rate / 1e6:.1f} M/s" for name, rate in gil.items())
    return (
        "Threads, not processes: the calls that do the work release the GIL. Measured in the "
        "same run — how fast a Python loop in the main thread runs while another thread is "
        "inside one call on libtorch_cpu.so (iterations per second): "
        f"{rates}. Near the free-running rate, the call runs beside Python; a call that holds "
        "the GIL all but stops the loop. So `check` "
        "inflates, CRC-checks and hashes on a thread pool (one thread per CPU, plus a hashing "
        "thread for a member over 64 MiB); processes would add start-up, imports, a second "
        "central-directory parse and pickled results for no more parallelism."
    )


def _commands(layer: Path) -> dict[str, list[str]]:
    tw = [sys.executable, "-m", "torchwheel", "check", str(layer), "--json", "-q"]
    return {
        "torchwheel check": [*tw, "--runtime", "python3.11"],
        "stdlib zipfile read all": [sys.executable, "-c", ZIPFILE_READ, str(layer)],
        "torchwheel check --no-record": [*tw, "--runtime", "python3.11", "--no-record"],
        "torchwheel check (matrix)": tw,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="rounds of the fast commands")
    ap.add_argument("--write", action="store_true", help="update docs/performance.md")
    ap.add_argument("--skip-auditwheel", action="store_true")
    args = ap.parse_args()
    # an installed package has its bytecode; a source checkout may not (PYTHONDONTWRITEBYTECODE)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "torchwheel")], check=True)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tw-bench-check-") as tmp:
        work = Path(tmp)
        wheel = get_wheel(work)
        t0 = time.perf_counter()
        layer = rezip_raw(wheel, work / "torch-layer.zip", SITE311)
        print(f"layer built in {time.perf_counter() - t0:.2f} s: {layer.stat().st_size:,} bytes")
        by = rounds(_commands(layer), args.repeat)
        early = early_versions(layer)
        print(f"vna_hash scan: {early}")
        gil = gil_release(layer)
        print(f"main-thread iterations/s during one call in another thread: {gil}")
        aw = shutil.which("auditwheel")
        if aw and not args.skip_auditwheel:
            by.update(rounds({"auditwheel show": [aw, "show", str(wheel)]}, 1))
    load1 = os.getloadavg()
    lines = [
        "<!-- check:begin -->",
        f"`python benchmarks/check.py --repeat {args.repeat} --write`, "
        f"{time.strftime('%Y-%m-%d')}, on the torch 2.13.0 CPU wheel (cp311, 190 MB, 699 MB "
        "unzipped, 12,248 members, 136 ELF files) re-zipped as a layer under "
        "`python/lib/python3.11/site-packages/`. Each command is a child process (Python "
        "start-up and imports included, the package byte-compiled as when installed), one of "
        f"each per round, {args.repeat} rounds; peak RSS from `wait4`. Machine: "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"inflate: {inflate_backend()}; load average (1/5/15 min) "
        f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} before the run and "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} after: the machine is shared with "
        "other jobs, so single wall times are noisy, and a multi-threaded `check` loses more "
        "to other load than the single-threaded `zipfile`; the ratio within a round is the "
        "robust number.",
        "",
        "| command | best wall (s) | median wall (s) | least CPU user+sys (s) | peak RSS (MiB) "
        "| runs |",
        "|---|---|---|---|---|---|",
        *(r.row() for r in by.values()),
        "",
        *_goal_lines(by),
        "",
        _gil_text(gil),
        "",
        _early_text(early),
        "",
    ]
    text = "\n".join([*lines, "<!-- check:end -->"]) + "\n"
    print(text)
    if args.write:
        write_section("check", "Check", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
