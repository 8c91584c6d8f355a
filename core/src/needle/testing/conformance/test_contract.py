"""Kernel-level tests: each backend-contract function on handles, against numpy, per dtype.

Every test that takes ``dtype`` runs for the dtypes the backend declares for the
kernel's group (``__dtypes__``; float32 only for a contract v1 backend) and skips
the others with a message.
"""

from __future__ import annotations

import numpy as np
import pytest

from needle import contract

RNG = np.random.default_rng(0)
ALL = contract.DTYPES
NUMBERS = ("float32", "float64", "int32", "int64")
FLOATS = ("float32", "float64")


def _need(device, dtype: str, group: str) -> None:
    if not device.supports(dtype, group):
        pytest.skip(f"{device.name} declares no {dtype} for its {group} kernels")


def _alloc(device, size: int, dtype: str = "float32"):
    return device.alloc(size, dtype)


def _put(device, values: np.ndarray, dtype: str | None = None):
    values = np.ascontiguousarray(values, dtype=dtype or values.dtype)
    handle = _alloc(device, values.size, values.dtype.name)
    if values.size:
        device.mod.from_numpy(values, handle)
    return handle


def _get(device, handle, shape) -> np.ndarray:
    shape = tuple(shape)
    strides = tuple(int(s) for s in np.cumprod((1,) + shape[:0:-1])[::-1]) if shape else ()
    return device.mod.to_numpy(handle, shape, strides, 0)


def _values(dtype: str, size, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    """Random values of ``dtype`` (integers in [low, high], bools half True)."""
    if dtype == "bool":
        return RNG.random(size) < 0.5
    if dtype.startswith("int"):
        return RNG.integers(int(low), int(high) + 1, size).astype(dtype)
    return RNG.uniform(low, high, size).astype(dtype)


def _compare_dtype(device) -> str:
    return "float32" if device.version == 1 else "bool"


def test_backend_meets_the_contract(device) -> None:
    contract.check_backend(device.mod, device.name, device.version)
    assert device.mod.__device_name__ == device.name or device.mod.__device_name__


def test_dtype_table(device) -> None:
    table = contract.dtypes(device.mod, device.version)
    assert "float32" in table["memory"], "every backend holds float32"
    for group, names in table.items():
        assert set(names) <= set(table["memory"]), f"{group} has dtypes memory lacks"
    if device.version >= 2 and table["compare"]:
        assert "bool" in table["memory"], "comparisons write bool: memory must hold it"


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("size", [0, 1, 7, 1000, 100_003])
def test_array_roundtrip_and_fill(device, size: int, dtype: str) -> None:
    _need(device, dtype, "memory")
    values = _values(dtype, size)
    handle = _put(device, values)
    assert handle.size == size
    assert getattr(handle, "dtype", "float32") == dtype
    assert isinstance(handle.ptr(), int)
    if size:
        got = _get(device, handle, (size,))
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, values)
        fill = {"bool": True, "int32": -7, "int64": 2**40}.get(dtype, 2.5)
        device.mod.fill(handle, fill)
        np.testing.assert_array_equal(_get(device, handle, (size,)), np.full(size, fill, dtype))


def test_to_numpy_returns_a_copy(device) -> None:
    handle = _put(device, np.arange(6, dtype=np.float32))
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


def _np_view(buf: np.ndarray, shape, strides, offset, writeable: bool = False) -> np.ndarray:
    if not shape:
        return buf[offset : offset + 1].reshape(())
    byte_strides = [s * buf.itemsize for s in strides]
    return np.lib.stride_tricks.as_strided(buf[offset:], shape, byte_strides, writeable=writeable)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "bool"])
