"""The members' contents for ``check``: inflated once, CRC-checked, hashed and ELF-parsed.

:func:`scan_contents` runs after :func:`~torchwheel.checks.scan.gather` and reads:

* with RECORD verification (the default): every member of every zip, to its end, so that its
  CRC-32 is checked whether RECORD lists it or not (a corrupt member is an
  :class:`~torchwheel.errors.ArchiveError`: exit 2, never a pass). In the same pass the files
  RECORD lists are hashed with RECORD's algorithm and the possible ELF files are parsed
  (:class:`~torchwheel.elf.ELFScanner`). Files of a directory input or of a packed archive
  (no CRC of their own) are read when RECORD lists them or they may be ELF files; a packed
  archive itself was read whole by its expander, and is not read again.
* with ``record=False`` (``--no-record``): only the possible ELF files, only as far as their
  dynamic section. The members left unread or read in part have not had their CRC-32 checked:
  an ``info`` finding, ``crc-not-checked``, says how many.

How: the largest members first, one task each, streamed (:mod:`torchwheel.zipstream`; a
member of :data:`PIPELINE_BYTES` or more is hashed on a helper thread while it inflates);
small neighbours in batches (one ``pread`` for many members, each inflated in one call); all on
a thread pool with a thread per CPU. Inflating (ISA-L or zlib), CRC-32 and hashing (OpenSSL)
release the GIL on large buffers, so they run on every core; the Python between them is a few
calls per MiB.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import queue
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from ..elf import KEEP_PREFIX, ELFInfo, ELFScanner, is_elf, parse_elf
from ..progress import Step
from ..wheelfile import record_hash
from ..zipread import ZipReader
from .model import INFO, CheckState, Finding, LayerEntry, finding

__all__ = ["SYMLINK_LIMIT", "ContentScan", "is_library_name", "scan_contents"]

#: Members up to this compressed size are read in batches (one pread for many neighbours).
SMALL_MEMBER = 256 * 1024
#: ... and up to this uncompressed size when they are read whole anyway.
SMALL_INFLATED = 8 * 1024 * 1024
#: Members at least this big are hashed on a helper thread while they are inflated.
PIPELINE_BYTES = 64 * 1024 * 1024
#: A batch of small members ends at this many members or unzipped bytes, whichever comes
#: first: batches of even weight keep every thread busy to the end.
BATCH_MEMBERS = 2000
BATCH_BYTES = 8 * 1024 * 1024
#: Symlink members up to this size have their target read (by ``gather``).
SYMLINK_LIMIT = 4096
#: Most of an ELF file's start kept while streaming it (its string and version tables lie
#: there, and the dynamic section that locates them lies far behind in big libraries).
KEEP_PREFIX_MAX = 16 * 1024 * 1024

#: Algorithms a RECORD hash can be checked with (shake_* digests need a length: not usable).
_HASHABLE = frozenset(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake_"))
#: Their constructors (``hashlib.sha256`` is OpenSSL's, without ``hashlib.new``'s lookup).
_NEW: dict[str, Callable[..., Any]] = {a: getattr(hashlib, a) for a in _HASHABLE}
_SO_RE = re.compile(r"\.so(\.\d+)*$")


def is_library_name(base: str) -> bool:
    """``libx.so``, ``libx.so.1.2``, ``x.so.abc``: named like a shared library."""
    return bool(_SO_RE.search(base)) or ".so." in base


def _elf_candidate(entry: LayerEntry) -> bool:
    base = posixpath.basename(entry.path)
    if is_library_name(base):
        return True
    if (
        entry.mode is not None
        and entry.mode & 0o111
        and not base.endswith((".py", ".sh", ".pyc", ".txt", ".json", ".h"))
    ):
        return True
    parts = entry.path.split("/")
    return "bin" in parts[:-1] and "." not in base


@dataclass(frozen=True)
class _Job:
    """One entry to read: with which hash, to its end or not, ELF-parsed or not."""

    entry: LayerEntry
    algo: str | None  # the hash algorithm RECORD wants for it, if any
    full: bool  # read to the end (a zip member's CRC-32 is then checked)
    elf: bool  # may be an ELF file
    effective: bool = True  # False: a later layer's file of the same path hides it


@dataclass
class _ScanResult:
    job: _Job
    digest: str | None = None
    elf: ELFInfo | None = None
    read: int = 0
    whole: bool = False  # read to its end (for a zip member: CRC-32 checked)


def _keep_prefix(size: int) -> int:
    """How much of an ELF file's start to keep: 1/32 of it, between the defaults' bounds.

    The dynamic-linking tables (``.dynsym``, ``.dynstr``, ``.gnu.version_r``) sit before the
    code, in a share of the file that grows with its symbols (libtorch_cpu.so: the first 7.4
    of 414 MB, kept in 13 MB); keeping them means the parse does not inflate the start of the
    member a second time. Keeping costs a copy (~2 ms per MB), so no more than that.
    """
    return min(size, max(KEEP_PREFIX, min(size // 32, KEEP_PREFIX_MAX)))


class _HashPipe:
    """Feed a hash object from another thread through a small bounded queue."""

    def __init__(self, hasher: Any, depth: int = 4) -> None:
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._hasher = hasher
        self._thread = threading.Thread(target=self._run, name="torchwheel-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._q.get()
            if chunk is None:
                return
            self._hasher.update(chunk)

    def put(self, chunk: bytes) -> None:
        self._q.put(chunk)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()


def _stream_chunks(stream: BinaryIO, size: int = 4 << 20) -> Iterator[bytes]:
    read1 = getattr(stream, "read1", None) or stream.read
    try:
        while True:
            b = read1(size)
            if not b:
                return
            yield b
    finally:
        stream.close()


class _Aborted(Exception):
    """The scan was abandoned (an error elsewhere): stop reading."""


def _feed(
    job: _Job, res: _ScanResult, chunks: Iterable[bytes], hasher: Any, abort: threading.Event
) -> ELFScanner | None:
    """Pass ``chunks`` to the hash and the ELF scanner; stop early when the job allows it."""
    entry = job.entry
    scanner: ELFScanner | None = None
    pipe = _HashPipe(hasher) if hasher is not None and entry.size >= PIPELINE_BYTES else None
    update = pipe.put if pipe is not None else hasher.update if hasher is not None else None
    try:
        for chunk in chunks:
            if abort.is_set():
                raise _Aborted
            if res.read == 0 and job.elf and is_elf(chunk):
                scanner = ELFScanner(
                    entry.size, name=entry.label, keep_prefix=_keep_prefix(entry.size)
                )
            res.read += len(chunk)
            if update is not None:
                update(chunk)
            if scanner is not None and not scanner.satisfied:
                scanner.feed(chunk)
            elif not job.full and (scanner is None or scanner.satisfied):
                break
        else:
            res.whole = True
    finally:
        if pipe is not None:
            pipe.close()
    return scanner


def _scan_stream(job: _Job, abort: threading.Event) -> _ScanResult:
    """Read one entry as a stream: hash, ELF-parse and (read whole) CRC-check it in one pass."""
    entry = job.entry
    res = _ScanResult(job)
    hasher = _NEW[job.algo]() if job.algo else None
    chunks = entry.chunks() if entry.chunks is not None else _stream_chunks(entry.open())
    try:
        scanner = _feed(job, res, chunks, hasher, abort)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if hasher is not None:
        res.digest = record_hash(hasher.digest(), hasher.name)
    if scanner is not None:
        res.elf = scanner.result(reopen=entry.open)
    return res


def _scan_bytes(job: _Job, data: bytes) -> _ScanResult:
    entry = job.entry
    res = _ScanResult(job, read=len(data), whole=True)
    if job.algo:
        res.digest = record_hash(_NEW[job.algo](data).digest(), job.algo)
    if job.elf and is_elf(data):
        res.elf = parse_elf(data, name=entry.label)
    return res


def _scan_batch(reader: ZipReader, jobs: Sequence[_Job]) -> list[_ScanResult]:
    by_member = {id(j.entry.zip_source[1]): j for j in jobs if j.entry.zip_source is not None}
    members = [j.entry.zip_source[1] for j in jobs if j.entry.zip_source is not None]
    return [_scan_bytes(by_member[id(m)], data) for m, data in reader.read_many(members)]


# -- what to read ----------------------------------------------------------------------------


def _record_algorithms(state: CheckState) -> dict[str, str]:
    """Absolute path -> the hash algorithm its RECORD line uses (non-vendored dists)."""
    algos: dict[str, str] = {}
    for d in state.dists:
        if d.vendored:
            continue
        for path, (digest, _size) in d.record.items():
            algo = digest.split("=", 1)[0] if "=" in digest else ""
            if algo in _HASHABLE:
                algos[path] = algo
    return algos


def _job(e: LayerEntry, effective: bool, algo: str | None, verify: bool) -> _Job | None:
    """What to do with one entry (``algo``: the hash RECORD wants), or None to leave it unread."""
    zipped = e.zip_source is not None
    if e.is_symlink:
        # a symlink's target is its content; gather read the short ones of the final tree
        if verify and zipped and not (effective and e.size < SYMLINK_LIMIT):
            return _Job(e, None, True, False, effective)
        return None
    algo = algo if effective else None
    elf = effective and e.size > 0 and _elf_candidate(e)
    if verify and zipped:
        return _Job(e, algo, True, elf, effective)
    if e.size > 0 and (algo is not None or elf):
        return _Job(e, algo, algo is not None, elf, effective)
    return None


def _jobs(state: CheckState, algos: dict[str, str], verify: bool) -> list[_Job]:
    """The entries to read. ``verify``: every zip member, to its end (CRC-32 checked)."""
    consumed = {e.expanded_from for e in state.entries if e.expanded_from is not None}
    jobs: list[_Job] = []
    for e in state.entries:
        if e.is_dir or (consumed and e.label in consumed):  # an expander read it whole
            continue
        effective = state.files.get(e.abs_path) is e
        job = _job(e, effective, algos.get(e.abs_path), verify)
        if job is not None:
            jobs.append(job)
    return jobs


def _is_small(job: _Job) -> bool:
    src = job.entry.zip_source
    return (
        src is not None
        and src[1].compressed_size <= SMALL_MEMBER
        and src[1].file_size <= (SMALL_INFLATED if job.full else SMALL_MEMBER)
    )


_Task = Callable[[], list[_ScanResult]]


def _batches(group: list[_Job]) -> Iterator[list[_Job]]:
    """``group`` (one zip's small members) in header order, cut by count and bytes."""
    group.sort(key=lambda j: j.entry.zip_source[1].header_offset)  # type: ignore[index]
    part: list[_Job] = []
    size = 0
    for job in group:
        part.append(job)
        size += job.entry.size
        if len(part) >= BATCH_MEMBERS or size >= BATCH_BYTES:
            yield part
            part, size = [], 0
    if part:
        yield part


def _tasks(jobs: Sequence[_Job], abort: threading.Event) -> list[_Task]:
    """Big entries one task each, small members in batches; the heaviest first."""
    small: dict[int, list[_Job]] = defaultdict(list)
    readers: dict[int, ZipReader] = {}
    weighted: list[tuple[int, _Task]] = []
    for job in jobs:
        src = job.entry.zip_source
        if src is not None and _is_small(job):
            small[id(src[0])].append(job)
            readers[id(src[0])] = src[0]
        else:
            weighted.append((job.entry.size, lambda j=job: [_scan_stream(j, abort)]))  # type: ignore[misc]
    for rid, group in small.items():
        for part in _batches(group):
            weight = sum(j.entry.size for j in part)
            weighted.append((weight, lambda r=readers[rid], p=part: _scan_batch(r, p)))  # type: ignore[misc]
    weighted.sort(key=lambda w: -w[0])
    return [task for _w, task in weighted]


def _unchecked(state: CheckState, whole: set[int]) -> list[Finding]:
    """``crc-not-checked``, per zip: members no one read to their end."""
    done = {e.expanded_from for e in state.entries if e.expanded_from is not None}
    done.update(f"{d.dist_info}/{n}" for d in state.dists for n in ("METADATA", "WHEEL", "RECORD"))
    counts: dict[str, list[int]] = {}
    for e in state.entries:
        if e.zip_source is None or e.is_dir or id(e) in whole:
            continue
        if e.label in done or e.abs_path in done:  # read whole by gather or an expander
            continue
        if e.is_symlink and e.size < SYMLINK_LIMIT and state.files.get(e.abs_path) is e:
            continue
        count = counts.setdefault(e.origin, [0, 0])
        count[0] += 1
        count[1] += e.size
    return [
        finding(
            "crc-not-checked",
            origin,
            f"{n} members ({size:,} bytes unzipped) were not inflated to their end, so their "
            "CRC-32 was not checked (--no-record reads only ELF headers and metadata); run "
            "without --no-record to verify every member",
            severity=INFO,
            members=n,
            bytes=size,
        )
        for origin, (n, size) in counts.items()
    ]


def _merge(state: CheckState, results: Iterable[_ScanResult], record: bool) -> None:
    whole: set[int] = set()
    for r in results:
        state.bytes_read += r.read
        if r.whole:
            whole.add(id(r.job.entry))
        if not r.job.effective:
            continue
        path = r.job.entry.abs_path
        if r.digest is not None:
            state.digests[path] = r.digest
        if r.elf is not None:
            state.elves[path] = r.elf
    if not record:
        state.generic.extend(_unchecked(state, whole))


def _cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


#: The hash RECORD uses in practice (PEP 376 / the wheel spec's sha256): a member started
#: before RECORD is read is hashed with it, and read again in the rare case RECORD wants another.
_LIKELY_ALGO = "sha256"


class ContentScan:
    """The members' contents read on a thread pool (see the module docstring).

    :meth:`start` (``gather``'s ``early`` hook, called once a zip's central directory is
    read) sets its big members going while ``gather`` still makes the other entries and
    parses the dist-info — inflating and hashing release the GIL, so they overlap that Python
    work; :meth:`finish` reads the rest and fills the state. Leaving the ``with`` block early
    (an error) stops every read at its next chunk.
    """

    def __init__(self, record: bool, workers: int | None = None) -> None:
        self.record = record
        n = workers or _cpus()
        self._pool = ThreadPoolExecutor(max_workers=n) if n > 1 else None
        self._abort = threading.Event()
        self._early: dict[int, tuple[_Job, Future[_ScanResult]]] = {}

    def __enter__(self) -> ContentScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop what has not finished (idempotent); wait for the threads."""
        self._abort.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def start(self, entries: Sequence[LayerEntry]) -> None:
        """Start reading the big zip members among ``entries`` (the hash: ``sha256``)."""
        if self._pool is None:
            return
        consumed = {e.expanded_from for e in entries if e.expanded_from is not None}
        algo = _LIKELY_ALGO if self.record else None
        early = []
        for e in entries:
            if e.zip_source is None or e.is_dir or e.is_symlink or e.label in consumed:
                continue
            job = _job(e, True, algo, self.record)
            if job is not None and not _is_small(job):
                early.append(job)
        for job in sorted(early, key=lambda j: -j.entry.size):
            self._early[id(job.entry)] = (job, self._pool.submit(_scan_stream, job, self._abort))

    def _reuse(self, job: _Job, progress: Step | None) -> tuple[_ScanResult, bool]:
        """The early result for ``job``, and whether it serves (else: read it again)."""
        early_job, future = self._early.pop(id(job.entry))
        res = future.result()  # a corrupt member raises here
        if job.algo not in (None, early_job.algo):  # RECORD wants another hash
            res.job = replace(job, effective=False)  # count the bytes, keep nothing
            return res, False
        if progress is not None:
            progress.advance(files=1, bytes=job.entry.size)
        res.job = job
        if job.algo is None:
            res.digest = None
        return res, True

    def finish(self, state: CheckState, progress: Step | None = None) -> None:
        """Read everything else the checks need into ``state``; ``progress`` counts entries."""
        algos = _record_algorithms(state) if self.record else {}
        jobs = _jobs(state, algos, verify=self.record)
        if progress is not None:
            progress.update(files_total=len(jobs), bytes_total=sum(j.entry.size for j in jobs))
        results: list[_ScanResult] = []
        rest: list[_Job] = []
        for job in jobs:
            if id(job.entry) not in self._early:
                rest.append(job)
                continue
            res, serves = self._reuse(job, progress)
            results.append(res)
            if not serves:
                rest.append(job)
        for early_job, future in self._early.values():  # read early, then left out: CRC only
            res = future.result()
            res.job = replace(early_job, effective=False)
            results.append(res)
        self._early.clear()
        tasks = _tasks(rest, self._abort)
        if progress is not None:
            tasks = [_counted(t, progress) for t in tasks]
        if self._pool is None or len(tasks) < 2:
            results.extend(r for t in tasks for r in t())
        else:
            results.extend(r for rs in self._pool.map(lambda t: t(), tasks) for r in rs)
        _merge(state, results, self.record)


def _counted(task: _Task, progress: Step) -> _Task:
    """``task``, reporting its entries (files, unzipped bytes) to ``progress`` when done."""

    def run() -> list[_ScanResult]:
        rs = task()
        progress.advance(files=len(rs), bytes=sum(r.job.entry.size for r in rs))
        return rs

    return run


def scan_contents(
    state: CheckState, record: bool, workers: int | None, progress: Step | None = None
) -> None:
    """Read what the checks need (see the module docstring) into ``state``.

    ``record``: verify RECORD, which reads every zip member whole; ``workers``: threads
    (default: one per CPU); ``progress`` counts the entries read and their unzipped bytes.
    The whole scan after ``gather``; :class:`ContentScan` can start it during ``gather``.
    """
    with ContentScan(record, workers) as scan:
        scan.finish(state, progress)
