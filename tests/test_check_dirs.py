"""`check DIR`: a directory is judged exactly like the zip of its contents (issue 14).

Every layer case of tests/test_check.py is built again here as a zip, unpacked into a
directory (modes and symlinks kept), and checked both ways: same codes, severities, paths
and messages, target by target. Then what only directories have: SAM and CDK shapes, their
build roots refused, special files, mixed zip + directory deployments, the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.elves import Elves
from tests.support.layers import SITE311, install_wheel, make_layer
from tests.support.recipes import run_recipe, shell_blocks
from tests.support.trees import cdk_out_tree, sam_build_tree, unzip_tree, write_tree
from tests.support.wheels import make_wheel
from torchwheel.checks import CheckReport, check
from torchwheel.cli import main
from torchwheel.errors import InputError


@dataclass
class Case:
    """A deployment (zips in order) and the check calls to compare on it."""

    zips: list[Path]
    calls: list[dict[str, Any]] = field(default_factory=lambda: [{"runtime": "python3.12"}])
    function: int | None = None  # index of the zip given as function=


def _pure(tmp: Path, name: str = "pure", version: str = "1.0", req: Sequence[str] = ()) -> Path:
    return make_wheel(tmp / "wheels", name, version, requires_dist=tuple(req))


def case_layout(tmp: Path, elves: Elves) -> list[Case]:
    pure = install_wheel(_pure(tmp), "python/")
    seed_wheel = make_wheel(tmp / "w", "torch", "2.13.0", tags="cp311-cp311-manylinux_2_28_x86_64")
    mixed = {
        "python/mod.py": b"",
        "python/__pycache__/mod.cpython-311.pyc": b"\x00" * 16,
        "python/_ext.cpython-311-x86_64-linux-gnu.so": elves.read("plain"),
        "python/data/models.zip": b"PK\x05\x06" + b"\x00" * 18,
    }
    fn = make_layer(tmp / "function.zip", {"app.py": b"def handler(e, c): return 1\n"})
    return [
        Case(
            [make_layer(tmp / "pure.zip", pure)], [{}, {"runtime": "python3.12", "arch": "arm64"}]
        ),
        Case(
            [make_layer(tmp / "py311.zip", install_wheel(_pure(tmp), SITE311))],
            [{"runtime": "python3.11"}, {"runtime": "python3.12"}, {"arch": "x86_64"}],
        ),
        Case(
            [
                make_layer(
                    tmp / "seed.zip",
                    {SITE311 + seed_wheel.name: seed_wheel.read_bytes(), "python/h.py": b"X=1\n"},
                )
            ],
            [{"runtime": "python3.11"}],
        ),
        Case([make_layer(tmp / "flat.zip", install_wheel(_pure(tmp), "site-packages/"))]),
        Case(
            [
                make_layer(
                    tmp / "lib.zip", install_wheel(_pure(tmp), "lib/python3.12/site-packages/")
                )
            ]
        ),
        Case([fn, make_layer(tmp / "py.zip", pure)]),
        Case([fn, make_layer(tmp / "py2.zip", pure)], function=0),
        Case(
            [make_layer(tmp / "mixed.zip", mixed)],
            [{"runtime": "python3.12"}, {"runtime": "python3.11"}],
        ),
    ]


def case_native(tmp: Path, elves: Elves) -> list[Case]:
    def so(name: str, which: str) -> Path:
        return make_layer(tmp / f"{name}.zip", {f"python/{name}.so": elves.read(which)})

    uses = elves.read("uses_dep")
    dep = elves.read("dep")
    alone = make_layer(tmp / "alone.zip", {"python/uses.so": uses})
    both = [{"runtime": "python3.11"}, {"runtime": "python3.12"}]
    return [
        Case([so("plain", "plain")], both),
        Case([so("fast", "fcntl64")], [*both, {"arch": "x86_64", "python": "3.11"}]),
        Case([so("rnd", "arc4random")]),
        Case([so("cx", "cxx_new")]),
        Case([so("cp", "cxx_plain")]),
        Case(
            [
                make_layer(
                    tmp / "arch.zip",
                    {"python/a.so": elves.read("plain"), "python/b.so": elves.read("aarch64")},
                )
            ],
            [
                {"runtime": "python3.12", "arch": "x86_64"},
                {"runtime": "python3.12", "arch": "arm64"},
            ],
        ),
        Case([alone]),
        Case([make_layer(tmp / "beside.zip", {"python/uses.so": uses, "python/libdep.so.1": dep})]),
        Case([alone, make_layer(tmp / "libs.zip", {"lib/libdep.so.1": dep})]),
        Case(
            [make_layer(tmp / "else.zip", {"python/uses.so": uses, "python/deps/libdep.so.1": dep})]
        ),
        Case(
            [so("x", "fcntl64"), make_layer(tmp / "x2.zip", {"python/x.so": elves.read("plain")})]
        ),
        Case(
            [make_layer(tmp / "x3.zip", {"python/x.so": elves.read("plain")}), so("y", "fcntl64")]
        ),
        Case(
            [
                make_layer(
                    tmp / "exe.zip",
                    {"bin/hello": elves.read("executable")},
                    modes={"bin/hello": 0o755},
                )
            ]
        ),
    ]


def case_wheels(tmp: Path, elves: Elves) -> list[Case]:
    native = make_wheel(tmp / "w", "native", "1.0", tags="cp311-cp311-manylinux_2_28_x86_64")
    app = _pure(tmp, "app", "1.0", ("helper>=2", 'old; python_version < "3.8"', "boto3"))
    app_layer = make_layer(tmp / "app.zip", install_wheel(app, "python/"))
    files = install_wheel(_pure(tmp, "rec", "1.0"), "python/")
    bad = {**files, "python/rec/__init__.py": b"tampered = True\n"}
    slim = {k: v for k, v in files.items() if k != "python/rec/__init__.py"}
    slim["python/rec/extra.py"] = b"x = 1\n"
    record = "python/rec-1.0.dist-info/RECORD"
    broken = {**files, record: files[record] + b'"' + b"x" * 200_000 + b'",,\n'}
    big = bytes(range(256)) * 8192 * 3
    bigwheel = make_wheel(
        tmp / "w",
        "bigpkg",
        "1.0",
        tags="cp311-cp311-linux_x86_64",
        files={
            "bigpkg/blob.bin": big,
            "bigpkg/_x.cpython-311-x86_64-linux-gnu.so": elves.read("fcntl64"),
        },
    )
    bigfiles = install_wheel(bigwheel, SITE311)
    vendored = make_wheel(
        tmp / "w",
        "outer",
        "1.0",
        files={
            "outer/__init__.py": b"",
            "outer/_vendor/inner/__init__.py": b"x = 1\n",
            "outer/_vendor/inner-1.0.dist-info/METADATA": b"Name: inner\nVersion: 1.0\n",
            "outer/_vendor/inner-1.0.dist-info/RECORD": b"inner/__init__.py,sha256=AAAA,3\n",
        },
    )
    helper = make_layer(tmp / "h2.zip", install_wheel(_pure(tmp, "helper", "2.1"), "python/"))
    old_helper = make_layer(tmp / "h1.zip", install_wheel(_pure(tmp, "helper", "1.5"), "python/"))
    return [
        Case(
            [make_layer(tmp / "native.zip", install_wheel(native, SITE311))],
            [
                {"runtime": "python3.11"},
                {"runtime": "provided.al2023", "python": "3.11"},
                {"runtime": "provided.al2023", "python": "3.11", "arch": "arm64"},
            ],
        ),
        Case(
            [app_layer],
            [{"runtime": "python3.12"}, {"runtime": "provided.al2023", "python": "3.12"}],
        ),
        Case([app_layer, helper]),
        Case([app_layer, old_helper]),
        Case([make_layer(tmp / "good.zip", files)]),
        Case(
            [make_layer(tmp / "bad.zip", bad)],
            [{"runtime": "python3.12"}, {"runtime": "python3.12", "record": False}],
        ),
        Case([make_layer(tmp / "slim.zip", slim)]),
        Case([make_layer(tmp / "broken.zip", broken)]),
        Case([make_layer(tmp / "vendored.zip", install_wheel(vendored, "python/"))]),
        Case([make_layer(tmp / "big.zip", bigfiles)], [{"runtime": "python3.11"}]),
        Case(
            [
                make_layer(
                    tmp / "big2.zip", {**bigfiles, SITE311 + "bigpkg/blob.bin": big[:-1] + b"!"}
                )
            ],
            [{"runtime": "python3.11"}],
        ),
    ]


def case_safety(tmp: Path, elves: Elves) -> list[Case]:
    links = make_layer(
        tmp / "links.zip",
        {"python/ok.py": b"", "python/pkg/mod.py": b""},
        symlinks={
            "python/escape": "../../../etc/passwd",
            "python/inside": "ok.py",
            "python/abs": "/etc/passwd",
            "python/pkg/up": "../ok.py",
        },
    )
    zeros = b"\x00" * (60 * 1024 * 1024)
    heavy = [make_layer(tmp / f"z{i}.zip", {f"python/blob{i}.bin": zeros}) for i in range(6)]
    return [
        Case([links]),
        Case(heavy[:1]),
        Case(heavy[:5], [{"runtime": "python3.12", "ignore": ["zipped-over-direct-upload"]}]),
        Case(heavy, [{"runtime": "python3.12", "ignore": ["unzipped-too-large"]}]),
    ]


Builder = Callable[[Path, Elves], list[Case]]


def _normal(report: CheckReport, names: dict[str, str]) -> list[tuple[str, ...]]:
    """Findings of every verdict, with each input's path replaced by its position."""

    def sub(text: str) -> str:
        for path, token in names.items():
            text = text.replace(path, token)
        return text

    rows = []
    for v in report.verdicts:
        for f in v.findings:
            rows.append((v.target, f.code, f.severity, sub(f.path), sub(f.message)))
    return sorted(rows)


