"""The loader model (torchwheel.checks.ldso) rule by rule, and against the host's real loader.

The first half feeds the pure model hand-made ELF facts, one glibc rule per test. The second
half compiles objects with gcc (tests/support/loaderelves.py), asks the host's glibc loader
(``ctypes.CDLL`` in a fresh ``env -i`` interpreter) whether a layout loads, and requires the
model — and ``check`` on the same files zipped as a layer — to give the same answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.layers import make_layer
from tests.support.loaderelves import LoaderElves, dlopen, lay_out
from torchwheel.checks import check
from torchwheel.checks.ldso import (
    NO_SYSTEM,
    Edge,
    Environment,
    SystemLibrary,
    Tree,
    expand_tokens,
    load,
    split_version,
    version_problems,
)
from torchwheel.checks.system import LambdaSystem
from torchwheel.elf import ELFInfo, VersionNeed, elf_hash, parse_elf
from torchwheel.errors import DataError
from torchwheel.targets import (
    _validate,
    facts,
    ld_library_path,
    make_target,
    runtimes,
    system_libraries,
)

X86 = Environment(machine="x86_64", ld_library_path=("/lib64", "/opt/lib"))
EXT = "/opt/python/pkg/_ext.cpython-311-x86_64-linux-gnu.so"
LIBS = "/opt/python/pkg.libs"


def elf(
    name: str,
    *needed: str,
    rpath: tuple[str, ...] = (),
    runpath: tuple[str, ...] = (),
    soname: str | None = None,
    machine: str = "x86_64",
    defs: tuple[str, ...] = (),
    needs: tuple[tuple[str, str], ...] = (),
    weak: bool = False,
) -> ELFInfo:
    return ELFInfo(
        name=name,
        bits=64,
        little_endian=True,
        machine=machine,
        machine_code=62 if machine == "x86_64" else 183,
        type="DYN",
        osabi=0,
        needed=needed,
        soname=soname,
        rpath=rpath,
        runpath=runpath,
        version_defs=defs,
        version_needs=tuple(VersionNeed(f, v, elf_hash(v), weak=weak) for f, v in needs),
        has_dynamic=True,
    )


def tree(elves: Mapping[str, ELFInfo], symlinks: Mapping[str, str] | None = None) -> Tree:
    links = dict(symlinks or {})
    return Tree(files={*elves, *links}, elves=dict(elves), symlinks=links)


def found(result_edges: list[Edge], name: str) -> tuple[str, str | None]:
    (edge,) = [e for e in result_edges if e.name == name]
    return edge.how, edge.found


# -- the search order, rule by rule ---------------------------------------------------------------


def test_inherited_rpath_finds_a_library_without_rpath() -> None:
    # the auditwheel shape: only the extension module has DT_RPATH
    t = tree(
        {
            EXT: elf(EXT, "libA.so", rpath=("$ORIGIN/../pkg.libs",)),
            f"{LIBS}/libA.so": elf("libA", "libB.so"),
            f"{LIBS}/libB.so": elf("libB"),
        }
    )
    r = load(EXT, t, X86)
    assert r.missing() == []
    assert found(r.edges, "libB.so") == ("rpath", f"{LIBS}/libB.so")
    assert r.chain(f"{LIBS}/libB.so") == (EXT, f"{LIBS}/libA.so", f"{LIBS}/libB.so")


def test_runpath_on_the_requester_stops_inherited_rpath() -> None:
    t = tree(
        {
            EXT: elf(EXT, "libA.so", rpath=("$ORIGIN/../pkg.libs",)),
            f"{LIBS}/libA.so": elf("libA", "libB.so", runpath=("$ORIGIN/nowhere",)),
            f"{LIBS}/libB.so": elf("libB"),
        }
    )
    r = load(EXT, t, X86)
    assert [(e.requester, e.name) for e in r.missing()] == [(f"{LIBS}/libA.so", "libB.so")]


def test_an_object_with_runpath_contributes_no_rpath() -> None:
    # elf/get-dynamic-info.h: with both, DT_RPATH is ignored
    t = tree(
        {
            EXT: elf(EXT, "libA.so", rpath=("/x",), runpath=("/y",)),
            "/x/libA.so": elf("libA"),
        }
    )
    assert [e.name for e in load(EXT, t, X86).missing()] == ["libA.so"]


def test_runpath_is_not_inherited() -> None:
    t = tree(
        {
            EXT: elf(EXT, "libA.so", runpath=("$ORIGIN/libs",)),
            "/opt/python/pkg/libs/libA.so": elf("libA", "libB.so"),
            "/opt/python/pkg/libs/libB.so": elf("libB"),
        }
    )
    r = load(EXT, t, X86)
    assert found(r.edges, "libA.so")[0] == "runpath"
    assert [e.name for e in r.missing()] == ["libB.so"]


def test_rpath_then_ld_library_path_then_runpath() -> None:
    both = {
        "/r/libA.so": elf("r"),
        "/opt/lib/libA.so": elf("ld"),
        "/u/libA.so": elf("u"),
    }
    with_rpath = load(EXT, tree({EXT: elf(EXT, "libA.so", rpath=("/r",)), **both}), X86)
    assert found(with_rpath.edges, "libA.so") == ("rpath", "/r/libA.so")
    with_runpath = load(EXT, tree({EXT: elf(EXT, "libA.so", runpath=("/u",)), **both}), X86)
    assert found(with_runpath.edges, "libA.so") == ("ld_library_path", "/opt/lib/libA.so")
    only_runpath = {k: v for k, v in both.items() if k != "/opt/lib/libA.so"}
    r = load(EXT, tree({EXT: elf(EXT, "libA.so", runpath=("/u",)), **only_runpath}), X86)
    assert found(r.edges, "libA.so") == ("runpath", "/u/libA.so")


def test_grandparent_rpath_and_each_objects_own_origin() -> None:
    t = tree(
        {
            EXT: elf(EXT, "libA.so", rpath=("$ORIGIN/../pkg.libs",)),
            f"{LIBS}/libA.so": elf("libA", "libB.so", rpath=("$ORIGIN/sub",)),
            f"{LIBS}/sub/libB.so": elf("libB", "libC.so"),
            f"{LIBS}/libC.so": elf("libC"),  # found through the root's RPATH, two levels up
        }
    )
    r = load(EXT, t, X86)
    assert r.missing() == []
    assert found(r.edges, "libC.so") == ("rpath", f"{LIBS}/libC.so")


def test_already_loaded_objects_match_by_soname_first() -> None:
    t = tree(
        {
            EXT: elf(EXT, "libX-ab12.so.1", "libB.so", rpath=("$ORIGIN/../pkg.libs",)),
            f"{LIBS}/libX-ab12.so.1": elf("x", soname="libX.so.1"),
            f"{LIBS}/libB.so": elf("libB", "libX.so.1", runpath=("/nowhere",)),
        }
    )
    r = load(EXT, t, X86)
    assert r.missing() == []
    assert found(r.edges, "libX.so.1") == ("loaded", f"{LIBS}/libX-ab12.so.1")


def test_names_with_a_slash_and_tokens() -> None:
    t = tree(
        {
            EXT: elf(EXT, "$ORIGIN/sub/libA.so", "lib/libB.so"),
            "/opt/python/pkg/sub/libA.so": elf("a"),
            "/var/task/lib/libB.so": elf("b"),  # relative to the working directory
        }
    )
    r = load(EXT, t, X86)
    assert r.missing() == []
    assert found(r.edges, "lib/libB.so") == ("path", "/var/task/lib/libB.so")
    env = replace(X86, platform="haswell")
    assert expand_tokens("${ORIGIN}/$LIB/$PLATFORM/$ORIGINAL", "/o", env) == (
        "/o/lib64/haswell/$ORIGINAL"
    )


def test_files_of_another_machine_are_skipped() -> None:
    arm = elf("arm", machine="aarch64")
    t = tree({EXT: elf(EXT, "libA.so"), "/lib64/libA.so": arm, "/opt/lib/libA.so": elf("x")})
    assert found(load(EXT, t, X86).edges, "libA.so") == ("ld_library_path", "/opt/lib/libA.so")
    only_arm = tree({EXT: elf(EXT, "libA.so"), "/lib64/libA.so": arm})
    (edge,) = load(EXT, only_arm, X86).missing()
    assert edge.skipped == ("/lib64/libA.so",)


def test_symlinks_files_and_directories() -> None:
    t = tree(
        {
            EXT: elf(EXT, "libA.so.1", "libA.so", rpath=("$ORIGIN/../pkg.libs",)),
            "/opt/python/real/libA.so.1.2.3": elf("a"),
        },
        symlinks={
            "/opt/python/pkg.libs": "real",  # a symlinked directory
            "/opt/python/real/libA.so.1": "libA.so.1.2.3",
            "/opt/python/real/libA.so": "/opt/python/real/libA.so.1",
        },
    )
    r = load(EXT, t, X86)
    assert r.missing() == []
    assert found(r.edges, "libA.so") == ("loaded", "/opt/python/real/libA.so.1.2.3")  # same file
    loop = tree({EXT: elf(EXT, "libA.so")}, symlinks={"/opt/lib/libA.so": "libA.so"})
    dangling = tree({EXT: elf(EXT, "libA.so")}, symlinks={"/opt/lib/libA.so": "gone.so"})
    assert load(EXT, loop, X86).missing() and load(EXT, dangling, X86).missing()


class _System:
    """A system with libz.so.1 in /lib64 (``shadow``) or only as the default answer."""

    def __init__(self, shadow: bool, lib: SystemLibrary) -> None:
        self.shadow = shadow
        self.lib = lib

    def find(self, directory: str, name: str) -> SystemLibrary | None:
        ok = self.shadow and directory == "/lib64" and name == self.lib.name
        return self.lib if ok else None

    def default(self, name: str) -> SystemLibrary | None:
        return self.lib if name == self.lib.name else None


def test_system_libraries_in_search_order_and_as_fallback() -> None:
    zlib = SystemLibrary(
        "libz.so.1", "/lib64/libz.so.1", "zlib 1.2.7", ceilings={"ZLIB": (1, 2, 7)}
    )
    files = {EXT: elf(EXT, "libz.so.1", needs=(("libz.so.1", "ZLIB_1.2.9"),))}
    bundled = {**files, "/opt/lib/libz.so.1": elf("z", defs=("libz.so.1", "ZLIB_1.2.9"))}
    shadowing = _System(True, zlib)
    r = load(EXT, tree(bundled), X86, shadowing)  # /lib64 comes before /opt/lib
    assert found(r.edges, "libz.so.1") == ("ld_library_path", "/lib64/libz.so.1")
    (problem,) = version_problems(r)
    assert (problem.version, problem.system) == ("ZLIB_1.2.9", zlib)
    fallback = load(EXT, tree(bundled), X86, _System(False, zlib))
    assert found(fallback.edges, "libz.so.1")[1] == "/opt/lib/libz.so.1"
    assert version_problems(fallback) == []
    alone = load(EXT, tree(files), X86, _System(False, zlib))
    assert found(alone.edges, "libz.so.1") == ("default", "/lib64/libz.so.1")
    assert load(EXT, tree(files), X86, NO_SYSTEM).missing()


def test_version_problems_follow_glibcs_rules() -> None:
    lib = f"{LIBS}/libA.so"

    def problems(defs: tuple[str, ...], weak: bool = False) -> list[str]:
        t = tree(
            {
                EXT: elf(
                    EXT,
                    "libA.so",
                    rpath=("$ORIGIN/../pkg.libs",),
                    needs=(("libA.so", "A_2.0"),),
                    weak=weak,
                ),
                lib: elf("a", defs=defs),
            }
        )
        return [p.version for p in version_problems(load(EXT, t, X86))]

    assert problems(("libA.so", "A_1.0")) == ["A_2.0"]
    assert problems(("libA.so", "A_1.0", "A_2.0")) == []
    assert problems(()) == []  # no version definitions at all: accepted
    assert problems(("libA.so", "A_1.0"), weak=True) == []
    z = SystemLibrary("libz.so.1", "/lib64/libz.so.1", ceilings={"ZLIB": (1, 2, 7), "X": None})
    assert z.defines("ZLIB_1.2.5.2") and not z.defines("ZLIB_1.2.7.1")
    assert z.defines("X_1.0") is False and z.defines("OTHER_1.0") is None
    assert z.defines("GLIBC_PRIVATE") is None
    assert split_version("OPENSSL_1.0.1_EC") is None and split_version("GCC_7.0.0") == (
        "GCC",
        (7, 0, 0),
    )


# -- the Lambda images as the system --------------------------------------------------------------


def test_lambda_system_from_the_facts() -> None:
    al2 = LambdaSystem(make_target("x86_64", "3.11"))
    z = al2.find("/lib64", "libz.so.1")
    assert z is not None and z.confirmed and z.defines("ZLIB_1.2.9") is False
    assert al2.find("/opt/lib", "libz.so.1") is None
    assert al2.find("/lib64", "libgomp.so.1") is None and al2.default("libgomp.so.1") is None
    assert al2.find("/var/lang/lib", "libpython3.11.so.1.0") is not None
    gcc = al2.default("libgcc_s.so.1")
    assert gcc is not None and gcc.defines("GCC_7.0.0") and gcc.defines("GCC_12.0.0") is False
    al2023 = LambdaSystem(make_target("x86_64", "3.12"))
    assert al2023.find("/lib64", "libz.so.1") is None  # unconfirmed: never shadows a copy
    z3 = al2023.default("libz.so.1")
    assert z3 is not None and not z3.confirmed and z3.defines("ZLIB_1.2.9")
    provided = LambdaSystem(make_target("x86_64", "3.11", runtime="provided.al2"))
    assert provided.find("/var/lang/lib", "libpython3.11.so.1.0") is None


def test_every_runtime_has_its_library_facts_with_sources() -> None:
    sources = facts()["sources"]
    for rt in runtimes():
        dirs = ld_library_path(rt)
        assert "/opt/lib" in dirs and dirs.index("/lib64") < dirs.index("/opt/lib"), rt.name
        libs = system_libraries(rt)
        assert {"libc.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libz.so.1"} <= set(libs)
        for lib in libs.values():
            assert all(s.strip() in sources for s in lib.source.split(";")), lib
            assert lib.present == "yes" or lib.note, lib


def test_the_facts_loader_refuses_uncited_or_unexplained_libraries() -> None:
    data = json.loads(json.dumps(facts()))
    libs = data["system_libraries"]["images"]["Amazon Linux 2"]["libraries"]
    libs["libz.so.1"]["source"] = "nowhere"
    with pytest.raises(DataError, match="unknown source 'nowhere'"):
        _validate(data)
    data = json.loads(json.dumps(facts()))
    data["system_libraries"]["images"]["Amazon Linux 2023"]["libraries"]["libz.so.1"].pop("note")
    with pytest.raises(DataError, match="no note"):
        _validate(data)
    data = json.loads(json.dumps(facts()))
    del data["ld_library_path"]["runtimes"]["python3.12"]
    with pytest.raises(DataError, match="LD_LIBRARY_PATH"):
        _validate(data)


# -- against the host's loader ---------------------------------------------------------------------

EXT311 = "_ext.cpython-311-x86_64-linux-gnu.so"


def _cli_check(layer: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchwheel", "check", str(layer), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
    )


def test_runpath_on_the_loaded_library_fails_here_and_in_check(
    loader_elves: LoaderElves, tmp_path: Path
) -> None:
    """DT_RUNPATH on libA: the extension module's DT_RPATH no longer finds libB."""
    for which, loads in (("liba_plain", True), ("liba_runpath", False)):
        files = {
            f"python/pkg/{EXT311}": loader_elves.read("ext_rpath"),
            "python/pkg.libs/libA.so": loader_elves.read(which),
            "python/pkg.libs/libB.so": loader_elves.read("lib_b"),
        }
        opt = lay_out(tmp_path / which / "opt", files)
        real = dlopen(opt / "python" / "pkg" / EXT311)
        assert (real.returncode == 0) is loads, real.stderr
        layer = make_layer(tmp_path / f"{which}.zip", files)
        report = check([layer], runtime="python3.11")
        assert report.ok is loads, [f.message for f in report.findings]
        if loads:
            continue
        assert "libB.so: cannot open shared object file" in real.stderr
        (f,) = report.findings
        assert f.code == "missing-shared-library" and f.severity == "error"
        assert f.path.endswith("python/pkg.libs/libA.so")
        assert f"libB.so (loaded via python/pkg/{EXT311} → libA.so)" in f.message
        assert f.detail["chain"] == [EXT311, "libA.so"]
        assert _cli_check(layer, "--runtime", "python3.11").returncode == 1


