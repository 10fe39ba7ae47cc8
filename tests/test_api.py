"""The public API and the CLI's import cost."""

import importlib
import subprocess
import sys
from pathlib import Path

import torchwheel


def test_every_public_name_resolves() -> None:
    for name in torchwheel.__all__:
        assert getattr(torchwheel, name) is not None, name
    # the modules behind the functions carry other names, so nothing shadows them
    importlib.import_module("torchwheel.checks")
    importlib.import_module("torchwheel.resolution")

    assert callable(torchwheel.resolve) and callable(torchwheel.check)
    assert torchwheel.resolve.__module__ == "torchwheel.resolution"


def test_check_command_does_not_load_the_network_stack() -> None:
    code = (
        "import sys\n"
        "from torchwheel.cli import main\n"
        "try:\n"
        "    main(['check', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('httpx', 'resolvelib', 'torchwheel.index')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_dir_shows_the_public_api_before_first_use() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import torchwheel; print(' '.join(dir(torchwheel)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    shown = set(out.stdout.split())
    assert set(torchwheel.__all__) <= shown


def test_every_public_exception_is_exported() -> None:
    import torchwheel.errors as errors

    classes = [
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type)
        and issubclass(obj, Exception)
        and obj.__module__ == errors.__name__
    ]
    assert classes
    assert sorted(set(classes) - set(torchwheel.__all__)) == []
    assert issubclass(torchwheel.InputError, ValueError)


def test_reprs_are_short() -> None:
    target = torchwheel.make_target("arm64", runtime="python3.12")
    assert repr(target) == "<Target python3.12/arm64 CPython 3.12>"
    assert len(repr(target.runtime)) < 80


def test_resolution_and_report_reprs_stay_short(tmp_path: Path) -> None:
    """Reprs name the outcome, not every candidate or finding."""
    from tests.support.wheels import make_wheel
    from torchwheel.index import IndexClient

    wheels = tmp_path / "w"
    for i in range(30):
        make_wheel(wheels, "torch", f"2.{i}.0", tags="cp312-cp312-manylinux_2_28_aarch64")
    with IndexClient(no_index=True, find_links=[str(wheels)]) as idx:
        res = torchwheel.resolve("arm64", "3.12", index=idx)
    assert repr(res) == (
        "<Resolution torch for python3.12/arm64: "
        "torch-2.29.0-cp312-cp312-manylinux_2_28_aarch64.whl (30 candidates)>"
    )
    layer = tmp_path / "layer.zip"
    import zipfile

    with zipfile.ZipFile(layer, "w") as zf:
        zf.writestr("python/x.py", "X = 1\n")
    report = torchwheel.check([layer], arch="arm64", runtime="python3.12")
    assert repr(report).startswith(f"<CheckReport {layer}: ok, 0 error(s)")
    assert len(repr(report)) < 200
