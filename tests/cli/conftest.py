"""Fixtures the CLI tests share with the library tests they mirror."""

from tests.files.conftest import small_gguf  # noqa: F401 - re-exported as a fixture for tests/cli
