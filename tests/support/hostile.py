"""Hostile inputs for torchwheel's readers (issue 13), built byte by byte so they are reproducible.

Each builder returns the bytes of one input that once broke the contract "bad input → one line
and exit 2, or a finding; never a traceback, never a hang". :func:`write_all` writes them all
into ``tests/data/hostile/`` (the checked-in copies the regression tests read); run

    python -m tests.support.hostile

to regenerate them (the output is byte-identical from run to run). Every file is under 200 KB.

The ELF files are written from scratch (:func:`build_elf`): an ELF header, a ``PT_LOAD``
covering the whole file, a ``PT_DYNAMIC``, a string table and a ``.gnu.version_r`` table — the
parts torchwheel's reader walks, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

HOSTILE_DIR = Path(__file__).resolve().parent.parent / "data" / "hostile"
_DATE = (2024, 1, 1, 0, 0, 0)
SITE = "python/lib/python3.12/site-packages"

EM_X86_64 = 62
EM_AARCH64 = 183


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def elf_hash(name: bytes) -> int:
    """The System V ELF hash of a version name (``vna_hash``)."""
    h = 0
    for c in name:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


# -- ELF -------------------------------------------------------------------------------------------


def build_elf(
    *,
    needed: Sequence[str] = ("libc.so.6",),
    version_needs: Sequence[tuple[str, Sequence[str]]] = (("libc.so.6", ("GLIBC_2.2.5",)),),
    bits: int = 64,
    little: bool = True,
    machine: int = EM_X86_64,
    verneed_override: Callable[[int, dict[str, int]], tuple[bytes, int]] | None = None,
) -> bytes:
    """A minimal shared object: header, PT_LOAD + PT_DYNAMIC, .dynstr, .gnu.version_r.

    ``verneed_override(offset, string_index)`` may return (table bytes, record count) in place
    of the well-formed table built from ``version_needs`` (``offset`` is where the table
    starts in the file; ``string_index`` maps each string to its .dynstr index).
    """
    e = "<" if little else ">"
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    dynent = 16 if bits == 64 else 8
    strings: list[str] = [*needed]
    for file, names in version_needs:
        strings.append(file)
        strings.extend(names)
    strtab = b"\x00"
    index: dict[str, int] = {}
    for s in strings:
        if s not in index:
            index[s] = len(strtab)
            strtab += s.encode() + b"\x00"
    with_verneed = bool(version_needs) or verneed_override is not None
    n_dyn = len(needed) + (5 if with_verneed else 3)  # STRTAB, STRSZ, [VERNEED(NUM)], NULL
    phoff = ehsize
    dyn_off = phoff + 2 * phentsize
    str_off = dyn_off + n_dyn * dynent
    vn_off = (str_off + len(strtab) + 3) & ~3
    if verneed_override is not None:
        verneed, vn_count = verneed_override(vn_off, index)
    else:
        verneed, vn_count = _verneed_table(version_needs, index, e)
    size = vn_off + len(verneed)
    dyn = b""
    dpack = struct.Struct(e + ("qQ" if bits == 64 else "iI")).pack
    for lib in needed:
        dyn += dpack(1, index[lib])  # DT_NEEDED
    dyn += dpack(5, str_off) + dpack(10, len(strtab))  # DT_STRTAB, DT_STRSZ
    if with_verneed:
        dyn += dpack(0x6FFFFFFE, vn_off) + dpack(0x6FFFFFFF, vn_count)  # DT_VERNEED(NUM)
    dyn += dpack(0, 0)
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little else 2, 1, 0]) + bytes(8)
    if bits == 64:
        hdr = struct.pack(e + "HHIQQQIHHHHHH", 3, machine, 1, 0, phoff, 0, 0, ehsize,
                          phentsize, 2, 64, 0, 0)  # fmt: skip
        ph = struct.pack(e + "IIQQQQQQ", 1, 5, 0, 0, 0, size, size, 0x1000)
        ph += struct.pack(e + "IIQQQQQQ", 2, 6, dyn_off, dyn_off, dyn_off, len(dyn), len(dyn), 8)
    else:
        hdr = struct.pack(e + "HHIIIIIHHHHHH", 3, machine, 1, 0, phoff, 0, 0, ehsize,
                          phentsize, 2, 40, 0, 0)  # fmt: skip
        ph = struct.pack(e + "IIIIIIII", 1, 0, 0, 0, size, size, 5, 0x1000)
        ph += struct.pack(e + "IIIIIIII", 2, dyn_off, dyn_off, dyn_off, len(dyn), len(dyn), 6, 4)
    body = ident + hdr + ph + dyn + strtab
    body += bytes(vn_off - len(body))
    return body + verneed


def _verneed_table(
    version_needs: Sequence[tuple[str, Sequence[str]]], index: dict[str, int], e: str
) -> tuple[bytes, int]:
    out = b""
    other = 2
    for i, (file, names) in enumerate(version_needs):
        last = i == len(version_needs) - 1
        vn_next = 0 if last else 16 + 16 * len(names)
        out += struct.pack(e + "HHIII", 1, len(names), index[file], 16, vn_next)
        for j, name in enumerate(names):
            nxt = 0 if j == len(names) - 1 else 16
            out += struct.pack(e + "IHHII", elf_hash(name.encode()), 0, other, index[name], nxt)
            other += 1
    return out, len(version_needs)


def verneed_chain_bomb(records: int = 4096, chain: int = 65_535) -> bytes:
    """``records`` Verneed records, every one pointing at the same ``chain``-entry aux list."""

    def table(offset: int, index: dict[str, int]) -> tuple[bytes, int]:
        head = b""
        chain_start = records * 16
        for i in range(records):
            vn_aux = chain_start - i * 16
            vn_next = 0 if i == records - 1 else 16
            head += struct.pack("<HHIII", 1, chain, index["libc.so.6"], vn_aux, vn_next)
        name = index["GLIBC_2.2.5"]
        h = elf_hash(b"GLIBC_2.2.5")
        aux = struct.pack("<IHHII", h, 0, 2, name, 16) * (chain - 1)
        aux += struct.pack("<IHHII", h, 0, 2, name, 0)
        return head + aux, records

    return build_elf(verneed_override=table)


# -- zips ------------------------------------------------------------------------------------------


def zip_of(members: dict[str, bytes], *, level: int = 9) -> bytes:
    """A zip holding ``members`` (deflated, fixed dates, mode 0644)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            zf.writestr(info, data, compresslevel=level)
    return buf.getvalue()


