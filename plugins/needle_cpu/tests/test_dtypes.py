"""needle-cpu's dtypes (contract v2) beyond the conformance suite: integer wrapping as numpy's,
float64 math over its whole range, threaded sizes per dtype, casts at the edges, refused calls,
both instruction sets, and a stub (_ext.pyi) that lists exactly what the module defines."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ext = pytest.importorskip("needle_cpu._ext")
RNG = np.random.default_rng(3)
NUMBERS = ["float32", "float64", "int32", "int64"]
ALL = [*NUMBERS, "bool"]
BIG = 300_001  # above the size where kernels use the thread pool


def put(values: np.ndarray):
    values = np.ascontiguousarray(values)
    handle = ext.Array(values.size, values.dtype.name)
    ext.from_numpy(values, handle)
    return handle


def get(handle, shape=None) -> np.ndarray:
    shape = (handle.size,) if shape is None else tuple(shape)
    strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    return ext.to_numpy(handle, shape, strides, 0)


def values(dtype: str, size, low: int = -1000, high: int = 1000) -> np.ndarray:
    if dtype == "bool":
        return RNG.random(size) < 0.5
    if dtype.startswith("int"):
        return RNG.integers(low, high, size).astype(dtype)
    return RNG.uniform(low, high, size).astype(dtype)


def test_module_declares_contract_v2() -> None:
    assert ext.__dtypes__ == {
        "memory": tuple(ALL),
        "arithmetic": tuple(NUMBERS),
        "compare": tuple(NUMBERS),
        "matmul": tuple(NUMBERS),
        "reduce": tuple(NUMBERS),
        "unary": ("float32", "float64"),
    }
    assert ext.__tile_size__ == 8


@pytest.mark.parametrize("dtype", ALL)
def test_array_dtype_size_and_repr(dtype: str) -> None:
    a = ext.Array(10, dtype)
    assert (a.size, a.dtype) == (10, dtype)
    assert repr(a) == f"needle_cpu.Array(size=10, dtype='{dtype}')"
    assert a.ptr() % 64 == 0
    assert ext.Array(3).dtype == "float32"  # the default, as the v1 benchmarks call it


@pytest.mark.parametrize("bad", ["float16", "uint8", "complex64", "Float32", ""])
def test_unknown_dtype_is_a_value_error_naming_the_choices(bad: str) -> None:
    with pytest.raises(ValueError, match="float32, float64, int32, int64 and bool"):
        ext.Array(4, bad)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_arithmetic_wraps_as_numpy(dtype: str) -> None:
    info = np.iinfo(dtype)
    edges = np.array([info.max, info.min, -1, 1, 0, info.max // 3, info.min // 7, 12345], dtype)
    a, b = np.resize(edges, BIG), np.roll(np.resize(edges, BIG), 3)
    ha, hb, out = put(a), put(b), ext.Array(BIG, dtype)
    with np.errstate(all="ignore"):
        for name, ref in (("ewise_add", np.add), ("ewise_mul", np.multiply),
                          ("ewise_maximum", np.maximum)):  # fmt: skip
            getattr(ext, name)(ha, hb, out)
            np.testing.assert_array_equal(get(out), ref(a, b), name)
        for name, ref in (("scalar_add", np.add), ("scalar_mul", np.multiply)):
            getattr(ext, name)(ha, int(info.max), out)
            np.testing.assert_array_equal(get(out), ref(a, np.array(info.max, dtype)), name)
        ext.scalar_power(ha, 3, out)
        np.testing.assert_array_equal(get(out), np.power(a, np.array(3, dtype)))
        small = np.resize(np.arange(-3, 4, dtype=dtype), BIG)
        powers = np.resize(np.arange(0, 40, dtype=dtype), BIG)
        ext.ewise_power(put(small), put(powers), out)
        np.testing.assert_array_equal(get(out), np.power(small, powers))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_sums_and_products_are_exact_and_wrap(dtype: str) -> None:
    info = np.iinfo(dtype)
    a = RNG.integers(info.max // 4, info.max, (3, 100_000)).astype(dtype)
    out = ext.Array(3, dtype)
    ext.reduce_sum(put(a), out, 100_000)  # wraps many times over
    np.testing.assert_array_equal(get(out), a.sum(axis=1, dtype=dtype))
    ext.reduce_max(put(a), out, 100_000)
    np.testing.assert_array_equal(get(out), a.max(axis=1))
    m, n, p = 70, 300, 50
    x = RNG.integers(-(2**20), 2**20, (m, n)).astype(dtype)
    y = RNG.integers(-(2**20), 2**20, (n, p)).astype(dtype)
    z = ext.Array(m * p, dtype)
    ext.matmul(put(x), put(y), z, m, n, p)
    np.testing.assert_array_equal(get(z, (m, p)), np.matmul(x, y))  # int32: wrapped


@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize("m,n,p", [(513, 257, 300), (5, 1000, 700), (1, 0, 3)])
def test_matmul_threaded_per_dtype(m: int, n: int, p: int, dtype: str) -> None:
    a, b = values(dtype, (m, n), -50, 50), values(dtype, (n, p), -50, 50)
    out = ext.Array(m * p, dtype)
    ext.matmul(put(a), put(b), out, m, n, p)
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = {"float32": 1e-4, "float64": 1e-12}.get(dtype, 0)
    np.testing.assert_allclose(get(out, (m, p)), want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("dtype", NUMBERS)
def test_bmm_and_conv2d_per_dtype(dtype: str) -> None:
    a, b = values(dtype, (40, 9, 17), -9, 9), values(dtype, (40, 17, 5), -9, 9)
    out = ext.Array(40 * 9 * 5, dtype)
    ext.bmm(put(a), put(b), out, 40, 9, 17, 5)
    want = a.astype(np.float64) @ b
    np.testing.assert_allclose(get(out, (40, 9, 5)), want, atol=1e-5 * np.abs(want).max())
    from needle.testing.optable import reference_conv

    convs = [(2, 9, 7, 3, 5, 3, 1, 1), (4, 20, 20, 64, 256, 3, 1, 1), (3, 6, 6, 2, 3, 1, 1, 0)]
    for n, h, w, cin, cout, k, stride, pad in convs:
        x, wt = values(dtype, (n, h, w, cin), -5, 5), values(dtype, (k, k, cin, cout), -5, 5)
        want = reference_conv(x.astype(np.float64), wt.astype(np.float64), stride, pad)
        out = ext.Array(want.size, dtype)
        ext.conv2d(put(x), put(wt), out, n, h, w, cin, cout, k, stride, pad)
        np.testing.assert_allclose(get(out, want.shape), want, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("dtype", NUMBERS)
@pytest.mark.parametrize("m,n,p", [(8, 8, 8), (24, 16, 40), (64, 128, 32)])
def test_matmul_tiled_per_dtype(m: int, n: int, p: int, dtype: str) -> None:
    t = ext.__tile_size__
    a, b = (
        values(dtype, (m // t, n // t, t, t), -9, 9),
        values(dtype, (n // t, p // t, t, t), -9, 9),
    )
    out = ext.Array(m * p, dtype)
    ext.matmul_tiled(put(a), put(b), out, m, n, p)
    dense = lambda x, r, c: x.transpose(0, 2, 1, 3).reshape(r, c)  # noqa: E731
    got = dense(get(out, (m // t, p // t, t, t)), m, p)
    want = dense(a, m, n).astype(np.float64) @ dense(b, n, p)
    np.testing.assert_allclose(got, want, atol=1e-6 * np.abs(want).max())
    with pytest.raises(ValueError, match="divisible by 8"):
        ext.matmul_tiled(put(a), put(b), out, m + 1, n, p)


@pytest.mark.parametrize("size", [13, BIG])
def test_float64_math_over_its_range(size: int) -> None:
    """exp, log and tanh of float64 (vectorised here, not libm) within 2 ulp of numpy over the
    whole range, denormals and specials included."""
    x = np.concatenate([10.0 ** RNG.uniform(-320, 308, size), [5e-324, 2.2250738585072014e-308,
                        1.0, 0.0, -0.0, -1.0, np.inf, -np.inf, np.nan]])  # fmt: skip
    cases = {
        "ewise_log": x,
        "ewise_exp": np.concatenate([RNG.uniform(-760, 720, size), x[-9:]]),
        "ewise_tanh": np.concatenate([RNG.uniform(-25, 25, size) ** 3, x[-9:]]),
    }
    with np.errstate(all="ignore"):
        for name, arg in cases.items():
            out = ext.Array(arg.size, "float64")
            getattr(ext, name)(put(arg), out)
            got, want = get(out), getattr(np, name.removeprefix("ewise_"))(arg)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), name)
            inf = np.isinf(want)
            np.testing.assert_array_equal(got[inf], want[inf], name)
            ok = np.isfinite(want)
            ulps = np.abs(got[ok] - want[ok]) / np.spacing(np.abs(want[ok]))
            assert ulps.max() <= 2, f"{name}: {ulps.max()} ulp at {arg[ok][ulps.argmax()]}"
            zero = want == 0
            np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]), name)


@pytest.mark.parametrize("dtype", NUMBERS)
def test_threaded_comparisons_and_reductions_per_dtype(dtype: str) -> None:
    a, b = values(dtype, BIG, -5, 5), values(dtype, BIG, -5, 5)
    ha, hb, mask = put(a), put(b), ext.Array(BIG, "bool")
    for name, ref in (("ewise_eq", np.equal), ("ewise_ne", np.not_equal),
                      ("ewise_ge", np.greater_equal), ("ewise_gt", np.greater)):  # fmt: skip
        getattr(ext, name)(ha, hb, mask)
        np.testing.assert_array_equal(get(mask), ref(a, b), name)
    val = a[7].item()
    for name, ref in (("scalar_le", np.less_equal), ("scalar_lt", np.less),
                      ("scalar_ne", np.not_equal)):  # fmt: skip
        getattr(ext, name)(ha, val, mask)
        np.testing.assert_array_equal(get(mask), ref(a, np.array(val, dtype)), name)
    out = ext.Array(1, dtype)
    ext.reduce_max(ha, out, BIG)  # one long row: split across the threads
    assert get(out)[0] == a.max()


@pytest.mark.parametrize("target", ALL)
@pytest.mark.parametrize("source", ALL)
def test_cast_threaded_and_at_the_edges(source: str, target: str) -> None:
    """Every pair, in range (beyond it float-to-int is unspecified): truncation toward zero,
    int64 to int32 wrapping, rounding to float32, nonzero to True."""
    span = {"int64": 2**40, "int32": 2**31 - 1}.get(source, 2e9)
    x = values(source, BIG, -span, span)
    if source.startswith("float"):
        x[:6] = [0.0, -0.0, -2.9, 2.9, 1e-30, -1e-30]
    out = ext.Array(BIG, target)
    ext.cast(put(x), out)
    np.testing.assert_array_equal(get(out), x.astype(target))


@pytest.mark.parametrize("target", ["int32", "int64"])
def test_cast_of_nan_inf_and_out_of_range_gives_the_minimum(target: str) -> None:
    """Undefined in C++, guarded here: the integer's minimum, as x86 and numpy there."""
    for source in ("float32", "float64"):
        x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 2.0**63, 2.0**31, 7.9], source)
        out = ext.Array(x.size, target)
        ext.cast(put(x), out)
        got, low = get(out), np.iinfo(target).min
        want = [low, low, low, low, low, low, low if target == "int32" else 2**31, 7]
        np.testing.assert_array_equal(got, want)