def test_a_library_found_only_through_opt_lib(loader_elves: LoaderElves, tmp_path: Path) -> None:
    ext, lib = loader_elves.read("ext_c"), loader_elves.read("lib_c")
    opt = lay_out(tmp_path / "opt", {f"python/{EXT311}": ext, "lib/libC.so": lib})
    assert dlopen(opt / "python" / EXT311).returncode != 0
    assert dlopen(opt / "python" / EXT311, library_path=str(opt / "lib")).returncode == 0
    with_lib = make_layer(tmp_path / "with.zip", {f"python/{EXT311}": ext, "lib/libC.so": lib})
    assert check([with_lib], runtime="python3.11").findings == ()
    # the same library in a second layer: still /opt/lib
    alone = make_layer(tmp_path / "alone.zip", {f"python/{EXT311}": ext})
    libs = make_layer(tmp_path / "libs.zip", {"lib/libC.so": lib})
    assert check([alone, libs], runtime="provided.al2023", python="3.11").ok
    (f,) = check([alone], runtime="python3.11").findings
    assert f.code == "missing-shared-library" and f.severity == "error"
    beside = make_layer(tmp_path / "beside.zip", {f"python/{EXT311}": ext, "python/libC.so": lib})
    (g,) = check([beside], runtime="python3.11").findings
    assert "libC.so is in the layer at /opt/python/libC.so but not on the search path" in g.message


