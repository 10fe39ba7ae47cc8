"""remote_wheel_size: central directory over HTTP ranges, request budget, fallbacks, errors."""

from __future__ import annotations

import os
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.wheels import make_wheel
from torchwheel import remote_wheel_size
from torchwheel.errors import ArchiveError, NetworkError
from torchwheel.http import make_client
from torchwheel.remote import MAX_REQUESTS, RemoteWheel, read_remote_metadata


def zip_truth(path: Path) -> tuple[int, int, list[tuple[str, int]]]:
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
    largest = sorted(((i.filename, i.file_size) for i in infos), key=lambda x: (-x[1], x[0]))
    return len(infos), sum(i.file_size for i in infos), largest


@pytest.fixture(scope="module")
def many_member_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel whose central directory (~300 KiB) is larger than the first 64 KiB read."""
    files = {
        f"pkg/sub{i // 100}/module_{i:05d}.py": b"x = %d\n" % i * (i % 7 + 1) for i in range(4000)
    }
    files["pkg/big.bin"] = bytes(range(256)) * 4096
    return make_wheel(tmp_path_factory.mktemp("many"), "many", "1.0", files=files)


def test_small_wheel_one_request(index_server: IndexServer, tmp_path: Path) -> None:
    w = make_wheel(
        tmp_path, "demo", "1.0", files={"demo/a.py": b"a" * 5000, "demo/b.py": b"b" * 10}
    )
    index_server.add_project("demo", [w])
    rs = remote_wheel_size(index_server.file_url("demo", w.name), top=3)
    members, unzipped, largest = zip_truth(w)
    assert rs.zipped == w.stat().st_size
    assert rs.unzipped == unzipped
    assert rs.members == members
    assert list(rs.largest) == largest[:3]
    assert rs.requests == 1 and rs.ranged
    (req,) = index_server.requests
    assert req.headers["range"] == "bytes=-65536" and req.status == 206


def test_large_central_directory_two_requests(
    index_server: IndexServer, many_member_wheel: Path
) -> None:
    index_server.add_project("many", [many_member_wheel])
    rs = remote_wheel_size(index_server.file_url("many", many_member_wheel.name))
    members, unzipped, largest = zip_truth(many_member_wheel)
    assert (rs.members, rs.unzipped) == (members, unzipped)
    assert rs.largest[0] == ("pkg/big.bin", 256 * 4096) == largest[0]
    assert rs.requests == 2
    assert all(r.status == 206 for r in index_server.requests)
    # far less than the file was transferred
    assert many_member_wheel.stat().st_size > 4 * 65536


def test_server_ignoring_range_falls_back_to_full_download(
    index_server: IndexServer, many_member_wheel: Path
) -> None:
    index_server.ignore_range = True
    index_server.add_project("many", [many_member_wheel])
    rs = remote_wheel_size(index_server.file_url("many", many_member_wheel.name))
    members, unzipped, _ = zip_truth(many_member_wheel)
    assert (rs.members, rs.unzipped, rs.zipped) == (
        members,
        unzipped,
        many_member_wheel.stat().st_size,
    )
    assert rs.requests == 1 and not rs.ranged
    assert [r.status for r in index_server.requests] == [200]


def test_retry_then_success(index_server: IndexServer, tmp_path: Path) -> None:
    w = make_wheel(tmp_path, "demo", "1.0")
    index_server.add_project("demo", [w])
    index_server.fail("/files/", 503, times=1)
    rs = remote_wheel_size(index_server.file_url("demo", w.name), backoff=0)
    assert rs.requests == 2
    assert [r.status for r in index_server.requests] == [503, 206]


def test_errors_are_one_line(index_server: IndexServer, tmp_path: Path) -> None:
    url = index_server.file_url("demo", "demo-1.0-py3-none-any.whl")
    with pytest.raises(NetworkError) as err:
        remote_wheel_size(url, backoff=0)
    assert str(err.value) == f"{url}: HTTP 404 Not Found"
    index_server.add_project("junk", [("junk-1.0-py3-none-any.whl", b"not a zip at all" * 10)])
    junk = index_server.file_url("junk", "junk-1.0-py3-none-any.whl")
    with pytest.raises(ArchiveError) as aerr:
        remote_wheel_size(junk)
    assert str(aerr.value).startswith(f"{junk}: not a zip archive")
    index_server.fail("/files/", 500, times=10)
    w = make_wheel(tmp_path, "demo", "1.0")
    index_server.add_project("demo", [w])
    with pytest.raises(NetworkError, match="HTTP 500"):
        remote_wheel_size(index_server.file_url("demo", w.name), backoff=0)


def test_local_file_and_file_url(many_member_wheel: Path) -> None:
    for loc in (str(many_member_wheel), many_member_wheel.as_uri()):
        rs = remote_wheel_size(loc)
        assert rs.requests == 0
        assert rs.members == zip_truth(many_member_wheel)[0]


def test_closing_a_local_wheel_twice_closes_its_descriptor_once(many_member_wheel: Path) -> None:
    rw = RemoteWheel(str(many_member_wheel))
    rw.close()
    other = os.open(many_member_wheel, os.O_RDONLY)  # may reuse the descriptor's number
    try:
        rw.close()
        assert os.fstat(other).st_size == many_member_wheel.stat().st_size
    finally:
        os.close(other)


def test_metadata_deflate_bomb_costs_what_its_directory_claims(
    index_server: IndexServer, tmp_path: Path
) -> None:
    """A METADATA whose directory entry says 100 bytes but whose deflate stream holds 64 MiB
    (~64 KB compressed, under the 4 MiB member limit) is refused without inflating it all."""
    path = tmp_path / "bomb-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb-1.0.dist-info/METADATA", b"\0" * (64 << 20))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 22, 100)  # local header: uncompressed size
    central = data.rindex(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 100)  # central directory: the same
    index_server.add_project("bomb", [(path.name, bytes(data))])
    with make_client() as client:
        tracemalloc.start()
        try:
            with pytest.raises(ArchiveError, match="METADATA: truncated or corrupt"):
                read_remote_metadata(client, index_server.file_url("bomb", path.name))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.torch
def test_real_torch_wheel_within_budget(index_server: IndexServer, torch_wheel: Path) -> None:
    index_server.add_project("torch", [torch_wheel])
    rs = remote_wheel_size(index_server.file_url("torch", torch_wheel.name), top=5)
    members, unzipped, largest = zip_truth(torch_wheel)
    assert (rs.members, rs.unzipped, rs.zipped) == (
        members,
        unzipped,
        torch_wheel.stat().st_size,
    )
    assert list(rs.largest) == largest[:5]
    assert rs.largest[0][0] == "torch/lib/libtorch_cpu.so"
    assert rs.requests <= MAX_REQUESTS
    assert index_server.count("/files/") == rs.requests