def test_bool_bytes_other_than_one_are_true() -> None:
    raw = np.array([0, 1, 2, 255], np.uint8)
    handle, shape = ext.from_dlpack(raw.view(np.bool_))
    out = ext.Array(4, "int32")
    ext.cast(handle, out)
    np.testing.assert_array_equal(get(out), [0, 1, 1, 1])


def test_scalars_must_fit_the_handle() -> None:
    i32, i64, f32 = put(np.arange(4, dtype=np.int32)), put(np.arange(4)), put(np.ones(4, "f4"))
    with pytest.raises(TypeError):
        ext.scalar_add(i32, 1.5, i32)  # a float for an integer handle: refused, not truncated
    with pytest.raises(OverflowError, match="int32"):
        ext.fill(i32, 2**31)
    with pytest.raises(OverflowError):
        ext.fill(i64, 2**63)
    ext.fill(i64, -(2**63))
    ext.scalar_add(f32, 2, f32)  # an int for a float handle converts
    np.testing.assert_array_equal(get(f32), np.full(4, 3.0))
    flags = ext.Array(4, "bool")
    ext.fill(flags, np.True_)
    ext.scalar_setitem(2, False, flags, (2,), (2,), 0)
    np.testing.assert_array_equal(get(flags), [False, True, False, True])


