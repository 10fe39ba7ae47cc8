"""Local index pages (a user-given file:// index, a --find-links HTML file): regular files only,
read under the same size cap as pages over HTTP."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from torchwheel.errors import ArchiveError, IndexPageError
from torchwheel.index import IndexClient


def test_a_fifo_as_find_links_page_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "links.html"
    os.mkfifo(fifo)
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            with IndexClient(no_index=True, find_links=[str(fifo)]) as idx:
                idx.candidates("torch")
            result.append(None)
        except BaseException as exc:  # recorded for the assertion below
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a FIFO blocked"
    (exc,) = result
    assert isinstance(exc, ArchiveError) and "not a regular file" in str(exc)


def test_a_file_index_page_over_the_cap_is_an_error(tmp_path: Path) -> None:
    project = tmp_path / "simple" / "torch"
    project.mkdir(parents=True)
    (project / "index.html").write_bytes(b"<a href='x.whl'>x</a>" + b" " * 2048)
    url = (tmp_path / "simple").as_uri()
    with (
        IndexClient(url, max_page_bytes=1024) as idx,
        pytest.raises(IndexPageError, match="over the 1,024-byte page limit"),
    ):
        idx.candidates("torch")
    with IndexClient(url, max_page_bytes=4096) as idx:
        assert idx.candidates("torch") == []  # read in full; x.whl is no torch wheel
