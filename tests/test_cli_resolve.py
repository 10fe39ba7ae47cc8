"""`torchwheel resolve` end to end (main(argv)) against a loopback index: output, JSON schema,
exit codes 0/1/2 and one-line errors."""

from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import pytest

from tests.support.indexserver import IndexServer
from tests.support.wheels import make_wheel
from torchwheel.cli import main
from torchwheel.targets import all_targets

CHOSEN_KEYS = {
    "filename",
    "version",
    "url",
    "sha256",
    "size",
    "unzipped_size",
    "tag",
    "requires_python",
    "unverified",
    "warnings",
    "largest",
    "source",
    "variant",  # the build variant learnt before download (issue 11)
    "elf",  # the ELF needs read before download (linux_* wheels, --verify-elf)
}
TOP_KEYS = {
    "schema",
    "package",
    "runtime",
    "arch",
    "python",
    "specifier",
    "chosen",
    "summary",
    "also_compatible",
    "rejected",
    "notes",
    "sources",
    "variant",
    "read_before_download",
    "plan",
    "hosts",
}


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, object]:
    code = main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_human_output(torch_index: IndexServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["resolve", "--runtime", "python3.11", "--index-url", torch_index.url])
    out = capsys.readouterr().out
    assert code == 0
    assert "torch-2.5.1+cpu-cp311-cp311-linux_x86_64.whl" in out
    assert "newest torch for python3.11/x86_64 is 2.5.1+cpu: torch >= 2.8.0 needs glibc 2.28" in out
    assert "free-threaded build (cp3XYt) " in out  # counted by reason (tests/test_messages.py)
    assert "verified before download: the wheel holds no shared objects" in out
    assert "other rejected wheel(s): " in out
    code = main(["resolve", "--runtime", "python3.11", "--index-url", torch_index.url, "-v"])
    out = capsys.readouterr().out
    assert "other rejected wheel(s)" not in out and "free-threaded ABI cp313t" in out
    assert "torch-2.5.1-cp311-none-macosx_11_0_arm64.whl" in out and "macOS wheel" in out