#: Codes each group of cases must produce (so that "the same findings" is not vacuous).
EXPECTED: dict[str, set[str]] = {
    "case_layout": {
        "wrong-python-dir",
        "wheel-not-extracted",
        "not-on-sys-path",
        "abi-mismatch",
        "foreign-pycache",
        "nested-zip",
    },
    "case_native": {
        "elf-arch-mismatch",
        "glibc-too-new",
        "glibcxx-too-new",
        "missing-shared-library",
    },
    "case_wheels": {"tag-incompatible", "missing-dependency", "record-mismatch", "glibc-too-new"},
    "case_safety": {"unsafe-path", "unzipped-too-large", "too-many-layers"},
}


@pytest.mark.parametrize("builder", [case_layout, case_native, case_wheels, case_safety])
def test_directories_give_the_zips_findings(builder: Builder, tmp_path: Path, elves: Elves) -> None:
    seen: set[str] = set()
    for n, case in enumerate(builder(tmp_path, elves)):
        dirs = [unzip_tree(z, tmp_path / f"dirs{n}" / z.stem) for z in case.zips]
        zip_names = {str(z): f"<input{i}>" for i, z in enumerate(case.zips)}
        dir_names = {str(d): f"<input{i}>" for i, d in enumerate(dirs)}
        for call in case.calls:
            zkw, dkw = dict(call), dict(call)
            if case.function is not None:
                zkw["function"] = case.zips[case.function]
                dkw["function"] = dirs[case.function]
            from_zip = check(case.zips, **zkw)
            from_dir = check(dirs, **dkw)
            got = _normal(from_dir, dir_names)
            # a directory has no zipped size and no CRC: the direct-upload warning and the
            # --no-record crc-not-checked note are the zips' alone
            zip_only = ("zipped-over-direct-upload", "crc-not-checked")
            want = [r for r in _normal(from_zip, zip_names) if r[1] not in zip_only]
            assert got == want, (case.zips, call)
            assert [v.works for v in from_dir.verdicts] == [v.works for v in from_zip.verdicts]
            assert from_dir.sizes.unzipped_total == from_zip.sizes.unzipped_total
            assert from_dir.elf_files == from_zip.elf_files
            assert [i["role"] for i in from_dir.to_dict()["inputs"]] == [
                i["role"] for i in from_zip.to_dict()["inputs"]
            ]
            seen |= {row[1] for row in got}
    assert seen >= EXPECTED[builder.__name__]


