"""Fixtures for the producer tests beyond the shared ones (tests/conftest.py)."""

from tests.watching import inbox  # noqa: F401  (the `veil watch` tests' private inbox prefix)
