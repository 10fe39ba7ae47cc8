"""Index answers that are legal HTTP but not a page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.wheels import make_wheel
from torchwheel.errors import IndexPageError
from torchwheel.index import IndexClient


def test_304_for_a_page_never_cached_is_an_error_not_an_empty_project(
    index_server: IndexServer, tmp_path: Path
) -> None:
    index_server.add_project("demo", [make_wheel(tmp_path / "w", "demo", "1.0")])
    index_server.fail("/simple/demo/", status=304)
    with (
        IndexClient(index_server.url, backoff=0) as idx,
        pytest.raises(IndexPageError, match="304 Not Modified"),
    ):
        idx.candidates("demo")  # no If-None-Match was sent: 304 is no answer
    with IndexClient(index_server.url, backoff=0) as idx:
        assert [c.filename for c in idx.candidates("demo")] == ["demo-1.0-py3-none-any.whl"]