# -- what only directories have -------------------------------------------------------------------


def test_symlink_outside_the_tree_is_unsafe(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "layer", {"python/ok.py": b"", "python/pkg/m.py": b""})
    os.symlink("../../../../etc/passwd", root / "python" / "pkg" / "escape")
    os.symlink("../ok.py", root / "python" / "pkg" / "fine")
    os.symlink(str(tmp_path), root / "python" / "absolute")  # absolute: a warning, as in zips
    r = check([root], runtime="python3.12")
    by = {f.path.rsplit(":", 1)[1]: f for f in r.findings}
    assert by["python/pkg/escape"].code == "unsafe-path"
    assert by["python/pkg/escape"].severity == "error"
    assert by["python/absolute"].severity == "warning"
    assert "python/pkg/fine" not in by
    assert not r.ok


def test_symlinked_directory_is_not_followed(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"secret.py": b"x = 1\n"})
    root = write_tree(tmp_path / "layer", {"python/ok.py": b""})
    os.symlink(outside, root / "python" / "linked")
    r = check([root], runtime="python3.12")
    assert r.members == 3  # python/, python/ok.py, python/linked: nothing below the link
    (f,) = r.findings
    assert f.code == "unsafe-path" and "linked" in f.path


def test_special_files_are_reported_not_opened(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "layer", {"python/ok.py": b""})
    os.mkfifo(root / "python" / "pipe")
    r = check([root], runtime="python3.12")  # would block forever if the FIFO were opened
    (f,) = r.findings
    assert f.code == "suspicious-archive" and f.severity == "warning" and "FIFO" in f.message
    assert r.ok


