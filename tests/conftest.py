"""Shared fixtures: a clean plugin manager, throwaway plugins and backends, fake distributions.

The ``device`` fixture and its parametrization over the backends come from needle's pytest
plugin (needle.testing.pytest_plugin), opted into here for this directory.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from needle import contract
from needle.plugins import BackendSpec, hookimpl, manager
from needle.testing.fixtures import device, pytest_generate_tests  # noqa: F401

NEEDLE_ENV = (
    "NEEDLE_PLUGINS",
    "NEEDLE_DISABLE_PLUGINS",
    "NEEDLE_PLUGIN_AUTOLOAD",
    "NEEDLE_DEVICE",
    "NEEDLE_STRICT_PLUGINS",
)


class SpecPlugin:
    """A throwaway plugin object declaring the given backends."""

    def __init__(self, *specs: BackendSpec) -> None:
        self.specs = specs

    @hookimpl
    def needle_backends(self) -> list[BackendSpec]:
        return list(self.specs)


@pytest.fixture
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The plugin manager, forgotten before and after the test, with the NEEDLE_* env cleared."""
    for var in NEEDLE_ENV:
        monkeypatch.delenv(var, raising=False)
    manager.reset()
    yield manager
    manager.reset()


class Backends:
    """Make kernel modules and register them as backends of throwaway plugins."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def clone(
        self, base: Any, name: str, drop: tuple[str, ...] = (), **attrs: Any
    ) -> types.ModuleType:
        """A kernel module with ``base``'s contract functions (minus ``drop``), in sys.modules.

        It declares ``base``'s contract version (2 when ``base`` has a dtype table, else 1),
        which :meth:`register` uses unless told otherwise.
        """
        mod = types.ModuleType(f"needle_tests_kernels_{name}")
        mod.contract_version = 2 if hasattr(base, "__dtypes__") else 1
        for fn in (*contract.REQUIRED, *contract.OPTIONAL, "__dtypes__", "__tile_size__"):
            if fn not in drop and hasattr(base, fn):
                setattr(mod, fn, getattr(base, fn))
        mod.__device_name__ = name
        for key, value in attrs.items():
            setattr(mod, key, value)
        self.monkeypatch.setitem(sys.modules, mod.__name__, mod)
        return mod

    def register(
        self, name: str, module: types.ModuleType | str, **spec: Any
    ) -> manager.PluginRecord:
        """Register plugin ``test-<name>`` declaring backend ``name`` with kernels ``module``."""
        path = module if isinstance(module, str) else module.__name__
        version = getattr(module, "contract_version", contract.CONTRACT_VERSION)
        spec.setdefault("contract_version", version)
        return manager.register(
            SpecPlugin(BackendSpec(name=name, module=path, **spec)),
            name=f"test-{name}",
            distribution=spec.get("distribution", ""),
        )


@pytest.fixture
def backends(fresh_plugins: Any, monkeypatch: pytest.MonkeyPatch) -> Backends:
    return Backends(monkeypatch)


@pytest.fixture
def other_device(backends: Backends, device: Any) -> Any:  # noqa: F811 (the fixture)
    """A second device, ``other``: the test device's kernels registered under another name."""
    import needle as ndl

    backends.register("other", backends.clone(device.mod, "other"), priority=-1000)
    return ndl.device("other")


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Write installed-looking distributions (``*.dist-info``) into a folder on sys.path.

    ``fake_dist(dist, {entry_point: module}, {module: source})`` returns that folder, which
    a subprocess can put on PYTHONPATH. Modules it wrote are dropped from sys.modules after.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    written: list[str] = []

    def make(dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[needle]\n{lines}")
        for module, source in modules.items():
            (site / f"{module}.py").write_text(source)
            written.append(module)
        importlib.invalidate_caches()
        return site

    yield make
    for module in written:
        sys.modules.pop(module, None)


@pytest.fixture
def subprocess_env() -> Any:
    """``env(*paths, **vars)``: os.environ with ``paths`` first on PYTHONPATH, ``vars`` applied.

    A var set to "" is removed. Use it for subprocesses that must see fake distributions.
    """

    def make(*paths: Path, **env: str) -> dict[str, str]:
        out = dict(os.environ)
        pythonpath = [str(p) for p in paths] + [p for p in [out.get("PYTHONPATH", "")] if p]
        out["PYTHONPATH"] = os.pathsep.join(pythonpath)
        for key, value in env.items():
            if value:
                out[key] = value
            else:
                out.pop(key, None)
        return out

    return make
