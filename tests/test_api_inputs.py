"""The library API takes one path or requirement as itself, never as its characters, and
refuses what is neither with TypeError (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.wheels import make_wheel
from torchwheel import build_layer


def test_build_layer_takes_one_requirement_string(
    index_server: IndexServer, tmp_path: Path
) -> None:
    index_server.add_project("six", [make_wheel(tmp_path / "w", "six", "1.17.0")])
    rep = build_layer(
        "six",
        arch="x86_64",
        python="3.12",
        runtime="python3.12",
        index_url=index_server.url,
        output=tmp_path / "l.zip",
    )
    assert [p.name for p in rep.packages] == ["six"]


def test_build_layer_takes_one_local_wheel_path(index_server: IndexServer, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w", "six", "1.17.0")
    rep = build_layer(
        wheel,
        arch="arm64",
        python="3.12",
        runtime="python3.12",
        index_url=index_server.url,
        output=tmp_path / "l.zip",
    )
    assert [p.name for p in rep.packages] == ["six"]
    assert index_server.count() == 0  # the wheel came from the path


@pytest.mark.parametrize("bad", [b"six", 42, None, [b"six"], ["six", 3]])
def test_build_layer_refuses_other_types(bad: object, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="packages: expected"):
        build_layer(bad, arch="x86_64", runtime="python3.12", output=tmp_path / "l.zip")  # type: ignore[arg-type]
    assert not (tmp_path / "l.zip").exists()


def test_check_takes_one_path_string_or_path(tmp_path: Path) -> None:
    from tests.support.layers import make_layer
    from torchwheel import check

    layer = make_layer(tmp_path / "layer.zip", {"python/six.py": b"x = 1\n"})
    for given in (str(layer), layer):
        report = check(given, arch="x86_64", runtime="python3.12")
        assert report.paths == (str(layer),) and report.ok


@pytest.mark.parametrize("bad", [b"layer.zip", 42, [b"layer.zip"]])
def test_check_refuses_other_types(bad: object) -> None:
    from torchwheel import check

    with pytest.raises(TypeError, match="paths: expected"):
        check(bad, runtime="python3.12")  # type: ignore[arg-type]