def test_mixed_zip_and_directory_deployment(tmp_path: Path, elves: Elves) -> None:
    fn = write_tree(tmp_path / "fn", {"app.py": b"import uses\n"})
    libs = make_layer(tmp_path / "libs.zip", {"lib/libdep.so.1": elves.read("dep")})
    code = write_tree(tmp_path / "code", {"python/uses.so": elves.read("uses_dep")})
    r = check([fn, code, libs], runtime="python3.12")
    assert r.ok, r.findings
    roles = [(i["kind"], i["role"], i["mount"]) for i in r.to_dict()["inputs"]]
    assert roles == [
        ("directory", "function", "/var/task"),
        ("directory", "layer", "/opt"),
        ("zip", "layer", "/opt"),
    ]
    (f,) = check([fn, code], runtime="python3.12").findings
    assert f.code == "missing-shared-library" and f.path == f"{code}:python/uses.so"


def test_sam_build_shape(tmp_path: Path, elves: Elves) -> None:
    layer_files = install_wheel(_pure(tmp_path, "pure"), "python/")
    layer_files["python/fast.so"] = elves.read("fcntl64")
    build = sam_build_tree(
        tmp_path / "proj",
        {
            "InferenceFunction": {"app.py": b"import pure\n"},
            "TorchLayer": layer_files,
        },
    )
    fn, layer = build / "InferenceFunction", build / "TorchLayer"
    alone = check([fn], runtime="python3.12")  # a SAM function dir alone is the function
    assert alone.ok and alone.findings == ()
    (inp,) = alone.to_dict()["inputs"]
    assert inp["shape"] == "sam-build" and inp["shape_name"] == "InferenceFunction"
    assert inp["role"] == "function" and "SAM build output" in inp["described"]
    r = check([fn, layer], runtime="python3.11")
    assert {f.code for f in r.findings} == {"glibc-too-new"}
    assert [i["role"] for i in r.to_dict()["inputs"]] == ["function", "layer"]
    assert check([fn, layer], runtime="python3.12").ok
    with pytest.raises(InputError, match=r"SAM's build directory.*InferenceFunction"):
        check([build], runtime="python3.12")