def test_refused_calls_name_the_problem() -> None:
    i32, f64, flags = put(np.arange(6, dtype=np.int32)), put(np.ones(6)), ext.Array(6, "bool")
    with pytest.raises(ValueError, match="ewise_div divides float handles"):
        ext.ewise_div(i32, i32, i32)
    with pytest.raises(ValueError, match="scalar_div divides float handles"):
        ext.scalar_div(i32, 2, i32)
    with pytest.raises(ValueError, match="ewise_exp takes float32 or float64"):
        ext.ewise_exp(i32, i32)
    with pytest.raises(ValueError, match="ewise_add takes float32, float64, int32 or int64"):
        ext.ewise_add(flags, flags, flags)
    with pytest.raises(ValueError, match="reduce_sum takes"):
        ext.reduce_sum(flags, ext.Array(1, "bool"), 6)
    with pytest.raises(ValueError, match="negative integer powers"):
        ext.scalar_power(i32, -1, i32)
    with pytest.raises(ValueError, match="negative integer powers"):
        ext.ewise_power(i32, put(np.array([1, 2, -1, 0, 1, 1], np.int32)), i32)
    with pytest.raises(ValueError, match="dtypes differ: int32, float64"):
        ext.ewise_add(i32, f64, f64)
    with pytest.raises(ValueError, match="a comparison writes bool, not float64"):
        ext.ewise_eq(f64, f64, f64)
    with pytest.raises(ValueError, match="dtypes differ"):
        ext.compact(i32, f64, (6,), (1,), 0)
    with pytest.raises(ValueError, match="matmul dtypes differ"):
        ext.matmul(i32, f64, ext.Array(4, "float64"), 2, 3, 2)
    with pytest.raises(ValueError, match="reduce dtypes differ"):
        ext.reduce_sum(f64, ext.Array(1), 6)
    with pytest.raises(ValueError, match="sizes differ"):
        ext.cast(f64, ext.Array(5, "int32"))


