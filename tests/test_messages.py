"""Messages that answer the next question (issue 12): rejected wheels grouped by reason with
near misses first; what ``resolve --all`` hid; why a local wheel does not fit; ``/simple/`` for
an index root that 404s; build's note on a deprecated runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.wheels import make_wheel
from torchwheel.cli import main
from torchwheel.commands._rejected import reason_group, summarize
from torchwheel.index import IndexClient
from torchwheel.resolution import resolve_target
from torchwheel.targets import make_target

TAGS = {
    "chosen": "cp311-cp311-manylinux2014_x86_64",
    "near": "cp311-cp311-manylinux_2_28_x86_64",
    "py312": "cp312-cp312-manylinux2014_x86_64",
    "py313": "cp313-cp313-manylinux2014_x86_64",
    "mac": "cp311-cp311-macosx_11_0_arm64",
    "arm": "cp311-cp311-manylinux2014_aarch64",
    "win": "cp311-cp311-win_amd64",
}


@pytest.fixture
def many(index_server: IndexServer, tmp_path: Path) -> IndexServer:
    wheels = [
        make_wheel(tmp_path / "w", "demo", version, tags=tag)
        for version in ("1.0", "2.0")
        for tag in TAGS.values()
    ]
    index_server.add_project("demo", wheels)
    return index_server


def test_near_misses_first_the_rest_counted(many: IndexServer) -> None:
    target = make_target("x86_64", runtime="python3.11")  # glibc 2.26
    with IndexClient(many.url) as idx:
        res = resolve_target(target, idx, package="demo")
    assert res.wheel is not None and res.wheel.filename.endswith(TAGS["chosen"] + ".whl")
    s = summarize(res.rejected, target)
    assert [c.filename for c, _ in s.near] == [
        f"demo-2.0-{TAGS['near']}.whl",
        f"demo-1.0-{TAGS['near']}.whl",
    ]
    groups = dict(s.groups)
    assert groups == {
        "other CPython versions": 4,
        "macOS wheel": 2,
        "Windows wheel": 2,
        "built for another machine": 2,
    }
    assert s.others == 10 and s.line().startswith("10 other rejected wheel(s): ")
    assert reason_group("needs glibc 2.28 (manylinux_2_28); …") == "needs a newer glibc"


def test_resolve_table_shows_the_near_miss(
    many: IndexServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["resolve", "--package", "demo", "--runtime", "python3.11", "--index-url", many.url])
        == 0
    )
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "│ no" in line]
    assert len(rows) == 2 and all(TAGS["near"] in r and "glibc 2.28" in r for r in rows)
    assert "10 other rejected wheel(s): other CPython versions 4, " in out


def test_resolve_all_says_what_it_hid(
    many: IndexServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from torchwheel.targets import runtimes

    deprecated = [rt.name for rt in runtimes() if rt.is_deprecated()]
    provided = [rt.name for rt in runtimes() if rt.python is None]
    args = ["resolve", "--package", "demo", "--all", "--index-url", many.url]
    main(args)
    out = capsys.readouterr().out
    if deprecated:
        (line,) = [x for x in out.splitlines() if "--include-deprecated shows them" in x]
        assert all(f"{name} (deprecated since " in line for name in deprecated)
    (line,) = [x for x in out.splitlines() if "--python 3.X shows them" in x]
    assert all(name in line for name in provided)
    main([*args, "--json"])
    hidden = json.loads(capsys.readouterr().out)["hidden"]
    assert sorted(h["runtime"] for h in hidden) == sorted(deprecated + provided)
    main([*args, "--include-deprecated", "--python", "3.12", "--json"])
    assert json.loads(capsys.readouterr().out)["hidden"] == []


def test_a_local_wheel_that_does_not_fit_says_why(
    index_server: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    glibc = make_wheel(tmp_path / "w", "demo", "1.0", tags=TAGS["near"])
    other = make_wheel(tmp_path / "w", "demo2", "1.0", tags="cp312-cp312-manylinux2014_aarch64")
    base = ["build", "--runtime", "python3.11", "-o", str(tmp_path / "l.zip"), "-q"]
    assert main([*base, str(glibc), "--index-url", index_server.url]) == 1
    err = capsys.readouterr().err
    assert f"{glibc}: the wheel does not fit python3.11/x86_64: needs glibc 2.28" in err
    assert main([*base, str(other), "--index-url", index_server.url]) == 1
    err = capsys.readouterr().err
    assert "cp312 wheel; target is CPython 3.11" in err and "built for aarch64" in err


def test_a_404_on_a_site_root_suggests_simple(
    many: IndexServer, capsys: pytest.CaptureFixture[str]
) -> None:
    root = many.base.rstrip("/")
    rc = main(["resolve", "--package", "demo", "--runtime", "python3.11", "--index-url", root])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"try --index-url {root}/simple/" in err
    # an index URL with a path (PyTorch's /whl/cpu, a mirror's /pypi) gets no such guess
    rc = main(["resolve", "--package", "nope", "--runtime", "python3.11", "--index-url", many.url])
    err = capsys.readouterr().err
    assert rc == 2 and "not found" in err and "try --index-url" not in err


def test_build_notes_a_deprecated_runtime(
    index_server: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchwheel.targets import runtimes

    old = [rt for rt in runtimes() if rt.is_deprecated() and rt.python is not None]
    if not old:
        pytest.skip("no runtime is deprecated today")
    rt = old[-1]
    index_server.add_project("six", [make_wheel(tmp_path / "w", "six", "1.17.0")])
    argv = ["build", "six", "--runtime", rt.name, "--index-url", index_server.url]
    assert main([*argv, "-o", str(tmp_path / "l.zip"), "-q"]) == 0
    note = rt.deprecation_note()
    assert note is not None and f"note: {note}" in capsys.readouterr().out
    main(["resolve", "--package", "six", "--runtime", rt.name, "--index-url", index_server.url])
    assert f"note: {note}" in capsys.readouterr().out  # the same words as resolve