def _dist(
    name: str,
    *,
    record: bytes | None = None,
    metadata: str | None = None,
    wheel: str | None = None,
    files: dict[str, bytes] | None = None,
) -> dict[str, bytes]:
    """A layer zip's members: one installed distribution under the python3.12 site dir."""
    di = f"{SITE}/{name}-1.0.dist-info"
    members = {f"{SITE}/{k}": v for k, v in (files or {f"{name}/__init__.py": b""}).items()}
    members[f"{di}/METADATA"] = (
        metadata or f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n"
    ).encode()
    members[f"{di}/WHEEL"] = (
        wheel or "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    ).encode()
    if record is None:  # a correct RECORD: hashes and sizes of every file, paths site-relative
        rows = [
            f"{k[len(SITE) + 1 :]},sha256={_b64(hashlib.sha256(v).digest())},{len(v)}\n"
            for k, v in members.items()
        ]
        record = ("".join(rows) + f"{name}-1.0.dist-info/RECORD,,\n").encode()
    members[f"{di}/RECORD"] = record
    return members


def zip64_locator_overflow() -> bytes:
    """An empty archive whose ZIP64 locator points past 2**63 (OverflowError in pread)."""
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, 1 << 63, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF,
                       0xFFFFFFFF, 0xFFFFFFFF, 0)  # fmt: skip
    return b"\x00" * 64 + loc + eocd