def test_cdk_asset_shape(tmp_path: Path) -> None:
    assets = cdk_out_tree(
        tmp_path / "app",
        {
            "fn": {"index.py": b"def handler(e, c):\n    return 1\n"},
            "layer": install_wheel(_pure(tmp_path, "dep", "1.0"), "python/"),
        },
    )
    r = check([assets["fn"], assets["layer"]], runtime="python3.12")
    assert r.ok and r.findings == ()
    shapes = [(i["shape"], i["role"]) for i in r.to_dict()["inputs"]]
    assert shapes == [("cdk-asset", "function"), ("cdk-asset", "layer")]
    with pytest.raises(InputError, match="CDK's cloud assembly"):
        check([tmp_path / "app" / "cdk.out"])


def test_plain_directory_alone_is_a_layer_like_its_zip(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "flat", {"app.py": b"x = 1\n"})
    (f,) = check([root], runtime="python3.12").findings  # the zip of it would say the same
    assert f.code == "not-on-sys-path"
    assert check([root], runtime="python3.12", function=root).ok


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchwheel", "check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_directory(tmp_path: Path, elves: Elves) -> None:
    root = write_tree(tmp_path / "layer", {"python/fast.so": elves.read("fcntl64")})
    assert main(["check", str(root), "--runtime", "python3.12"]) == 0
    done = run_cli(root, "--runtime", "python3.11", "--json")
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["inputs"][0]["kind"] == "directory" and data["truth"]["source"] == "facts"
    assert [f["code"] for f in data["findings"]] == ["glibc-too-new"]
    missing = run_cli(tmp_path / "nope", "--runtime", "python3.12")
    assert missing.returncode == 2 and "nope" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


# -- docs/ci.md recipes, run verbatim ------------------------------------------------------------


def _sam_project(tmp_path: Path, name: str, layer_files: dict[str, bytes]) -> Path:
    fixture = tmp_path / f"{name}-fixture"
    sam_build_tree(
        fixture,
        {"InferenceFunction": {"app.py": b"import pure\n"}, "TorchLayer": layer_files},
    )
    return fixture


SAM_STUB = """case "$1" in
  build) mkdir -p .aws-sam && cp -r "$FIXTURE/.aws-sam/build" .aws-sam/ ;;
  deploy) echo "sam deploy ran" ;;
esac"""


def test_ci_recipe_sam(tmp_path: Path) -> None:
    (block,) = shell_blocks("ci.md", "AWS SAM: check")
    assert "torchwheel check .aws-sam/build/" in block
    good = install_wheel(_pure(tmp_path, "pure"), "python/")
    seed = make_wheel(tmp_path / "w", "torch", "2.13.0", tags="cp312-cp312-manylinux_2_28_x86_64")
    bad = {**good, "python/" + seed.name: seed.read_bytes()}  # a wheel copied, not installed
    for name, files, code in (("good", good, 0), ("bad", bad, 1)):
        project = tmp_path / name
        project.mkdir()
        fixture = _sam_project(tmp_path, name, files)
        done = run_recipe(block, project, {"sam": SAM_STUB}, {"FIXTURE": str(fixture)})
        assert done.returncode == code, done.stdout + done.stderr
        assert ("sam deploy ran" in done.stdout) == (code == 0)
        if code:
            assert "wheel-not-extracted" in done.stdout


def test_ci_recipe_cdk(tmp_path: Path) -> None:
    (block,) = shell_blocks("ci.md", "AWS CDK: check")
    layer = install_wheel(_pure(tmp_path, "dep", "1.0"), "python/")
    app = _pure(tmp_path, "app", "1.0", ["dep>=1", "absent"])
    for name, extra, code in (("good", {}, 0), ("bad", install_wheel(app, "python/"), 1)):
        fixture = tmp_path / f"{name}-fixture"
        cdk_out_tree(fixture, {"fn": {"index.py": b"import dep\n"}, "layer": {**layer, **extra}})
        project = tmp_path / name
        project.mkdir()
        done = run_recipe(
            block, project, {"cdk": 'cp -r "$FIXTURE/cdk.out" .'}, {"FIXTURE": str(fixture)}
        )
        assert done.returncode == code, done.stdout + done.stderr
        assert "CDK asset" in done.stdout  # the shape, named
        if code:
            assert "missing-dependency" in done.stdout and "absent" in done.stdout
