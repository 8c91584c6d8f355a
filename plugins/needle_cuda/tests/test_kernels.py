"""needle-cuda's kernels against numpy, per dtype, at the edges of their launch configurations
(packed and element paths, thread/warp/block reductions, partial matmul tiles); numpy's
conventions at the edges (integer wrap-around, cast of NaN, power shortcuts); dtype and size
checks; the buffer cache. Runs where kernels run: a GPU, or the CPU emulation (small sizes)."""

from __future__ import annotations

import os

import numpy as np
import pytest

_ext = pytest.importorskip("needle_cuda._ext")
REASON = _ext.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"cuda unavailable: {REASON}")
EMULATED = _ext.__build_archs__ == "emulated"
big = pytest.mark.skipif(EMULATED, reason="too slow on the CPU emulation")

NUMBERS = ("float32", "float64", "int32", "int64")
ALL = (*NUMBERS, "bool")
rng = np.random.default_rng(0)


def values(dtype: str, shape, low: int = -9, high: int = 9) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith("int"):
        return rng.integers(low, high + 1, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def tolerance(dtype: str) -> dict:
    return {"float32": {"rtol": 2e-6}, "float64": {"rtol": 1e-14}}.get(dtype, {"rtol": 0})


SIZES = [1, 3, 4, 5, 1023, (1 << 20) + 3]


@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize("n", SIZES)
def test_elementwise(put, get, n, dtype):
    a, b = values(dtype, n), values(dtype, n)
    if dtype.startswith("float"):
        b = np.abs(b) + np.asarray(3, dtype)
    ha, hb, out = put(a), put(b), _ext.Array(n, dtype)
    refs = {"ewise_add": np.add, "ewise_mul": np.multiply, "ewise_maximum": np.maximum}
    if dtype.startswith("float"):
        refs["ewise_div"] = np.divide
    for name, ref in refs.items():
        getattr(_ext, name)(ha, hb, out)
        np.testing.assert_allclose(get(out), ref(a, b), **tolerance(dtype), err_msg=f"{name} n={n}")
    small = np.abs(a) % 4 if not dtype.startswith("float") else a
    _ext.ewise_power(hb, put(small), out)
    np.testing.assert_allclose(get(out), np.power(b, small), rtol=1e-5, err_msg=f"power n={n}")
    flags = _ext.Array(n, "bool")
    _ext.scalar_ge(ha, np.array(0.25, dtype).item(), flags)
    np.testing.assert_array_equal(get(flags), a >= np.array(0.25, dtype))
    _ext.ewise_ne(ha, hb, flags)
    np.testing.assert_array_equal(get(flags), a != b)
    _ext.scalar_mul(ha, np.array(3, dtype).item(), ha)  # in place
    np.testing.assert_array_equal(get(ha), a * np.array(3, dtype))
    with pytest.raises(ValueError, match="sizes differ"):
        _ext.ewise_add(ha, _ext.Array(n + 1, dtype), out)


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("n", SIZES)
def test_unary(put, get, n, dtype):
    a = rng.uniform(0.1, 5, n).astype(dtype)
    out = _ext.Array(n, dtype)
    tol = {"rtol": 2e-6, "atol": 1e-7} if dtype == "float32" else {"rtol": 1e-14}
    for name, ref in (("ewise_log", np.log), ("ewise_exp", np.exp), ("ewise_tanh", np.tanh)):
        getattr(_ext, name)(put(a), out)
        np.testing.assert_allclose(get(out), ref(a), **tol, err_msg=f"{name} n={n}")


@pytest.mark.parametrize("dtype", ALL)
def test_fill_and_cast_every_dtype(put, get, dtype):
    n = 37
    h = _ext.Array(n, dtype)
    fill = {"bool": True, "int32": -(2**31), "int64": 2**62 + 1}.get(dtype, 0.1)
    _ext.fill(h, fill)
    np.testing.assert_array_equal(get(h), np.full(n, fill, dtype))
    src = values(dtype, n, -50, 50)
    for target in ALL:
        out = _ext.Array(n, target)
        _ext.cast(put(src), out)
        got = get(out)
        assert got.dtype == target
        np.testing.assert_array_equal(got, src.astype(target), err_msg=f"{dtype} -> {target}")


def test_cast_edges(put, get):
    """NaN, inf and out-of-range floats become integers without undefined behaviour: NaN gives
    0, others saturate (numpy leaves them unspecified); integers narrow by wrapping, as numpy's."""
    x = np.array([np.nan, np.inf, -np.inf, 3e9, -3e9, 1e30, -2.9, 2.9, -0.0], np.float32)
    i32, i64 = np.iinfo(np.int32), np.iinfo(np.int64)
    wants = {
        "int32": [0, i32.max, i32.min, i32.max, i32.min, i32.max, -2, 2, 0],
        "int64": [0, i64.max, i64.min, 3 * 10**9, -3 * 10**9, i64.max, -2, 2, 0],
    }
    for target, want in wants.items():
        out = _ext.Array(x.size, target)
        _ext.cast(put(x), out)
        np.testing.assert_array_equal(get(out), np.array(want, target), err_msg=target)
    flags = _ext.Array(x.size, "bool")
    _ext.cast(put(x), flags)
    np.testing.assert_array_equal(get(flags), x.astype(bool))  # NaN is true
    wide = np.array([2**40 + 5, -(2**33) - 1, 2**31], np.int64)
    narrow = _ext.Array(3, "int32")
    _ext.cast(put(wide), narrow)
    np.testing.assert_array_equal(get(narrow), wide.astype(np.int32))


@pytest.mark.parametrize("dtype", ("int32", "int64"))
def test_integers_wrap_around_as_numpy(put, get, dtype):
    info = np.iinfo(dtype)
    a = np.array([info.max, info.min, info.max, 3, -7, 46341], dtype)
    b = np.array([1, -1, info.max, 5, 2, 46341], dtype)
    out = _ext.Array(a.size, dtype)
    with np.errstate(over="ignore"):
        for name, ref in (("ewise_add", np.add), ("ewise_mul", np.multiply)):
            getattr(_ext, name)(put(a), put(b), out)
            np.testing.assert_array_equal(get(out), ref(a, b), err_msg=name)
        _ext.scalar_power(put(a), 3, out)
        np.testing.assert_array_equal(get(out), a**3)
        _ext.ewise_power(put(b), put(np.array([0, 1, 2, 31, 62, 3], dtype)), out)
        np.testing.assert_array_equal(get(out), b ** np.array([0, 1, 2, 31, 62, 3], dtype))
    with pytest.raises(ValueError, match="negative integer powers"):
        _ext.scalar_power(put(a), -1, out)


EDGES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 1e-40, -1e-40, 3.5, -2.5, 4.0])


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("val", [0.5, 2.0, -1.0, 1.0, 0.0])
def test_scalar_power_takes_numpys_shortcuts(put, get, dtype, val):
    a = EDGES.astype(dtype)
    out = _ext.Array(a.size, dtype)
    _ext.scalar_power(put(a), val, out)
    with np.errstate(all="ignore"):
        want = np.power(a, np.array(val, dtype))
    got = get(out)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_scalars_are_checked_against_the_handles_dtype(put, get):
    ints = put(np.arange(4, dtype=np.int32))
    out = _ext.Array(4, "int32")
    with pytest.raises(OverflowError, match="out of range for int32"):
        _ext.scalar_add(ints, 2**31, out)
    with pytest.raises(TypeError, match="takes an int, not float"):
        _ext.scalar_add(ints, 1.5, out)
    _ext.scalar_add(ints, np.int64(2), out)  # anything with __index__
    np.testing.assert_array_equal(get(out), np.arange(2, 6))
    flags = _ext.Array(3, "bool")
    _ext.fill(flags, 2)
    assert get(flags).tolist() == [True] * 3
    wide = put(np.zeros(2))
    _ext.scalar_add(wide, 0.1, wide)  # float64 keeps the double
    assert get(wide).tolist() == [0.1, 0.1]
    narrow = put(np.zeros(2, np.float32))
    _ext.scalar_add(narrow, 0.1, narrow)
    assert get(narrow).tolist() == [np.float32(0.1)] * 2


