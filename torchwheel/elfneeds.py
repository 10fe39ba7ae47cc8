"""A wheel's glibc / libstdc++ needs, verified before downloading it.

A ``linux_x86_64`` tag promises nothing about glibc; only the shared objects' version-need
tables (``.gnu.version_r``) tell. Those tables sit near the start of each file — linkers put
them right after ``.dynsym``/``.dynstr``, and ``auditwheel``/``patchelf`` leave them there even
when they move the dynamic section to the end (torch's ``libtorch_cpu.so``: 7.8 MB into a
434 MB file, 1.8 MB into its deflate stream) — and each entry carries ``vna_hash``, the ELF
hash of the version name, so :func:`torchwheel.elf.scan_version_needs` names the versions
(``GLIBC_2.28``…) without the string table.

:func:`read_elf_needs` therefore reads, for every shared object of a :class:`RemoteWheel`,
only a prefix of its compressed stream: one HTTP ``Range`` per group of neighbouring members
(spans less than :data:`MERGE_GAP` apart are merged; more merging when requests run short),
inflates it and scans; a member whose table is not there yet gets a longer prefix in the next
round (×4). Members read whole are parsed exactly (:func:`~torchwheel.elf.parse_elf`, CRC
checked). Budgets: :data:`MAX_BYTES` received and :data:`MAX_REQUESTS` requests per wheel,
central directory included; what the budget does not cover is reported as ``missed``, never
guessed. :func:`needs_reasons` (pure) judges the result against a Lambda target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .elf import MACHINES, parse_elf, scan_version_needs, version_tuple
from .errors import ArchiveError, ELFError
from .remote import LFH_SIZE, LFH_SLACK, RemoteWheel
from .targets import Target
from .zipread import ZIP_DEFLATED, ZIP_STORED, ZipMember
from .zipstream import crc32, decompressobj, inflate_errors

__all__ = [
    "MAX_BYTES",
    "MAX_REQUESTS",
    "ElfFileNeeds",
    "ElfNeeds",
    "is_shared_object_name",
    "needs_reasons",
    "needs_summary",
    "plan_ranges",
    "read_elf_needs",
]

#: Bytes one wheel's verification may receive, central directory included (issue 11 budget).
MAX_BYTES = 16 * 1024 * 1024
#: Requests one wheel's verification may make, central directory included.
MAX_REQUESTS = 12
#: Spans closer than this are fetched with one request (the gap is cheaper than a round trip).
MERGE_GAP = 256 * 1024
#: First prefix of a member's compressed stream: 1/32 of it, within these bounds.
FIRST_PREFIX_MIN = 512 * 1024
FIRST_PREFIX_MAX = 4 * 1024 * 1024
#: Each further round asks for this many times the previous prefix.
GROWTH = 4
#: Most bytes one member is inflated to (the tables sit in the first ~10 MB).
MAX_INFLATED = 64 * 1024 * 1024
#: Most bytes held inflated at once for one wheel (a deflate bomb gives up, never swells).
MAX_INFLATED_TOTAL = 256 * 1024 * 1024
MAX_ROUNDS = 6

_SO_NAME = re.compile(r"\.so(?:\.\d+)*$")
_VENDORED_LIBSTDCXX = re.compile(r"(?:^|/)libstdc\+\+[^/]*\.so")


def is_shared_object_name(name: str) -> bool:
    """``x.so``, ``x.so.1.2``, ``_C.cpython-311-x86_64-linux-gnu.so``: names of shared objects."""
    return bool(_SO_NAME.search(name))


@dataclass(frozen=True)
class ElfFileNeeds:
    """The version needs of one shared object of the wheel."""

    member: str
    machine: str  # x86_64, aarch64, ...
    versions: tuple[str, ...]  # GLIBC_2.17, GLIBCXX_3.4.19, ... (known names), sorted
    unknown: int  # needs whose vna_hash is no known version name
    inflated: int  # uncompressed bytes read
    whole: bool  # the whole member was read and parsed exactly

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "member": self.member,
            "machine": self.machine,
            "versions": list(self.versions),
            "unknown": self.unknown,
            "inflated": self.inflated,
            "whole": self.whole,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElfFileNeeds:
        """Inverse of :meth:`to_dict`."""
        return cls(
            member=str(d["member"]),
            machine=str(d["machine"]),
            versions=tuple(str(v) for v in d["versions"]),
            unknown=int(d["unknown"]),
            inflated=int(d["inflated"]),
            whole=bool(d["whole"]),
        )


@dataclass(frozen=True)
class ElfNeeds:
    """What the shared objects of one wheel need, read before download."""

    url: str
    files: tuple[ElfFileNeeds, ...]
    missed: tuple[str, ...] = ()  # shared objects whose table the budgets did not reach
    not_elf: tuple[str, ...] = ()  # ``*.so`` members that are not ELF files
    requests: int = 0  # requests made for this wheel (central directory included)
    bytes_received: int = 0
    vendors_libstdcxx: bool = False  # the wheel ships its own libstdc++

    @property
    def complete(self) -> bool:
        """True when every shared object's needs were read."""
        return not self.missed

    def max_version(self, prefix: str) -> tuple[tuple[int, ...], str, str] | None:
        """Highest need with ``prefix`` (``"GLIBC_"``): (version, name, member), or None."""
        best: tuple[tuple[int, ...], str, str] | None = None
        for f in self.files:
            for name in f.versions:
                v = version_tuple(name, prefix)
                if v is not None and (best is None or v > best[0]):
                    best = (v, name, f.member)
        return best

    def to_dict(self) -> dict[str, Any]:
        """JSON form (also what the wheel-facts cache stores)."""
        return {
            "url": self.url,
            "files": [f.to_dict() for f in self.files],
            "missed": list(self.missed),
            "not_elf": list(self.not_elf),
            "requests": self.requests,
            "bytes_received": self.bytes_received,
            "vendors_libstdcxx": self.vendors_libstdcxx,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElfNeeds:
        """Inverse of :meth:`to_dict`."""
        return cls(
            url=str(d["url"]),
            files=tuple(ElfFileNeeds.from_dict(f) for f in d["files"]),
            missed=tuple(str(m) for m in d["missed"]),
            not_elf=tuple(str(m) for m in d["not_elf"]),
            requests=int(d["requests"]),
            bytes_received=int(d["bytes_received"]),
            vendors_libstdcxx=bool(d["vendors_libstdcxx"]),
        )


# -- planning (pure) ------------------------------------------------------------------------------


def plan_ranges(
    wants: list[tuple[int, int]],
    *,
    requests_left: int,
    bytes_left: int,
    merge_gap: int = MERGE_GAP,
) -> list[tuple[int, int]]:
    """The requests (start, end exclusive) that fetch ``wants`` within the budgets.

    Overlapping spans become one, and so do spans less than ``merge_gap`` apart while the
    bytes allow; while there are more spans than ``requests_left``, the two closest are
    merged if the bytes allow it; then the first spans (file order) are kept, the last one
    cut at ``bytes_left``.
    """
    merged: list[tuple[int, int]] = []
    for a, b in sorted(w for w in wants if w[1] > w[0]):
        if merged and a <= merged[-1][1]:  # overlapping or touching
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    total = sum(b - a for a, b in merged)
    i = 0
    while i < len(merged) - 1:  # small gaps: cheaper fetched than asked for again
        gap = merged[i + 1][0] - merged[i][1]
        if gap <= merge_gap and total + gap <= bytes_left:
            merged[i : i + 2] = [(merged[i][0], merged[i + 1][1])]
            total += gap
        else:
            i += 1
    while len(merged) > max(requests_left, 1):
        gap, i = min((merged[i + 1][0] - merged[i][1], i) for i in range(len(merged) - 1))
        if total + gap > bytes_left:
            break
        merged[i : i + 2] = [(merged[i][0], merged[i + 1][1])]
        total += gap
    out: list[tuple[int, int]] = []
    left = bytes_left
    for a, b in merged[: max(requests_left, 0)]:
        if left <= 0:
            break
        end = min(b, a + left)
        out.append((a, end))
        left -= end - a
    return out


# -- one member -----------------------------------------------------------------------------------


class _Scan:
    """The prefix of one member read so far, inflated, and what it showed."""

    def __init__(self, member: ZipMember) -> None:
        self.m = member
        self.data_start: int | None = None
        self.fed = 0  # compressed bytes consumed
        self.out = bytearray()
        self.d = decompressobj() if member.compress_type == ZIP_DEFLATED else None
        self.step = min(max(member.compressed_size // 32, FIRST_PREFIX_MIN), FIRST_PREFIX_MAX)
        self.done = False
        self.is_elf = True
        self.little = True
        self.machine = ""
        self.result: ElfFileNeeds | None = None

    def want(self) -> tuple[int, int]:
        """The span of the file this member needs next."""
        m = self.m
        if self.data_start is None:
            first = min(self.step, m.compressed_size)
            return m.header_offset, m.header_offset + LFH_SIZE + LFH_SLACK + first
        end = min(m.compressed_size, self.fed + self.step)
        return self.data_start + self.fed, self.data_start + end

    def advance(self, wheel: RemoteWheel) -> bool:
        """Consume what was fetched up to the wanted end; True when something was consumed."""
        _, end = self.want()
        self.step *= GROWTH
        if self.data_start is None:
            self.data_start = wheel.data_offset(self.m)
            if self.data_start is None:
                return False
        pos = self.data_start + self.fed
        chunk = wheel.available(pos, min(end, self.data_start + self.m.compressed_size) - pos)
        if not chunk:
            return False
        self.fed += len(chunk)
        room = MAX_INFLATED - len(self.out)
        if self.d is None:
            self.out += chunk[:room]
        else:
            try:
                self.out += self.d.decompress(chunk, room)
            except inflate_errors as exc:
                raise ArchiveError(
                    f"{wheel.url}: {self.m.name}: corrupt deflate data ({exc})"
                ) from None
        self._evaluate(wheel.url)
        return True

    def _header(self) -> None:
        head = bytes(self.out[:20])
        if head[:4] != b"\x7fELF":
            self.is_elf = False
            self.done = True
            return
        self.little = head[5] != 2
        code = int.from_bytes(head[18:20], "little" if self.little else "big")
        self.machine = MACHINES.get(code, f"unknown({code})")

    def _evaluate(self, url: str) -> None:
        if len(self.out) < 20 and self.fed < self.m.compressed_size:
            return
        if not self.machine:
            self._header()
            if self.done:
                return
        capped = len(self.out) >= MAX_INFLATED  # the inflater stopped at the cap
        if self.fed >= self.m.compressed_size and not capped:
            self._finish_whole(url)
            return
        needs = scan_version_needs(bytes(self.out), little_endian=self.little)
        if needs:
            known = sorted({n.name for n in needs if n.name is not None})
            unknown = sum(1 for n in needs if n.name is None)
            self._done(tuple(known), unknown, whole=False)
        elif capped:
            self.out = bytearray()
            self.done = True  # gives up: reported as missed

    def _finish_whole(self, url: str) -> None:
        data = bytes(self.out)
        label = f"{url}: {self.m.name}"
        if len(data) != self.m.file_size or crc32(data, 0) != self.m.crc:
            raise ArchiveError(f"{label}: CRC-32 mismatch")
        try:
            info = parse_elf(data, name=label)
        except ELFError:
            self.done = True  # unreadable: reported as missed, never guessed
            return
        known = sorted({n.name for n in info.version_needs})
        self._done(tuple(known), 0, whole=True)

    def _done(self, versions: tuple[str, ...], unknown: int, *, whole: bool) -> None:
        self.done = True
        self.result = ElfFileNeeds(
            member=self.m.name,
            machine=self.machine,
            versions=versions,
            unknown=unknown,
            inflated=len(self.out),
            whole=whole,
        )
        self.out = bytearray()  # free the memory


def _shared_objects(members: list[ZipMember]) -> list[ZipMember]:
    return [
        m
        for m in members
        if not m.is_dir
        and is_shared_object_name(m.name)
        and m.file_size >= 64
        and m.compress_type in (ZIP_STORED, ZIP_DEFLATED)
    ]


def _within_memory(scans: list[_Scan]) -> None:
    """Give up on the biggest unfinished members while their prefixes hold too much."""
    held = sorted((s for s in scans if not s.done), key=lambda s: len(s.out), reverse=True)
    total = sum(len(s.out) for s in held)
    for s in held:
        if total <= MAX_INFLATED_TOTAL:
            return
        total -= len(s.out)
        s.out = bytearray()
        s.done = True  # reported as missed


def read_elf_needs(
    wheel: RemoteWheel,
    *,
    max_bytes: int = MAX_BYTES,
    max_requests: int = MAX_REQUESTS,
) -> ElfNeeds:
    """The version needs of every shared object in ``wheel``, from prefixes of the members.

    ``max_bytes`` / ``max_requests`` bound what the wheel costs in all, counting what
    ``wheel`` already received (its central directory). Raises
    :class:`~torchwheel.errors.ELFError` for a corrupt member and
    :class:`~torchwheel.errors.NetworkError` when the server fails.
    """
    scans = [_Scan(m) for m in _shared_objects(wheel.members)]
    for _ in range(MAX_ROUNDS):
        pending = [s for s in scans if not s.done]
        if not pending:
            break
        if not wheel.local:
            plan = plan_ranges(
                [s.want() for s in pending],
                requests_left=max_requests - wheel.requests,
                bytes_left=max_bytes - wheel.bytes_received,
            )
            if not plan:
                break
            for start, end in plan:
                wheel.fetch(start, end)
        progressed = [s.advance(wheel) for s in pending]
        _within_memory(scans)
        if not any(progressed):
            break
    return ElfNeeds(
        url=wheel.url,
        files=tuple(s.result for s in scans if s.result is not None),
        missed=tuple(s.m.name for s in scans if s.is_elf and s.result is None),
        not_elf=tuple(s.m.name for s in scans if not s.is_elf),
        requests=wheel.requests,
        bytes_received=wheel.bytes_received,
        vendors_libstdcxx=any(_VENDORED_LIBSTDCXX.search(m.name) for m in wheel.members),
    )


# -- judging (pure) -------------------------------------------------------------------------------


def _ceiling_reason(
    needs: ElfNeeds, prefix: str, have: tuple[int, ...], what: str, target: Target
) -> str | None:
    top = needs.max_version(prefix)
    if top is None or top[0] <= have:
        return None
    rt = target.runtime
    _, name, member = top
    return (
        f"needs {name} ({member}); {rt.name} on {rt.os_short} has {what} "
        f"{'.'.join(str(p) for p in have)}"
    )


def needs_reasons(needs: ElfNeeds, target: Target) -> list[str]:
    """Why the wheel's shared objects do not load on ``target`` (empty: nothing found)."""
    reasons: list[str] = []
    wrong = [f for f in needs.files if f.machine != target.machine]
    if wrong:
        reasons.append(
            f"{wrong[0].member} is built for {wrong[0].machine}; target is {target.machine}"
        )
    rt = target.runtime
    found = _ceiling_reason(needs, "GLIBC_", rt.glibc, "glibc", target)
    if found:
        reasons.append(found)
    if not needs.vendors_libstdcxx:
        for prefix, have, what in (
            ("GLIBCXX_", rt.glibcxx, "GLIBCXX up to"),
            ("CXXABI_", rt.cxxabi, "CXXABI up to"),
        ):
            found = _ceiling_reason(needs, prefix, have, what, target)
            if found:
                reasons.append(found)
    return reasons


def needs_summary(needs: ElfNeeds) -> str:
    """``"12 shared objects need at most GLIBC_2.28, GLIBCXX_3.4.22, CXXABI_1.3.11"``."""
    if not needs.files and not needs.missed:
        return "the wheel holds no shared objects"
    tops = [needs.max_version(p) for p in ("GLIBC_", "GLIBCXX_", "CXXABI_")]
    names = ", ".join(t[1] for t in tops if t is not None) or "no versioned symbols"
    line = f"{len(needs.files)} shared objects need at most {names}"
    if needs.missed:
        line += f"; {len(needs.missed)} not read within the budget ({', '.join(needs.missed[:3])})"
    return line
