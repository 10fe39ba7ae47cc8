"""Shared fixtures. Fixture modules live in tests/support/ and are registered here."""

pytest_plugins: list[str] = [
    "tests.support.indexserver",
    "tests.support.elves",
    "tests.support.torch",  # before layers and packed, which import its helpers
    "tests.support.layers",
    "tests.support.packed",
    "tests.support.realwheels",
    "tests.support.loaderelves",
    "tests.support.images",
]
