"""The public API and the CLI's import cost."""

import importlib
import subprocess
import sys

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
        capture_output=True, text=True, check=True,
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
    target = torchwheel.make_target("python3.12", "arm64")
    assert repr(target) == "<Target python3.12/arm64 CPython 3.12>"
    assert len(repr(target.runtime)) < 80
