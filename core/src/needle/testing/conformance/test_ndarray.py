"""NDArray views, compact and setitem against numpy, with generated shapes and slices."""

from __future__ import annotations

import numpy as np
import pytest

from needle.backend_ndarray import NDArray

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

shapes = hs.lists(hs.integers(0, 5), min_size=1, max_size=4).map(tuple)


@hs.composite
def array_and_index(draw):
    shape = draw(hs.lists(hs.integers(1, 6), min_size=1, max_size=4).map(tuple))
    index = []
    for dim in shape[: draw(hs.integers(1, len(shape)))]:
        if draw(hs.booleans()):
            index.append(draw(hs.integers(-dim, dim - 1)))
        else:
            start = draw(hs.none() | hs.integers(-dim - 2, dim + 2))
            stop = draw(hs.none() | hs.integers(-dim - 2, dim + 2))
            step = draw(hs.none() | hs.integers(-3, 3).filter(lambda s: s != 0))
            index.append(slice(start, stop, step))
    return shape, tuple(index)


def _arange(shape, device):
    values = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    return NDArray(values, device=device), values


@given(array_and_index())
def test_getitem_matches_numpy(device, case) -> None:
    shape, index = case
    nd, values = _arange(shape, device)
    view = nd[index]
    np.testing.assert_array_equal(view.numpy(), values[index])
    np.testing.assert_array_equal(view.compact().numpy(), values[index])
    assert view.handle is nd.handle  # a view, never a copy


@given(array_and_index(), hs.booleans())
def test_setitem_matches_numpy(device, case, scalar: bool) -> None:
    shape, index = case
    nd, values = _arange(shape, device)
    target = values[index]
    new = (
        99.0 if scalar else -np.arange(np.size(target), dtype=np.float32).reshape(np.shape(target))
    )
    nd[index] = new if scalar else NDArray(new, device=device)
    values[index] = new
    np.testing.assert_array_equal(nd.numpy(), values)


@given(shapes, hs.randoms(use_true_random=False))
def test_permute_broadcast_flip_compact(device, shape, rnd) -> None:
    nd, values = _arange(shape, device)
    axes = list(range(len(shape)))
    rnd.shuffle(axes)
    np.testing.assert_array_equal(nd.permute(axes).compact().numpy(), values.transpose(axes))
    flip_axes = tuple(a for a in axes if rnd.random() < 0.5)
    np.testing.assert_array_equal(nd.flip(flip_axes).numpy(), np.flip(values, flip_axes))
    target = (2,) + shape
    np.testing.assert_array_equal(
        nd.broadcast_to(target).compact().numpy(), np.broadcast_to(values, target)
    )
    assert nd.permute(axes).compact().is_compact()


@given(shapes)
def test_reshape_and_reductions(device, shape) -> None:
    nd, values = _arange(shape, device)
    np.testing.assert_array_equal(nd.reshape((-1,)).numpy(), values.reshape(-1))
    for axis in range(len(shape)):
        np.testing.assert_allclose(nd.sum(axis=axis).numpy(), values.sum(axis=axis))
        np.testing.assert_allclose(
            nd.sum(axis=axis, keepdims=True).numpy(), values.sum(axis=axis, keepdims=True)
        )
        if shape[axis]:
            np.testing.assert_array_equal(
                nd.max(axis=axis, keepdims=True).numpy(), values.max(axis=axis, keepdims=True)
            )
    np.testing.assert_allclose(nd.sum().numpy(), values.sum())


def test_as_strided_pad_and_errors(device) -> None:
    nd, values = _arange((4, 5), device)
    view = nd.as_strided((3, 3), (5, 1), 1)
    np.testing.assert_array_equal(view.numpy(), values[:3, 1:4])
    with pytest.raises(ValueError, match="outside"):
        nd.as_strided((5, 5), (5, 1))
    np.testing.assert_array_equal(
        nd.pad(((1, 2), (0, 1))).numpy(), np.pad(values, ((1, 2), (0, 1)))
    )
    with pytest.raises(ValueError, match="shape"):
        nd[1:3] = NDArray(np.ones((3, 5)), device=device)
    with pytest.raises(IndexError):
        nd[4]
    with pytest.raises(ValueError):
        nd.reshape((3, 7))


