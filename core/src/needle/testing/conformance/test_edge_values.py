"""Kernel results at IEEE edge values (signed zeros, infinities, NaN, denormals), against numpy.

``assert_array_equal`` counts -0.0 equal to +0.0, so these tests also compare the sign bit and
where the NaNs are. Each runs at a small size and at one big enough for a backend's threaded,
vectorised path (the values repeat), for each float dtype the backend declares.
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
FLOATS = ["float32", "float64"]


def _need(device, dtype: str, group: str = "arithmetic") -> None:
    if not device.supports(dtype, group):
        pytest.skip(f"{device.name} declares no {dtype} {group} kernels")


def _put(device, values: np.ndarray):
    handle = device.alloc(values.size, values.dtype.name)
    device.mod.from_numpy(np.ascontiguousarray(values), handle)
    return handle


def _get(device, handle, size: int) -> np.ndarray:
    return device.mod.to_numpy(handle, (size,), (1,), 0)


def _tiled(size: int, dtype: str = "float32") -> np.ndarray:
    return np.resize(EDGES, size).astype(dtype)


def _assert_same(got: np.ndarray, want: np.ndarray, what: str, rtol: float = 0.0) -> None:
    """Equal values (within rtol where finite), the same NaNs, the same sign on every zero."""
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, f"{what}: NaN positions")
    np.testing.assert_allclose(got[~nan], want[~nan], rtol=rtol, atol=0, err_msg=what)
    zero = want == 0
    np.testing.assert_array_equal(
        np.signbit(got[zero]), np.signbit(want[zero]), f"{what}: signs of zeros"
    )


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["ewise_tanh", "ewise_exp", "ewise_log"])
def test_unary_edges(device, name: str, size: int, dtype: str) -> None:
    _need(device, dtype, "unary")
    x = _tiled(size, dtype)
    out = device.alloc(size, dtype)
    with np.errstate(all="ignore"):  # the numpy backend warns at these values
        getattr(device.mod, name)(_put(device, x), out)
        want = getattr(np, name.removeprefix("ewise_"))(x)
    rtol = 2e-6 if dtype == "float32" else 1e-13
    _assert_same(_get(device, out, size), want, f"{name} on {device.name} ({dtype})", rtol)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("size", SIZES)
def test_maximum_of_signed_zeros_and_nan(device, size: int, dtype: str) -> None:
    _need(device, dtype)
    x = np.resize(np.array([-0.0, 0.0, -0.0, 0.0, np.nan, 1.0, np.nan], dtype), size)
    y = np.resize(np.array([0.0, -0.0, -0.0, 0.0, 1.0, np.nan, np.nan], dtype), size)
    out = device.alloc(size, dtype)
    device.mod.ewise_maximum(_put(device, x), _put(device, y), out)
    _assert_same(_get(device, out, size), np.maximum(x, y), f"ewise_maximum on {device.name}")
    for val in (0.0, -0.0):
        device.mod.scalar_maximum(_put(device, x), val, out)
        want = np.maximum(x, np.array(val, dtype))
        _assert_same(_get(device, out, size), want, f"scalar_maximum({val}) on {device.name}")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("val", [0.5, 2.0, -1.0, 1.0, 0.0, 3.0])
def test_scalar_power_edges(device, val: float, size: int, dtype: str) -> None:
    _need(device, dtype)
    x = _tiled(size, dtype)
    out = device.alloc(size, dtype)
    with np.errstate(all="ignore"):
        device.mod.scalar_power(_put(device, x), val, out)
        want = np.power(x, np.array(val, dtype))
    rtol = 2e-6 if dtype == "float32" else 1e-13
    _assert_same(_get(device, out, size), want, f"scalar_power({val}) on {device.name}", rtol)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["ewise_add", "ewise_mul", "ewise_div"])
def test_binary_edges(device, name: str, size: int, dtype: str) -> None:
    _need(device, dtype)
    x = _tiled(size, dtype)
    y = np.roll(x, 5)
    out = device.alloc(size, dtype)
    getattr(device.mod, name)(_put(device, x), _put(device, y), out)
    ref = {"ewise_add": np.add, "ewise_mul": np.multiply, "ewise_div": np.divide}[name]
    with np.errstate(all="ignore"):
        want = ref(x, y)
    _assert_same(_get(device, out, size), want, f"{name} on {device.name} ({dtype})")


@pytest.mark.parametrize("dtype", FLOATS)
def test_comparisons_with_nan(device, dtype: str) -> None:
    if device.version == 1:
        pytest.skip("contract v1 compares to float32 1.0/0.0 with eq and ge only")
    _need(device, dtype, "compare")
    x = _tiled(EDGES.size, dtype)
    y = np.roll(x, 5)
    ops = {"ewise_eq": np.equal, "ewise_ne": np.not_equal, "ewise_ge": np.greater_equal,
           "ewise_gt": np.greater}  # fmt: skip
    for name, ref in ops.items():
        out = device.alloc(x.size, "bool")
        getattr(device.mod, name)(_put(device, x), _put(device, y), out)
        np.testing.assert_array_equal(_get(device, out, x.size), ref(x, y), name)
