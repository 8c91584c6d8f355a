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


def test_arithmetic_matches_numpy(device) -> None:
    a_np = np.random.default_rng(0).uniform(0.5, 2, (3, 4)).astype(np.float32)
    b_np = np.random.default_rng(1).uniform(0.5, 2, (3, 4)).astype(np.float32)
    a, b = NDArray(a_np, device=device), NDArray(b_np, device=device)
    pairs = [
        (a + b, a_np + b_np), (a - b, a_np - b_np), (a * b, a_np * b_np), (a / b, a_np / b_np),
        (1 - a, 1 - a_np), (2 / a, 2 / a_np), (a ** 2, a_np ** 2), (a ** b, a_np ** b_np),
        (a.maximum(b), np.maximum(a_np, b_np)), (a == a, np.ones_like(a_np)),
        (a >= b, (a_np >= b_np).astype(np.float32)), (a > b, (a_np > b_np).astype(np.float32)),
        (a.log(), np.log(a_np)), (a.exp(), np.exp(a_np)), (a.tanh(), np.tanh(a_np)),
        (a @ b.permute((1, 0)), a_np @ b_np.T), (-a, -a_np),
    ]  # fmt: skip
    for got, want in pairs:
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