def test_writes_through_a_broadcast_view_are_refused(device) -> None:
    nd, _ = _arange((1, 4), device)
    view = nd.broadcast_to((3, 4))
    with pytest.raises(ValueError, match="broadcast view"):
        view[0, 1] = 5.0
    with pytest.raises(ValueError, match="broadcast view"):
        view[...] = NDArray(np.ones((3, 4), np.float32), device=device)
    huge = NDArray(np.zeros(1, np.float32), device=device).broadcast_to((2**40,))
    with pytest.raises(ValueError, match="broadcast view"):
        huge.fill(1.0)  # refused at once, not minutes of work
    nd[0, 1] = 5.0  # the base array stays writable
    assert nd.numpy()[0, 1] == 5.0


def test_writes_into_an_empty_array_do_nothing(device) -> None:
    # An empty array's compact strides hold zeros ((3, 0) -> (0, 1)): not a broadcast view.
    nd = NDArray(np.zeros((3, 0), np.float32), device=device)
    nd[:, 0:0] = 1.0
    nd[...] = NDArray(np.zeros((3, 0), np.float32), device=device)
    assert nd.numpy().shape == (3, 0)


_WRITE_VALUES = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -2.5, 1e-40]


@hs.composite
def broadcast_write(draw):
    """A base array of special values, a broadcast target, an index into it, a value."""
    target = tuple(draw(hs.lists(hs.integers(1, 4), min_size=1, max_size=4)))
    base = tuple(1 if draw(hs.booleans()) else d for d in target)
    base = base[draw(hs.integers(0, len(base) - 1)) :]
    size = int(np.prod(base))
    cells = draw(hs.lists(hs.sampled_from(_WRITE_VALUES), min_size=size, max_size=size))
    values = np.array(cells, np.float32).reshape(base)
    index = tuple(draw(hs.integers(0, d - 1)) for d in target[: draw(hs.integers(0, len(target)))])
    return values, target, index, draw(hs.sampled_from(_WRITE_VALUES))


@given(broadcast_write())
def test_writes_through_broadcast_views_follow_numpy(device, case) -> None:
    """A view that repeats an element is read-only (numpy's broadcast_to views are); one that
    only adds size-1 axes is an ordinary view, written as numpy writes a reshaped view."""
    values, target, index, value = case
    nd = NDArray(values, device=device)
    view = nd.broadcast_to(target)
    padded = (1,) * (len(target) - values.ndim) + values.shape
    want = values.copy()
    if any(b == 1 and t > 1 for b, t in zip(padded, target)):
        with pytest.raises(ValueError, match="broadcast view"):
            view[index] = value
        with pytest.raises(ValueError, match="broadcast view"):
            view.fill(value)
    else:
        view[index] = value
        want.reshape(target)[index] = value
    got = nd.numpy()
    np.testing.assert_array_equal(got, want)  # the base is untouched by a refused write
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


BAD_SHAPES = [(-1, -1, 2), (2.0, 3), ("a",), (2, -3)]


@pytest.mark.parametrize("shape", BAD_SHAPES, ids=[str(s) for s in BAD_SHAPES])
def test_bad_shapes_and_strides_are_refused_where_they_enter(device, shape) -> None:
    nd, _ = _arange((2, 3), device)
    with pytest.raises((TypeError, ValueError)):
        nd.broadcast_to(shape)
    with pytest.raises((TypeError, ValueError)):
        NDArray.make(shape, device=device)
    with pytest.raises((TypeError, ValueError)):
        nd.as_strided((2, 3), (3.0, 1))


DTYPES = ["float32", "float64", "int32", "int64", "bool"]


def _typed(device, values: np.ndarray) -> NDArray:
    if not device.supports(values.dtype.name):
        pytest.skip(f"{device.name} holds no {values.dtype}")
    return NDArray(values, device=device)


PROMOTIONS = [  # (a, b, a + b): arrays promote by category, then by width
    ("int32", "float32", "float32"), ("float32", "float64", "float64"),
    ("int64", "int32", "int64"), ("bool", "int32", "int32"), ("bool", "float64", "float64"),
    ("int64", "float32", "float32"), ("bool", "bool", "bool"),
]  # fmt: skip
SCALAR_PROMOTIONS = [  # (array, scalar, array * scalar): Python scalars are weak
    ("float32", 2.5, "float32"), ("float64", 2, "float64"), ("int32", 2, "int32"),
    ("int32", 2.5, "float32"), ("bool", 3, "int64"), ("bool", True, "bool"),
    ("int64", np.float64(0.5), "float32"),
]  # fmt: skip


