"""docs/ci.md's recipes, run as written (issue 12).

Every block marked ``<!-- recipe-file: PATH -->`` is written to a fresh project directory as
PATH; every ``<!-- recipe-run: NAME -->`` block is run there with ``bash -e``. The commands
are the documented ones, byte for byte, with three facts of this machine:

- the index: ``TORCHWHEEL_INDEX_URL`` points at a loopback index serving the real torch 2.13.0
  CPU wheel, its dependencies and zstandard (all from ``pip download``; skipped without them);
- the target: that torch wheel is cp311 manylinux_2_28 x86_64, so the project's
  ``[tool.torchwheel]`` (the documented block) gets ``runtime = "provided.al2023"``,
  ``python = "3.11"``, ``arch = "x86_64"`` instead of python3.12/arm64 — its other keys
  (``strict``, ``ignore``) stay as documented;
- ``pip install torchwheel`` steps are not run: torchwheel is this checkout, installed; tools
  that are not torchwheel's (``sam``, ``cdk``, ``terraform``) are not run — SAM's part is
  what ``sam build`` runs, ``make build-<LogicalId>`` with ``ARTIFACTS_DIR``.

A layer a recipe builds must pass its recipe's check; the same check on a layer in the seed's
layout (the torch wheel copied into ``python/`` unextracted) must fail. The builds are real
packed torch builds (about a minute each on two idle cores), so these tests are marked
``torch``; the parsing tests run in the quick tier.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.indexserver import IndexServer

ROOT = Path(__file__).resolve().parents[1]
CI_MD = ROOT / "docs" / "ci.md"
#: the target the real torch wheel of the tests fits (tests/support/torch.py)
TEST_TARGET = {"runtime": "provided.al2023", "python": "3.11", "arch": "x86_64"}
_MARK = re.compile(r"<!-- recipe-(file|run): (\S+) -->\n```[a-z]*\n(.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    kind: str  # "file" or "run"
    name: str  # the file's path, or the recipe's name
    text: str


def recipe_blocks() -> list[Block]:
    """The marked blocks of docs/ci.md, in order."""
    return [Block(k, n, t) for k, n, t in _MARK.findall(CI_MD.read_text(encoding="utf-8"))]


def block(name: str) -> str:
    found = [b.text for b in recipe_blocks() if b.name == name]
    assert len(found) == 1, f"docs/ci.md: {len(found)} recipe blocks named {name}"
    return found[0]


def project_config() -> str:
    """The documented ``[tool.torchwheel]`` with the test's target in place of arm64/3.12."""
    lines = []
    for line in block("pyproject.toml").splitlines():
        key = line.split("=", 1)[0].strip().lstrip("# ")
        if key in TEST_TARGET:
            continue
        lines.append(line)
        if line.strip() == "[tool.torchwheel]":
            lines.extend(f'{k} = "{v}"' for k, v in TEST_TARGET.items())
    return "\n".join(lines) + "\n"


def run_steps(workflow: dict[str, Any]) -> list[str]:
    """A workflow's ``run`` commands in order (a single job), minus ``pip install`` steps."""
    (job,) = workflow["jobs"].values()
    return [
        s["run"]
        for s in job["steps"]
        if "run" in s and not s["run"].strip().startswith("pip install")
    ]


# -- the blocks (quick tier) -------------------------------------------------------------------


def test_the_recipes_are_all_there() -> None:
    names = [b.name for b in recipe_blocks()]
    assert names == [
        "pyproject.toml",
        ".github/workflows/layer.yml",
        ".github/workflows/layer-action.yml",
        ".pre-commit-config.yaml",
        "Makefile",
        "cdk",
        "terraform",
        "layer.tf",
    ]
    wf = yaml.safe_load(block(".github/workflows/layer.yml"))
    steps = run_steps(wf)
    assert any("torchwheel build torch --packed" in s for s in steps)
    assert any("torchwheel check" in s and "--format github" in s for s in steps)
    assert "\tt" in block("Makefile")  # make wants tabs
    config = project_config()
    assert 'runtime = "provided.al2023"' in config and "strict = true" in config
    assert "python3.12" not in config and "arm64" not in config


