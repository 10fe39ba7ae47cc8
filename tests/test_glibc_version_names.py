"""GLIBC_ / GLIBCXX_ / CXXABI_ needs whose version is not a number: the loader refuses them."""

from __future__ import annotations

from torchwheel.checks.ldso import SystemLibrary, split_version
from torchwheel.checks.libraries import _unreadable_needs


def test_numeric_looking_but_malformed_versions_are_unreadable() -> None:
    needs = ["GLIBC_2.28x", "GLIBCXX_3.4.x", "CXXABI_1.3.13", "GLIBC_2.17", "GLIBC_PRIVATE"]
    # GLIBC_PRIVATE is a real, named version of glibc's: not a malformed number
    assert _unreadable_needs(needs) == ["GLIBC_2.28x", "GLIBCXX_3.4.x"]
    assert _unreadable_needs(["GLIBC_" + "9" * 5000]) == ["GLIBC_" + "9" * 5000]


def test_system_library_never_defines_a_malformed_version() -> None:
    libz = SystemLibrary("libz.so.1", "/lib64/libz.so.1", ceilings={"ZLIB": (1, 2, 7)})
    assert libz.defines("ZLIB_1.2.7") is True
    assert libz.defines("ZLIB_1.2.9") is False
    assert libz.defines("ZLIB_1.2.9x") is False  # a family it has, a version none defines
    assert libz.defines("OTHER_1.0") is None  # a family it does not know: cannot tell
    assert split_version("ZLIB_" + "1" * 5000) is None  # no int-limit crash