@pytest.mark.parametrize("a,b,want", PROMOTIONS)
def test_binary_promotion_table(device, a: str, b: str, want: str) -> None:
    x = _typed(device, np.ones(3, a))
    y = _typed(device, np.ones(3, b))
    for got in (x + y, y + x, x * y, x.maximum(y)):
        assert got.dtype == want, f"{a} with {b} gave {got.dtype}, expected {want}"
    quotient = x / y
    assert quotient.dtype == (want if want.startswith("float") else "float32")
    assert (x == y).dtype == "bool"


@pytest.mark.parametrize("a,scalar,want", SCALAR_PROMOTIONS)
def test_scalar_promotion_table(device, a: str, scalar, want: str) -> None:
    x = _typed(device, np.ones(3, a))
    got = x * scalar
    assert got.dtype == want, f"{a} * {scalar!r} gave {got.dtype}, expected {want}"
    np.testing.assert_array_equal(got.numpy(), np.ones(3, a) * scalar)


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_integer_and_bool_results_follow_numpy(device, dtype: str) -> None:
    values = np.array([[3, 0, 7], [2, 5, 1]]).astype(dtype)
    x = _typed(device, values)
    assert x.sum().dtype == "int64" and x.sum().item() == values.sum()
    np.testing.assert_array_equal(x.max(axis=1).numpy(), values.max(axis=1))
    np.testing.assert_array_equal((x / 2).numpy(), (values / 2).astype(np.float32))
    assert x.exp().dtype == "float32", "float-only ops on integers give float32"
    if dtype != "bool":
        np.testing.assert_array_equal((x - 1).numpy(), values - 1)
        np.testing.assert_array_equal((x**2).numpy(), values**2)
        with pytest.raises(ValueError, match="negative integer powers"):
            x ** (-1)


def test_astype_follows_numpy(device) -> None:
    values = np.array([-2.7, -0.5, 0.0, 0.5, 2.7, 300.0], np.float32)
    x = _typed(device, values)
    for dtype in ("int32", "int64", "bool", "float64"):
        if device.supports(dtype):
            np.testing.assert_array_equal(x.astype(dtype).numpy(), values.astype(dtype))
    if device.supports("int32"):  # a dtype needle lacks: numpy's conversion, stored in int32
        got = x.astype(np.uint8)
        assert got.dtype == "int32"
        np.testing.assert_array_equal(got.numpy(), values.astype(np.uint8))


SPECIAL = np.array([np.nan, -np.inf, -1.0, -0.0, 0.0, 1.0, np.inf], np.float32)


def test_comparisons_with_nan_inf_and_signed_zero_match_numpy(device) -> None:
    a = NDArray(SPECIAL, device=device)
    b = NDArray(np.roll(SPECIAL, 2), device=device)
    other = np.roll(SPECIAL, 2)
    cases = {
        "==": (a == b, SPECIAL == other), "!=": (a != b, SPECIAL != other),
        "<": (a < b, SPECIAL < other), "<=": (a <= b, SPECIAL <= other),
        ">": (a > b, SPECIAL > other), ">=": (a >= b, SPECIAL >= other),
        "< 0": (a < 0.0, SPECIAL < 0), "<= 0": (a <= 0.0, SPECIAL <= 0),
        "> 0": (a > 0.0, SPECIAL > 0), "!= 1": (a != 1.0, SPECIAL != 1),
    }  # fmt: skip
    for name, (got, want) in cases.items():
        np.testing.assert_array_equal(got.numpy().astype(bool), want, err_msg=name)


specials = hs.sampled_from([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -2.5, 1e-40])


@given(hs.lists(specials, min_size=1, max_size=12), hs.lists(specials, min_size=1, max_size=12))
def test_elementwise_on_special_values_matches_numpy(device, xs, ys) -> None:
    n = min(len(xs), len(ys))
    a_np, b_np = np.array(xs[:n], np.float32), np.array(ys[:n], np.float32)
    a, b = NDArray(a_np, device=device), NDArray(b_np, device=device)
    with np.errstate(all="ignore"):
        pairs = {
            "+": (a + b, a_np + b_np), "*": (a * b, a_np * b_np), "/": (a / b, a_np / b_np),
            "max": (a.maximum(b), np.maximum(a_np, b_np)), "tanh": (a.tanh(), np.tanh(a_np)),
            "exp": (a.exp(), np.exp(a_np)), "< ": (a < b, a_np < b_np),
            "**2": (a**2, a_np**2), "**0.5": (a**0.5, a_np**0.5),
        }  # fmt: skip
    inexact = {"tanh", "exp"}  # numpy's own float32 exp/tanh are not correctly rounded
    for name, (got, want) in pairs.items():
        got = got.numpy()
        where = f"{name} on {xs[:n]}, {ys[:n]}"
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), where)
        if name in inexact:  # exact at 0, -0, inf; a few ulp elsewhere
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=0, err_msg=where)
        else:
            np.testing.assert_array_equal(got, want, err_msg=where)
        zero = want == 0
        np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]), name)