MATMUL = [(1, 1, 1), (3, 5, 7), (4, 4, 4), (64, 16, 64), (65, 17, 66), (129, 17, 130), (300, 0, 5),
          (1, 300, 1), pytest.param(1024, 512, 1024, marks=big)]  # fmt: skip


@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize("m,n,p", MATMUL)
def test_matmul(put, get, m, n, p, dtype):
    a, b = values(dtype, (m, n)), values(dtype, (n, p))
    out = _ext.Array(m * p, dtype)
    _ext.matmul(put(a), put(b), out, m, n, p)
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = {"float32": 1e-4 * max(1, n) ** 0.5, "float64": 1e-12}.get(dtype, 0)
    np.testing.assert_allclose(get(out, (m, p)), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", NUMBERS)
def test_bmm_and_aliased_output(put, get, dtype):
    batch, m, n, p = 3, 33, 20, 66
    a, b = values(dtype, (batch, m, n)), values(dtype, (batch, n, p))
    out = _ext.Array(batch * m * p, dtype)
    _ext.bmm(put(a), put(b), out, batch, m, n, p)
    np.testing.assert_allclose(get(out, (batch, m, p)), a @ b, rtol=1e-5, atol=1e-4)
    sq = values(dtype, (40, 40))
    h = put(sq)
    _ext.matmul(h, h, h, 40, 40, 40)  # out is both inputs
    np.testing.assert_allclose(get(h, (40, 40)), sq @ sq, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="dtypes differ"):
        _ext.matmul(put(sq), put(sq.astype(np.float32 if dtype != "float32" else np.float64)),
                    _ext.Array(1600, dtype), 40, 40, 40)  # fmt: skip


REDUCTIONS = [(1, 1), (7, 1), (5, 3), (100, 16), (3, 17), (100, 64), (9, 2048), (2, 2049),
              (4, 4096), (1, 40_003), (1, 1 << 22),
              pytest.param(5000, 4100, marks=big)]  # fmt: skip


@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize("rows,size", REDUCTIONS)
def test_reductions(put, get, rows, size, dtype):
    a = values(dtype, (rows, size), -1000, 1000)
    ha, out = put(a), _ext.Array(rows, dtype)
    _ext.reduce_sum(ha, out, size)
    if dtype.startswith("float"):
        rtol = 1e-4 if dtype == "float32" else 1e-12
        atol = (1e-5 if dtype == "float32" else 1e-12) * size**0.5
        np.testing.assert_allclose(get(out), a.sum(axis=1, dtype=np.float64), rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(get(out), a.sum(axis=1, dtype=dtype))
    _ext.reduce_max(ha, out, size)
    np.testing.assert_array_equal(get(out), a.max(axis=1))


@pytest.mark.parametrize("dtype", NUMBERS)
def test_reduce_max_of_the_lowest_values_and_nan(put, get, dtype):
    low = np.finfo(dtype).min if dtype.startswith("float") else np.iinfo(dtype).min
    a = np.full(5000, low, dtype)
    out = _ext.Array(1, dtype)
    _ext.reduce_max(put(a), out, a.size)
    assert get(out)[0] == low
    if dtype.startswith("float"):
        a[1234] = np.nan
        _ext.reduce_max(put(a), out, a.size)
        assert np.isnan(get(out)[0])


VIEWS = [((4, 3), (1, 4), 0), ((2, 3, 4), (12, 4, 1), 0), ((3, 4), (-4, -1), 11),
         ((5, 4), (0, 1), 2), ((2, 1, 3, 1, 2), (6, 99, 2, 7, 1), 0),
         ((2,) * 12, tuple(2**i for i in range(12)), 0), ((), (), 7), ((3, 0, 2), (0, 0, 0), 0),
         ((33, 65), (1, 40), 5), ((50, 70), (1, 60), 0), ((3, 40, 5), (1, 15, 3), 0)]  # fmt: skip


@pytest.mark.parametrize("dtype", ("float32", "float64", "bool", "int32"))
@pytest.mark.parametrize("shape,strides,offset", VIEWS)
def test_strided_views(put, get, shape, strides, offset, dtype):
    base = values(dtype, 5000)
    h = put(base)

    def np_view(buf):
        if not shape:
            return buf[offset : offset + 1].reshape(())
        byte_strides = tuple(buf.itemsize * s for s in strides)
        return np.lib.stride_tricks.as_strided(buf[offset:], shape, byte_strides)

    view = np_view(base)
    np.testing.assert_array_equal(_ext.to_numpy(h, shape, strides, offset), view)
    out = _ext.Array(view.size, dtype)
    _ext.compact(h, out, shape, strides, offset)
    np.testing.assert_array_equal(get(out), view.reshape(-1))
    if 0 not in strides and view.size:  # setitem into a view without repeats
        expect = base.copy()
        _ext.scalar_setitem(view.size, True if dtype == "bool" else -1, h, shape, strides, offset)
        np_view(expect)[...] = True if dtype == "bool" else -1
        np.testing.assert_array_equal(get(h), expect)
        new = values(dtype, view.size)
        _ext.ewise_setitem(put(new), h, shape, strides, offset)
        np_view(expect)[...] = new.reshape(shape)
        np.testing.assert_array_equal(get(h), expect)


def test_bad_views_raise(put):
    h = put(np.zeros(10))
    with pytest.raises(ValueError, match="outside"):
        _ext.to_numpy(h, (4,), (4,), 0)
    with pytest.raises(ValueError, match="outside"):
        _ext.compact(h, _ext.Array(3, "float64"), (3,), (-1,), 1)
    with pytest.raises(ValueError, match="non-mergeable"):
        _ext.to_numpy(h, (2,) * 17, (0, 1) * 8 + (0,), 0)
    with pytest.raises(ValueError, match="view has"):
        _ext.compact(h, _ext.Array(4, "float64"), (5,), (1,), 0)
    with pytest.raises(ValueError, match="dtypes differ"):
        _ext.compact(h, _ext.Array(5), (5,), (1,), 0)


def test_out_of_memory_is_a_python_exception(put, get):
    with pytest.raises(MemoryError, match="out of memory"):
        _ext.Array(1 << 42, "float64")
    h = put(np.arange(5))  # the device still works afterwards
    np.testing.assert_array_equal(get(h), np.arange(5))
    h.free()
    with pytest.raises(ValueError, match="freed"):
        _ext.fill(h, 1)


def test_freed_buffers_are_reused_then_released():
    if os.environ.get("NEEDLE_CUDA_CACHE_MB", "").strip() == "0":
        pytest.skip("the buffer cache is turned off (NEEDLE_CUDA_CACHE_MB=0)")
    _ext.empty_cache()
    before = _ext.memory_stats()
    first = _ext.Array(1000)
    address = first.ptr()
    assert _ext.memory_stats()["allocated_bytes"] == before["allocated_bytes"] + 4096
    del first  # back to the cache, not to the driver
    assert _ext.memory_stats()["cached_bytes"] == 4096  # 4000 bytes rounded up to 512
    second = _ext.Array(512, "float64")  # same rounded size: the same block
    assert second.ptr() == address
    stats = _ext.memory_stats()
    assert stats["cached_bytes"] == 0
    assert stats["cache_hits"] == before["cache_hits"] + 1
    assert stats["cache_misses"] == before["cache_misses"] + 1
    assert stats["peak_allocated_bytes"] >= stats["allocated_bytes"]
    second.free()
    _ext.empty_cache()
    assert _ext.memory_stats()["cached_bytes"] == 0
    _ext.synchronize()
