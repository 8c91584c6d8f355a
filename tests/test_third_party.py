"""A third-party backend end to end: tests/third_party/tiny_backend, found through its entry point.

It is made discoverable without pip: its ``*.dist-info`` (entry points taken from its
pyproject.toml) goes into a folder on the path, next to its ``src``. Then the official
conformance suite, which ships inside needle-core, runs against it by name.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import needle as ndl
import numpy as np
import pytest
from needle import contract

TINY = Path(__file__).parent / "third_party" / "tiny_backend"


def _entry_points() -> dict[str, str]:
    """The ``[project.entry-points.needle]`` table of tiny_backend's pyproject.toml."""
    text = (TINY / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.entry-points\.needle\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    assert section, "tiny_backend's pyproject.toml declares no needle entry point"
    pairs = re.findall(r'^\s*(\w+)\s*=\s*"([^"]+)"', section.group(1), re.M)
    return dict(pairs)


def _install(fake_dist) -> Path:
    entry_points = _entry_points()
    assert entry_points == {"tiny": "tiny_backend.plugin"}
    return fake_dist("tiny-backend", entry_points, {})


@pytest.fixture
def tiny_src(monkeypatch):
    """tiny_backend's src on sys.path, its modules forgotten afterwards."""
    monkeypatch.syspath_prepend(str(TINY / "src"))
    yield
    for module in [m for m in sys.modules if m.split(".")[0] == "tiny_backend"]:
        del sys.modules[module]


def test_tiny_backend_is_found_through_its_entry_point(fresh_plugins, fake_dist, tiny_src):
    _install(fake_dist)
    plugin = fresh_plugins.plugins()["tiny"]
    assert (plugin.status, plugin.distribution) == ("loaded", "tiny-backend"), plugin
    assert "tiny_backend.kernels" not in sys.modules, "kernels imported before first use"
    tiny = ndl.device("tiny")
    contract.check_backend(tiny.mod, "tiny", version=1)  # a v1 backend under the v2 core
    assert tiny.version == 1 and tiny.supports("float32") and not tiny.supports("float64")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = ndl.Tensor(a, device=tiny)
    y = (x @ x.transpose()).sum() + ndl.exp(x).max()
    np.testing.assert_allclose(y.numpy(), (a @ a.T).sum() + np.exp(a).max(), rtol=1e-6)


def test_tiny_backend_is_written_independently() -> None:
    for source in (TINY / "src" / "tiny_backend").glob("*.py"):
        assert "needle_numpy" not in source.read_text(), f"{source.name} leans on needle_numpy"


def test_conformance_suite_passes_on_the_tiny_backend(fresh_plugins, fake_dist, subprocess_env):
    site = _install(fake_dist)
    env = subprocess_env(site, TINY / "src", NEEDLE_TEST_BACKENDS="", NEEDLE_STRICT_PLUGINS="1")
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "needle.testing.conformance"]
    proc = subprocess.run(
        [*cmd, "--backend", "tiny", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=site,
        check=False,
    )
    tail = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"conformance suite on tiny failed:\n{tail}"
    summary = proc.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0, f"no test ran: {summary}"
    assert not re.search(r"\d+ (failed|error)", summary), summary
