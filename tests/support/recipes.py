"""Run the shell recipes of docs/*.md verbatim, with stand-ins for tools the tests cannot run.

:func:`shell_blocks` takes the ```` ```sh ```` blocks of one section of a document;
:func:`run_recipe` runs a block as written with ``bash -e -o pipefail``, after shell functions
that stand in for ``sam``, ``cdk``, ``docker`` … (they copy prepared fixtures into place:
what those tools would have left behind), with this interpreter's ``torchwheel`` first on
``PATH``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

DOCS = Path(__file__).parents[2] / "docs"


def shell_blocks(doc: str, heading: str) -> list[str]:
    """The ``sh`` code blocks of the section of ``docs/<doc>`` whose heading starts with
    ``heading`` (up to the next heading of the same or a higher level)."""
    text = (DOCS / doc).read_text()
    m = re.search(rf"^(#+) {re.escape(heading)}.*$", text, re.MULTILINE)
    assert m is not None, f"no section {heading!r} in docs/{doc}"
    level = len(m.group(1))
    rest = text[m.end() :]
    nxt = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    section = rest if nxt is None else rest[: nxt.start()]
    return re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def run_recipe(
    script: str, cwd: Path, stubs: Mapping[str, str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` verbatim in ``cwd`` after the ``stubs`` (name -> shell function body)."""
    prelude = "".join(f"{name}() {{\n{body}\n}}\n" for name, body in stubs.items())
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", prelude + script],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path, **(env or {})},
        timeout=300,
    )