def test_the_action_declares_what_its_steps_use() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    used = set(re.findall(r"\$\{\{ inputs\.([a-z]+) \}\}", (ROOT / "action.yml").read_text()))
    assert used == set(action["inputs"])
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["torchwheel-check"]


def test_terraform_block_is_formatted_hcl(tmp_path: Path) -> None:
    tf = shutil.which("terraform")
    if tf is None:
        pytest.skip("terraform is not installed")
    (tmp_path / "layer.tf").write_text(block("layer.tf"))
    proc = subprocess.run(
        [tf, "fmt", "-check", "-diff", "layer.tf"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- running them (torch tier) -----------------------------------------------------------------


@pytest.fixture(scope="session")
def recipe_index(
    torch_wheel: Path, torch_dep_wheels: Path, zstandard_wheel: Path
) -> Iterator[IndexServer]:
    """A loopback index with the real torch wheel, its dependencies and zstandard."""
    from packaging.utils import parse_wheel_filename

    wheels = [torch_wheel, zstandard_wheel, *sorted(torch_dep_wheels.glob("*.whl"))]
    root = torch_wheel.parent.parent / "recipe-index"
    server = IndexServer(root=root).start()
    by_project: dict[str, list[Path]] = {}
    for w in wheels:
        by_project.setdefault(str(parse_wheel_filename(w.name)[0]), []).append(w)
    for project, files in by_project.items():
        server.add_project(project, files)
    yield server
    server.stop()


@dataclass
class Project:
    """A fresh project directory, the environment recipes run in, and seed-style layers."""

    dir: Path
    env: dict[str, str]
    seed_zip: Path
    seed_tree: Path

    def bash(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=1800,
        )

    def bash_timed(self, script: str) -> tuple[int, list[tuple[float, str]]]:
        """Run ``script``; its exit status and each stderr line with the second it arrived."""
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.dir,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stderr]
        return proc.wait(timeout=1800), lines

    def write(self, name: str) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block(name))
        return path


@pytest.fixture(scope="session")
def recipe_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recipe-cache")