@pytest.mark.parametrize("size,shape,strides,offset", VIEWS, ids=[str(v[1:]) for v in VIEWS])
def test_compact_and_setitem(device, size, shape, strides, offset, dtype) -> None:
    _need(device, dtype, "memory")
    values = _values(dtype, size, -100, 100)
    src = _put(device, values)
    n = int(np.prod(shape))
    want = np.array(_np_view(values, shape, strides, offset)).reshape(-1)
    out = _alloc(device, n, dtype)
    device.mod.compact(src, out, shape, strides, offset)
    np.testing.assert_array_equal(_get(device, out, (n,)), want)
    np.testing.assert_array_equal(
        device.mod.to_numpy(src, shape, strides, offset).reshape(-1), want
    )

    if 0 in strides:  # writing through a broadcast view is ill-defined
        return
    new = _values(dtype, n, -100, 100)
    device.mod.ewise_setitem(_put(device, new), src, shape, strides, offset)
    expect = values.copy()
    _np_view(expect, shape, strides, offset, writeable=True)[...] = new.reshape(shape)
    np.testing.assert_array_equal(_get(device, src, (size,)), expect)
    fill = np.array(7, dtype=dtype).item()
    device.mod.scalar_setitem(n, fill, src, shape, strides, offset)
    _np_view(expect, shape, strides, offset, writeable=True)[...] = fill
    np.testing.assert_array_equal(_get(device, src, (size,)), expect)


@pytest.mark.parametrize("target", ALL)
@pytest.mark.parametrize("source", ALL)
def test_cast(device, source: str, target: str) -> None:
    if device.version == 1:
        pytest.skip("contract v1 has no cast (float32 only)")
    _need(device, source, "memory")
    _need(device, target, "memory")
    values = _values(source, 1001, -50, 50)
    if source in FLOATS:
        values[:4] = [0.0, -0.0, -2.7, 2.7]  # truncation toward zero both ways
    out = _alloc(device, values.size, target)
    device.mod.cast(_put(device, values), out)
    got = _get(device, out, (values.size,))
    assert got.dtype == target
    np.testing.assert_array_equal(got, values.astype(target))


def test_cast_of_nan_and_inf_to_integers_does_not_crash(device) -> None:
    if device.version == 1 or not device.supports("int32"):
        pytest.skip("no integer dtypes")
    values = np.array([np.nan, np.inf, -np.inf, 1e30, 3.0], dtype=np.float32)
    out = _alloc(device, 5, "int32")
    device.mod.cast(_put(device, values), out)
    assert _get(device, out, (5,))[4] == 3  # the others are unspecified, but no crash


ARITHMETIC = {
    "ewise_add": np.add, "ewise_mul": np.multiply, "ewise_div": np.divide,
    "ewise_maximum": np.maximum,
}  # fmt: skip
COMPARE = {
    "ewise_eq": np.equal, "ewise_ge": np.greater_equal, "ewise_ne": np.not_equal,
    "ewise_gt": np.greater,
}  # fmt: skip
SCALAR = {
    "scalar_add": np.add, "scalar_mul": np.multiply, "scalar_div": np.divide,
    "scalar_power": np.power, "scalar_maximum": np.maximum,
}  # fmt: skip
SCALAR_COMPARE = {
    "scalar_eq": np.equal, "scalar_ge": np.greater_equal, "scalar_ne": np.not_equal,
    "scalar_gt": np.greater, "scalar_le": np.less_equal, "scalar_lt": np.less,
}  # fmt: skip
UNARY = {"ewise_log": np.log, "ewise_exp": np.exp, "ewise_tanh": np.tanh}
V1 = {"ewise_eq", "ewise_ge", "scalar_eq", "scalar_ge"}  # v1 has only these comparisons
SIZES = [1, 17, 4099, 300_001]


def _tolerance(dtype: str) -> dict:
    return {"float32": {"rtol": 2e-6}, "float64": {"rtol": 1e-13}}.get(dtype, {"rtol": 0})


def _skip_unless_defined(device, name: str) -> None:
    if device.version == 1 and name.startswith(("ewise_", "scalar_")) and name not in V1:
        if name in COMPARE or name in SCALAR_COMPARE:
            pytest.skip(f"contract v1 has no {name}")


@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", [*ARITHMETIC, *COMPARE])
def test_binary_kernels(device, name: str, size: int, dtype: str) -> None:
    _skip_unless_defined(device, name)
    compare = name in COMPARE
    _need(device, dtype, "compare" if compare else "arithmetic")
    if name == "ewise_div" and dtype not in FLOATS:
        pytest.skip("true division runs on floats (core casts integers first)")
    a = _values(dtype, size, 1, 9) if dtype not in FLOATS else _values(dtype, size, 0.5, 2.0)
    b = _values(dtype, size, 1, 9) if dtype not in FLOATS else _values(dtype, size, 0.5, 2.0)
    b[::3] = a[::3]  # ties for eq / ge / maximum
    out_dtype = _compare_dtype(device) if compare else dtype
    out = _alloc(device, size, out_dtype)
    getattr(device.mod, name)(_put(device, a), _put(device, b), out)
    got = _get(device, out, (size,))
    want = ARITHMETIC.get(name, COMPARE.get(name))(a, b)
    assert got.dtype == out_dtype, f"{name} on {dtype} wrote {got.dtype}"
    np.testing.assert_allclose(got, want.astype(out_dtype), **_tolerance(dtype))


