"""``check`` as a CI gate (issue 12): ``--strict`` fails on errors and on actionable warnings
only, ``--format github`` prints workflow annotations, ``[tool.torchwheel]`` in
pyproject.toml sets a project's policy once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.layers import libz_so, make_layer
from tests.support.wheels import make_wheel
from torchwheel.checks import CODES, WARNING, Finding
from torchwheel.checks.policy import ACTIONABLE, INFORMATIONAL
from torchwheel.cli import main
from torchwheel.commands._github import annotation

TARGET = ["--runtime", "python3.12", "--arch", "x86_64"]
SITE = "python/lib/python3.12/site-packages/"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["check", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def libz_layer(tmp_path: Path) -> Path:
    """A layer whose only finding is informational: an .so that needs libz.so.1."""
    return make_layer(tmp_path / "z.zip", {"python/usez.so": libz_so(tmp_path)})


@pytest.fixture
def nested_zip_layer(tmp_path: Path) -> Path:
    """A layer with an actionable warning: a zip inside the zip."""
    return make_layer(
        tmp_path / "n.zip",
        {
            "python/app.py": b"x = 1\n",
            "python/models.zip": make_layer(tmp_path / "m.zip", {"a": b"1"}).read_bytes(),
        },
    )


@pytest.fixture
def seed_layer(tmp_path: Path) -> Path:
    """The seed's layout: a wheel copied into python/ instead of installed."""
    wheel = make_wheel(tmp_path / "w", "six", "1.17.0")
    return make_layer(tmp_path / "seed.zip", {f"python/{wheel.name}": wheel.read_bytes()})


def test_every_warning_code_is_classified() -> None:
    warnings = {c for c, sev in CODES.items() if sev == WARNING}
    assert warnings <= set(INFORMATIONAL) | set(ACTIONABLE)
    assert not set(INFORMATIONAL) & set(ACTIONABLE)
    assert set(INFORMATIONAL) | set(ACTIONABLE) <= set(CODES)


def test_strict_passes_informational_warnings(
    libz_layer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, str(libz_layer), *TARGET, "--strict", "--no-config")
    assert rc == 0, out
    assert "OK" in out
    rc, out, _ = run(capsys, str(libz_layer), *TARGET, "--strict", "--format", "github")
    assert rc == 0
    assert out.startswith("::notice file=") and "title=unconfirmed-system-library" in out


def test_strict_fails_actionable_warnings(
    nested_zip_layer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, str(nested_zip_layer), *TARGET)[0] == 0
    rc, out, _ = run(capsys, str(nested_zip_layer), *TARGET, "--strict")
    assert rc == 1 and "1 actionable warning(s) with --strict" in out
    rc, out, _ = run(capsys, str(nested_zip_layer), *TARGET, "--strict", "--json")
    assert rc == 1 and '"strict_failures"' in out and '"nested-zip"' in out
    # accepting it for the project: --ignore
    assert run(capsys, str(nested_zip_layer), *TARGET, "--strict", "--ignore", "nested-zip")[0] == 0


def test_format_github_annotates_the_seed_layout(
    seed_layer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, str(seed_layer), *TARGET, "--format", "github")
    assert rc == 1, err
    lines = out.splitlines()
    first = lines[0]
    assert first.startswith(f"::error file={seed_layer},title=wheel-not-extracted::")
    assert first.split("::", 2)[2].startswith("python/six-1.17.0-py3-none-any.whl: ")
    assert lines[-1].startswith("torchwheel check: FAIL: ")
    assert all(line.startswith("::") for line in lines[:-1])


