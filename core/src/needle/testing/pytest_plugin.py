"""needle's pytest plugin: ``--backend``, the ``device`` parametrization, and the run's rules.

Installed with needle-core (entry point ``pytest11``), so a backend author can
run the conformance suite without this repository::

    pip install '/path/to/needle/core[test]' ./my-backend  # needle-core[test] once on PyPI
    python -m pytest --pyargs needle.testing.conformance --backend mydev

Installing needle never changes another project's tests: the plugin only adds
the ``--backend`` option. A test directory opts in with a ``conftest.py`` that
says ``from needle.testing.fixtures import device, pytest_generate_tests``
(the conformance suite and needle's own tests do); a conftest's hooks and
fixtures apply to its directory only.

Rules:

* The ``device`` fixture is parametrized over the selected backends (all
  registered ones by default); ids read ``test_add[cpu]``. A test that
  parametrizes ``device`` itself keeps its own values.
* An unavailable backend shows as skipped with its reason, unless it was asked
  for explicitly (``--backend`` or ``NEEDLE_TEST_BACKENDS``): then the run fails.
* A needle run (one that used the ``device`` fixture or named a backend) that
  executed zero tests fails: a GPU session can never pass by skipping everything.
  So does a run whose ``device`` tests all skipped because no backend can run here.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("needle")
    group.addoption(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="run needle's device tests on this backend only (repeatable or comma-separated); "
        "an unavailable one fails the run. Default: $NEEDLE_TEST_BACKENDS, else every "
        "registered backend.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a long test (deselect with -m 'not slow')")
    config.pluginmanager.register(_NeedleRun(config), "needle-run")
    try:
        from hypothesis import settings
    except ImportError:
        return
    settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50)
    settings.register_profile("dev", deadline=None, max_examples=50)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")


class _NeedleRun:
    """Per-run state: which backends, whether needle tests ran, how many executed."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        names = [n for opt in config.getoption("backend") or [] for n in opt.split(",")]
        if not names:
            names = os.environ.get("NEEDLE_TEST_BACKENDS", "").split(",")
        self.requested = [n.strip() for n in names if n.strip()]
        self.used = False
        self.executed = 0
        self._params: list[Any] | None = None
        self.unusable: list[str] = []  # why, when no selected backend can run

    def params(self) -> list[Any]:
        """One pytest param per selected backend; unavailable ones carry a skip mark."""
        if self._params is not None:
            return self._params
        from needle import devices
        from needle.plugins import manager

        known = manager.backends()
        names = self.requested or sorted(
            known, key=lambda n: (known[n].spec.accelerator, -known[n].spec.priority)
        )
        params = []
        for name in names:
            try:
                devices.device(name)
                params.append(pytest.param(name, id=name))
            except devices.DeviceError as exc:
                if self.requested:
                    raise pytest.UsageError(
                        f"needle backend {name!r} was requested: {exc}"
                    ) from exc
                params.append(pytest.param(name, id=name, marks=pytest.mark.skip(reason=str(exc))))
        if not params:
            from needle.devices import INSTALL_HINT

            raise pytest.UsageError(f"no needle backend is installed; {INSTALL_HINT}")
        self._params = params
        self.unusable = [p.marks[0].kwargs["reason"] for p in params if p.marks]
        if len(self.unusable) < len(params):
            self.unusable = []
        return params

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.requested:  # fail fast, before collection, on a backend that cannot run
            self.params()

    def parametrize(self, metafunc: pytest.Metafunc) -> None:
        if "device" not in metafunc.fixturenames:
            return
        for mark in metafunc.definition.iter_markers("parametrize"):
            names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
            if isinstance(names, str):
                names = [n.strip() for n in names.split(",")]
            if "device" in names:  # the test brings its own devices
                return
        self.used = True
        metafunc.parametrize("device", self.params(), indirect=True)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.outcome in ("passed", "failed"):
            self.executed += 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.used and self.unusable:  # the device tests all skipped: that is no pass
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    "needle: no needle backend can run here, every device test was skipped: "
                    + "; ".join(self.unusable),
                    red=True,
                )
            return
        if not (self.used or self.requested) or self.executed:
            return
        if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    "needle: this run executed zero tests (all skipped or deselected): failing it",
                    red=True,
                )