@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", [*SCALAR, *SCALAR_COMPARE])
def test_scalar_kernels(device, name: str, size: int, dtype: str) -> None:
    _skip_unless_defined(device, name)
    compare = name in SCALAR_COMPARE
    _need(device, dtype, "compare" if compare else "arithmetic")
    if name == "scalar_div" and dtype not in FLOATS:
        pytest.skip("true division runs on floats (core casts integers first)")
    a = _values(dtype, size, 1, 9) if dtype not in FLOATS else _values(dtype, size, 0.5, 2.0)
    val = a[size // 2].item()  # a tie for eq / ge
    if name == "scalar_power":
        val = 3 if dtype not in FLOATS else 1.7
    out_dtype = _compare_dtype(device) if compare else dtype
    out = _alloc(device, size, out_dtype)
    getattr(device.mod, name)(_put(device, a), val, out)
    want = SCALAR.get(name, SCALAR_COMPARE.get(name))(a, np.array(val, dtype=dtype))
    got = _get(device, out, (size,))
    assert got.dtype == out_dtype
    np.testing.assert_allclose(got, want.astype(out_dtype), **_tolerance(dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(UNARY))
def test_unary_kernels(device, name: str, size: int, dtype: str) -> None:
    _need(device, dtype, "unary")
    a = RNG.uniform(0.1, 4.0, size).astype(dtype) * (
        1 if name == "ewise_log" else RNG.choice([-1, 1], size).astype(dtype)
    )
    out = _alloc(device, size, dtype)
    getattr(device.mod, name)(_put(device, a), out)
    tol = {"rtol": 2e-6, "atol": 1e-7} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-15}
    np.testing.assert_allclose(_get(device, out, (size,)), UNARY[name](a), **tol)


MATMUL_SHAPES = [
    (1, 1, 1), (2, 3, 4), (7, 1, 5), (16, 16, 16), (33, 65, 17), (128, 64, 96), (1, 300, 1),
    (257, 129, 255),
]  # fmt: skip


@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize("m,n,p", MATMUL_SHAPES)
def test_matmul(device, m: int, n: int, p: int, dtype: str) -> None:
    _need(device, dtype, "matmul")
    a, b = _values(dtype, (m, n)), _values(dtype, (n, p))
    out = _alloc(device, m * p, dtype)
    device.mod.matmul(_put(device, a), _put(device, b), out, m, n, p)
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = {"float32": 1e-4, "float64": 1e-10}.get(dtype, 0)
    np.testing.assert_allclose(_get(device, out, (m, p)), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("trans", [(True, False), (False, True), (True, True)], ids=str)
@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize("m,n,p", MATMUL_SHAPES)
def test_matmul_t(device, m: int, n: int, p: int, dtype: str, trans) -> None:
    """matmul_t reads a (n, m) and b (p, n) buffers transposed, in place."""
    if not device.has("matmul_t"):
        pytest.skip(f"{device.name} declares no matmul_t (core copies transposed operands)")
    _need(device, dtype, "matmul")
    ta, tb = trans
    a, b = _values(dtype, (m, n)), _values(dtype, (n, p))
    held_a = np.ascontiguousarray(a.T) if ta else a
    held_b = np.ascontiguousarray(b.T) if tb else b
    out = _alloc(device, m * p, dtype)
    device.mod.matmul_t(_put(device, held_a), _put(device, held_b), out, m, n, p, ta, tb)
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = {"float32": 1e-4, "float64": 1e-10}.get(dtype, 0)
    np.testing.assert_allclose(_get(device, out, (m, p)), want, rtol=tol, atol=tol)
    with pytest.raises(ValueError):
        device.mod.matmul_t(_put(device, held_a), _put(device, held_b), out, m, n + 1, p, ta, tb)


@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize(
    "outer,reduce_size", [(1, 1), (1, 1000), (7, 13), (1000, 3), (3, 100_000), (4096, 64)]
)
def test_reductions(device, outer: int, reduce_size: int, dtype: str) -> None:
    _need(device, dtype, "reduce")
    a = _values(dtype, (outer, reduce_size), -100, 100)
    tol = {"float32": {"rtol": 1e-4, "atol": 1e-3}, "float64": {"rtol": 1e-10, "atol": 1e-9}}
    for name, ref in (("reduce_sum", np.sum), ("reduce_max", np.max)):
        out = _alloc(device, outer, dtype)
        getattr(device.mod, name)(_put(device, a), out, reduce_size)
        want = ref(a.astype(np.float64) if dtype in FLOATS else a, axis=1)
        np.testing.assert_allclose(
            _get(device, out, (outer,)), want, **tol.get(dtype, {"rtol": 0}),
            err_msg=f"{name} on {device.name} ({dtype})",
        )  # fmt: skip


def test_reduce_max_propagates_nan(device) -> None:
    a = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]], np.float32)
    out = _alloc(device, 2)
    device.mod.reduce_max(_put(device, a), out, 3)
    got = _get(device, out, (2,))
    assert np.isnan(got[0]) and got[1] == 6.0