ISA_RUN = """
import sys, numpy as np, needle_cpu._ext as e
rng = np.random.default_rng(5)
res = {}
for dt in ("float32", "float64", "int32", "int64"):
    if dt.startswith("float"):
        x = rng.uniform(-30, 30, 70_007).astype(dt)
    else:
        x = rng.integers(-99, 99, 70_007).astype(dt)
    hx, hy = e.Array(x.size, dt), e.Array(x.size, dt)
    e.from_numpy(x, hx)
    e.from_numpy(np.roll(x, 1), hy)
    for name in ("ewise_add", "ewise_mul", "ewise_maximum", "ewise_exp", "ewise_tanh"):
        if dt.startswith("int") and name in ("ewise_exp", "ewise_tanh"):
            continue
        out = e.Array(x.size, dt)
        getattr(e, name)(hx, hy, out) if name[6:9] in "addmulmax" else getattr(e, name)(hx, out)
        res[dt + name] = e.to_numpy(out, (x.size,), (1,), 0)
    for name in ("ewise_ge", "scalar_lt"):
        out = e.Array(x.size, "bool")
        getattr(e, name)(hx, hy if name == "ewise_ge" else x[3].item(), out)
        res[dt + name] = e.to_numpy(out, (x.size,), (1,), 0)
    out = e.Array(7, dt)
    e.reduce_sum(hx, out, x.size // 7)
    res[dt + "reduce_sum"] = e.to_numpy(out, (7,), (1,), 0)
np.savez(sys.argv[1], isa=e.__isa__, **res)
"""


def test_both_instruction_sets_agree(tmp_path: Path) -> None:
    """Every dtype's kernels under NEEDLE_CPU_BASELINE=1 and the default set: the same bits,
    but for exp and tanh, where FMA contraction may round the polynomials differently."""
    runs = {}
    for label, env in (("default", {}), ("baseline", {"NEEDLE_CPU_BASELINE": "1"})):
        path = tmp_path / f"{label}.npz"
        result = subprocess.run(
            [sys.executable, "-c", ISA_RUN, str(path)], env={**os.environ, **env},
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        with np.load(path) as data:
            runs[label] = {k: data[k] for k in data.files}
    assert str(runs["baseline"].pop("isa")) == "isa_base"
    runs["default"].pop("isa")
    assert runs["baseline"].keys() == runs["default"].keys()
    for key, got in runs["baseline"].items():
        want = runs["default"][key]
        if key.endswith(("exp", "tanh")):
            np.testing.assert_allclose(got, want, rtol=4e-7 if "32" in key else 1e-15, err_msg=key)
        else:
            np.testing.assert_array_equal(got, want, key)


def test_stub_lists_exactly_what_the_module_defines() -> None:
    stub = Path(ext.__file__).with_name("_ext.pyi")
    if not stub.exists():  # an editable install keeps the stub in the source tree
        stub = Path(__file__).parents[1] / "src" / "needle_cpu" / "_ext.pyi"
    tree = ast.parse(stub.read_text())
    declared = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
    declared -= {"Shape", "Scalar"}  # the stub's own type aliases
    defined = {name for name in vars(ext) if not name.startswith("__") or name in declared}
    defined -= {"__doc__", "__file__", "__loader__", "__name__", "__package__", "__spec__"}
    assert declared == defined
    methods = {n.name for n in next(c for c in tree.body if getattr(c, "name", "") == "Array").body
               if isinstance(n, ast.FunctionDef)}  # fmt: skip
    assert methods - {"__init__"} == {n for n in vars(ext.Array) if not n.startswith("_")}
