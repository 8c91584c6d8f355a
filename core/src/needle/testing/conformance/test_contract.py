"""Kernel-level tests: each backend-contract function on handles, against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from needle import contract

RNG = np.random.default_rng(0)


def _put(device, values: np.ndarray):
    values = np.ascontiguousarray(values, dtype=np.float32)
    handle = device.mod.Array(values.size)
    if values.size:
        device.mod.from_numpy(values, handle)
    return handle


def _get(device, handle, shape) -> np.ndarray:
    shape = tuple(shape)
    strides = tuple(int(s) for s in np.cumprod((1,) + shape[:0:-1])[::-1]) if shape else ()
    return device.mod.to_numpy(handle, shape, strides, 0)


def test_backend_meets_the_contract(device) -> None:
    contract.check_backend(device.mod, device.name)
    assert device.mod.__device_name__ == device.name or device.mod.__device_name__


@pytest.mark.parametrize("size", [0, 1, 7, 1000, 100_003])
def test_array_roundtrip_and_fill(device, size: int) -> None:
    values = RNG.standard_normal(size).astype(np.float32)
    handle = _put(device, values)
    assert handle.size == size
    assert isinstance(handle.ptr(), int)
    if size:
        np.testing.assert_array_equal(_get(device, handle, (size,)), values)
        device.mod.fill(handle, 2.5)
        np.testing.assert_array_equal(_get(device, handle, (size,)), np.full(size, 2.5, np.float32))


def test_to_numpy_returns_a_copy(device) -> None:
    handle = _put(device, np.arange(6))
    out = device.mod.to_numpy(handle, (2, 3), (3, 1), 0)
    out[:] = -1
    np.testing.assert_array_equal(_get(device, handle, (6,)), np.arange(6))


VIEWS = [  # (buffer size, shape, strides, offset)
    (24, (2, 3, 4), (12, 4, 1), 0),
    (24, (4, 3, 2), (1, 4, 12), 0),
    (24, (3, 4), (4, 1), 12),
    (24, (2, 2), (-4, -1), 23),
    (24, (3, 5), (0, 1), 2),
    (24, (6,), (4,), 0),
    (24, (2, 1, 3), (12, 0, -2), 5),
    (10_000, (50, 40), (1, 50), 0),
    (64, (2, 2, 2, 2, 2, 2), (32, 16, 8, 4, 2, 1), 0),
    (64, (2, 2, 2, 2, 2, 2), (1, 2, 4, 8, 16, 32), 0),
    (8, (), (), 3),
]


def _np_view(buf: np.ndarray, shape, strides, offset) -> np.ndarray:
    return (
        np.lib.stride_tricks.as_strided(buf[offset:], shape, [s * 4 for s in strides])
        if shape
        else buf[offset]
    )


@pytest.mark.parametrize("size,shape,strides,offset", VIEWS, ids=[str(v[1:]) for v in VIEWS])
def test_compact_and_setitem(device, size, shape, strides, offset) -> None:
    values = RNG.standard_normal(size).astype(np.float32)
    src = _put(device, values)
    n = int(np.prod(shape))
    want = np.array(_np_view(values, shape, strides, offset)).reshape(-1)
    out = device.mod.Array(n)
    device.mod.compact(src, out, shape, strides, offset)
    np.testing.assert_array_equal(_get(device, out, (n,)), want)
    np.testing.assert_array_equal(
        device.mod.to_numpy(src, shape, strides, offset).reshape(-1), want
    )

    if 0 in strides:  # writing through a broadcast view is ill-defined
        return
    new = RNG.standard_normal(n).astype(np.float32)
    device.mod.ewise_setitem(_put(device, new), src, shape, strides, offset)
    expect = values.copy()
    view = _np_view(expect, shape, strides, offset) if shape else None
    if shape:
        np.lib.stride_tricks.as_strided(
            expect[offset:], shape, [s * 4 for s in strides], writeable=True
        )[...] = new.reshape(shape)
    else:
        expect[offset] = new[0]
    del view
    np.testing.assert_array_equal(_get(device, src, (size,)), expect)
    device.mod.scalar_setitem(n, 7.0, src, shape, strides, offset)
    if shape:
        np.lib.stride_tricks.as_strided(
            expect[offset:], shape, [s * 4 for s in strides], writeable=True
        )[...] = 7.0
    else:
        expect[offset] = 7.0
    np.testing.assert_array_equal(_get(device, src, (size,)), expect)


BINARY = {
    "ewise_add": np.add, "ewise_mul": np.multiply, "ewise_div": np.divide,
    "ewise_maximum": np.maximum, "ewise_eq": np.equal, "ewise_ge": np.greater_equal,
}  # fmt: skip
SCALAR = {
    "scalar_add": np.add, "scalar_mul": np.multiply, "scalar_div": np.divide,
    "scalar_power": np.power, "scalar_maximum": np.maximum, "scalar_eq": np.equal,
    "scalar_ge": np.greater_equal,
}  # fmt: skip
UNARY = {"ewise_log": np.log, "ewise_exp": np.exp, "ewise_tanh": np.tanh}


@pytest.mark.parametrize("size", [1, 17, 4099, 300_001])
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_kernels(device, name: str, size: int) -> None:
    a = RNG.uniform(0.5, 2.0, size).astype(np.float32)
    b = RNG.uniform(0.5, 2.0, size).astype(np.float32)
    b[::3] = a[::3]  # ties for eq / ge / maximum
    out = device.mod.Array(size)
    getattr(device.mod, name)(_put(device, a), _put(device, b), out)
    np.testing.assert_allclose(
        _get(device, out, (size,)), BINARY[name](a, b).astype(np.float32), rtol=1e-6
    )


@pytest.mark.parametrize("size", [1, 17, 4099, 300_001])
@pytest.mark.parametrize("name", list(SCALAR))
def test_scalar_kernels(device, name: str, size: int) -> None:
    a = RNG.uniform(0.5, 2.0, size).astype(np.float32)
    val = float(a[size // 2])  # a tie for eq / ge
    out = device.mod.Array(size)
    getattr(device.mod, name)(_put(device, a), val, out)
    want = SCALAR[name](a, np.float32(val)).astype(np.float32)
    np.testing.assert_allclose(_get(device, out, (size,)), want, rtol=2e-6)


@pytest.mark.parametrize("size", [1, 17, 4099, 300_001])
@pytest.mark.parametrize("name", list(UNARY))
def test_unary_kernels(device, name: str, size: int) -> None:
    a = RNG.uniform(0.1, 4.0, size).astype(np.float32) * (
        1 if name == "ewise_log" else RNG.choice([-1, 1], size)
    )
    out = device.mod.Array(size)
    getattr(device.mod, name)(_put(device, a), out)
    np.testing.assert_allclose(_get(device, out, (size,)), UNARY[name](a), rtol=2e-6, atol=1e-7)


MATMUL_SHAPES = [
    (1, 1, 1), (2, 3, 4), (7, 1, 5), (16, 16, 16), (33, 65, 17), (128, 64, 96), (1, 300, 1),
    (257, 129, 255),
]  # fmt: skip


@pytest.mark.parametrize("m,n,p", MATMUL_SHAPES)
def test_matmul(device, m: int, n: int, p: int) -> None:
    a, b = (
        RNG.standard_normal((m, n)).astype(np.float32),
        RNG.standard_normal((n, p)).astype(np.float32),
    )
    out = device.mod.Array(m * p)
    device.mod.matmul(_put(device, a), _put(device, b), out, m, n, p)
    np.testing.assert_allclose(
        _get(device, out, (m, p)), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "outer,reduce_size", [(1, 1), (1, 1000), (7, 13), (1000, 3), (3, 100_000), (4096, 64)]
)
def test_reductions(device, outer: int, reduce_size: int) -> None:
    a = RNG.standard_normal((outer, reduce_size)).astype(np.float32)
    for name, ref in (("reduce_sum", np.sum), ("reduce_max", np.max)):
        out = device.mod.Array(outer)
        getattr(device.mod, name)(_put(device, a), out, reduce_size)
        np.testing.assert_allclose(
            _get(device, out, (outer,)), ref(a.astype(np.float64), axis=1), rtol=1e-4, atol=1e-3,
            err_msg=f"{name} on {device.name}",
        )  # fmt: skip


def test_optional_capabilities(device) -> None:
    caps = contract.capabilities(device.mod)
    assert set(caps) <= set(contract.OPTIONAL)
    if "ewise_power" in caps:
        a, b = (
            RNG.uniform(0.5, 2, 100).astype(np.float32),
            RNG.uniform(-2, 2, 100).astype(np.float32),
        )
        out = device.mod.Array(100)
        device.mod.ewise_power(_put(device, a), _put(device, b), out)
        np.testing.assert_allclose(_get(device, out, (100,)), a**b, rtol=1e-5)
    if "bmm" in caps:
        a, b = (
            RNG.standard_normal((3, 5, 7)).astype(np.float32),
            RNG.standard_normal((3, 7, 2)).astype(np.float32),
        )
        out = device.mod.Array(30)
        device.mod.bmm(_put(device, a), _put(device, b), out, 3, 5, 7, 2)
        np.testing.assert_allclose(_get(device, out, (3, 5, 2)), a @ b, rtol=1e-4, atol=1e-4)
    if "conv2d" in caps:
        from needle.testing.optable import reference_conv

        for n, h, w, cin, cout, k, stride, pad in [
            (2, 9, 7, 3, 5, 3, 1, 1),
            (1, 8, 8, 4, 2, 3, 2, 0),
            (3, 5, 5, 2, 3, 1, 1, 2),
        ]:
            x = RNG.standard_normal((n, h, w, cin)).astype(np.float32)
            wt = RNG.standard_normal((k, k, cin, cout)).astype(np.float32)
            want = reference_conv(x, wt, stride, pad)
            out = device.mod.Array(want.size)
            device.mod.conv2d(
                _put(device, x), _put(device, wt), out, n, h, w, cin, cout, k, stride, pad
            )
            np.testing.assert_allclose(_get(device, out, want.shape), want, rtol=1e-4, atol=1e-4)


def test_bad_calls_raise_python_errors(device) -> None:
    mod = device.mod
    a, b, small = mod.Array(10), mod.Array(10), mod.Array(3)
    mod.fill(a, 1.0)
    mod.fill(b, 1.0)
    with pytest.raises((ValueError, RuntimeError, IndexError)):
        mod.ewise_add(a, b, small)
    with pytest.raises((ValueError, RuntimeError, IndexError)):
        mod.matmul(a, b, small, 2, 5, 2)
    with pytest.raises((ValueError, RuntimeError, IndexError)):
        mod.compact(a, small, (3, 3), (3, 1), 5)  # reaches past the end of a
    with pytest.raises((ValueError, RuntimeError, IndexError)):
        mod.reduce_sum(a, small, 4)
    with pytest.raises((ValueError, RuntimeError, IndexError, TypeError)):
        mod.from_numpy(np.zeros(4, np.float32), a)
    with pytest.raises((ValueError, RuntimeError, MemoryError, OverflowError, TypeError)):
        mod.Array(-1)
