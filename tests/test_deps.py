"""resolve_closure(): Requires-Dist closure for the target, through a loopback index."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer, IndexServerFactory
from tests.support.wheels import make_wheel
from tests.support.worlds import populate
from torchwheel.deps import Closure, resolve_closure
from torchwheel.errors import ArchiveError, InputError, NoCompatibleWheel
from torchwheel.index import IndexClient
from torchwheel.remote import read_remote_metadata
from torchwheel.targets import make_target
from torchwheel.wheelfile import parse_metadata

ARM312 = make_target("arm64", runtime="python3.12")  # differs from the host (x86_64, 3.11)
AL2023_311 = make_target("x86_64", "3.11", runtime="provided.al2023")


@pytest.fixture
def world(index_server: IndexServer, tmp_path: Path) -> IndexServer:
    populate(index_server, tmp_path)
    return index_server


def names(closure: Closure) -> dict[str, str]:
    return {p.name: str(p.version) for p in closure.pins}


def test_markers_use_the_target_not_the_host(world: IndexServer) -> None:
    with IndexClient(world.url) as idx:
        c = resolve_closure(["app"], ARM312, idx)
    assert names(c) == {
        "app": "1.0",
        "liba": "2.0",
        "libb": "2.0",
        "libarm": "1.0",
        "libnew": "1.0",
        "extra-thing": "1.0",
        "fancydep": "1.0",
    }
    assert c.pins[0].name == "app" and c.pins[0].requested
    assert not any(p.requested for p in c.pins[1:])
    pins = {p.name: p for p in c.pins}
    assert pins["extra-thing"].extras == ("fancy",)
    assert pins["libb"].required_by == ("liba",)
    assert pins["fancydep"].required_by == ("extra-thing",)
    # python3.12 ships boto3 (and botocore): left out and reported
    assert c.skipped_runtime == ("boto3 (required by app; python3.12 ships it)",)
    assert any("boto3" in n and "name them" in n for n in c.notes)


def test_provided_runtime_backtracks_and_ships_nothing(world: IndexServer) -> None:
    with IndexClient(world.url) as idx:
        c = resolve_closure(["app"], AL2023_311, idx)
    assert names(c) == {
        "app": "1.0",
        "liba": "1.0",
        "libb": "1.0",
        "libold": "1.0",
        "boto3": "1.0",
        "botocore": "1.0",
        "extra-thing": "1.0",
        "fancydep": "1.0",
    }
    assert c.skipped_runtime == ()


def test_runtime_packages_when_asked(world: IndexServer) -> None:
    with IndexClient(world.url) as idx:
        c = resolve_closure(["app"], ARM312, idx, include_runtime_packages=True)
        assert {"boto3", "botocore"} <= set(names(c))
        c2 = resolve_closure(["boto3"], ARM312, idx)  # named: included, its deps too
        assert names(c2) == {"boto3": "1.0", "botocore": "1.0"}


def test_no_deps_and_version_pin(world: IndexServer) -> None:
    with IndexClient(world.url) as idx:
        c = resolve_closure(["liba"], AL2023_311, idx, no_deps=True)
        assert names(c) == {"liba": "2.0"}  # no deps: nothing forces the backtrack
        c = resolve_closure(["liba", "libnew"], AL2023_311, idx, version="<2", no_deps=True)
        assert names(c) == {"liba": "1.0", "libnew": "1.0"}


def test_pep658_metadata_avoids_wheel_downloads(world: IndexServer) -> None:
    with IndexClient(world.url) as idx:
        c = resolve_closure(["app"], ARM312, idx)
    assert {p.metadata_source for p in c.pins} == {"pep658"}
    wheel_gets = [r for r in world.requests if r.path.endswith(".whl")]
    assert wheel_gets == []
    assert world.count("/files/", "GET") == c.metadata_requests


def test_range_read_when_no_metadata_file(index_server: IndexServer, tmp_path: Path) -> None:
    populate(index_server, tmp_path, metadata=None)
    with IndexClient(index_server.url) as idx:
        c = resolve_closure(["app"], ARM312, idx)
    assert {p.metadata_source for p in c.pins} == {"range"}
    wheel_gets = [r for r in index_server.requests if r.path.endswith(".whl")]
    assert wheel_gets and all("range" in r.headers for r in wheel_gets)
    assert not [r for r in index_server.requests if r.path.endswith(".metadata")]


def test_download_when_no_metadata_and_no_ranges(
    index_server_factory: IndexServerFactory, tmp_path: Path
) -> None:
    server: IndexServer = index_server_factory(ignore_range=True)
    populate(server, tmp_path, metadata=None)
    with IndexClient(server.url) as idx:
        c = resolve_closure(["liba"], ARM312, idx, cache_dir=tmp_path / "cache")
    assert {p.metadata_source for p in c.pins} == {"wheel"}
    # the downloaded wheels are in the cache for the install step
    assert len(list((tmp_path / "cache" / "wheels").rglob("*.whl"))) == 2


def test_nothing_compatible(index_server: IndexServer, tmp_path: Path) -> None:
    index_server.add_project(
        "winonly", [make_wheel(tmp_path, "winonly", "1.0", tags="cp312-cp312-win_amd64")]
    )
    index_server.add_project(
        "needswin", [make_wheel(tmp_path, "needswin", "1.0", requires_dist=["winonly"])]
    )
    with IndexClient(index_server.url) as idx, pytest.raises(NoCompatibleWheel) as info:
        resolve_closure(["needswin"], ARM312, idx)
    msg = str(info.value)
    assert "winonly" in msg and "required by needswin 1.0" in msg and "\n" not in msg


def test_bad_requirements(world: IndexServer, tmp_path: Path) -> None:
    with IndexClient(world.url) as idx:
        with pytest.raises(InputError, match=r"command line: invalid requirement .app>>1."):
            resolve_closure(["app>>1"], ARM312, idx)
        with pytest.raises(InputError, match="no package"):
            resolve_closure(['app; python_version < "3"'], ARM312, idx)
        with pytest.raises(InputError, match="no such wheel"):
            resolve_closure([str(tmp_path / "nope-1.0-py3-none-any.whl")], ARM312, idx)


def test_local_wheel_requirement(world: IndexServer, tmp_path: Path) -> None:
    local = make_wheel(tmp_path / "local", "liba", "3.0", requires_dist=["libb"])
    with IndexClient(world.url) as idx:
        c = resolve_closure([str(local)], ARM312, idx)
    assert names(c) == {"liba": "3.0", "libb": "2.0"}
    assert c.pins[0].candidate.url.startswith("file:") and c.pins[0].metadata_source == "local"


def test_a_local_wheels_huge_metadata_is_refused_without_reading_it_all(
    world: IndexServer, tmp_path: Path
) -> None:
    """A 64 MiB METADATA (64 KB deflated) is refused at the 16 MiB metadata cap, reading one
    byte more than the cap rather than the whole member."""
    path = tmp_path / "bomb-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "bomb-1.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: bomb\nVersion: 1.0\n\n" + b" " * (64 << 20),
        )
    with IndexClient(world.url) as idx:
        tracemalloc.start()
        try:
            with pytest.raises(ArchiveError, match="16,777,216-byte limit"):
                resolve_closure([str(path)], ARM312, idx)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 48 << 20


def test_parse_metadata_and_remote_range_helper(world: IndexServer, tmp_path: Path) -> None:
    meta = parse_metadata(b"Metadata-Version: 2.1\nName: x\nVersion: 1\nRequires-Dist: y>1\n\n")
    assert meta.requires_dist == ("y>1",) and meta.requires_python is None
    with pytest.raises(InputError, match="lacks Name"):
        parse_metadata(b"Version: 1\n\n")
    import httpx

    url = world.file_url("app", "app-1.0-py3-none-any.whl")
    with httpx.Client() as client:
        data = read_remote_metadata(client, url)
    assert data is not None and b"Requires-Dist: liba>=1.0" in data


def test_requires_python_from_metadata_backtracks(
    index_server: IndexServer, tmp_path: Path
) -> None:
    # the index does not advertise Requires-Python (like a find-links directory): only the
    # wheel's METADATA says 2.0 needs 3.12, so on 3.11 the resolver must fall back to 1.0
    w = tmp_path / "w"
    index_server.add_project(
        "modern",
        [
            make_wheel(w, "modern", "1.0"),
            make_wheel(w, "modern", "2.0", requires_python=">=3.12"),
        ],
    )
    index_server.add_project(
        "uses-modern", [make_wheel(w, "uses-modern", "1.0", requires_dist=["modern"])]
    )
    index_server.add_project(
        "only-new", [make_wheel(w, "only-new", "1.0", requires_python=">=3.13")]
    )
    with IndexClient(index_server.url) as idx:
        assert names(resolve_closure(["uses-modern"], AL2023_311, idx))["modern"] == "1.0"
        assert names(resolve_closure(["uses-modern"], ARM312, idx))["modern"] == "2.0"
        with pytest.raises(NoCompatibleWheel, match=r"needs Python >=3\.13"):
            resolve_closure(["only-new"], ARM312, idx)
