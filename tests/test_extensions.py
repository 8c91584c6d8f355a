"""Extensions: nn modules, optimizers, datasets and transforms arrive through plugin hooks.

The built-ins take the same road as a third-party plugin's; the throwaway plugin
``tests/plugins/needle_ext_demo`` is registered by hand or found through a
(fake) installed distribution's entry point, without pip.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import needle as ndl
import numpy as np
import pytest
from needle import nn, optim
from needle.plugins import hookimpl, hookspecs

DEMO_SRC = Path(__file__).parent / "plugins" / "needle_ext_demo" / "src"


@pytest.fixture
def demo(fresh_plugins, monkeypatch):
    """The demo plugin's module, importable (not registered)."""
    monkeypatch.syspath_prepend(str(DEMO_SRC))
    return importlib.import_module("needle_ext_demo.plugin")


@pytest.fixture
def registered(demo, fresh_plugins):
    fresh_plugins.register(demo, name="ext_demo", distribution="needle-ext-demo")
    return fresh_plugins


def test_builtins_come_through_the_hooks(fresh_plugins):
    modules = fresh_plugins.extensions("nn_modules")
    assert {name: modules[name] for name in nn.__all__} == {n: getattr(nn, n) for n in nn.__all__}
    optimizers = fresh_plugins.extensions("optimizers")
    assert optimizers["SGD"] is optim.SGD and optimizers["Adam"] is optim.Adam
    records = fresh_plugins.plugins()
    for name in ("needle.nn", "needle.optim"):
        assert records[name].status == "loaded", records[name]
        assert records[name].distribution == "needle-core"
    pm = fresh_plugins.get_manager()
    implementers = {pm.get_name(i.plugin) for i in pm.hook.needle_nn_modules.get_hookimpls()}
    assert "needle.nn" in implementers


def test_every_extension_hook_is_documented_and_has_a_builtin(fresh_plugins):
    fresh_plugins.extensions("nn_modules")  # registers the built-in plugins
    pm = fresh_plugins.get_manager()
    for hook in ("needle_nn_modules", "needle_optimizers"):
        assert getattr(hookspecs, hook).__doc__, hook
        assert getattr(pm.hook, hook).get_hookimpls(), f"no built-in implements {hook}"


def test_registered_plugin_appears_in_nn_optim_data(registered, device):
    swish = nn.Swish
    assert issubclass(swish, nn.Module) and "Swish" in dir(nn)
    x = np.array([[-2.0, -0.5, 0.0, 1.5]], dtype=np.float32)
    t = ndl.Tensor(x, device=device)
    out = swish()(t)
    np.testing.assert_allclose(out.numpy(), x / (1 + np.exp(-x)), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(t.grad.numpy(), s + x * s * (1 - s), rtol=1e-5, atol=1e-6)

    p = nn.Parameter(ndl.Tensor([1.0, -1.0], device=device))
    p.grad = ndl.Tensor([0.3, -7.0], device=device)
    optim.SignSGD([p], lr=0.5).step()
    np.testing.assert_allclose(p.numpy(), [0.5, -0.5])

    data = ndl.data.CountingDataset(3, transforms=[ndl.data.AddOne()])
    assert len(data) == 3
    x2, y2 = data[2]
    assert float(x2[0]) == 3.0 and float(y2) == 4.0


def test_plugin_found_through_an_entry_point(fresh_plugins, monkeypatch, fake_dist):
    monkeypatch.syspath_prepend(str(DEMO_SRC))
    fake_dist("needle-ext-demo", {"ext_demo": "needle_ext_demo.plugin"}, {})
    fresh_plugins.reset()
    assert nn.Swish.__module__ == "needle_ext_demo.extras"
    record = fresh_plugins.plugins()["ext_demo"]
    assert record.status == "loaded" and record.distribution == "needle-ext-demo"
    assert "SignSGD" in fresh_plugins.extensions("optimizers")


class _Clash:
    """A second plugin that also provides ``Swish``."""

    @hookimpl
    def needle_nn_modules(self):
        class Swish(nn.Module):
            pass

        return {"Swish": Swish}


def test_clash_names_both_plugins(registered):
    registered.register(_Clash(), name="other_swish")
    with pytest.raises(
        registered.PluginError, match=r"(?=.*'Swish')(?=.*'ext_demo')(?=.*'other_swish')"
    ):
        nn.Swish  # noqa: B018


class _Shadow:
    """A plugin that tries to replace a built-in optimizer."""

    @hookimpl
    def needle_optimizers(self):
        return {"SGD": object}


def test_clash_with_a_builtin_names_core(fresh_plugins):
    fresh_plugins.register(_Shadow(), name="shadow")
    with pytest.raises(
        fresh_plugins.PluginError, match=r"(?=.*'SGD')(?=.*'needle\.optim')(?=.*'shadow')"
    ):
        fresh_plugins.extensions("optimizers")
    assert optim.SGD.__module__ == "needle.optim.optimizers"  # direct imports stay fast


def test_unknown_names(fresh_plugins):
    with pytest.raises(AttributeError, match="Swish"):
        nn.Swish  # noqa: B018
    with pytest.raises(AttributeError, match="SignSGD"):
        optim.SignSGD  # noqa: B018
    assert not hasattr(nn, "__wrapped__")