def test_json_schema(torch_index: IndexServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(
        capsys,
        [
            "resolve",
            "--runtime",
            "python3.12",
            "--arch",
            "aarch64",
            "--index-url",
            torch_index.url,
            "--json",
        ],
    )
    assert code == 0
    assert isinstance(doc, dict)
    assert set(doc) == TOP_KEYS
    assert (doc["package"], doc["runtime"], doc["arch"], doc["python"]) == (
        "torch",
        "python3.12",
        "arm64",
        "3.12",
    )
    chosen = doc["chosen"]
    assert set(chosen) == CHOSEN_KEYS
    assert chosen["filename"] == "torch-2.8.0-cp312-cp312-manylinux_2_28_aarch64.whl"
    assert chosen["version"] == "2.8.0"
    assert chosen["url"] == torch_index.file_url("torch", chosen["filename"])
    assert len(chosen["sha256"]) == 64
    assert isinstance(chosen["size"], int)  # the PEP 691 page carries sizes
    assert chosen["unzipped_size"] is None and chosen["largest"] is None  # no --size
    assert len(doc["rejected"]) == len(torch_index.projects["torch"]) - 1 - len(
        doc["also_compatible"]
    )
    for r in doc["rejected"]:
        assert set(r) == {"filename", "reasons", "variant"} and r["reasons"]
    assert doc["sources"] == [torch_index.url]


def test_size_reads_the_central_directory(
    torch_index: IndexServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, doc = run_json(
        capsys,
        ["resolve", "--runtime", "python3.13", "--index-url", torch_index.url, "--json", "--size"],
    )
    assert code == 0 and isinstance(doc, dict)
    chosen = doc["chosen"]
    name = chosen["filename"]
    path = next(p.path for p in torch_index.projects["torch"] if p.filename == name)
    with zipfile.ZipFile(path) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
    assert chosen["unzipped_size"] == unzipped
    assert chosen["size"] == path.stat().st_size
    assert chosen["largest"][0]["size"] == max(
        i.file_size for i in zipfile.ZipFile(path).infolist()
    )
    # one torch page, one range request for the wheel, and never the whole wheel; the plan of
    # the closure needs torch's requirements, which this index lacks (filelock: 404)
    assert torch_index.count("/simple/torch/") == 1
    file_reqs = [r for r in torch_index.requests if r.path.startswith("/files/")]
    wheel_reqs = [r for r in file_reqs if not r.path.endswith(".metadata")]
    assert len(wheel_reqs) == 1 and wheel_reqs[0].status == 206
    assert doc["plan"] is None
    assert any(n.startswith("no plan for the closure of torch==2.8.0+cpu") for n in doc["notes"])


def test_all_matrix_json_one_fetch(
    torch_index: IndexServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run_json(
        capsys, ["resolve", "--all", "--index-url", torch_index.url, "--json", "--python", "3.12"]
    )
    assert isinstance(doc, dict) and doc["schema"] == "torchwheel.resolve-matrix/1"
    doc = doc["results"]
    expected = all_targets(include_deprecated=False, provided_python=(3, 12))
    assert [(d["runtime"], d["arch"]) for d in doc] == [(t.runtime.name, t.arch) for t in expected]
    by = {(d["runtime"], d["arch"]): d for d in doc}
    assert by[("provided.al2023", "arm64")]["chosen"]["version"] == "2.8.0"
    # glibc 2.26: the manylinux_2_28 2.8.0 is out, the linux_x86_64 2.5.1+cpu is in
    assert by[("provided.al2", "x86_64")]["chosen"]["version"] == "2.5.1+cpu"
    assert by[("python3.14", "x86_64")]["chosen"] is None
    assert code == 1  # some targets have no wheel
    assert torch_index.count("/simple/") == 1
    # no wheel is downloaded: only PEP 658 metadata and range reads (variant, ELF needs)
    files = [r for r in torch_index.requests if r.path.startswith("/files/")]
    assert all(r.path.endswith(".metadata") or "range" in r.headers for r in files)


def test_all_human_matrix(torch_index: IndexServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["resolve", "--all", "--index-url", torch_index.url, "--include-deprecated"])
    out = capsys.readouterr().out
    assert code == 1
    for t in all_targets(include_deprecated=True):
        assert t.runtime.name in out
    assert "no torch wheel is built for CPython 3.14" in out


def test_exit_1_when_nothing_fits(
    torch_index: IndexServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = run_json(
        capsys,
        [
            "resolve",
            "--runtime",
            "python3.11",
            "--version",
            ">=2.6",
            "--index-url",
            torch_index.url,
            "--json",
        ],
    )
    assert code == 1 and isinstance(doc, dict)
    assert doc["chosen"] is None
    assert doc["specifier"] == ">=2.6"
    assert doc["summary"].startswith("no torch >=2.6 wheel fits python3.11/x86_64: torch >= 2.8.0")
    code = main(
        ["resolve", "--runtime", "python3.11", "--version", ">=2.6", "--index-url", torch_index.url]
    )
    assert code == 1
    assert "no torch >=2.6 wheel fits" in capsys.readouterr().out


def test_pre_and_version(torch_index: IndexServer, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["resolve", "--runtime", "python3.12", "--index-url", torch_index.url, "--json"]
    _, doc = run_json(capsys, [*base, "--pre"])
    assert doc["chosen"]["version"] == "2.9.0.dev20250801+cpu"  # type: ignore[index]
    _, doc = run_json(capsys, [*base, "--version", "==2.5.1"])
    assert doc["chosen"]["version"] == "2.5.1+cpu"  # type: ignore[index]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runtime", "python2.7"], "unknown runtime 'python2.7'"),
        (["--runtime", "provided.al2023"], "provided.al2023 brings no Python of its own"),
        (["--runtime", "python3.12", "--version", ">>1"], "not a PEP 440 version specifier"),
        (["--runtime", "python3.12", "--no-index"], "--no-index needs at least one --find-links"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["resolve", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unreachable_and_404_exit_2(
    index_server: IndexServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/simple"
    assert main(["resolve", "--runtime", "python3.12", "--index-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"torchwheel: error: {url}/torch/: cannot reach the index")
    assert err.count("\n") == 1
    assert main(["resolve", "--runtime", "python3.12", "--index-url", index_server.url]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"torchwheel: error: project 'torch' not found: {index_server.url}/torch/ (404)\n"
    )


def test_default_index_unreachable_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # route every request through a proxy on a closed loopback port: nothing leaves the host
    proxy = f"http://127.0.0.1:{_closed_port()}"
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert main(["resolve", "--runtime", "python3.12", "--arch", "arm64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchwheel: error: cannot reach the default index ")
    assert "--index-url URL" in err and "--find-links DIR" in err
    assert err.count("\n") == 1


def test_find_links_no_index_and_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    torch_index: IndexServer,
) -> None:
    d = tmp_path / "wheels"
    w = make_wheel(
        d, "torch", "2.5.1", tags="cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64"
    )
    code, doc = run_json(
        capsys,
        [
            "resolve",
            "--runtime",
            "python3.11",
            "--arch",
            "arm64",
            "--no-index",
            "--find-links",
            str(d),
            "--json",
            "--size",
        ],
    )
    assert code == 0
    assert doc["chosen"]["filename"] == w.name  # type: ignore[index]
    assert doc["chosen"]["url"].startswith("file://")  # type: ignore[index]
    assert doc["chosen"]["unzipped_size"] > 0  # type: ignore[index]
    monkeypatch.setenv("TORCHWHEEL_INDEX_URL", torch_index.url)
    code, doc = run_json(capsys, ["resolve", "--runtime", "python3.12", "--json"])
    assert code == 0 and doc["sources"] == [torch_index.url]  # type: ignore[index]


def test_offline_after_a_run(
    torch_index: IndexServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "c"
    base = [
        "resolve",
        "--runtime",
        "python3.12",
        "--index-url",
        torch_index.url,
        "--cache-dir",
        str(cache),
        "--json",
    ]
    code, online = run_json(capsys, base)
    assert code == 0
    torch_index.stop()
    code, offline = run_json(capsys, [*base, "--offline"])
    assert isinstance(online, dict) and isinstance(offline, dict)
    assert online.pop("hosts") == [torch_index.base] and offline.pop("hosts") == []  # no network
    assert code == 0 and offline == online
    code = main(
        [
            "resolve",
            "--runtime",
            "python3.12",
            "--index-url",
            torch_index.url,
            "--cache-dir",
            str(tmp_path / "empty"),
            "--offline",
        ]
    )
    assert code == 2
    assert "offline and not in the cache" in capsys.readouterr().err
