"""Devices: identity, hashing, the default device, NEEDLE_DEVICE, and the course's helpers."""

from __future__ import annotations

import needle as ndl
import numpy as np
import pytest
from needle.plugins import manager


def test_device_lookup_is_cached_hashable_and_compares_by_name(device) -> None:
    again = ndl.device(device.name)
    assert again is ndl.device(device.name), "the same name gives the same object"
    assert again == device and hash(again) == hash(device)
    assert {device: 1}[again] == 1, "devices work as dict keys"
    assert ndl.device(device) is device, "a device passes through"
    assert device != device.name, "a device is not equal to its name string"
    assert repr(device) == f"needle.device({device.name!r})"


def test_device_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="string, not int"):
        ndl.device(3)


def test_other_device_is_not_equal(device, other_device) -> None:
    assert other_device != device and hash(other_device) != hash(device)
    assert len({device, other_device, ndl.device(device.name)}) == 2


def test_course_helpers_name_their_devices() -> None:
    helpers = {"numpy": ndl.cpu_numpy, "cpu": ndl.cpu, "cuda": ndl.cuda}
    for name, helper in helpers.items():
        record = manager.backend(name)
        if record is None:
            with pytest.raises(ndl.UnknownDeviceError, match=f"pip install needle-{name}"):
                helper()
        elif manager.load_backend(name).status == "loaded":
            assert helper() is ndl.device(name)
            if name == "numpy":
                assert ndl.device("cpu_numpy") is helper(), "cpu_numpy is an alias of numpy"
        else:
            with pytest.raises(ndl.DeviceUnavailableError):
                helper()


def test_default_device_is_the_best_available_cpu_side_backend(fresh_plugins, capsys) -> None:
    default = ndl.default_device()
    assert ndl.default_device() is default
    record = fresh_plugins.backend(default.name)
    assert not record.spec.accelerator, "the implicit default is never an accelerator"
    usable = [
        r
        for r in fresh_plugins.backends().values()
        if not r.spec.accelerator and fresh_plugins.load_backend(r.spec.name).status == "loaded"
    ]
    assert record.spec.priority == max(r.spec.priority for r in usable)
    assert default in ndl.all_devices()
    assert capsys.readouterr() == ("", ""), "choosing the default device printed something"


def test_default_device_prefers_priority(backends, device) -> None:
    backends.register("low", backends.clone(device.mod, "low"), priority=-(10**6))
    backends.register("high", backends.clone(device.mod, "high"), priority=10**6)
    backends.register("gpu", backends.clone(device.mod, "gpu"), priority=10**7, accelerator=True)
    assert ndl.default_device().name == "high"
    names = [d.name for d in ndl.all_devices()]
    assert names.index("high") < names.index("low") < names.index("gpu"), names


def test_needle_device_selects_the_default(fresh_plugins, backends, device, monkeypatch) -> None:
    backends.register("chosen", backends.clone(device.mod, "chosen"), priority=-(10**6))
    assert ndl.default_device().name != "chosen"
    monkeypatch.setenv("NEEDLE_DEVICE", "chosen")
    fresh_plugins.reset()  # the default is chosen once per process
    backends.register("chosen", backends.clone(device.mod, "chosen"), priority=-(10**6))
    assert ndl.default_device().name == "chosen"
    t = ndl.Tensor([1.0, 2.0])
    assert t.device.name == "chosen", "a Tensor without device lands on the default device"
    assert ndl.backend_ndarray.NDArray([1.0]).device.name == "chosen"


def test_needle_device_naming_an_unknown_device(fresh_plugins, monkeypatch) -> None:
    monkeypatch.setenv("NEEDLE_DEVICE", "nosuchdev")
    with pytest.raises(ndl.UnknownDeviceError, match="'nosuchdev'"):
        ndl.default_device()


def test_device_helpers(device) -> None:
    assert device.zeros(2, 3).numpy().tolist() == [[0.0] * 3] * 2
    assert device.ones((2,)).numpy().tolist() == [1.0, 1.0]
    assert device.full((2, 2), 7.5).numpy().tolist() == [[7.5, 7.5]] * 2
    assert device.empty((4, 0)).shape == (4, 0)
    one_hot = device.one_hot(4, np.array([2, 0]))
    np.testing.assert_array_equal(one_hot.numpy(), np.eye(4, dtype=np.float32)[[2, 0]])
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        device.one_hot(4, np.array([4]))
    with pytest.raises(TypeError, match="float32"):
        device.zeros(2, dtype="float64")


@pytest.mark.parametrize("draw", ["rand", "randn"])
def test_random_helpers_draw_from_numpy_global_rng(device, draw) -> None:
    np.random.seed(3)
    got = getattr(device, draw)(3, 4).numpy()
    np.random.seed(3)
    want = getattr(np.random, draw)(3, 4).astype(np.float32)
    np.testing.assert_array_equal(got, want, err_msg=f"{device.name}.{draw} vs np.random.{draw}")


def test_no_usable_backend_names_the_installed_ones_and_why(
    fresh_plugins, backends, device, monkeypatch
) -> None:
    monkeypatch.setenv("NEEDLE_PLUGIN_AUTOLOAD", "0")
    ghost = backends.clone(device.mod, "ghost", unavailable_reason=lambda: "no ghost card here")
    backends.register("ghost", ghost, distribution="needle-ghost")
    backends.register("broken", "needle_tests_no_such_kernels", distribution="needle-broken")
    with pytest.raises(ndl.DeviceUnavailableError) as err:
        ndl.Tensor([1.0])
    message = str(err.value)
    assert "no installed needle backend can be the default device here" in message, message
    for word in ("ghost", "no ghost card here", "needle-ghost", "broken", "ModuleNotFoundError"):
        assert word in message, f"{word!r} not in: {message}"


def test_no_backend_at_all_says_how_to_install_one_from_a_clone(fresh_plugins, monkeypatch):
    monkeypatch.setenv("NEEDLE_PLUGIN_AUTOLOAD", "0")
    with pytest.raises(ndl.DeviceUnavailableError, match="no needle backend is installed") as err:
        ndl.default_device()
    assert "pip install ./plugins/needle_cpu" in str(err.value)


def test_only_an_accelerator_installed_is_named_with_how_to_choose_it(
    fresh_plugins, backends, device, monkeypatch
) -> None:
    monkeypatch.setenv("NEEDLE_PLUGIN_AUTOLOAD", "0")
    gpu = backends.clone(device.mod, "gpu", unavailable_reason=lambda: "no GPU driver (test)")
    backends.register("gpu", gpu, accelerator=True, distribution="needle-gpu")
    with pytest.raises(ndl.DeviceUnavailableError, match=r"gpu \(needle-gpu\).*no GPU driver"):
        ndl.default_device()
    fresh_plugins.reset()
    backends.register("gpu", backends.clone(device.mod, "gpu"), accelerator=True)
    with pytest.raises(ndl.DeviceUnavailableError, match="NEEDLE_DEVICE=gpu"):
        ndl.default_device()