def test_arithmetic_matches_numpy(device) -> None:
    a_np = np.random.default_rng(0).uniform(0.5, 2, (3, 4)).astype(np.float32)
    b_np = np.random.default_rng(1).uniform(0.5, 2, (3, 4)).astype(np.float32)
    a, b = NDArray(a_np, device=device), NDArray(b_np, device=device)
    pairs = [
        (a + b, a_np + b_np), (a - b, a_np - b_np), (a * b, a_np * b_np), (a / b, a_np / b_np),
        (1 - a, 1 - a_np), (2 / a, 2 / a_np), (a ** 2, a_np ** 2), (a ** b, a_np ** b_np),
        (a.maximum(b), np.maximum(a_np, b_np)), (a == a, np.ones_like(a_np)),
        (a >= b, a_np >= b_np), (a > b, a_np > b_np), (a < b, a_np < b_np),
        (a.log(), np.log(a_np)), (a.exp(), np.exp(a_np)), (a.tanh(), np.tanh(a_np)),
        (a @ b.permute((1, 0)), a_np @ b_np.T), (-a, -a_np),
    ]  # fmt: skip
    for got, want in pairs:
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False], ids=["kernels", "composed"])
def test_pack_and_unpack_round_trip(device, fused: bool, monkeypatch) -> None:
    """compose.pack copies arrays (views too) into one flat buffer at offsets; unpack makes
    new arrays of them (what DistributedDataParallel's buckets do): through the backend's
    pack/unpack kernels, and through core's copies (the kernels hidden)."""
    from needle.backend_ndarray import compose

    names = {"pack", "unpack"}
    if fused and not names <= set(device.capabilities):
        pytest.skip(f"{device.name} declares no pack/unpack kernels (core copies each array)")
    if not fused:
        monkeypatch.setattr(device, "_caps", device._caps - names)
    parts = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(7.0, np.float32),
             np.arange(4, dtype=np.float32) - 9.5, np.zeros((0, 3), np.float32)]  # fmt: skip
    arrays = [NDArray(p, device=device) for p in parts]
    arrays[0] = arrays[0].permute((1, 0))  # a transposed view: packed in its logical order
    flat = NDArray(np.full(13, -1.0, np.float32), device=device)
    offsets = [1, 7, 9, 13]
    compose.pack(flat, offsets, arrays)
    want = np.full(13, -1.0, np.float32)
    want[1:7], want[7], want[9:13] = parts[0].T.reshape(-1), 7.0, parts[2]
    np.testing.assert_array_equal(flat.numpy(), want)
    back = compose.unpack(flat, offsets, [(3, 2), (), (4,), (0, 3)])
    for got, part in zip(back, [parts[0].T, parts[1], parts[2], parts[3]]):
        assert got.shape == part.shape
        np.testing.assert_array_equal(got.numpy(), part)
    halves = compose.unpack(flat, offsets, [(3, 2), (), (4,), (0, 3)], 0.5)  # DDP's mean
    for got, part in zip(halves, [parts[0].T, parts[1], parts[2], parts[3]]):
        np.testing.assert_array_equal(got.numpy(), part * np.float32(0.5))
    thirds = compose.unpack(flat, [9], [(4,)], 1 / 3)[0].numpy()
    np.testing.assert_array_equal(thirds, parts[2] * np.float32(1 / 3))  # rounded to float32
    for dtype in sorted(device.dtypes.get("memory") or {"float32"}):  # a copy is bits
        values = np.arange(5).astype(dtype)
        typed = NDArray(np.zeros(7, dtype), device=device)
        compose.pack(typed, [2], [NDArray(values, device=device)])
        np.testing.assert_array_equal(compose.unpack(typed, [2], [(5,)])[0].numpy(), values)
    with pytest.raises(ValueError, match="overrun"):
        compose.pack(flat, [10], arrays[2:3])
    if "int64" in device.dtypes.get("memory", ()):
        counts = NDArray(np.arange(4, dtype=np.int64), device=device)
        with pytest.raises(ValueError, match="float"):
            compose.unpack(counts, [0], [(4,)], 0.5)
    if fused:  # the kernels check what they are given before copying anything
        mod, handles = device.mod, (arrays[1].handle, arrays[2].handle)
        with pytest.raises(ValueError, match="overruns"):
            mod.pack(handles, flat.handle, (0, 10))
        with pytest.raises(ValueError, match="overruns"):
            mod.unpack(flat.handle, handles, (-1, 0), 1.0)
        with pytest.raises(ValueError, match="offsets"):
            mod.unpack(flat.handle, handles, (0,), 1.0)
        if "int64" in device.dtypes.get("memory", ()):
            wide = NDArray(np.zeros(3, np.int64), device=device).handle
            with pytest.raises(ValueError, match="int64"):
                mod.pack((wide,), flat.handle, (0,))
            with pytest.raises(ValueError, match="float"):
                mod.unpack(wide, (NDArray(np.zeros(2, np.int64), device=device).handle,), (0,), 2.0)
        np.testing.assert_array_equal(flat.numpy(), want)
    with pytest.raises(ValueError, match="overrun"):
        compose.unpack(flat, [12], [(2,)])
    scaled = NDArray(np.full(13, 3.0, np.float32), device=device)
    compose.pack(scaled, offsets, arrays, 0.5)  # then the whole buffer times 0.5, in place
    np.testing.assert_array_equal(scaled.numpy(), np.where(want == -1.0, 3.0, want) * 0.5)
    if "int64" in device.dtypes.get("memory", ()):
        with pytest.raises(ValueError, match="float"):
            compose.pack(counts, [0], [counts], 0.5)


