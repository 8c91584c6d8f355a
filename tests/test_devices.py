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
    course_name = "cpu_numpy" if device.name == "numpy" else device.name
    assert repr(device) == str(device) == f"{course_name}()", "devices print as the course's"


def test_device_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="string, not int"):
        ndl.device(3)


def test_other_device_is_not_equal(device, other_device) -> None:
    assert other_device != device and hash(other_device) != hash(device)
    assert len({device, other_device, ndl.device(device.name)}) == 2


def test_course_helpers_always_return_a_device() -> None:
    helpers = {"numpy": ndl.cpu_numpy, "cpu": ndl.cpu, "cuda": ndl.cuda}
    for name, helper in helpers.items():
        dev = helper()
        assert isinstance(dev, ndl.BackendDevice) and dev.name == name
        record = manager.backend(name)
        if record is not None and manager.load_backend(name).status == "loaded":
            assert dev.enabled() and dev.reason == ""
            assert dev is ndl.device(name)
            if name == "numpy":
                assert ndl.device("cpu_numpy") is dev, "cpu_numpy is an alias of numpy"
            continue
        # As in the course: a device object whose enabled() is False; using it says why.
        assert not dev.enabled() and dev.reason
        error = ndl.UnknownDeviceError if record is None else ndl.DeviceUnavailableError
        with pytest.raises(error, match="pip install" if record is None else ""):
            ndl.device(name)
        with pytest.raises(error):
            ndl.Tensor([1.0, 2.0], device=dev)
        with pytest.raises(error):
            ndl.device(dev)
        assert dev == helper() == ndl.BackendDevice(name, None), "devices compare by name"


def test_device_attributes_reach_the_backend_module(device) -> None:
    """Course code calls backend functions through the device (``device.ewise_add``)."""
    assert device.ewise_add is device.mod.ewise_add
    with pytest.raises(AttributeError, match="no attribute 'no_such_kernel'"):
        device.no_such_kernel  # noqa: B018
    assert not hasattr(device, "no_such_kernel")


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
    if device.supports("int64") and device.supports("float64"):
        assert device.zeros(2, dtype="int64").numpy().dtype == np.int64
        assert device.one_hot(3, [1], dtype="float64").numpy().dtype == np.float64
    with pytest.raises(TypeError, match="complex"):
        device.zeros(2, dtype="complex64")


@pytest.mark.parametrize("draw", ["rand", "randn"])
def test_random_helpers_draw_from_numpy_global_rng(device, draw) -> None:
    np.random.seed(3)
    got = getattr(device, draw)(3, 4).numpy()
    np.random.seed(3)
    want = getattr(np.random, draw)(3, 4).astype(np.float32)
    np.testing.assert_array_equal(got, want, err_msg=f"{device.name}.{draw} vs np.random.{draw}")


def test_out_of_memory_on_the_host_empties_the_device_cache_and_retries(backends, device):
    """numpy's allocations inside needle get the memory a backend's buffer cache holds."""
    calls = {"empty_cache": 0, "to_numpy": 0}

    def empty_cache() -> None:
        calls["empty_cache"] += 1

    def to_numpy(*args):
        calls["to_numpy"] += 1
        if calls["empty_cache"] == 0:
            raise MemoryError("the cache holds the memory")
        return device.mod.to_numpy(*args)

    backends.register(
        "tight", backends.clone(device.mod, "tight", empty_cache=empty_cache, to_numpy=to_numpy)
    )
    tight = ndl.device("tight")
    x = ndl.NDArray(np.arange(4, dtype=np.float32), device=tight)
    np.testing.assert_array_equal(x.numpy(), np.arange(4))
    assert calls == {"empty_cache": 1, "to_numpy": 2}


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
