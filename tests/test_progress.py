"""The progress interface (torchwheel.progress): events, counts, throttling, failure."""

from __future__ import annotations

import threading

import pytest

from torchwheel.progress import ProgressEvent, Step, bytes_callback, step


def test_step_reports_start_updates_and_end_with_counts() -> None:
    seen: list[ProgressEvent] = []
    with step(seen.append, "zip", files_total=3, bytes_total=30) as s:
        for i in range(3):
            s.advance(files=1, bytes=10, item=f"f{i}")
    kinds = [e.kind for e in seen]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert set(kinds[1:-1]) <= {"update"}
    end = seen[-1]
    assert (end.step, end.files_done, end.bytes_done) == ("zip", 3, 30)
    assert (end.files_total, end.bytes_total) == (3, 30)
    assert end.item is None and end.seconds >= 0


def test_updates_are_throttled_but_end_is_exact() -> None:
    seen: list[ProgressEvent] = []
    with step(seen.append, "install") as s:
        for _ in range(10_000):
            s.advance(files=1)
    updates = [e for e in seen if e.kind == "update"]
    assert 1 <= len(updates) < 100  # not one per file
    assert seen[-1].files_done == 10_000


def test_a_failing_step_reports_fail_and_the_error_propagates() -> None:
    seen: list[ProgressEvent] = []
    with pytest.raises(RuntimeError, match="boom"), step(seen.append, "strip"):
        raise RuntimeError("boom")
    assert [e.kind for e in seen] == ["start", "fail"]


def test_no_callback_still_counts() -> None:
    with step(None, "scan") as s:
        s.advance(bytes=5, files=2)
        s.update(bytes_done=7)
    assert (s.bytes_done, s.files_done) == (7, 2)


def test_advance_from_threads_loses_nothing() -> None:
    seen: list[ProgressEvent] = []
    with step(seen.append, "zip") as s:

        def work() -> None:
            for _ in range(1000):
                s.advance(files=1, bytes=3)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert (seen[-1].files_done, seen[-1].bytes_done) == (4000, 12000)


def test_bytes_callback_adds_a_base() -> None:
    s = Step(None, "download")
    cb = bytes_callback(s, base=100)
    cb(50, 200)
    assert s.bytes_done == 150


def test_plain_renderer_prints_one_line_per_finished_step() -> None:
    import io

    from torchwheel.commands._progress import renderer

    out = io.StringIO()
    with renderer("plain", out) as cb:
        assert cb is not None
        with step(cb, "zip", files_total=5360) as s:
            s.advance(files=5360, bytes=439 * 1024 * 1024)
        with step(cb, "download", unit="wheels") as s:
            s.advance(files=2, bytes=2048)
        with pytest.raises(ValueError), step(cb, "strip"):
            raise ValueError("no")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("zip: 5,360 files, 439.0 MiB, ") and lines[0].endswith(" s")
    assert lines[1].startswith("download: 2 wheels, 2.0 KiB, ")


def test_quiet_renders_nothing() -> None:
    from torchwheel.commands._progress import renderer

    with renderer("quiet") as cb:
        assert cb is None


def test_rich_renderer_accepts_every_event_shape(capsys: pytest.CaptureFixture[str]) -> None:
    from torchwheel.commands._progress import renderer

    with renderer("rich") as cb:
        assert cb is not None
        with step(cb, "download", unit="wheels", files_total=2) as s:
            s.update(bytes_done=10, item="torch")  # no byte total: files drive the bar
            s.update(bytes_total=100, bytes_done=50)
        with step(cb, "resolve") as s:  # nothing known
            pass
    err = capsys.readouterr().err
    assert "download: 0 wheels" in err and "resolve: " in err