@pytest.mark.parametrize("fused", [True, False], ids=["kernels", "composed"])
def test_slices_share_the_flat_buffer(device, fused: bool, monkeypatch) -> None:
    """compose.slices hands out parts of a flat buffer as arrays of their own: through the
    backend's slices kernel in the buffer's own memory (writes show on both sides, and the
    memory outlives the flat array), else as copies (DistributedDataParallel's gradients)."""
    import gc

    from needle.backend_ndarray import compose

    if fused and "slices" not in device.capabilities:
        pytest.skip(f"{device.name} declares no slices kernel (core copies each part)")
    if not fused:
        monkeypatch.setattr(device, "_caps", device._caps - {"slices"})
    values = np.arange(13, dtype=np.float32) - 6.5
    flat = NDArray(values, device=device)
    shapes, offsets = [(3, 2), (), (4,), (0, 3)], [1, 7, 9, 13]
    parts = compose.slices(flat, offsets, shapes)
    wants = [values[1:7].reshape(3, 2), values[7], values[9:13], values[13:].reshape(0, 3)]
    for got, want in zip(parts, wants):
        assert got.shape == want.shape and got.is_compact() and got.dtype == "float32"
        np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal((parts[0] * 2).numpy(), wants[0] * 2)  # usable by kernels
    parts[2][1:2] = 42.0
    flat[0:2] = 5.0
    shared = fused  # written through the part, seen in flat; and the other way round
    np.testing.assert_array_equal(flat.numpy()[10], 42.0 if shared else values[10])
    np.testing.assert_array_equal(parts[0].numpy()[0, 0], 5.0 if shared else values[1])
    handle = flat.handle
    del flat
    if hasattr(handle, "free"):
        handle.free()  # the parts keep the memory
    del handle
    gc.collect()
    np.testing.assert_array_equal(parts[2].numpy(), [2.5, 42.0, 4.5, 5.5])
    for dtype in sorted(device.dtypes.get("memory") or {"float32"}):  # any dtype, as bits
        typed = NDArray(np.arange(7).astype(dtype), device=device)
        (part,) = compose.slices(typed, [2], [(5,)])
        assert part.dtype == dtype
        np.testing.assert_array_equal(part.numpy(), np.arange(2, 7).astype(dtype))
    flat = NDArray(values, device=device)
    with pytest.raises(ValueError, match="outside|overrun"):
        compose.slices(flat, [12], [(2,)])
    if fused:  # the kernel checks every range before making any handle
        mod = device.mod
        with pytest.raises(ValueError, match="outside"):
            mod.slices(flat.handle, (0, 12), (2, 2))
        with pytest.raises(ValueError, match="outside"):
            mod.slices(flat.handle, (-1,), (2,))
        with pytest.raises(ValueError, match="outside"):
            mod.slices(flat.handle, (0,), (-1,))
        with pytest.raises(ValueError, match="sizes"):
            mod.slices(flat.handle, (0, 1), (2,))
