"""``torchwheel build`` and build_layer() end to end against a loopback index."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.indexserver import IndexFile, IndexServer
from tests.support.wheels import make_wheel, wheel_sha256
from tests.support.worlds import populate
from torchwheel import build_layer
from torchwheel.cli import main
from torchwheel.errors import InputError
from torchwheel.layer.build import BuildOptions, run_build
from torchwheel.targets import make_target, quotas

ARM = ["--runtime", "python3.12", "--arch", "arm64"]
AL2023 = ["--runtime", "provided.al2023", "--python", "3.11", "--arch", "x86_64"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["build", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def world(index_server: IndexServer, tmp_path: Path) -> IndexServer:
    populate(index_server, tmp_path)
    return index_server


def test_json_report_numbers_and_reproducible_bytes(
    world: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    z1, z2 = tmp_path / "one.zip", tmp_path / "two.zip"
    rc, out, err = run(capsys, "app", *ARM, "--index-url", world.url, "-o", str(z1), "--json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["schema"] == "torchwheel.build/1"
    assert rep["target"] == {
        "label": "python3.12/arm64",
        "runtime": "python3.12",
        "arch": "arm64",
        "python": "3.12",
    }
    assert {p["name"] for p in rep["packages"]} == {
        "app",
        "liba",
        "libb",
        "libarm",
        "libnew",
        "extra-thing",
        "fancydep",
    }
    assert rep["skipped_runtime_packages"] == ["boto3 (required by app; python3.12 ships it)"]
    with zipfile.ZipFile(z1) as zf:
        infos = zf.infolist()
        assert rep["zipped_bytes"] == z1.stat().st_size
        assert rep["unzipped_bytes"] == sum(i.file_size for i in infos)
        assert rep["files"] == len(infos) == rep["raw_copied"] + rep["compressed"]
        names = {i.filename for i in infos}
    assert "python/lib/python3.12/site-packages/libarm/__init__.py" in names
    assert "python/lib/python3.12/site-packages/app-1.0.dist-info/INSTALLER" in names
    assert all(n.startswith("python/lib/python3.12/site-packages/") for n in names)
    assert rep["sha256"] == wheel_sha256(z1)
    assert rep["over_quota"] is False and all(q["fits"] for q in rep["quotas"])
    # second build: same bytes, and no wheel is downloaded again (content-addressed cache)
    world.clear_log()
    rc, _, _ = run(capsys, "app", *ARM, "--index-url", world.url, "-o", str(z2), "--json")
    assert rc == 0
    assert z1.read_bytes() == z2.read_bytes()
    assert not [r for r in world.requests if r.path.endswith(".whl")]


def test_tree_with_native_extension_imports(
    index_server: IndexServer,
    native_wheel: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index_server.add_project("nativepkg", [native_wheel])
    tree = tmp_path / "tree"
    rc, _, err = run(
        capsys,
        "nativepkg",
        *AL2023,
        "--index-url",
        index_server.url,
        "--tree",
        str(tree),
        "--no-deps",
        "--strip",
    )
    assert rc == 0, err
    site = tree / "python/lib/python3.11/site-packages"
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); "
        "import nativepkg._native as n; print(n.twice(21))"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True
    )
    assert proc.stdout.strip() == "42", proc.stderr
    assert not list(tree.rglob("__pycache__")) and not list(tree.rglob("*.pyc"))


def test_layout_python_and_human_output(
    world: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_zip = tmp_path / "l.zip"
    rc, out, _ = run(
        capsys,
        "liba==1.0",
        *AL2023,
        "--index-url",
        world.url,
        "-o",
        str(out_zip),
        "--layout",
        "python",
    )
    assert rc == 0
    assert "Size vs Lambda quotas" in out and "wrote" in out and "liba" in out
    with zipfile.ZipFile(out_zip) as zf:
        assert sorted({n.split("/")[1] for n in zf.namelist()}) == [
            "liba",
            "liba-1.0.dist-info",
            "libb",
            "libb-1.0.dist-info",
        ]


def test_over_quota_exit_codes_and_suggestions(
    index_server: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = quotas().unzipped + 1_000_000
    w = make_wheel(
        tmp_path / "w",
        "bigpkg",
        "1.0",
        files={"bigpkg/__init__.py": b"", "bigpkg/weights.bin": bytes(big)},
    )
    index_server.add_project("bigpkg", [w])
    args = ["bigpkg", *AL2023, "--index-url", index_server.url, "--json"]
    rc, out, _ = run(capsys, *args, "-o", str(tmp_path / "a.zip"))
    assert rc == 0  # over quota is reported, not fatal without --strict
    rep = json.loads(out)
    unz = rep["quotas"][0]
    assert rep["over_quota"] is True and unz["fits"] is False and unz["hard"] is True
    assert unz["over_by"] == rep["unzipped_bytes"] - quotas().unzipped > 1_000_000
    assert any("packed layer" in s for s in rep["suggestions"])
    assert any("container image" in s for s in rep["suggestions"])
    assert rep["older_release"] is None
    assert any("no older bigpkg release found" in s for s in rep["suggestions"])
    # an older release that fits: found from its central directory, no download
    small = make_wheel(
        tmp_path / "w",
        "bigpkg",
        "0.9",
        files={"bigpkg/__init__.py": b"", "bigpkg/weights.bin": bytes(1000)},
    )
    index_server.add_project("bigpkg", [small])
    index_server.clear_log()
    rc, out, _ = run(capsys, *args, "-o", str(tmp_path / "b.zip"), "--strict", "--no-cache")
    assert rc == 1
    rep = json.loads(out)
    older = rep["older_release"]
    assert older["version"] == "0.9" and older["wheel"] == small.name
    assert older["unzipped_bytes"] == 1000 + sum(
        i.file_size for i in zipfile.ZipFile(small).infolist() if ".dist-info" in i.filename
    )
    assert older["layer_bytes"] < quotas().unzipped
    assert any("bigpkg 0.9 fits" in s for s in rep["suggestions"])
    small_gets = [r for r in index_server.requests if r.path.endswith(small.name)]
    assert small_gets and all("range" in r.headers for r in small_gets)


def test_hash_mismatch_exit_2_nothing_written(
    index_server: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = make_wheel(tmp_path / "w", "liar", "1.0")
    index_server.add_project("liar", [IndexFile(w.name, w, sha256="ab" * 32)])
    out_zip = tmp_path / "l.zip"
    rc, _, err = run(
        capsys, "liar", *AL2023, "--index-url", index_server.url, "-o", str(out_zip), "--no-deps"
    )
    assert rc == 2
    # the finished steps' progress lines (stderr is not a terminal), then the one error line
    *steps, line = err.strip().splitlines()
    assert [s.split(":")[0] for s in steps] == ["resolve"]
    assert "hash mismatch" in line and "ab" * 32 in line
    assert "liar-1.0-py3-none-any.whl" in line
    assert not out_zip.exists() and not list(tmp_path.glob(".l.zip*"))


def test_bad_inputs_exit_2(
    index_server: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a "wheel" that is not a zip, served with its true hash
    junk = tmp_path / "junk" / "junk-1.0-py3-none-any.whl"
    junk.parent.mkdir()
    junk.write_bytes(b"not a zip at all" * 100)
    index_server.add_project("junk", [IndexFile(junk.name, junk, metadata=None)])
    rc, _, err = run(
        capsys,
        "junk",
        *AL2023,
        "--index-url",
        index_server.url,
        "-o",
        str(tmp_path / "j.zip"),
        "--no-deps",
    )
    assert rc == 2 and "junk-1.0-py3-none-any.whl" in err and "not a zip" in err
    # a wheel with a ../ member
    from tests.support.wheels import raw_wheel

    evil = raw_wheel(
        tmp_path / "evil", "evil-1.0-py3-none-any.whl", [("../escape.py", b"x", 0o100644)]
    )
    index_server.add_project("evil", [evil])
    tree = tmp_path / "tree"
    rc, _, err = run(
        capsys, "evil", *AL2023, "--index-url", index_server.url, "--tree", str(tree), "--no-deps"
    )
    assert rc == 2 and "unsafe member path" in err
    assert not tree.exists() and not (tmp_path / "escape.py").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tree.")]
    # unreachable index, no output given, unknown runtime
    rc, _, err = run(
        capsys,
        "x",
        *AL2023,
        "--index-url",
        "http://127.0.0.1:9/simple",
        "-o",
        str(tmp_path / "u.zip"),
    )
    assert rc == 2 and "127.0.0.1:9" in err
    rc, _, err = run(capsys, "x", *AL2023, "--index-url", index_server.url)
    assert rc == 2 and "-o" in err
    rc, _, _ = run(capsys, "x", "--runtime", "python2.7", "-o", str(tmp_path / "r.zip"))
    assert rc == 2


def test_nothing_compatible_exit_1(
    index_server: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = make_wheel(tmp_path, "winonly", "1.0", tags="cp311-cp311-win_amd64")
    index_server.add_project("winonly", [w])
    rc, _, err = run(
        capsys, "winonly", *AL2023, "--index-url", index_server.url, "-o", str(tmp_path / "w.zip")
    )
    assert rc == 1 and "winonly" in err


def test_tree_refuses_foreign_directory(
    world: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "mine"
    tree.mkdir()
    (tree / "precious.txt").write_text("keep me")
    rc, _, err = run(capsys, "libb", *AL2023, "--index-url", world.url, "--tree", str(tree))
    assert rc == 2 and "refusing" in err
    assert (tree / "precious.txt").read_text() == "keep me"
    # a previous layer tree (only python/) is replaced
    ok = tmp_path / "layer"
    for _ in range(2):
        rc, _, err = run(capsys, "libb", *AL2023, "--index-url", world.url, "--tree", str(ok))
        assert rc == 0, err
    assert sorted(p.name for p in ok.iterdir()) == ["python"]


def test_build_layer_api(world: IndexServer, tmp_path: Path) -> None:
    rep = build_layer(
        ["app"],
        arch="arm64",
        python="3.12",
        index_url=world.url,
        output=tmp_path / "api.zip",
        include_runtime_packages=True,
    )
    assert {"boto3", "botocore"} <= {p.name for p in rep.packages}
    assert rep.skipped_runtime_packages == ()
    assert rep.output == tmp_path / "api.zip" and rep.tree is None
    assert (
        rep.to_dict()["packages"][0]["unzipped_bytes"]
        >= rep.to_dict()["packages"][-1]["unzipped_bytes"]
    )


def test_zip_only_build_equals_tree_build(
    index_server: IndexServer,
    native_wheel: Path,
    world: IndexServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # -o alone writes (almost) nothing to disk; with --tree every file is written: same zip
    index_server.add_project("nativepkg", [native_wheel])
    for extra in ((), ("--strip",), ("--slim", "--strip")):
        a, b = tmp_path / "a.zip", tmp_path / "b.zip"
        base = ["nativepkg", *AL2023, "--index-url", index_server.url, *extra]
        assert run(capsys, *base, "-o", str(a))[0] == 0
        assert run(capsys, *base, "-o", str(b), "--tree", str(tmp_path / "t"))[0] == 0
        assert a.read_bytes() == b.read_bytes(), extra
        shutil.rmtree(tmp_path / "t")
    a, b = tmp_path / "c.zip", tmp_path / "d.zip"
    assert run(capsys, "app", *ARM, "--index-url", world.url, "-o", str(a))[0] == 0
    assert (
        run(
            capsys,
            "app",
            *ARM,
            "--index-url",
            world.url,
            "-o",
            str(b),
            "--tree",
            str(tmp_path / "t2"),
        )[0]
        == 0
    )
    assert a.read_bytes() == b.read_bytes()


def test_build_options_drive_the_build(world: IndexServer, tmp_path: Path) -> None:
    # one frozen options object: run_build(options) is what build_layer(**keywords) runs
    options = BuildOptions(
        target=make_target(runtime="python3.12", arch="arm64"),
        packages=("app",),
        output=tmp_path / "opts.zip",
        index_url=world.url,
    )
    rep = run_build(options)
    kw = build_layer(
        ["app"], runtime="python3.12", arch="arm64", index_url=world.url, output=tmp_path / "kw.zip"
    )
    assert (tmp_path / "opts.zip").read_bytes() == (tmp_path / "kw.zip").read_bytes()
    assert rep.sha256 == kw.sha256 and rep.packages == kw.packages and rep.steps == kw.steps
    assert options.prefix == "python/lib/python3.12/site-packages" == rep.prefix
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.slim = True  # type: ignore[misc]


def test_build_options_refuse_before_any_download(
    world: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = make_target(runtime="provided.al2023", arch="x86_64", python="3.11")
    out = tmp_path / "x.zip"
    world.clear_log()
    with pytest.raises(InputError, match="nothing to write"):
        BuildOptions(target=target, packages=("app",))
    with pytest.raises(InputError, match="unknown layout 'nope'"):
        BuildOptions(target=target, output=out, layout="nope")
    with pytest.raises(InputError, match="compression level 11 is not between 0 and 9"):
        build_layer(
            ["app"],
            arch="x86_64",
            runtime="provided.al2023",
            python="3.11",
            index_url=world.url,
            output=out,
            compresslevel=11,
        )
    rc, _, err = run(
        capsys,
        "app",
        *AL2023,
        "--index-url",
        world.url,
        "-o",
        str(out),
        "--compression-level",
        "-1",
    )
    assert rc == 2 and "compression level -1 is not between 0 and 9" in err
    assert world.requests == [] and not out.exists()
