"""Fuzz targets (issue 13): the zip reader, the ELF reader, the dist-info parsers, the packed
manifest and index pages, fed mutations of a seed corpus — files of real PyPI wheels when
they can be had (tests/support/realwheels.py, cached), wheels and ELF files made here, and
the checked-in hostile inputs. Each target may only return data or raise its module's own
error: never another exception, never a hang.

Hypothesis drives the mutations (byte flips, inserts, deletes, boundary integers written
over fields). The runs are derandomized and bounded so the whole file takes about a minute
in CI (``pytest`` runs it; marker ``fuzz``); ``TORCHWHEEL_FUZZ_SCALE=10`` runs ten times the
examples, with a fresh random seed, for a longer local hunt.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hostile import HOSTILE_DIR, build_elf, tar_zst
from tests.support.realwheels import cache_dir, fetch_wheel
from tests.support.wheels import make_wheel
from torchwheel.checks import packed as checks_packed
from torchwheel.checks.model import LayerEntry
from torchwheel.elf import ELFScanner, parse_elf, version_tuple
from torchwheel.errors import ArchiveError, ELFError, IndexPageError, InputError
from torchwheel.index.parse import parse_page
from torchwheel.limits import ZipLimits
from torchwheel.loader import torchwheel_loader as loader
from torchwheel.targets import make_target
from torchwheel.wheelfile import (
    Metadata,
    marker_holds,
    parse_record,
    parse_requirement,
    parse_wheel,
    parse_wheel_info,
)
from torchwheel.zipread import ZipReader, read_central_directory

pytestmark = pytest.mark.fuzz

SCALE = int(os.environ.get("TORCHWHEEL_FUZZ_SCALE", "1") or 1)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=SCALE == 1,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- the corpus -----------------------------------------------------------------------------------


@dataclass
class Corpus:
    zips: list[bytes]
    elves: list[bytes]
    records: list[bytes]
    metadata: list[bytes]
    wheel_files: list[bytes]
    manifests: list[bytes]
    archives: list[bytes]
    pages: list[tuple[str, bytes]]
    real: bool


def _real_wheel_files() -> dict[str, bytes] | None:
    """Members of a real PyPI wheel (shapely cp311 x86_64): its dist-info files and its
    smallest shared object over 8 KB; None when it cannot be had."""
    try:
        wheel = fetch_wheel("shapely-x86_64", cache_dir())
    except pytest.skip.Exception:
        return None
    out: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        for info in infos:
            if info.filename.endswith((".dist-info/RECORD", ".dist-info/METADATA", "/WHEEL")):
                out[info.filename.rsplit("/", 1)[-1]] = zf.read(info)
        sos = sorted(
            (i for i in infos if i.filename.endswith(".so") and i.file_size > 8192),
            key=lambda i: i.file_size,
        )
        if sos:
            out["elf"] = zf.read(sos[0])
        small = [i for i in infos if i.file_size < 4096][:12]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as sub:
            for i in small:
                sub.writestr(i, zf.read(i))
        out["zip"] = buf.getvalue()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    d = tmp_path_factory.mktemp("fuzz-seeds")
    wheel = make_wheel(
        d,
        "demo",
        "1.0",
        files={"demo/__init__.py": b"x = 1\n", "demo/data.bin": bytes(range(256)) * 4},
        requires_dist=['numpy>=1.26; python_version >= "3.9"', "six", 'extra ; extra == "a"'],
    )
    wheel_bytes = wheel.read_bytes()
    with zipfile.ZipFile(wheel) as zf:
        record = zf.read("demo-1.0.dist-info/RECORD")
        metadata = zf.read("demo-1.0.dist-info/METADATA")
        wheel_file = zf.read("demo-1.0.dist-info/WHEEL")
    manifest = (
        b'{"format": 1, "archive": "site-packages.tar.zst", "sha256": "%s", "files": 2, '
        b'"disk_size": 8192, "python": "3.12", "target": "python3.12/x86_64"}' % (b"ab" * 32)
    )
    c = Corpus(
        zips=[wheel_bytes],
        elves=[
            build_elf(),
            build_elf(bits=32, machine=3),
            build_elf(little=False),
            build_elf(version_needs=(("libc.so.6", ("GLIBC_2.17", "GLIBC_2.28")),)),
        ],
        records=[record],
        metadata=[metadata],
        wheel_files=[wheel_file],
        manifests=[manifest],
        archives=[tar_zst([("pkg/__init__.py", b"x = 1\n"), ("pkg/big.bin", 20_000)], level=3)],
        pages=[
            (
                "text/html",
                b'<html><base href="/x/"><a href="demo-1.0-py3-none-any.whl#sha256='
                + b"0" * 64
                + b'" data-requires-python="&gt;=3.9">demo</a></html>',
            ),
            (
                "application/vnd.pypi.simple.v1+json",
                b'{"meta": {"api-version": "1.1"}, "name": "demo", "files": [{"filename": '
                b'"demo-1.0-py3-none-any.whl", "url": "demo-1.0-py3-none-any.whl", "hashes": '
                b'{"sha256": "'
                + b"0" * 64
                + b'"}, "core-metadata": {"sha256": "'
                + b"1" * 64
                + b'"}, "yanked": "bad", "size": 100}]}',
            ),
        ],
        real=False,
    )
    for p in sorted(HOSTILE_DIR.glob("*.zip")):
        if p.stat().st_size < 20_000:
            c.zips.append(p.read_bytes())
    real = _real_wheel_files()
    if real is not None:
        c.real = True
        c.zips.append(real["zip"])
        c.records.append(real["RECORD"])
        c.metadata.append(real["METADATA"])
        c.wheel_files.append(real["WHEEL"])
        if "elf" in real:
            c.elves.append(real["elf"])
    return c


# -- mutations ------------------------------------------------------------------------------------

Draw = Callable[[st.SearchStrategy[Any]], Any]
_BOUNDARY = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63]


def mutate(draw: Draw, seed: bytes) -> bytes:
    """``seed`` with a few random edits (at least one when there are any bytes)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.integers(0, 4))
        if op == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(max_size=24))
        elif op == 2:
            del data[pos : pos + draw(st.integers(1, 256))]
        elif op == 3:
            value = draw(st.sampled_from(_BOUNDARY))
            width, fmt = draw(st.sampled_from([(2, "H"), (4, "I"), (8, "Q")]))
            order = draw(st.sampled_from("<>"))
            packed = struct.pack(order + fmt, value & ((1 << (8 * width)) - 1))
            data[pos : pos + width] = packed
        else:
            cut = draw(st.integers(0, len(data)))
            data = data[:cut]
    return bytes(data)


