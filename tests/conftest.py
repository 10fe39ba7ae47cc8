"""Shared fixtures. Fixture modules live in tests/support/ and are registered here."""

pytest_plugins: list[str] = [
    "tests.support.indexserver",
    "tests.support.elves",
    "tests.support.layers",
    "tests.support.packed",
    "tests.support.torch",
]