def test_zlib_1_2_9_need_fails_on_python311_and_passes_on_python312(
    loader_elves: LoaderElves, tmp_path: Path
) -> None:
    if loader_elves.ext_z is None:
        pytest.skip("the host's zlib cannot be linked against")
    info = parse_elf(loader_elves.read("libzneed"))
    assert ("libz.so.1", "ZLIB_1.2.9") in {(n.file, n.name) for n in info.version_needs}
    files = {
        "python/pkg/zext.so": loader_elves.read("ext_z"),
        "python/pkg.libs/libzneed.so": loader_elves.read("libzneed"),
    }
    layer = make_layer(tmp_path / "z.zip", files)
    old = check([layer], runtime="python3.11")
    (f,) = old.errors
    assert f.code == "version-not-found" and f.path.endswith("python/pkg.libs/libzneed.so")
    assert "needs ZLIB_1.2.9 from libz.so.1 (loaded via python/pkg/zext.so → libzneed.so)" in (
        f.message
    )
    assert "Amazon Linux 2 has zlib 1.2.7 (up to ZLIB_1.2.7)" in f.message
    assert _cli_check(layer, "--runtime", "python3.11").returncode == 1
    new = check([layer], runtime="python3.12")
    assert new.ok and [w.code for w in new.warnings] == ["unconfirmed-system-library"]
    assert _cli_check(layer, "--runtime", "python3.12").returncode == 0
    # a newer zlib in /opt/lib does not help: /lib64 comes first in LD_LIBRARY_PATH
    host_z = subprocess.run(["gcc", "-print-file-name=libz.so.1"], capture_output=True, text=True)
    z = Path(host_z.stdout.strip())
    if not z.is_file():
        return
    z = z.resolve()
    in_opt_lib = make_layer(tmp_path / "optlib.zip", {**files, "lib/libz.so.1": z.read_bytes()})
    assert not check([in_opt_lib], runtime="python3.11").ok
    # beside libzneed it is found first, through the extension module's DT_RPATH
    beside = make_layer(
        tmp_path / "beside.zip", {**files, "python/pkg.libs/libz.so.1": z.read_bytes()}
    )
    assert check([beside], runtime="python3.11").ok