# -- targets --------------------------------------------------------------------------------------


@fuzz_settings(400)
@given(st.data())
def test_fuzz_zip_reader(
    corpus: Corpus, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    blob = mutate(data.draw, data.draw(st.sampled_from(corpus.zips)))
    try:
        read_central_directory(lambda o, n: blob[o : o + n], len(blob), source="f.zip")
    except ArchiveError:
        return
    path = tmp_path_factory.getbasetemp() / "fuzz.zip"
    path.write_bytes(blob)
    with (
        contextlib.suppress(ArchiveError),
        ZipReader(path, limits=ZipLimits(max_total=1 << 24)) as zr,
    ):
        for m in zr.members[:16]:
            with contextlib.suppress(ArchiveError):
                zr.read(m)
        list(zr.read_many(zr.members[:16]))


@fuzz_settings(500)
@given(st.data())
def test_fuzz_elf_reader(corpus: Corpus, data: st.DataObject) -> None:
    blob = mutate(data.draw, data.draw(st.sampled_from(corpus.elves)))
    try:
        info = parse_elf(blob, name="f.so")
    except ELFError:
        info = None
    scanner = ELFScanner(
        len(blob), name="f.so", keep_prefix=data.draw(st.sampled_from([64, 4096, 1 << 21]))
    )
    try:
        for i in range(0, len(blob), 4096):
            scanner.feed(blob[i : i + 4096])
        streamed = scanner.result(lambda: io.BytesIO(blob))
    except ELFError:
        streamed = None
    assert (info is None) == (streamed is None)
    if info is not None:
        assert streamed == info
        for need in info.version_needs:
            version_tuple(need.name, need.name.split("_", 1)[0] + "_")


@fuzz_settings(400)
@given(st.data())
def test_fuzz_dist_info_parsers(corpus: Corpus, data: st.DataObject) -> None:
    env = make_target("x86_64", "3.12").marker_environment()
    record = mutate(data.draw, data.draw(st.sampled_from(corpus.records)))
    for strict in (True, False):
        with contextlib.suppress(ArchiveError):
            parse_record(record, strict=strict)
    meta = mutate(data.draw, data.draw(st.sampled_from(corpus.metadata)))
    for strict in (True, False):
        try:
            md = Metadata.from_bytes(meta, strict=strict)
        except ArchiveError:
            continue
        for text in md.requires_dist:
            with contextlib.suppress(ArchiveError):
                marker_holds(parse_requirement(text), env, "a")
    try:
        info = parse_wheel_info(mutate(data.draw, data.draw(st.sampled_from(corpus.wheel_files))))
    except ArchiveError:
        return
    for tag in info.tags:
        with contextlib.suppress(InputError):
            parse_wheel(f"demo-1.0-{tag}.whl")


@fuzz_settings(400)
@given(st.data())
def test_fuzz_packed_manifest(corpus: Corpus, data: st.DataObject) -> None:
    blob = mutate(data.draw, data.draw(st.sampled_from(corpus.manifests)))
    try:
        manifest = loader.load_manifest(blob)
    except loader.LoaderError as exc:
        assert "\n" not in str(exc)
        return
    assert loader.validate_manifest(manifest) is manifest


@fuzz_settings(150)
@given(st.data())
def test_fuzz_packed_archive(corpus: Corpus, data: st.DataObject) -> None:
    blob = mutate(data.draw, data.draw(st.sampled_from(corpus.archives)))
    entry = LayerEntry(
        path="python/torchwheel_packed/site-packages.tar.zst",
        size=len(blob),
        mode=0o644,
        is_symlink=False,
        is_dir=False,
        origin="f.zip",
        mount="/opt",
        open=lambda: io.BytesIO(blob),
    )
    with contextlib.suppress(ArchiveError):
        checks_packed.expand_packed_archive(entry)


@fuzz_settings(300)
@given(st.data())
def test_fuzz_index_pages(corpus: Corpus, data: st.DataObject) -> None:
    ctype, seed = data.draw(st.sampled_from(corpus.pages))
    with contextlib.suppress(IndexPageError):
        parse_page(ctype, mutate(data.draw, seed), "https://idx.example/simple/demo/")


def test_the_corpus_holds_real_wheel_files_when_they_can_be_had(corpus: Corpus) -> None:
    if not Path(cache_dir()).is_dir() or not corpus.real:
        pytest.skip("the real wheels could not be had (PyPI unreachable); synthetic seeds only")
    assert len(corpus.elves) == 5 and corpus.records[-1].count(b"\n") > 10
