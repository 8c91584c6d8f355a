"""Kernel results at IEEE edge values (signed zeros, infinities, NaN, denormals), against numpy.

``assert_array_equal`` counts -0.0 equal to +0.0, so these tests also compare the sign bit and
where the NaNs are. Each runs at a small size and at one big enough for a backend's threaded,
vectorised path (the values repeat).
"""

from __future__ import annotations

import numpy as np
import pytest

EDGES = np.array(
    [0.0, -0.0, 1e-42, -1e-42, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, 20.0, -20.0, 88.5, -88.5,
     3.4e38, -3.4e38, np.inf, -np.inf, np.nan],
    np.float32,
)  # fmt: skip
SIZES = [EDGES.size, 100_003]


def _put(device, values: np.ndarray):
    handle = device.mod.Array(values.size)
    device.mod.from_numpy(np.ascontiguousarray(values, np.float32), handle)
    return handle


def _get(device, handle, size: int) -> np.ndarray:
    return device.mod.to_numpy(handle, (size,), (1,), 0)


def _tiled(size: int) -> np.ndarray:
    return np.resize(EDGES, size)


def _assert_same(got: np.ndarray, want: np.ndarray, what: str, rtol: float = 0.0) -> None:
    """Equal values (within rtol where finite), the same NaNs, the same sign on every zero."""
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, f"{what}: NaN positions")
    np.testing.assert_allclose(got[~nan], want[~nan], rtol=rtol, atol=0, err_msg=what)
    zero = want == 0
    np.testing.assert_array_equal(
        np.signbit(got[zero]), np.signbit(want[zero]), f"{what}: signs of zeros"
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["ewise_tanh", "ewise_exp", "ewise_log"])
def test_unary_edges(device, name: str, size: int) -> None:
    x = _tiled(size)
    out = device.mod.Array(size)
    with np.errstate(all="ignore"):  # the numpy backend warns at these values
        getattr(device.mod, name)(_put(device, x), out)
        want = getattr(np, name.removeprefix("ewise_"))(x)
    _assert_same(_get(device, out, size), want, f"{name} on {device.name}", rtol=2e-6)


@pytest.mark.parametrize("size", SIZES)
def test_maximum_of_signed_zeros_and_nan(device, size: int) -> None:
    x = np.resize(np.array([-0.0, 0.0, -0.0, 0.0, np.nan, 1.0, np.nan], np.float32), size)
    y = np.resize(np.array([0.0, -0.0, -0.0, 0.0, 1.0, np.nan, np.nan], np.float32), size)
    out = device.mod.Array(size)
    device.mod.ewise_maximum(_put(device, x), _put(device, y), out)
    _assert_same(_get(device, out, size), np.maximum(x, y), f"ewise_maximum on {device.name}")
    for val in (0.0, -0.0):
        device.mod.scalar_maximum(_put(device, x), val, out)
        want = np.maximum(x, np.float32(val))
        _assert_same(_get(device, out, size), want, f"scalar_maximum({val}) on {device.name}")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("val", [0.5, 2.0, -1.0, 1.0, 0.0, 3.0])
def test_scalar_power_edges(device, val: float, size: int) -> None:
    x = _tiled(size)
    out = device.mod.Array(size)
    with np.errstate(all="ignore"):
        device.mod.scalar_power(_put(device, x), val, out)
        want = np.power(x, np.float32(val))
    _assert_same(_get(device, out, size), want, f"scalar_power({val}) on {device.name}", 2e-6)
