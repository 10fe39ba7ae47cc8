import datetime as dt
import json

import pytest

from torchwheel import get_runtime, make_target, runtimes
from torchwheel.errors import DataError, UnknownRuntime
from torchwheel.targets import _validate, all_targets, facts, normalize_arch, parse_python


def test_every_documented_runtime_is_known() -> None:
    names = {r.name for r in runtimes()}
    expected = {f"python3.{m}" for m in range(7, 15)} | {"provided.al2", "provided.al2023"}
    assert names == expected


def test_al2_and_al2023_glibc() -> None:
    assert get_runtime("python3.11").glibc == (2, 26)
    assert get_runtime("python3.12").glibc == (2, 34)
    assert get_runtime("provided.al2").glibc == (2, 26)
    assert get_runtime("python3.7").architectures == ("x86_64",)
    assert get_runtime("python3.7").is_deprecated(dt.date(2026, 1, 1))
    assert not get_runtime("python3.14").is_deprecated(dt.date(2026, 1, 1))


def test_al2023_libstdcxx_is_marked_unconfirmed() -> None:
    rt = get_runtime("python3.12")
    assert "libstdc++" in rt.unconfirmed
    assert any("unconfirmed" in n for n in rt.notes())
    assert not get_runtime("python3.11").notes()


@pytest.mark.parametrize(
    "spelling,expected",
    [
        ("x86_64", "x86_64"),
        ("amd64", "x86_64"),
        ("AMD64", "x86_64"),
        ("arm64", "arm64"),
        ("aarch64", "arm64"),
    ],
)
def test_arch_spellings(spelling: str, expected: str) -> None:
    assert normalize_arch(spelling) == expected


@pytest.mark.parametrize("text", ["3.12", "python3.12", "cp312", "py312"])
def test_python_spellings(text: str) -> None:
    assert parse_python(text) == (3, 12)


def test_bad_inputs_raise_value_errors() -> None:
    for bad in (
        lambda: get_runtime("nodejs20.x"),
        lambda: normalize_arch("ppc64le"),
        lambda: parse_python("three"),
    ):
        with pytest.raises(UnknownRuntime) as info:
            bad()
        assert isinstance(info.value, ValueError)


def test_make_target_defaults_and_errors() -> None:
    t = make_target("aarch64", "cp312")
    assert (t.runtime.name, t.arch, t.machine) == ("python3.12", "arm64", "aarch64")
    assert t.python == (3, 12)
    assert t.site_packages == "python/lib/python3.12/site-packages"
    with pytest.raises(UnknownRuntime, match="brings no Python"):
        make_target("x86_64", runtime="provided.al2023")
    with pytest.raises(UnknownRuntime, match=r"runs CPython 3\.12"):
        make_target("x86_64", "3.11", runtime="python3.12")
    with pytest.raises(UnknownRuntime, match="does not run on arm64"):
        make_target("arm64", runtime="python3.7")
    t = make_target("x86_64", "3.11", runtime="provided.al2023")
    assert t.label == "provided.al2023/x86_64 (CPython 3.11)"


def test_all_targets_matrix() -> None:
    ts = all_targets(include_deprecated=True)
    assert len(ts) == 1 + 7 * 2  # python3.7 is x86_64 only; provided.* skipped without python
    assert len(all_targets(include_deprecated=True, provided_python=(3, 11))) == 15 + 4


def test_validation_rejects_unsourced_entries() -> None:
    data = json.loads(json.dumps(facts()))
    data["runtimes"][0]["sources"]["glibc"] = "a-blog-post"
    with pytest.raises(DataError, match="unknown source"):
        _validate(data)
    data = json.loads(json.dumps(facts()))
    del data["quotas"]["source"]
    with pytest.raises(DataError, match="quotas"):
        _validate(data)
