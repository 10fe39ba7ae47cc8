"""CPU or GPU build, before download (issue 11): the evidence, the probe, and resolve's choice.

The loopback index serves a PyTorch-shaped world (``tests/support/pytorchworld.py``): PyPI-like
torch wheels without a label whose metadata carries ``nvidia-*`` requirements with the real
markers and whose central directory holds ``torch/lib/libtorch_cuda.so``, a ``+cpu`` wheel in
a find-links directory and a ``+cu128`` one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.version import Version

from tests.support.indexserver import IndexServer, IndexServerFactory
from tests.support.pytorchworld import (
    CU13_EXTRAS,
    PytorchWorld,
    build_world,
    cu12_requirements,
    cu13_requirements,
    serve_pypi,
    whole_downloads,
)
from torchwheel.cli import main
from torchwheel.errors import NoCompatibleWheel
from torchwheel.index import Candidate, IndexClient
from torchwheel.probe import FactsCache, WheelFacts, WheelProbe, classify
from torchwheel.report import human_bytes
from torchwheel.resolution import DEFAULT_INDEX_URL, resolve
from torchwheel.targets import make_target
from torchwheel.variants import (
    from_label,
    from_members,
    from_requirements,
    gpu_requirement_kind,
    is_variant_project,
)

X86 = make_target("x86_64", "3.12")
ARM = make_target("arm64", "3.12")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> PytorchWorld:
    return build_world(tmp_path_factory.mktemp("pytorch-world"))


@pytest.fixture
def pypi(index_server: IndexServer, world: PytorchWorld) -> IndexServer:
    serve_pypi(index_server, world)
    return index_server


# -- the evidence (pure) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "kind", "cuda"),
    [
        ("2.5.1+cpu", "cpu", None),
        ("2.1.0+cpu.cxx11.abi", "cpu", None),
        ("2.13.0+cu128", "cuda", "12.8"),
        ("2.7.0+cu118", "cuda", "11.8"),
        ("1.4.0+cu92", "cuda", "9.2"),
        ("2.9.0+cu130", "cuda", "13.0"),
        ("2.5.1+rocm6.2", "rocm", "6.2"),
        ("2.6.0+rocm6.2.4", "rocm", "6.2.4"),
        ("2.7.0+xpu", "xpu", None),
    ],
)
def test_local_version_labels(version: str, kind: str, cuda: str | None) -> None:
    v = from_label(Version(version))
    assert v is not None
    assert (v.kind, v.version, v.evidence) == (kind, cuda, "label")
    assert v.detail == "+" + version.split("+", 1)[1]


def test_no_label_or_unknown_label_is_no_evidence() -> None:
    assert from_label(Version("2.15.0")) is None
    assert from_label(Version("2.15.0+local.build")) is None


def test_requirements_follow_the_targets_markers() -> None:
    x86, x86_reqs = from_requirements(cu12_requirements(), X86.marker_environment())
    assert x86 is not None and (x86.kind, x86.version, x86.evidence) == ("cuda", "12.8", "metadata")
    assert x86.detail == (
        "requires nvidia-cuda-runtime-cu12, nvidia-cublas-cu12, nvidia-cudnn-cu12"
    )
    assert "triton==3.6.0" in x86_reqs and "nvidia-cublas-cu12==12.8.4.1" in x86_reqs
    # PyPI's torch 2.10 marks them x86_64-only: for aarch64 they vanish (no evidence either way)
    arm, arm_reqs = from_requirements(cu12_requirements(), ARM.marker_environment())
    assert arm is None and arm_reqs == ()
    # torch 2.15: cuda-toolkit pins the CUDA version, on every Linux machine
    v13, reqs13 = from_requirements(cu13_requirements(), ARM.marker_environment())
    assert v13 is not None and (v13.kind, v13.version) == ("cuda", "13.2")
    assert reqs13[0] == "cuda-toolkit[cublas,cudart]==13.2.2"


def test_requirements_name_the_vendor() -> None:
    assert gpu_requirement_kind("nvidia_cudnn_cu12") == "cuda"
    assert gpu_requirement_kind("cuda-toolkit") == "cuda"
    assert gpu_requirement_kind("pytorch-triton-rocm") == "rocm"
    assert gpu_requirement_kind("pytorch-triton-xpu") == "xpu"
    assert gpu_requirement_kind("triton") == "payload"
    assert gpu_requirement_kind("numpy") is None
    rocm, _ = from_requirements(
        ["pytorch-triton-rocm==3.1.0; platform_system == 'Linux'"], X86.marker_environment()
    )
    assert rocm is not None and rocm.kind == "rocm"
    assert is_variant_project("TorchVision") and not is_variant_project("numpy")


def test_a_marker_that_cannot_be_evaluated_is_ignored() -> None:
    v, reqs = from_requirements(
        ['nvidia-cublas-cu12; python_version ~= "abc"', "not a requirement !!"],
        X86.marker_environment(),
    )
    assert v is None and reqs == ()


def test_file_names() -> None:
    cuda = from_members([("torch/lib/libtorch_cpu.so", 10), ("torch/lib/libtorch_cuda.so", 99)])
    assert (cuda.kind, cuda.evidence, cuda.detail, cuda.gpu_bytes) == (
        "cuda",
        "central-directory",
        "torch/lib/libtorch_cuda.so",
        99,
    )
    rocm = from_members([("torch/lib/libamdhip64.so.6", 5), ("torch/lib/libtorch_hip.so", 7)])
    assert (rocm.kind, rocm.version, rocm.gpu_bytes) == ("rocm", "6", 12)
    old = from_members([("torch/lib/libcudart-e409450e.so.11.0", 3)])
    assert (old.kind, old.version) == ("cuda", "11")
    cpu = from_members([("torch/lib/libtorch_cpu.so", 10), ("torch/__init__.py", 1)])
    assert (cpu.kind, cpu.detail) == ("cpu", "no GPU library among 2 files")


def test_label_beats_metadata_and_metadata_beats_members() -> None:
    facts = WheelFacts(
        "x.whl",
        requires_dist=tuple(cu12_requirements()),
        files=2,
        gpu_kind="cpu",
    )
    env = X86.marker_environment()
    assert classify(Version("2.13.0+cpu"), facts, env).evidence == "label"
    by_meta = classify(Version("2.13.0"), facts, env)
    assert (by_meta.kind, by_meta.evidence) == ("cuda", "metadata")
    # aarch64: the requirements say nothing, the central directory decides
    by_members = classify(Version("2.13.0"), facts, ARM.marker_environment())
    assert (by_members.kind, by_members.evidence) == ("cpu", "central-directory")
    unknown = classify(Version("2.13.0"), WheelFacts("x.whl"), env)
    assert unknown.kind == "unknown" and unknown.accepted_by("cpu")


def test_facts_cache_round_trip_and_damage(tmp_path: Path) -> None:
    cache = FactsCache(tmp_path)
    sha = "ab" * 32
    facts = WheelFacts(
        "torch-2.15.0-cp312-cp312-manylinux_2_28_x86_64.whl",
        requires_dist=tuple(cu13_requirements()),
        metadata_source="pep658",
        files=3,
        zipped=100,
        unzipped=300,
        largest=(("torch/lib/libtorch_cuda.so", 200),),
        gpu_libraries=(("torch/lib/libtorch_cuda.so", 200),),
        gpu_kind="cuda",
        requirement_bytes={"python3.12/x86_64": 12345},
    )
    url = "https://files.example/torch-2.15.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    cache.store(sha, url, facts)
    assert cache.load(sha, url) == facts
    # another source claiming the same hash does not get (or plant) these facts
    assert cache.load(sha, "https://evil.example/torch.whl") is None
    (stored,) = (tmp_path / "wheel-facts-v2").glob(f"{sha}-*.json")
    stored.write_text('{"schema": "nope"}')
    assert cache.load(sha, url) is None
    assert cache.load("../../etc/passwd", url) is None


# -- the probe over HTTP ---------------------------------------------------------------------------


def _cand(index: IndexClient, filename: str) -> Candidate:
    return next(c for c in index.candidates("torch") if c.filename == filename)


def test_pep658_metadata_decides_a_gpu_build_in_one_request(
    pypi: IndexServer, world: PytorchWorld
) -> None:
    with IndexClient(pypi.url) as idx:
        cand = _cand(idx, world.pypi["2.15.0-x86_64"].name)
        pypi.clear_log()
        probe = WheelProbe(idx.client, index=idx)
        v = probe.variant(cand, X86)
    assert (v.kind, v.version, v.evidence) == ("cuda", "13.2", "metadata")
    assert [r.path.rsplit("/", 1)[-1] for r in pypi.requests] == [cand.filename + ".metadata"]
    assert probe.requests == 1 and probe.bytes_received == pypi.bytes_sent("/files/")


def test_without_pep658_the_central_directory_decides_by_ranges(
    index_server: IndexServer, world: PytorchWorld, tmp_path: Path
) -> None:
    serve_pypi(index_server, world, metadata=False)
    with IndexClient(index_server.url) as idx:
        cand = _cand(idx, world.pypi["2.10.0-aarch64"].name)
        index_server.clear_log()
        probe = WheelProbe(idx.client, index=idx, cache_dir=tmp_path)
        v = probe.variant(cand, ARM)
        assert (v.kind, v.evidence) == ("cpu", "central-directory")
        gpu = probe.variant(_cand(idx, world.pypi["2.15.0-aarch64"].name), ARM)
        # the CUDA library decides; METADATA is not needed (the CPU build's was read)
        assert (gpu.kind, gpu.evidence) == ("cuda", "central-directory")
        assert gpu.gpu_libraries[0][0] == "torch/lib/libtorch_cuda.so"
    # one range per wheel: its last 64 KiB hold the central directory and METADATA (written
    # last); nothing downloaded whole
    assert all(r.headers.get("range") == "bytes=-65536" for r in index_server.requests)
    assert index_server.count("/files/") == probe.requests == 2
    assert probe.bytes_received == index_server.bytes_sent("/files/")
    assert whole_downloads(index_server) == []
    # a second probe with the same cache asks nothing
    index_server.clear_log()
    with IndexClient(index_server.url) as idx:
        again = WheelProbe(idx.client, index=idx, cache_dir=tmp_path)
        assert again.variant(_cand(idx, world.pypi["2.10.0-aarch64"].name), ARM).kind == "cpu"
        assert again.variant(_cand(idx, world.pypi["2.15.0-aarch64"].name), ARM).kind == "cuda"
    assert index_server.count("/files/") == 0 and again.requests == 0


def test_a_server_ignoring_range_leaves_the_variant_unknown(
    index_server: IndexServer, world: PytorchWorld
) -> None:
    serve_pypi(index_server, world, metadata=False)
    index_server.ignore_range = True
    res = resolve("arm64", "3.12", index_url=index_server.url)
    # unknown builds are taken, with a warning, rather than guessed
    assert res.wheel is not None and res.wheel.version == Version("2.15.0")
    assert res.verdict is not None
    assert any(w.startswith("build variant unknown") for w in res.verdict.warnings)


# -- resolve's choice -----------------------------------------------------------------------------


def test_arm64_gets_the_newest_cpu_build(pypi: IndexServer, world: PytorchWorld) -> None:
    res = resolve("arm64", "3.12", index_url=pypi.url)
    assert res.wheel is not None and res.wheel.filename == world.pypi["2.10.0-aarch64"].name
    gpu = next(v for c, v in res.rejected if c.filename == world.pypi["2.15.0-aarch64"].name)
    # what the GPU build's requirements weigh, for this target: cuda-toolkit and, through its
    # extras, nvidia-cublas and nvidia-cuda-runtime, plus nvidia-cudnn-cu13 and triton 3.9.0
    names = {"cuda-toolkit", "nvidia-cudnn-cu13", "triton", *CU13_EXTRAS}
    weight = sum(
        p.stat().st_size
        for p in world.gpu_packages
        if p.name.split("-")[0].replace("_", "-") in names and "3.6.0" not in p.name
    )
    # (decided by the PEP 658 metadata: the central directory was not read)
    reason = f"CUDA 13.2 build: Lambda has no GPU; its requirements add {human_bytes(weight)}"
    assert gpu.reasons == (reason,)
    assert res.summary == f"newest torch for python3.12/arm64 is 2.10.0: torch 2.15.0: {reason}"
    screened = res.screened[res.wheel.url]
    assert screened.variant is not None and screened.variant.kind == "cpu"
    assert whole_downloads(pypi) == []


def test_x86_64_without_a_cpu_build_points_at_the_cpu_index(pypi: IndexServer) -> None:
    with pytest.raises(NoCompatibleWheel) as err:
        resolve("x86_64", "3.12", index_url=pypi.url)
    msg = str(err.value)
    assert msg.startswith("no torch wheel fits python3.12/x86_64: torch 2.15.0: CUDA 13.2 build")
    assert msg.endswith(
        "2 compatible torch wheel(s) are GPU builds (newest 2.15.0, CUDA 13.2) and Lambda has "
        f"no GPU; CPU builds are on the PyTorch CPU index: --index-url {DEFAULT_INDEX_URL}"
    )
    assert err.value.exit_code == 1
    assert whole_downloads(pypi) == []


def test_variant_opts_in(pypi: IndexServer, world: PytorchWorld) -> None:
    for want in ("cuda", "any"):
        res = resolve("x86_64", "3.12", index_url=pypi.url, variant=want)
        assert res.wheel is not None and res.wheel.filename == world.pypi["2.15.0-x86_64"].name
    res = resolve("arm64", "3.12", index_url=pypi.url, variant="cuda")
    assert res.wheel is not None and res.wheel.version == Version("2.15.0")
    cpu = next(v for c, v in res.rejected if c.filename == world.pypi["2.10.0-aarch64"].name)
    assert cpu.reasons == ("CPU build; --variant cuda asks for a CUDA build",)
    with pytest.raises(NoCompatibleWheel):
        resolve("x86_64", "3.12", index_url=pypi.url, variant="rocm")
    with pytest.raises(ValueError, match="--variant 'gpu'"):
        resolve("x86_64", "3.12", index_url=pypi.url, variant="gpu")


def test_a_local_cpu_wheel_beats_a_newer_gpu_one_and_nothing_is_downloaded(
    pypi: IndexServer, world: PytorchWorld
) -> None:
    assert world.cpu_links is not None and world.cpu_wheel is not None
    res = resolve("x86_64", "3.12", index_url=pypi.url, find_links=[str(world.cpu_links)])
    assert res.wheel is not None and res.wheel.filename == world.cpu_wheel.name
    rejected = {c.filename: v.reasons[0] for c, v in res.rejected}
    assert rejected[world.pypi["2.15.0-x86_64"].name].startswith("CUDA 13.2 build")
    assert whole_downloads(pypi) == []
    # the GPU wheels were judged by their PEP 658 metadata alone
    wheel_reads = [r for r in pypi.requests if r.path.startswith("/files/torch/")]
    assert wheel_reads and all(r.path.endswith(".metadata") for r in wheel_reads)


def test_cuda_index_and_cpu_find_links(
    index_server_factory: IndexServerFactory, world: PytorchWorld
) -> None:
    assert world.cpu_links is not None and world.cuda_wheel is not None
    cu128: IndexServer = index_server_factory()
    cu128.add_project("torch", [world.cuda_wheel])
    links = [str(world.cpu_links)]
    res = resolve("x86_64", "3.12", index_url=cu128.url, find_links=links)
    assert res.wheel is not None and res.wheel.version == Version("2.13.0+cpu")
    label = next(v for c, v in res.rejected if c.version == Version("2.13.0+cu128"))
    assert label.reasons[0].startswith("CUDA 12.8 build: Lambda has no GPU")
    cuda = resolve("x86_64", "3.12", index_url=cu128.url, find_links=links, variant="cuda")
    assert cuda.wheel is not None and cuda.wheel.version == Version("2.13.0+cu128")
    # labels decide for free; the rejected build's PEP 658 file is read once, to weigh what
    # its requirements would add
    assert [r.path.endswith(".metadata") for r in cu128.requests if "/files/" in r.path] == [True]


def test_cli_json_reports_variants_and_what_reading_cost(
    pypi: IndexServer, world: PytorchWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["resolve", "--runtime", "python3.12", "--arch", "arm64", "--index-url", pypi.url]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["variant"] == "cpu"
    assert doc["chosen"]["variant"]["kind"] == "cpu"
    assert doc["chosen"]["variant"]["evidence"] == "central-directory"
    gpu = next(r for r in doc["rejected"] if r["filename"] == world.pypi["2.15.0-aarch64"].name)
    assert gpu["variant"]["name"] == "CUDA 13.2" and gpu["variant"]["requirements"]
    cost = doc["read_before_download"]
    assert cost["requests"] > 0 and cost["bytes"] > 0
    assert main([*args, "--variant", "cuda"]) == 0
    assert "torch-2.15.0-cp312-cp312-manylinux_2_28_aarch64.whl" in capsys.readouterr().out
    x86 = ["resolve", "--runtime", "python3.12", "--arch", "x86_64", "--index-url", pypi.url]
    assert main(x86) == 1
    out = capsys.readouterr().out
    assert f"CPU builds are on the PyTorch CPU index: --index-url {DEFAULT_INDEX_URL}" in out
