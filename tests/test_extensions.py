"""Extensions: nn modules, optimizers, datasets and transforms arrive through plugin hooks.

The built-ins take the same road as a third-party plugin's; the throwaway plugin
``tests/plugins/needle_ext_demo`` is registered by hand or found through a
(fake) installed distribution's entry point, without pip.
"""

from __future__ import annotations

import importlib
import re
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
    """Two plugins providing one name: reported when the second registers; neither is used."""
    record = registered.register(_Clash(), name="other_swish", distribution="needle-other")
    assert (record.status, record.phase) == ("failed", "needle_nn_modules")
    for word in ("'Swish'", "'ext_demo'", "needle-ext-demo", "'other_swish'", "needle-other"):
        assert word in record.cause, f"{word} not in {record.cause}"
    with pytest.raises(AttributeError, match=r"(?=.*'Swish')(?=.*'ext_demo')(?=.*'other_swish')"):
        nn.Swish  # noqa: B018
    assert not hasattr(nn, "Swish"), "hasattr must answer, not raise"
    assert "Swish" not in registered.extensions("nn_modules")
    assert optim.SignSGD.__module__ == "needle_ext_demo.extras", "the demo's other names stay"


def test_clash_raises_at_registration_in_strict_mode(registered, monkeypatch):
    monkeypatch.setenv("NEEDLE_STRICT_PLUGINS", "1")
    with pytest.raises(registered.PluginError, match=r"(?=.*'Swish')(?=.*'other_swish')"):
        registered.register(_Clash(), name="other_swish")


class _Shadow:
    """A plugin that tries to replace a built-in optimizer."""

    @hookimpl
    def needle_optimizers(self):
        return {"SGD": object}


class _ShadowLinear:
    """A plugin that provides its own ``Linear``."""

    @hookimpl
    def needle_nn_modules(self):
        return {"Linear": type("Linear", (nn.Module,), {})}


class _ShadowLoader:
    """A dataset named like needle.data's DataLoader (not a dataset, but a name there)."""

    @hookimpl
    def needle_datasets(self):
        return {"DataLoader": type("DataLoader", (), {})}


@pytest.mark.parametrize(
    "plugin, name, where",
    [
        (_Shadow, "SGD", "needle.optim"),
        (_ShadowLinear, "Linear", "needle.nn"),
        (_ShadowLoader, "DataLoader", "needle.data"),
    ],  # fmt: skip
    ids=["SGD", "Linear", "DataLoader"],
)
def test_shadowing_a_builtin_is_reported_when_the_plugin_registers(
    fresh_plugins, plugin, name, where
):
    builtin = getattr(importlib.import_module(where), name)
    record = fresh_plugins.register(plugin(), name="shadow", distribution="needle-shadow")
    assert record.status == "failed", "the clash was not reported at registration"
    assert f"'{name}'" in record.cause and where in record.cause and "needle-core" in record.cause
    assert getattr(importlib.import_module(where), name) is builtin
    kind = {"needle.nn": "nn_modules", "needle.optim": "optimizers", "needle.data": "datasets"}
    assert fresh_plugins.extensions(kind[where]).get(name, builtin) is builtin


@pytest.mark.parametrize(
    "returned, match",
    [
        (5, "returned int"),
        ({"bad name": object}, "'bad name'"),
        ({3: object}, "3"),
        ({"_Hidden": object}, "'_Hidden'"),
        ({"Fine": None}, "'Fine'"),
    ],  # fmt: skip
    ids=["int", "space", "int-key", "private", "none-value"],
)
def test_extension_hook_returning_garbage_fails_its_plugin(fresh_plugins, returned, match):
    class Garbage:
        @hookimpl
        def needle_nn_modules(self):
            return returned

    record = fresh_plugins.register(Garbage(), name="garbage")
    assert (record.status, record.phase) == ("failed", "needle_nn_modules"), record
    assert re.search(match, record.cause), record.cause
    assert not hasattr(nn, "Foo"), "hasattr must answer False, not raise"
    assert "Linear" in dir(nn)


def test_unknown_names(fresh_plugins):
    with pytest.raises(AttributeError, match="Swish"):
        nn.Swish  # noqa: B018
    with pytest.raises(AttributeError, match="SignSGD"):
        optim.SignSGD  # noqa: B018
    assert not hasattr(nn, "__wrapped__")
