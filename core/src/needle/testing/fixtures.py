"""The ``device`` fixture and its parametrization, for test directories that opt in.

A ``conftest.py`` that imports both names runs each test of its directory that takes
``device`` once per selected backend (``--backend``, ``NEEDLE_TEST_BACKENDS``, or every
registered backend); other directories and other projects are untouched::

    from needle.testing.fixtures import device, pytest_generate_tests
"""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["device", "pytest_generate_tests"]


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> Any:
    """The needle device (``BackendDevice``) this test runs on."""
    from needle import devices

    return devices.device(request.param)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``device`` over the selected backends (see needle's pytest plugin)."""
    run = metafunc.config.pluginmanager.get_plugin("needle-run")
    if run is None:
        raise pytest.UsageError(
            "needle's pytest plugin is not loaded (is needle-core installed, or pytest run "
            "with -p no:needle?)"
        )
    run.parametrize(metafunc)
