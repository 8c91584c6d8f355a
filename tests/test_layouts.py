"""Elementwise ops on transposed whole buffers run without copying them and keep their layout."""

from __future__ import annotations

import needle as ndl
import numpy as np
import pytest
from needle.backend_ndarray import NDArray
from needle.backend_ndarray import strides as st


@pytest.mark.parametrize(
    "shape, strides, dense",
    [
        ((2, 3), (3, 1), True),
        ((3, 2), (1, 3), True),  # a transpose
        ((2, 1, 3), (3, 99, 1), True),  # a size-1 axis may have any stride
        ((2, 3), (1, 2), True),
        ((2, 3), (4, 1), False),  # a gap between rows
        ((2, 3), (0, 1), False),  # a broadcast
        ((2, 3), (-3, 1), False),  # a flip
        ((2, 2), (1, 1), False),  # overlapping
    ],
)
def test_is_dense(shape, strides, dense):
    assert st.is_dense(shape, strides) is dense


def test_elementwise_on_a_transposed_buffer_keeps_its_layout(device):
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 4, 5)).astype(np.float32)
    b = rng.random((2, 3, 4, 5)).astype(np.float32)
    x = NDArray.from_numpy(a, device).permute((0, 3, 1, 2))  # NHWC data seen as NCHW
    y = NDArray.from_numpy(b, device).permute((0, 3, 1, 2))
    for got, want in [
        (x + y, a + b),
        (x * 2.0, a * 2.0),
        (x.maximum(0.5), np.maximum(a, 0.5)),
        (x.exp(), np.exp(a)),
        (x >= y, a >= b),
    ]:
        assert got.strides == x.strides, "the result keeps the operands' layout"
        np.testing.assert_allclose(got.numpy(), want.transpose(0, 3, 1, 2), rtol=1e-6)
    mixed = x + NDArray.from_numpy(b.transpose(0, 3, 1, 2).copy(), device)  # two layouts
    assert mixed.is_compact()
    np.testing.assert_allclose(mixed.numpy(), (a + b).transpose(0, 3, 1, 2), rtol=1e-6)
    t = ndl.Tensor(x, device=device)
    want = a.transpose(0, 3, 1, 2).sum((0, 1))
    np.testing.assert_allclose(t.relu().sum((0, 1)).numpy(), want, rtol=1e-6)


def test_elementwise_on_a_broadcast_view_computes_each_element_once(device):
    row = NDArray.from_numpy(np.array([1.0, -2.0, 3.0], dtype=np.float32), device)
    wide = row.reshape((1, 3)).broadcast_to((4, 3))
    for got, want in [
        (-wide, -np.ones((4, 1)) * [1, -2, 3]),
        (wide.exp(), np.exp([[1, -2, 3]] * 4)),
    ]:
        assert got.handle.size == 3, "computed on the 3-element buffer, not on 12"
        assert got.strides == wide.strides
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    x = NDArray.from_numpy(np.arange(12, dtype=np.float32).reshape(4, 3), device)
    np.testing.assert_allclose((x - wide).numpy(), np.arange(12).reshape(4, 3) - [1, -2, 3])


@pytest.mark.parametrize("op", ["add", "mul", "div", "maximum"])
def test_a_broadcast_row_needs_no_full_size_copy(device, op, monkeypatch):
    if not device.has("broadcast_rows"):
        pytest.skip(f"{device.name} declares no broadcast_rows (core compacts the row)")
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 2.0, (6, 4, 3)).astype(np.float32)
    row = rng.uniform(0.5, 2.0, (4, 3)).astype(np.float32)
    x = NDArray.from_numpy(a, device)
    r = NDArray.from_numpy(row, device).reshape((1, 4, 3)).broadcast_to((6, 4, 3))
    fn = {"add": np.add, "mul": np.multiply, "div": np.divide, "maximum": np.maximum}[op]
    calls = []
    real = device.mod.compact

    def counting(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(device.mod, "compact", counting)
    method = {"add": "__add__", "mul": "__mul__", "div": "__truediv__", "maximum": "maximum"}
    got = getattr(NDArray, method[op])(x, r)
    swapped = getattr(NDArray, method[op])(r, x) if op in ("add", "mul") else got
    monkeypatch.undo()
    assert calls == [], f"{op} compacted {calls}"
    np.testing.assert_array_equal(got.numpy(), fn(a, row[None]))
    np.testing.assert_array_equal(swapped.numpy(), got.numpy())  # the row first: swapped
