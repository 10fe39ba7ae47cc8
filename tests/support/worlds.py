"""Small dependency worlds served by the loopback index (shared by deps and build tests)."""

from __future__ import annotations

from pathlib import Path

from tests.support.indexserver import IndexServer
from tests.support.wheels import make_wheel

APP_REQUIRES = [
    "liba>=1.0",
    'libarm; platform_machine == "aarch64"',
    'libnew; python_version >= "3.12"',
    'libold; python_version < "3.12"',
    "boto3",
    "extra-thing[fancy]",
    'libextra; extra == "opt"',
]


def populate(server: IndexServer, root: Path, **attrs: object) -> None:
    """A small dependency world with markers, extras, a backtrack and runtime packages."""
    w = root / "wheels"

    def add(
        name: str, version: str, requires: list[str] | None = None, tags: str = "py3-none-any"
    ) -> None:
        server.add_project(
            name, [make_wheel(w, name, version, tags=tags, requires_dist=requires or [])], **attrs
        )

    add("app", "1.0", APP_REQUIRES)
    add("liba", "1.0", ["libb>=1"])
    add("liba", "2.0", ["libb>=2"])  # libb 2 only exists for cp312 → backtrack on 3.11
    add("libb", "1.0")
    add("libb", "2.0", tags="cp312-cp312-manylinux_2_17_x86_64.manylinux_2_17_aarch64")
    add("libarm", "1.0")
    add("libnew", "1.0")
    add("libold", "1.0")
    add("libextra", "1.0")
    add("boto3", "1.0", ["botocore>=1"])
    add("botocore", "1.0")
    add("extra-thing", "1.0", ['fancydep; extra == "fancy"'])
    add("fancydep", "1.0")