class _Host:
    """The host's own libraries as the system (for the model run on real files)."""

    DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64")

    def find(self, directory: str, name: str) -> SystemLibrary | None:
        return None

    def default(self, name: str) -> SystemLibrary | None:
        for d in self.DIRS:
            p = Path(d) / name
            if p.is_file():
                defs = frozenset(parse_elf(p.read_bytes(), name=str(p)).version_defs)
                return SystemLibrary(name, str(p), versions=defs or None)
        return None


def _model_loads(opt: Path, root: Path, library_path: tuple[str, ...] = ()) -> bool:
    elves = {str(p): parse_elf(p.read_bytes(), name=str(p)) for p in opt.rglob("*.so*")}
    env = Environment(machine="x86_64", ld_library_path=library_path, cwd=str(opt))
    result = load(str(root), Tree(files=set(elves), elves=elves), env, _Host())
    return not result.missing() and not version_problems(result)


def test_the_model_and_the_host_loader_agree(loader_elves: LoaderElves, tmp_path: Path) -> None:
    """Same files on disk: the model's answer is the host's dlopen answer, case by case."""
    if os.uname().machine != "x86_64" or loader_elves.ext_z is None:
        pytest.skip("written for an x86_64 host whose zlib can be linked")
    e = loader_elves
    cases: list[tuple[str, dict[str, bytes], str, str | None]] = [
        (
            "rpath",
            {
                "pkg/e.so": e.read("ext_rpath"),
                "pkg.libs/libA.so": e.read("liba_plain"),
                "pkg.libs/libB.so": e.read("lib_b"),
            },
            "pkg/e.so",
            None,
        ),
        (
            "runpath",
            {
                "pkg/e.so": e.read("ext_rpath"),
                "pkg.libs/libA.so": e.read("liba_runpath"),
                "pkg.libs/libB.so": e.read("lib_b"),
            },
            "pkg/e.so",
            None,
        ),
        ("no-path", {"e.so": e.read("ext_c"), "lib/libC.so": e.read("lib_c")}, "e.so", None),
        ("ld-path", {"e.so": e.read("ext_c"), "lib/libC.so": e.read("lib_c")}, "e.so", "lib"),
        (
            "zlib-new",
            {"pkg/z.so": e.read("ext_z"), "pkg.libs/libzneed.so": e.read("libzneed")},
            "pkg/z.so",
            None,
        ),
        (
            "zlib-old",
            {
                "pkg/z.so": e.read("ext_z"),
                "pkg.libs/libzneed.so": e.read("libzneed"),
                "old/libz.so.1": e.read("old_libz"),
            },
            "pkg/z.so",
            "old",
        ),
    ]
    answers = {}
    for name, files, root, lib_dir in cases:
        opt = lay_out(tmp_path / name, files)
        ld = () if lib_dir is None else (str(opt / lib_dir),)
        real = dlopen(opt / root, library_path=ld[0] if ld else None)
        answers[name] = (real.returncode == 0, _model_loads(opt, opt / root, ld))
        if name == "zlib-old":
            assert "version `ZLIB_1.2.9' not found" in real.stderr
    assert all(real == model for real, model in answers.values()), answers
    assert {n for n, (real, _m) in answers.items() if real} == {"rpath", "ld-path", "zlib-new"}
