"""Verified glibc needs before download (issue 11): ELF version tables read from member prefixes.

Wheels tagged ``linux_x86_64`` (which promises nothing about glibc) hold shared objects built
with gcc that need ``GLIBC_2.34`` or only ``GLIBC_2.2.5``; the loopback index counts the range
requests and bytes each verification costs.
"""

from __future__ import annotations

import itertools
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.elfwheels import BLOB_BYTES, ElfObjects, build_elf_objects, elf_wheel
from tests.support.elves import set_machine
from tests.support.indexserver import IndexServer
from tests.support.pytorchworld import whole_downloads
from torchwheel.elf import parse_elf
from torchwheel.elfneeds import (
    MAX_BYTES,
    MAX_REQUESTS,
    ElfNeeds,
    needs_reasons,
    plan_ranges,
    read_elf_needs,
)
from torchwheel.errors import NoCompatibleWheel
from torchwheel.remote import RemoteWheel
from torchwheel.resolution import resolve
from torchwheel.targets import make_target


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> ElfObjects:
    return build_elf_objects(tmp_path_factory.mktemp("elf-objects"))


@pytest.fixture(scope="module")
def wheels(objects: ElfObjects, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("elf-wheels")
    return {
        "1.0": elf_wheel(d, "cpuext", "1.0", objects.plain),
        "1.1": elf_wheel(d, "cpuext", "1.1", objects.needs234),
        "1.2": elf_wheel(d, "cpuext", "1.2", objects.big234),
        # a manylinux_2_17 tag that lies: its object needs GLIBC_2.34
        "liar": elf_wheel(
            d, "liar", "1.0", objects.needs234, tags="py3-none-manylinux_2_17_x86_64"
        ),
    }


# -- planning requests (pure) ---------------------------------------------------------------------


def test_neighbouring_spans_become_one_request() -> None:
    wants = [(0, 100), (150, 300), (10_000_000, 10_000_100)]
    assert plan_ranges(wants, requests_left=10, bytes_left=1 << 30) == [
        (0, 300),
        (10_000_000, 10_000_100),
    ]
    # one request left: merged anyway when the bytes allow, else the first span only
    assert plan_ranges(wants, requests_left=1, bytes_left=1 << 30) == [(0, 10_000_100)]
    assert plan_ranges(wants, requests_left=1, bytes_left=1000) == [(0, 300)]
    assert plan_ranges(wants, requests_left=0, bytes_left=1000) == []
    assert plan_ranges([(0, 5000)], requests_left=3, bytes_left=1000) == [(0, 1000)]


@given(
    st.lists(st.tuples(st.integers(0, 10**8), st.integers(1, 10**6)), max_size=40),
    st.integers(0, 15),
    st.integers(0, 2 * 10**7),
)
def test_plans_stay_within_budget(
    spans: list[tuple[int, int]], requests_left: int, bytes_left: int
) -> None:
    wants = [(a, a + n) for a, n in spans]
    plan = plan_ranges(wants, requests_left=requests_left, bytes_left=bytes_left)
    assert len(plan) <= requests_left
    assert sum(b - a for a, b in plan) <= bytes_left
    assert all(a < b for a, b in plan)
    assert all(p[1] <= q[0] for p, q in itertools.pairwise(plan))  # sorted, disjoint
    if requests_left >= len(wants) and bytes_left >= sum(n for _, n in spans):
        for a, b in wants:  # everything asked for is fetched when the budget allows
            assert any(p <= a and b <= q for p, q in plan)


# -- reading a wheel ------------------------------------------------------------------------------


def test_exact_needs_of_small_objects_read_whole(
    index_server: IndexServer, wheels: dict[str, Path], objects: ElfObjects
) -> None:
    index_server.add_project("cpuext", [wheels["1.1"]])
    with RemoteWheel(index_server.file_url("cpuext", wheels["1.1"].name)) as rw:
        needs = read_elf_needs(rw)
    (f,) = needs.files
    truth = sorted({n.name for n in parse_elf(objects.needs234).version_needs})
    assert (f.member, f.machine, f.whole, list(f.versions)) == (
        "cpuext/_native.so",
        "x86_64",
        True,
        truth,
    )
    assert "GLIBC_2.34" in f.versions and needs.complete
    assert needs.requests == index_server.count("/files/")
    assert needs.bytes_received == index_server.bytes_sent("/files/")
    assert ElfNeeds.from_dict(needs.to_dict()) == needs


def test_a_big_object_is_read_only_up_to_its_version_table(
    index_server: IndexServer, wheels: dict[str, Path]
) -> None:
    w = wheels["1.2"]
    index_server.add_project("cpuext", [w])
    with RemoteWheel(index_server.file_url("cpuext", w.name)) as rw:
        needs = read_elf_needs(rw)
    (f,) = needs.files
    assert not f.whole and "GLIBC_2.34" in f.versions  # named by vna_hash, no string table
    member = zipfile.ZipFile(w).getinfo("cpuext/_native.so")
    assert member.compress_size > BLOB_BYTES  # incompressible
    assert needs.bytes_received == index_server.bytes_sent("/files/") < member.compress_size // 4
    assert needs.requests == index_server.count("/files/") <= MAX_REQUESTS
    assert whole_downloads(index_server) == []


def test_budgets_leave_members_missed_not_guessed(
    index_server: IndexServer, wheels: dict[str, Path]
) -> None:
    w = wheels["1.2"]
    index_server.add_project("cpuext", [w])
    with RemoteWheel(index_server.file_url("cpuext", w.name), max_requests=1) as rw:
        needs = read_elf_needs(rw, max_requests=1)  # the tail read used it up
    assert needs.files == () and needs.missed == ("cpuext/_native.so",)
    assert not needs.complete and needs_reasons(needs, make_target("x86_64", "3.11")) == []


# -- resolve --------------------------------------------------------------------------------------


def test_al2_rejects_the_glibc_234_build_and_verifies_the_older_one(
    index_server: IndexServer, wheels: dict[str, Path]
) -> None:
    index_server.add_project("cpuext", [wheels["1.0"], wheels["1.1"]])
    res = resolve("x86_64", "3.11", package="cpuext", index_url=index_server.url)
    assert res.wheel is not None and res.wheel.filename == wheels["1.0"].name
    rejected = {c.filename: v.reasons for c, v in res.rejected}
    assert rejected[wheels["1.1"].name] == (
        "needs GLIBC_2.34 (cpuext/_native.so); python3.11 on Amazon Linux 2 has glibc 2.26",
    )
    assert res.verdict is not None and not res.verdict.unverified
    assert res.verdict.warnings == (
        "verified before download: 1 shared objects need at most GLIBC_2.2.5",
    )
    assert res.summary == (
        "newest cpuext for python3.11/x86_64 is 1.0: cpuext 1.1: needs GLIBC_2.34 "
        "(cpuext/_native.so); python3.11 on Amazon Linux 2 has glibc 2.26"
    )
    assert whole_downloads(index_server) == []
    elf = res.screened[res.wheel.url].elf
    assert elf is not None and elf.requests >= 1 and elf.bytes_received > 0


def test_al2023_takes_the_newest(index_server: IndexServer, wheels: dict[str, Path]) -> None:
    index_server.add_project("cpuext", [wheels["1.0"], wheels["1.1"], wheels["1.2"]])
    res = resolve("x86_64", "3.12", package="cpuext", index_url=index_server.url)
    assert res.wheel is not None and res.wheel.filename == wheels["1.2"].name
    assert res.verdict is not None and not res.verdict.unverified
    assert "GLIBC_2.34" in res.verdict.warnings[-1]
    # only the chosen wheel was read: best first, stop at the first that passes
    assert {r.path.rsplit("/", 1)[-1] for r in index_server.requests if "range" in r.headers} == {
        wheels["1.2"].name
    }


def test_nothing_fits_names_the_glibc_need(
    index_server: IndexServer, wheels: dict[str, Path]
) -> None:
    index_server.add_project("cpuext", [wheels["1.1"]])
    with pytest.raises(NoCompatibleWheel, match=r"needs GLIBC_2\.34 \(cpuext/_native\.so\)"):
        resolve("x86_64", "3.10", package="cpuext", index_url=index_server.url)


def test_a_server_ignoring_range_leaves_it_unverified(
    index_server: IndexServer, wheels: dict[str, Path]
) -> None:
    index_server.ignore_range = True
    index_server.add_project("cpuext", [wheels["1.1"]])
    res = resolve("x86_64", "3.11", package="cpuext", index_url=index_server.url)
    assert res.wheel is not None and res.verdict is not None and res.verdict.unverified
    assert "its ELF files could not be read before download" in res.verdict.warnings


def test_verify_elf_catches_a_tag_that_lies(
    index_server: IndexServer, wheels: dict[str, Path]
) -> None:
    index_server.add_project("liar", [wheels["liar"]])
    plain = resolve("x86_64", "3.11", package="liar", index_url=index_server.url)
    assert plain.wheel is not None and index_server.count("/files/") == 0
    with pytest.raises(NoCompatibleWheel, match=r"needs GLIBC_2\.34 \(liar/_native\.so\)"):
        resolve("x86_64", "3.11", package="liar", index_url=index_server.url, verify_elf=True)


def test_wrong_machine_is_rejected(
    index_server: IndexServer, objects: ElfObjects, tmp_path: Path
) -> None:
    arm = elf_wheel(tmp_path, "armext", "1.0", set_machine(objects.plain, 183))
    index_server.add_project("armext", [arm])
    with pytest.raises(NoCompatibleWheel, match=r"armext/_native\.so is built for aarch64"):
        resolve("x86_64", "3.12", package="armext", index_url=index_server.url)


@pytest.mark.torch
def test_real_torch_wheel_within_budget_and_exact(
    index_server: IndexServer, torch_wheel: Path
) -> None:
    index_server.add_project("torch", [torch_wheel])
    with RemoteWheel(
        index_server.file_url("torch", torch_wheel.name), max_requests=MAX_REQUESTS
    ) as rw:
        needs = read_elf_needs(rw)
    assert needs.complete and len(needs.files) >= 10
    assert needs.requests == index_server.count("/files/") <= MAX_REQUESTS
    assert needs.bytes_received == index_server.bytes_sent("/files/") <= MAX_BYTES
    with zipfile.ZipFile(torch_wheel) as zf:
        for f in needs.files:
            exact = sorted({n.name for n in parse_elf(zf.read(f.member)).version_needs})
            assert list(f.versions) == exact, f.member
    top = needs.max_version("GLIBC_")
    assert top is not None and top[1] == "GLIBC_2.28"


@pytest.mark.parametrize(
    "limits",
    [
        {"MAX_INFLATED": 1 << 20},  # each member stops at its own cap
        {"MAX_INFLATED_TOTAL": 2 << 20, "FIRST_PREFIX_MIN": 1024},  # members held at once
    ],
)
def test_a_deflate_bomb_gives_up_instead_of_swelling(
    index_server: IndexServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    limits: dict[str, int],
) -> None:
    import torchwheel.elfneeds as elfneeds

    for name, value in limits.items():
        monkeypatch.setattr(elfneeds, name, value)
    bomb = tmp_path / "bomb-1.0-py3-none-linux_x86_64.whl"
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x03\x00\x3e\x00"  # ELF64 LE, DYN, x86_64
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            with zf.open(f"bomb/lib{i}.so", "w") as f:
                f.write(header)
                for _ in range(8):
                    f.write(bytes(1 << 20))  # 8 MiB of zeros: ~8 KB deflated
    index_server.add_project("bomb", [bomb])
    with RemoteWheel(index_server.file_url("bomb", bomb.name)) as rw:
        needs = read_elf_needs(rw)
    assert needs.files == () and sorted(needs.missed) == [f"bomb/lib{i}.so" for i in range(3)]
