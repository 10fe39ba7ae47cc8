"""select() (pure) and resolve() against a loopback index with PyTorch-shaped wheels."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from tests.support.indexserver import IndexFile, IndexServer, IndexServerFactory
from tests.support.wheels import make_wheel
from torchwheel import NoCompatibleWheel, resolve
from torchwheel.errors import InputError
from torchwheel.index import Candidate, IndexClient
from torchwheel.resolution import parse_specifier, resolve_target, select
from torchwheel.targets import Target, all_targets, make_target
from torchwheel.verdict import evaluate


def cand(
    filename: str, *, yanked: bool | str = False, requires_python: str | None = None
) -> Candidate:
    name, version, _, _ = parse_wheel_filename(filename)
    return Candidate(
        filename=filename,
        url=f"http://127.0.0.1:1/files/{filename}",
        project=str(name),
        version=version,
        sha256=None,
        requires_python=requires_python,
        yanked=yanked,
        metadata_sha256=None,
        has_metadata=False,
        size=None,
        source="test",
    )


EXPECTED = {
    "python3.11/x86_64": "torch-2.5.1+cpu-cp311-cp311-linux_x86_64.whl",
    "python3.11/arm64": "torch-2.5.1-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
    "python3.12/x86_64": "torch-2.8.0+cpu-cp312-cp312-manylinux_2_28_x86_64.whl",
    "python3.12/arm64": "torch-2.8.0-cp312-cp312-manylinux_2_28_aarch64.whl",
    "python3.13/x86_64": "torch-2.8.0+cpu-cp313-cp313-manylinux_2_28_x86_64.whl",
    "python3.13/arm64": "torch-2.8.0-cp313-cp313-manylinux_2_28_aarch64.whl",
}


@pytest.mark.parametrize("label", sorted(EXPECTED))
def test_resolve_each_target(torch_index: IndexServer, label: str) -> None:
    runtime, arch = label.split("/")
    with IndexClient(torch_index.url) as idx:
        res = resolve(arch, runtime=runtime, index=idx)
    assert res.wheel is not None and res.verdict is not None
    assert res.wheel.filename == EXPECTED[label]
    assert res.verdict.compatible
    assert res.target.label == label
    assert res.wheel.url == torch_index.file_url("torch", res.wheel.filename)
    assert res.wheel.sha256 and len(res.wheel.sha256) == 64
    # every wheel on the index is accounted for, with a verdict
    assert len(res.candidates) == len(torch_index.projects["torch"])
    assert all(v.reasons for _, v in res.rejected)


def test_al2_summary_names_glibc(torch_index: IndexServer) -> None:
    with IndexClient(torch_index.url) as idx:
        res = resolve("x86_64", "3.11", index=idx)
    assert res.summary == (
        "newest torch for python3.11/x86_64 is 2.5.1+cpu: torch >= 2.8.0 needs glibc 2.28 "
        "(python3.11 on Amazon Linux 2 has glibc 2.26)"
    )
    # the linux_x86_64 tag bounds nothing; its shared objects (none here) are read first
    assert res.verdict is not None and not res.verdict.unverified
    assert "verified before download: the wheel holds no shared objects" in res.notes
    text = res.explain()
    assert "chosen: torch-2.5.1+cpu-cp311-cp311-linux_x86_64.whl" in text
    assert (
        "rejected: torch-2.8.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl: needs glibc 2.28 "
        "(manylinux_2_28); python3.11 on Amazon Linux 2 has glibc 2.26"
    ) in text
    assert "rejected: torch-2.8.0+cpu-cp313-cp313t-manylinux_2_28_x86_64.whl: free-threaded" in text


def test_no_compatible_wheel(torch_index: IndexServer) -> None:
    with IndexClient(torch_index.url) as idx, pytest.raises(NoCompatibleWheel) as err:
        resolve("x86_64", "3.11", version=">=2.6", index=idx)
    assert str(err.value) == (
        "no torch >=2.6 wheel fits python3.11/x86_64: torch >= 2.8.0 needs glibc 2.28 "
        "(python3.11 on Amazon Linux 2 has glibc 2.26); newest torch for python3.11/x86_64 "
        "is 2.5.1+cpu"
    )
    assert err.value.exit_code == 1
    assert len(err.value.candidates) == len(torch_index.projects["torch"])
    assert err.value.resolution.wheel is None
    excluded = [v for c, v in err.value.candidates if c.version == Version("2.5.1+cpu")]
    assert any("version 2.5.1+cpu excluded by >=2.6" in r for v in excluded for r in v.reasons)


def test_no_wheel_for_python(torch_index: IndexServer) -> None:
    with IndexClient(torch_index.url) as idx, pytest.raises(NoCompatibleWheel) as err:
        resolve("arm64", "3.14", index=idx)
    assert str(err.value) == (
        "no torch wheel fits python3.14/arm64: no torch wheel is built for CPython 3.14"
    )


def test_version_specifier_and_local_versions(torch_index: IndexServer) -> None:
    with IndexClient(torch_index.url) as idx:
        old = resolve("x86_64", "3.12", version="<2.6", index=idx)
        pinned = resolve("x86_64", "3.12", version="==2.5.1", index=idx)
        bare = resolve("x86_64", "3.12", version="2.5.1", index=idx)
        assert idx.fetch_count == 1
    # ==2.5.1 matches the local version 2.5.1+cpu (PEP 440)
    for r in (old, pinned, bare):
        assert r.wheel is not None
        assert r.wheel.filename == "torch-2.5.1+cpu-cp312-cp312-linux_x86_64.whl"


def test_local_version_beats_public_one() -> None:
    t = make_target("x86_64", runtime="python3.12")
    public = cand("torch-2.5.1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    local = cand("torch-2.5.1+cpu-cp312-cp312-linux_x86_64.whl")
    chosen, judged = select([public, local], t)
    assert chosen == local  # pip: 2.5.1+cpu > 2.5.1
    assert [c for c, _ in judged] == [local, public]
    chosen, _ = select([public, local], t, specifier="==2.5.1+cpu")
    assert chosen == local


def test_best_tag_then_build_tag() -> None:
    t = make_target("x86_64", runtime="python3.12")
    old_glibc = cand("demo-1.0-cp312-cp312-manylinux_2_17_x86_64.whl")
    new_glibc = cand("demo-1.0-cp312-cp312-manylinux_2_28_x86_64.whl")
    abi3 = cand("demo-1.0-cp38-abi3-manylinux_2_28_x86_64.whl")
    pure = cand("demo-1.0-py3-none-any.whl")
    chosen, judged = select([pure, abi3, old_glibc, new_glibc], t)
    assert chosen == new_glibc
    assert [c for c, _ in judged] == [new_glibc, old_glibc, abi3, pure]
    b1 = cand("demo-1.0-1-py3-none-any.whl")
    b2 = cand("demo-1.0-2-py3-none-any.whl")
    assert select([b1, b2], t)[0] == b2


def test_prereleases_like_pip() -> None:
    t = make_target("x86_64", runtime="python3.12")
    final = cand("torch-2.8.0+cpu-cp312-cp312-manylinux_2_28_x86_64.whl")
    pre = cand("torch-2.9.0.dev20250801+cpu-cp312-cp312-manylinux_2_28_x86_64.whl")
    chosen, judged = select([final, pre], t)
    assert chosen == final
    (pre_v,) = [v for c, v in judged if c == pre]
    assert pre_v.reasons == ("pre-release 2.9.0.dev20250801+cpu (ask with --pre)",)
    assert select([final, pre], t, prereleases=True)[0] == pre
    assert select([final, pre], t, specifier=">=2.9.0.dev0")[0] == pre
    # no final release fits: the pre-release is taken
    assert select([pre], t)[0] == pre
    assert select([final, pre], t, prereleases=False)[0] == final
    assert select([pre], t, prereleases=False)[0] is None


def test_yanked_only_when_pinned() -> None:
    t = make_target("arm64", runtime="python3.12")
    good = cand("demo-1.0-py3-none-any.whl")
    bad = cand("demo-1.1-py3-none-any.whl", yanked="broken")
    chosen, judged = select([good, bad], t)
    assert chosen == good
    assert dict((c.filename, v.reasons) for c, v in judged)[bad.filename] == ("yanked: broken",)
    chosen, judged = select([good, bad], t, specifier="==1.1")
    assert chosen == bad
    assert judged[0][1].warnings == ("yanked (broken); chosen because ==1.1 pins it",)
    assert select([good, bad], t, specifier=">=1.1")[0] is None


def test_requires_python_rejects() -> None:
    t = make_target("x86_64", runtime="python3.9")
    new = cand("demo-2.0-py3-none-any.whl", requires_python=">=3.10")
    old = cand("demo-1.0-py3-none-any.whl", requires_python=">=3.8")
    chosen, judged = select([new, old], t)
    assert chosen == old
    assert judged[1][1].reasons == ("requires Python >=3.10",)


def test_bad_specifier_is_input_error() -> None:
    with pytest.raises(InputError, match="'>>2': not a PEP 440 version specifier"):
        parse_specifier(">>2")
    assert parse_specifier("") is None


def test_resolve_builds_its_own_client(torch_index: IndexServer, tmp_path: Path) -> None:
    res = resolve("arm64", "3.12", index_url=torch_index.url)
    assert res.wheel is not None
    assert res.sources == [torch_index.url]
    # the page is cached in $TORCHWHEEL_CACHE_DIR (set per test): a second call asks nothing
    resolve("arm64", "3.12", index_url=torch_index.url)
    assert torch_index.count("/simple/") == 1


def test_all_targets_one_fetch_no_downloads(torch_index: IndexServer) -> None:
    with IndexClient(torch_index.url) as idx:
        for t in all_targets(include_deprecated=True, provided_python=(3, 12)):
            resolve_target(t, idx)
        assert idx.fetch_count == 1
    assert torch_index.count("/simple/") == 1
    # wheels are only read before download (PEP 658 metadata; ranges of the unlabelled aarch64
    # builds' central directories and of the linux_x86_64 wheels' ELF files), each once
    files = [r for r in torch_index.requests if r.path.startswith("/files/")]
    assert files and all(r.path.endswith(".metadata") or "range" in r.headers for r in files)
    tails = [r.path for r in files if r.headers.get("range") == "bytes=-65536"]
    assert len(tails) == len(set(tails))


def test_find_links_and_extra_index_together(
    index_server_factory: IndexServerFactory, tmp_path: Path
) -> None:
    main: IndexServer = index_server_factory()
    local = tmp_path / "local"
    w_local = make_wheel(local, "torch", "2.5.1", tags="cp311-cp311-manylinux2014_aarch64")
    w_remote = make_wheel(
        tmp_path / "r", "torch", "2.4.1", tags="cp311-cp311-manylinux2014_aarch64"
    )
    main.add_project("torch", [IndexFile(w_remote.name, w_remote)])
    res = resolve("arm64", "3.11", index_url=main.url, find_links=[str(local)])
    assert res.wheel is not None and res.wheel.filename == w_local.name
    assert res.wheel.url.startswith("file://")
    assert res.sources == [str(local), main.url]


# -- properties --------------------------------------------------------------------------------

_VERSIONS = ["1.13.1", "2.0.1", "2.5.1", "2.5.1+cpu", "2.8.0", "2.8.0+cpu", "2.9.0rc1"]
_TAGS = [
    "cp311-cp311-linux_x86_64",
    "cp311-cp311-manylinux_2_17_x86_64",
    "cp311-cp311-manylinux_2_28_x86_64",
    "cp312-cp312-manylinux_2_28_x86_64",
    "cp312-cp312-manylinux_2_17_aarch64.manylinux2014_aarch64",
    "cp312-cp312-manylinux_2_28_aarch64",
    "cp313-cp313t-manylinux_2_28_x86_64",
    "cp38-abi3-manylinux_2_17_x86_64",
    "py3-none-any",
    "cp312-cp312-musllinux_1_2_x86_64",
    "cp312-cp312-win_amd64",
]
_TARGETS = [
    make_target(a, runtime=r) for r in ("python3.11", "python3.12") for a in ("x86_64", "arm64")
]


@settings(max_examples=150, deadline=None)
@given(
    files=st.lists(
        st.tuples(st.sampled_from(_VERSIONS), st.sampled_from(_TAGS), st.booleans()),
        max_size=12,
        unique_by=lambda x: (x[0], x[1]),
    ),
    target=st.sampled_from(_TARGETS),
    pre=st.sampled_from([None, True, False]),
)
def test_select_properties(
    files: list[tuple[str, str, bool]], target: Target, pre: bool | None
) -> None:
    cands = [cand(f"torch-{v}-{t}.whl", yanked=y) for v, t, y in files]
    chosen, judged = select(cands, target, prereleases=pre)
    assert sorted(c.filename for c, _ in judged) == sorted(c.filename for c in cands)
    ok = [c for c in cands if evaluate(c.filename, target, yanked=c.yanked).compatible]
    if chosen is None:
        assert not ok or (pre is False and all(c.version.is_prerelease for c in ok))
        return
    assert chosen in ok
    assert judged[0][0] == chosen and judged[0][1].compatible
    finals = [c for c in ok if not c.version.is_prerelease]
    if pre is True:
        assert chosen.version == max(c.version for c in ok)
    elif finals:
        assert chosen.version == max(c.version for c in finals)
    else:
        assert pre is None and chosen.version == max(c.version for c in ok)
    best_rank = min(
        v.rank
        for c, v in judged
        if v.compatible and c.version == chosen.version and v.rank is not None
    )
    assert judged[0][1].rank == best_rank


def test_python37_uses_the_pymalloc_abi() -> None:
    """CPython 3.7 wheels are cp37-cp37m (torch 1.13.1 was the last for it)."""
    t = make_target("x86_64", runtime="python3.7")
    m = cand("torch-1.13.1+cpu-cp37-cp37m-linux_x86_64.whl")
    chosen, _ = select([m], t)
    assert chosen == m