def test_format_github_matrix_names_the_target(
    seed_layer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(capsys, str(seed_layer), "--format", "github", "--no-config")
    assert rc == 1
    assert "title=wheel-not-extracted::" in out  # target-independent: once, no target


def test_annotation_escapes_workflow_command_characters() -> None:
    f = Finding("nested-zip", "warning", "a,b:c.zip:python/x.zip", "50% of\nit")
    line = annotation(f, ["a,b:c.zip"], target="python3.12/arm64")
    assert line == (
        "::warning file=a%2Cb%3Ac.zip,title=nested-zip (python3.12/arm64)::"
        "python/x.zip: 50%25 of%0Ait"
    )


def test_json_and_format_disagree_is_a_usage_error(
    seed_layer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(capsys, str(seed_layer), *TARGET, "--json", "--format", "github")
    assert rc == 2 and err.count("\n") == 1 and "--json" in err


# -- [tool.torchwheel] ---------------------------------------------------------------------------


def _project(tmp_path: Path, body: str) -> Path:
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "pyproject.toml").write_text(f'[project]\nname = "fn"\n\n[tool.torchwheel]\n{body}')
    return proj


def test_config_sets_target_strict_and_ignore(
    tmp_path: Path,
    nested_zip_layer: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proj = _project(tmp_path, 'runtime = "python3.12"\narch = "arm64"\nstrict = true\n')
    monkeypatch.chdir(proj / "sub")  # found in a parent directory
    rc, out, _ = run(capsys, str(nested_zip_layer), "--json")
    assert rc == 1  # strict from the config: the nested zip fails
    assert [v["target"] for v in json.loads(out)["verdicts"]] == ["python3.12/arm64"]
    assert run(capsys, str(nested_zip_layer), "--no-strict")[0] == 0  # the command line wins
    assert run(capsys, str(nested_zip_layer), "--no-config")[0] == 0  # matrix, not strict
    (proj / "pyproject.toml").write_text(
        '[tool.torchwheel]\nruntime = "python3.12"\nstrict = true\nignore = ["nested-zip"]\n'
    )
    assert run(capsys, str(nested_zip_layer))[0] == 0


def test_config_explicit_file(
    tmp_path: Path, nested_zip_layer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proj = _project(tmp_path, 'runtime = "python3.12"\nstrict = true\n')
    rc, _, _ = run(capsys, str(nested_zip_layer), "--config", str(proj / "pyproject.toml"))
    assert rc == 1
    rc, _, err = run(capsys, str(nested_zip_layer), "--config", str(tmp_path / "nope.toml"))
    assert rc == 2 and "nope.toml" in err


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('runtim = "python3.12"\n', "unknown key 'runtim'"),
        ("python = 3.10\n", 'python must be a string such as "3.12"'),
        ('strict = "yes"\n', "strict must be true or false"),
        ('ignore = "nested-zip"\n', "ignore must be a list of strings"),
        ("ignore = [\n", "not valid TOML"),
        ('ignore = ["no-such-code"]\n', "unknown finding code(s) no-such-code"),
    ],
)
def test_bad_config_is_one_line_exit_2(
    tmp_path: Path,
    nested_zip_layer: Path,
    body: str,
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proj = _project(tmp_path, body)
    monkeypatch.chdir(proj)
    rc, _, err = run(capsys, str(nested_zip_layer))
    assert rc == 2 and err.count("\n") == 1 and says in err, err
    if "finding code" not in says:
        assert str(proj / "pyproject.toml") in err


def test_build_reads_the_target_from_config(
    tmp_path: Path,
    index_server: IndexServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index_server.add_project("six", [make_wheel(tmp_path / "w", "six", "1.17.0")])
    proj = _project(tmp_path, 'runtime = "python3.12"\narch = "arm64"\nstrict = true\n')
    monkeypatch.chdir(proj)
    argv = ["build", "six", "--index-url", index_server.url, "-o", "l.zip", "--json", "-q"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["target"]["label"] == "python3.12/arm64"
    assert main([*argv, "--arch", "x86_64"]) == 0  # the command line wins
    assert json.loads(capsys.readouterr().out)["target"]["label"] == "python3.12/x86_64"
    assert main([*argv, "--no-config", "--python", "3.11"]) == 0
    assert json.loads(capsys.readouterr().out)["target"]["label"] == "python3.11/x86_64"