def test_optional_capabilities(device) -> None:
    caps = contract.capabilities(device.mod, device.version)
    assert set(caps) <= set(contract.OPTIONAL)
    if "ewise_power" in caps:
        a, b = (
            RNG.uniform(0.5, 2, 100).astype(np.float32),
            RNG.uniform(-2, 2, 100).astype(np.float32),
        )
        out = _alloc(device, 100)
        device.mod.ewise_power(_put(device, a), _put(device, b), out)
        np.testing.assert_allclose(_get(device, out, (100,)), a**b, rtol=1e-5)
    if "bmm" in caps:
        for dtype in [d for d in NUMBERS if device.supports(d, "matmul")]:
            a, b = _values(dtype, (3, 5, 7)), _values(dtype, (3, 7, 2))
            out = _alloc(device, 30, dtype)
            device.mod.bmm(_put(device, a), _put(device, b), out, 3, 5, 7, 2)
            np.testing.assert_allclose(_get(device, out, (3, 5, 2)), a @ b, rtol=1e-4, atol=1e-4)
    if "matmul_tiled" in caps:
        t = device.mod.__tile_size__
        m, n, p = 2 * t, 3 * t, t
        a, b = (
            _values("float32", (m // t, n // t, t, t)),
            _values("float32", (n // t, p // t, t, t)),
        )
        out = _alloc(device, m * p)
        device.mod.matmul_tiled(_put(device, a), _put(device, b), out, m, n, p)
        dense = lambda x, r, c: x.transpose(0, 2, 1, 3).reshape(r, c)  # noqa: E731
        got = dense(_get(device, out, (m // t, p // t, t, t)), m, p)
        np.testing.assert_allclose(got, dense(a, m, n) @ dense(b, n, p), rtol=1e-4, atol=1e-4)
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
            out = _alloc(device, want.size)
            device.mod.conv2d(
                _put(device, x), _put(device, wt), out, n, h, w, cin, cout, k, stride, pad
            )
            np.testing.assert_allclose(_get(device, out, want.shape), want, rtol=1e-4, atol=1e-4)


def _twice_equal_to(device, want: np.ndarray, dtype: str, call, cout: int) -> None:
    """``call(out, cout)`` matches ``want``, gives the same bits when called again, and raises
    ValueError for a channel count that does not fit the buffers."""
    outs = []
    for _ in range(2):
        out = _alloc(device, want.size, dtype)
        call(out, cout)
        outs.append(_get(device, out, want.shape))
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(outs[0], want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(outs[1], outs[0])
    with pytest.raises(ValueError):
        call(out, cout + 1)


CONV_GRAD_CASES = [
    (2, 9, 7, 3, 5, 3, 1, 1), (1, 8, 8, 4, 2, 3, 2, 0), (3, 5, 5, 2, 3, 1, 1, 2),
    (4, 16, 16, 8, 16, 3, 1, 1), (1, 4, 4, 1, 1, 3, 2, 3), (2, 3, 3, 2, 2, 3, 1, 0),
    (2, 32, 32, 3, 16, 7, 4, 3),
]  # fmt: skip


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,pad", CONV_GRAD_CASES)
def test_conv2d_grad_weight(device, n, h, w, cin, cout, k, stride, pad, dtype) -> None:
    """The weight gradient of conv2d against numpy's sum over the output pixels of patch
    times gradient; bit-identical when called again."""
    if not device.has("conv2d_grad_weight"):
        pytest.skip(f"{device.name} declares no conv2d_grad_weight (core uses im2col)")
    _need(device, dtype, "matmul")
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    x = RNG.standard_normal((n, h, w, cin)).astype(dtype)
    g = RNG.standard_normal((n, ho, wo, cout)).astype(dtype)
    padded = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    want = np.zeros((k, k, cin, cout))
    for i in range(k):
        for j in range(k):
            window = padded[:, i : i + stride * ho : stride, j : j + stride * wo : stride]
            want[i, j] = np.einsum("nyxc,nyxd->cd", window, g)
    _twice_equal_to(
        device, want, dtype,
        lambda out, c: device.mod.conv2d_grad_weight(
            _put(device, x), _put(device, g), out, n, h, w, cin, c, k, stride, pad
        ),
        cout,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n,h,w,cin,cout,k,stride,pad", CONV_GRAD_CASES)
def test_conv2d_grad_input(device, n, h, w, cin, cout, k, stride, pad, dtype) -> None:
    """The input gradient of conv2d against numpy: each output pixel's gradient through the
    weight, added over its patch (the padding dropped); bit-identical when called again."""
    if not device.has("conv2d_grad_input"):
        pytest.skip(f"{device.name} declares no conv2d_grad_input (core composes a conv)")
    _need(device, dtype, "matmul")
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    g = RNG.standard_normal((n, ho, wo, cout)).astype(dtype)
    wt = RNG.standard_normal((k, k, cin, cout)).astype(dtype)
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad, cin))
    for i in range(k):
        for j in range(k):
            window = padded[:, i : i + stride * ho : stride, j : j + stride * wo : stride]
            window += np.einsum("nyxd,cd->nyxc", g.astype(np.float64), wt[i, j])
    want = padded[:, pad : pad + h, pad : pad + w]
    _twice_equal_to(
        device, want, dtype,
        lambda out, c: device.mod.conv2d_grad_input(
            _put(device, g), _put(device, wt), out, n, h, w, cin, c, k, stride, pad
        ),
        cout,
    )  # fmt: skip


def test_device_services(device) -> None:
    """The optional device services answer through the device, declared or not."""
    device.synchronize()
    device.empty_cache()
    stats = device.memory_stats()
    assert isinstance(stats, dict) and all(isinstance(v, int) for v in stats.values())


def test_bad_calls_raise_python_errors(device) -> None:
    mod = device.mod
    a, b, small = _alloc(device, 10), _alloc(device, 10), _alloc(device, 3)
    mod.fill(a, 1.0)
    mod.fill(b, 1.0)
    errors = (ValueError, RuntimeError, IndexError, TypeError)
    with pytest.raises(errors):
        mod.ewise_add(a, b, small)
    with pytest.raises(errors):
        mod.matmul(a, b, small, 2, 5, 2)
    with pytest.raises(errors):
        mod.compact(a, small, (3, 3), (3, 1), 5)  # reaches past the end of a
    with pytest.raises(errors):
        mod.reduce_sum(a, small, 4)
    with pytest.raises(errors):
        mod.from_numpy(np.zeros(4, np.float32), a)
    with pytest.raises((*errors, MemoryError, OverflowError)):
        mod.Array(-1) if device.version == 1 else mod.Array(-1, "float32")
    if device.version >= 2 and device.supports("float64"):
        wide = _alloc(device, 10, "float64")
        with pytest.raises(errors):
            mod.ewise_add(a, wide, b)  # mixed dtypes
        with pytest.raises(errors):
            mod.from_numpy(np.zeros(10, np.float64), a)  # not out's dtype
        with pytest.raises(errors):
            mod.ewise_eq(a, b, _alloc(device, 10))  # a comparison writes bool
