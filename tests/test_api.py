"""The public API and the CLI's import cost."""

import importlib
import subprocess
import sys

import torchwheel


def test_every_public_name_resolves():
    for name in torchwheel.__all__:
        assert getattr(torchwheel, name) is not None, name
    # the modules behind the functions carry other names, so nothing shadows them
    importlib.import_module("torchwheel.checks.driver")
    importlib.import_module("torchwheel.resolution")

    assert callable(torchwheel.resolve) and callable(torchwheel.check)
    assert torchwheel.resolve.__module__ == "torchwheel.resolution"


def test_check_command_does_not_load_the_network_stack():
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
