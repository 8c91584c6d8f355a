"""The conformance suite runs every test on each selected backend (``--backend NAME``)."""

from needle.testing.fixtures import device, pytest_generate_tests

__all__ = ["device", "pytest_generate_tests"]