def overlapping_members(count: int = 1000, size: int = 64 << 20) -> bytes:
    """``count`` central-directory entries sharing one deflated ``size``-byte stream."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    raw = b"".join(comp.compress(chunk) for _ in range(size >> 20)) + comp.flush()
    crc = 0
    for _ in range(size >> 20):
        crc = zlib.crc32(chunk, crc)
    name = b"python/bomb.bin"
    lfh = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 8, 0, 0x21, crc, len(raw),
                      size, len(name), 0) + name  # fmt: skip
    cd = b""
    for i in range(count):
        n = f"python/bomb{i:04d}.bin".encode()
        cd += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 8, 0, 0x21, crc,
                          len(raw), size, len(n), 0, 0, 0, 0, 0o100644 << 16, 0) + n  # fmt: skip
    data = lfh + raw
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(cd), len(data), 0)
    return data + cd + eocd


def elf_layer(elf: bytes, name: str = "native/_ext.so") -> bytes:
    """A layer zip with one distribution whose package holds ``elf``."""
    return zip_of(_dist("native", files={"native/__init__.py": b"", name: elf}))


def version_name_layers() -> dict[str, bytes]:
    """ELF version names that are not numbers (ValueError in the version compare)."""
    out = {}
    for label, names in {
        "glibc-28x": ("GLIBC_2.28x",),
        "glibcxx-x": ("GLIBCXX_3.4.x",),
        "glibc-5000-digits": ("GLIBC_2." + "9" * 5000,),
        "glibcxx-5000-digits": ("GLIBCXX_3.4." + "7" * 5000,),
        "cxxabi-5000-digits": ("CXXABI_1.3." + "1" * 5000,),
    }.items():
        lib = "libstdc++.so.6" if not label.startswith("glibc-") else "libc.so.6"
        elf = build_elf(needed=(lib,), version_needs=((lib, names),))
        out[f"elf-version-{label}.zip"] = elf_layer(elf)
    return out


def record_layers() -> dict[str, bytes]:
    """RECORD files the csv module or int() choke on."""
    di = "bad-1.0.dist-info"
    long_field = f"bad/__init__.py,sha256={'A' * 131_073},0\n{di}/RECORD,,\n".encode()
    bare_cr = f"bad/__init__.py,sha256=x\ry,0\n{di}/RECORD,,\n".encode()
    big_size = f"bad/__init__.py,,{'9' * 5000}\n{di}/RECORD,,\n".encode()
    return {
        "record-field-131073.zip": zip_of(_dist("bad", record=long_field)),
        "record-bare-cr.zip": zip_of(_dist("bad", record=bare_cr)),
        "record-size-5000-digits.zip": zip_of(_dist("bad", record=big_size)),
    }


def metadata_layers() -> dict[str, bytes]:
    """Requires-Dist and WHEEL tags that packaging or int() choke on."""
    meta = "Metadata-Version: 2.1\nName: bad\nVersion: 1.0\nRequires-Dist: {}\n\n"
    out = {
        "requires-dist-5000-digit-version.zip": zip_of(
            _dist("bad", metadata=meta.format("dep>=1." + "9" * 5000))
        ),
        "requires-dist-undefined-comparison.zip": zip_of(
            _dist("bad", metadata=meta.format('dep; python_version ~= "abc"'))
        ),
        "requires-dist-bad-marker.zip": zip_of(
            _dist("bad", metadata=meta.format('dep; python_version >> "3"'))
        ),
    }
    tag = "manylinux_2_" + "9" * 5000 + "_x86_64"
    wheel = f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp312-cp312-{tag}\n"
    out["wheel-tag-manylinux-5000-digits.zip"] = zip_of(_dist("bad", wheel=wheel))
    return out


def markup_layers() -> dict[str, bytes]:
    """Member names that are rich console markup."""
    return {
        "name-markup-close-tag.zip": zip_of({"python/../[/].py": b"x = 1\n"}),
        "name-markup-bold.zip": zip_of({"python/[bold red]x.py": b"x = 1\n"}),
    }


# -- packed layers ---------------------------------------------------------------------------------


def tar_zst(members: Sequence[tuple[str, bytes | int]], level: int = 19) -> bytes:
    """A PAX tar of ``members`` (bytes, or an int: that many zero bytes), zstd-compressed,
    streamed (a big member is never held)."""
    import zstandard

    zeros = bytes(1 << 20)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=level).stream_writer(out, closefd=False) as w:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = data if isinstance(data, int) else len(data)
            info.mode = 0o644
            info.mtime = 315532800
            w.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            if isinstance(data, bytes):
                w.write(data)
            else:
                for left in range(data, 0, -len(zeros)):
                    w.write(zeros[: min(left, len(zeros))])
            w.write(bytes(-info.size % 512))
        w.write(bytes(1024))
    return out.getvalue()


def _packed_layer(archive: bytes, manifest: bytes) -> bytes:
    return zip_of(
        {
            "python/torchwheel_loader.py": b"# loader\n",
            "python/torchwheel_packed/manifest.json": manifest,
            "python/torchwheel_packed/site-packages.tar.zst": archive,
        },
        level=0 if len(archive) > 1 << 16 else 9,
    )


def packed_many_members(count: int = 2000, size: int = 1 << 20) -> bytes:
    """A packed layer whose small archive holds ``count`` members of ``size`` zero bytes."""
    import hashlib

    archive = tar_zst([(f"pkg/f{i:05d}.bin", size) for i in range(count)], level=3)
    manifest = {"format": 1, "archive": "site-packages.tar.zst", "files": count,
                "sha256": hashlib.sha256(archive).hexdigest(), "python": "3.12"}  # fmt: skip
    return _packed_layer(archive, json.dumps(manifest).encode())


def packed_manifests() -> dict[str, bytes]:
    """Packed layers whose manifest.json has the wrong shape."""
    import hashlib

    archive = tar_zst([("pkg/__init__.py", b"")])
    sha = hashlib.sha256(archive).hexdigest()
    shapes: dict[str, bytes] = {
        "list": b"[1, 2, 3]",
        "files-list": json.dumps({"sha256": sha, "files": [1]}).encode(),
        "files-inf": b'{"sha256": "%s", "files": 1e400}' % sha.encode(),
        "files-nan": b'{"sha256": "%s", "files": NaN}' % sha.encode(),
        "files-5000-digits": b'{"sha256": "%s", "files": %s}' % (sha.encode(), b"9" * 5000),
        "sha256-dict": json.dumps({"sha256": {"a": 1}, "files": 1}).encode(),
        "deep": b'{"sha256": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "not-utf8": b'{"sha256": "\xff\xfe"}',
    }
    return {f"packed-manifest-{k}.zip": _packed_layer(archive, v) for k, v in shapes.items()}


# -- all -------------------------------------------------------------------------------------------


def all_inputs() -> dict[str, bytes]:
    """Every hostile ``check`` input, by file name."""
    out: dict[str, bytes] = {
        "zip64-locator-offset-2p63.zip": zip64_locator_overflow(),
        "overlapping-members.zip": overlapping_members(),
        "elf-verneed-chain-bomb.zip": elf_layer(verneed_chain_bomb()),
        "elf-class32-x86_64.zip": elf_layer(build_elf(bits=32)),
        "elf-big-endian-x86_64.zip": elf_layer(build_elf(little=False)),
        "packed-2000-members-1mib.zip": packed_many_members(),
    }
    out.update(version_name_layers())
    out.update(record_layers())
    out.update(metadata_layers())
    out.update(markup_layers())
    out.update(packed_manifests())
    return out


def write_all(directory: Path = HOSTILE_DIR) -> list[Path]:
    """Write every input into ``directory``; return the paths (each must be under 200 KB)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in sorted(all_inputs().items()):
        if len(data) >= 200_000:
            raise ValueError(f"{name}: {len(data):,} bytes, over the 200 KB budget")
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else HOSTILE_DIR):
        print(f"{p.stat().st_size:>8,}  {p.name}")