@pytest.fixture
def project(
    tmp_path: Path, recipe_index: IndexServer, recipe_cache: Path, torch_wheel: Path
) -> Project:
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(project_config())
    env = dict(os.environ)
    for var in ("TORCHWHEEL_EXTRA_INDEX_URL", "TORCHWHEEL_FIND_LINKS"):
        env.pop(var, None)
    env.update(
        TORCHWHEEL_INDEX_URL=recipe_index.url,
        TORCHWHEEL_CACHE_DIR=str(recipe_cache),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    # the seed's layout: the wheel file copied into python/, not installed
    seed_zip = tmp_path / "seed" / "layer.zip"
    seed_zip.parent.mkdir()
    with zipfile.ZipFile(seed_zip, "w", zipfile.ZIP_STORED) as zf:
        zf.write(torch_wheel, f"python/{torch_wheel.name}")
    seed_tree = tmp_path / "seed-tree"
    (seed_tree / "python").mkdir(parents=True)
    os.link(torch_wheel, seed_tree / "python" / torch_wheel.name)
    return Project(proj, env, seed_zip, seed_tree)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _fails_on_seed(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "wheel-not-extracted" in proc.stdout + proc.stderr


def _swap(layer: Path, seed: Path) -> None:
    """Put the seed-style layer where the recipe's layer was."""
    if layer.is_dir():
        shutil.rmtree(layer)
        shutil.copytree(seed, layer, copy_function=os.link)
    else:
        shutil.copyfile(seed, layer)


@pytest.mark.torch
def test_github_actions_recipe(project: Project) -> None:
    steps = run_steps(yaml.safe_load(project.write(".github/workflows/layer.yml").read_text()))
    # the build's steps show in the log as they finish, not all at the end
    rc, timed = project.bash_timed(steps[0])
    assert rc == 0, timed
    when = {line.split(":")[0]: t for t, line in timed}
    assert list(when) == ["resolve", "download", "install", "slim", "pack", "zip", "cleanup"]
    assert when["pack"] - when["install"] > 1.0  # packing torch takes seconds: seen apart
    assert re.search(r"^pack: [\d,]+ files, .* s$", timed[4][1]), timed
    logs = [_ok(project.bash(s)) for s in steps[1:]]
    assert "torchwheel check: OK" in logs[0] and "::error" not in logs[0]
    assert "::warning" not in logs[0]  # informational findings are ::notice
    # the action's variant: the same layer (byte-reproducible: its build step is the one
    # above, not run twice), then action.yml's steps with the recipe's inputs
    action_wf = yaml.safe_load(project.write(".github/workflows/layer-action.yml").read_text())
    assert run_steps(action_wf) == steps[:1]
    (job,) = action_wf["jobs"].values()
    (uses,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith("OWNER/torchwheel")]
    _ok(run_action(project, uses["with"]))
    _swap(project.dir / "layer.zip", project.seed_zip)
    check = project.bash(steps[1])
    _fails_on_seed(check)
    assert check.returncode == 1
    assert "::error file=layer.zip,title=wheel-not-extracted::python/" in check.stdout
    _fails_on_seed(run_action(project, uses["with"]))


def run_action(project: Project, given: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run action.yml's steps as GitHub runs a composite action: ``${{ inputs.X }}`` from
    ``given`` or the input's default, ``GITHUB_ACTION_PATH`` the action's checkout."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    inputs = {k: str(given.get(k, v.get("default", ""))) for k, v in action["inputs"].items()}
    proc = None
    for s in action["runs"]["steps"]:
        env = dict(project.env, GITHUB_ACTION_PATH=str(ROOT))
        for k, v in s.get("env", {}).items():
            env[k] = re.sub(r"\$\{\{ inputs\.([a-z]+) \}\}", lambda m: inputs[m.group(1)], v)
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", s["run"]],
            cwd=project.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            return proc
    assert proc is not None
    return proc


@pytest.mark.torch
def test_pre_commit_recipe(project: Project) -> None:
    config = yaml.safe_load(project.write(".pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    (hook_cfg,) = repo["hooks"]
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    hook = {**hooks[hook_cfg["id"]], **hook_cfg}
    _ok(project.bash("torchwheel build torch --packed --slim -o layers/torch-layer.zip"))

    def run_hook() -> subprocess.CompletedProcess[str]:
        files = sorted(
            str(p.relative_to(project.dir))
            for p in project.dir.rglob("*")
            if p.is_file() and re.search(hook["files"], str(p.relative_to(project.dir)))
        )
        cmd = [*hook["entry"].split(), *hook.get("args", []), *files]
        return subprocess.run(
            cmd, cwd=project.dir, env=project.env, capture_output=True, text=True, timeout=600
        )

    assert "OK" in _ok(run_hook())
    shutil.copyfile(project.seed_zip, project.dir / "layers" / "seed-layer.zip")
    _fails_on_seed(run_hook())


@pytest.mark.torch
def test_sam_makefile_recipe(project: Project) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    project.write("Makefile")
    artifacts = project.dir / ".aws-sam" / "build" / "TorchLayer"
    artifacts.mkdir(parents=True)  # SAM makes it, empty, before running make
    out = _ok(project.bash(f"make build-TorchLayer ARTIFACTS_DIR={artifacts}"))
    assert (artifacts / "python" / "torchwheel_loader.py").is_file()
    assert "pack: " in out and "OK" in out
    _fails_on_seed(project.bash(f"make check-layer LAYER={project.seed_tree}"))


@pytest.mark.torch
def test_cdk_recipe(project: Project) -> None:
    script = block("cdk")
    _ok(project.bash(script))
    assert (project.dir / "build/torch-layer/python/torchwheel_loader.py").is_file()
    _swap(project.dir / "build" / "torch-layer", project.seed_tree)
    checks = "\n".join(line for line in script.splitlines() if "torchwheel check" in line)
    _fails_on_seed(project.bash(checks))


@pytest.mark.torch
def test_terraform_recipe(project: Project) -> None:
    script = block("terraform")
    _ok(project.bash(script))
    assert (project.dir / "dist" / "torch-layer.zip").is_file()
    _swap(project.dir / "dist" / "torch-layer.zip", project.seed_zip)
    checks = "\n".join(line for line in script.splitlines() if "torchwheel check" in line)
    _fails_on_seed(project.bash(checks))
