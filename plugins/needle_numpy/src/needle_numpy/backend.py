"""The reference backend: every function of :mod:`needle.contract`, in numpy, for clarity.

A handle is :class:`Array`, a flat float32 numpy buffer. Strides and offsets
count elements. This module is the living specification of the contract: the
other backends must give its results.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__device_name__ = "numpy"


class Array:
    """A flat buffer of ``size`` float32 elements."""

    __slots__ = ("array",)

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"Array size must be >= 0, got {size}")
        self.array = np.empty(size, dtype=np.float32)  # numpy's allocator aligns it

    @property
    def size(self) -> int:
        return self.array.size

    def ptr(self) -> int:
        return self.array.ctypes.data


def _check(a: Array, name: str = "a") -> np.ndarray:
    if not isinstance(a, Array):
        raise TypeError(f"{name} must be a numpy-backend Array, got {type(a).__name__}")
    return a.array


def _view(a: Array, shape: Sequence[int], strides: Sequence[int], offset: int) -> np.ndarray:
    """The strided view of ``a``'s buffer, checked to stay inside it."""
    buf = _check(a)
    shape, strides = tuple(shape), tuple(strides)
    if len(shape) != len(strides) or any(d < 0 for d in shape):
        raise ValueError(f"bad view: shape {shape}, strides {strides}")
    if 0 not in shape:
        lo = offset + sum((d - 1) * s for d, s in zip(shape, strides) if s < 0)
        hi = offset + sum((d - 1) * s for d, s in zip(shape, strides) if s > 0)
        if lo < 0 or hi >= buf.size:
            raise ValueError(
                f"view (shape={shape}, strides={strides}, offset={offset}) is outside a buffer "
                f"of {buf.size}"
            )
    return np.lib.stride_tricks.as_strided(
        buf[offset:] if 0 not in shape else buf,
        shape,
        tuple(s * buf.itemsize for s in strides),
        writeable=True,
    )


def _same_size(*arrays: np.ndarray) -> None:
    size = arrays[0].size
    for x in arrays:
        if x.size != size:
            raise ValueError(f"buffer sizes differ: {[x.size for x in arrays]}")


def to_numpy(a: Array, shape: Sequence[int], strides: Sequence[int], offset: int) -> np.ndarray:
    return _view(a, shape, strides, offset).copy()


def from_numpy(arr: np.ndarray, out: Array) -> None:
    flat = np.asarray(arr, dtype=np.float32).reshape(-1)
    _same_size(flat, _check(out, "out"))
    out.array[:] = flat


def fill(out: Array, val: float) -> None:
    _check(out, "out")[:] = val


def compact(
    a: Array, out: Array, shape: Sequence[int], strides: Sequence[int], offset: int
) -> None:
    view = _view(a, shape, strides, offset)
    _same_size(view, _check(out, "out"))
    out.array[:] = view.reshape(-1)


def ewise_setitem(
    a: Array, out: Array, shape: Sequence[int], strides: Sequence[int], offset: int
) -> None:
    view = _view(out, shape, strides, offset)
    _same_size(view, _check(a))
    view[...] = a.array.reshape(view.shape)


def scalar_setitem(
    size: int, val: float, out: Array, shape: Sequence[int], strides: Sequence[int], offset: int
) -> None:
    view = _view(out, shape, strides, offset)
    if view.size != size:
        raise ValueError(f"size {size} does not match the view's {view.size} elements")
    view[...] = val


def _binary(fn):  # noqa: ANN001, ANN202
    def kernel(a: Array, b: Array, out: Array) -> None:
        x, y, z = _check(a), _check(b, "b"), _check(out, "out")
        _same_size(x, y, z)
        fn(x, y, out=z, casting="unsafe")

    kernel.__name__ = fn.__name__
    return kernel


def _scalar(fn):  # noqa: ANN001, ANN202
    def kernel(a: Array, val: float, out: Array) -> None:
        x, z = _check(a), _check(out, "out")
        _same_size(x, z)
        fn(x, np.float32(val), out=z, casting="unsafe")

    kernel.__name__ = fn.__name__
    return kernel


def _unary(fn):  # noqa: ANN001, ANN202
    def kernel(a: Array, out: Array) -> None:
        x, z = _check(a), _check(out, "out")
        _same_size(x, z)
        fn(x, out=z)

    kernel.__name__ = fn.__name__
    return kernel


ewise_add = _binary(np.add)
ewise_mul = _binary(np.multiply)
ewise_div = _binary(np.divide)
ewise_maximum = _binary(np.maximum)
ewise_eq = _binary(np.equal)
ewise_ge = _binary(np.greater_equal)
ewise_power = _binary(np.power)
scalar_add = _scalar(np.add)
scalar_mul = _scalar(np.multiply)
scalar_div = _scalar(np.divide)
scalar_power = _scalar(np.power)
scalar_maximum = _scalar(np.maximum)
scalar_eq = _scalar(np.equal)
scalar_ge = _scalar(np.greater_equal)
ewise_log = _unary(np.log)
ewise_exp = _unary(np.exp)
ewise_tanh = _unary(np.tanh)


def matmul(a: Array, b: Array, out: Array, m: int, n: int, p: int) -> None:
    x, y, z = _check(a), _check(b, "b"), _check(out, "out")
    if (x.size, y.size, z.size) != (m * n, n * p, m * p):
        raise ValueError(
            f"matmul sizes {x.size}, {y.size}, {z.size} do not match m={m} n={n} p={p}"
        )
    np.matmul(x.reshape(m, n), y.reshape(n, p), out=z.reshape(m, p))


def bmm(a: Array, b: Array, out: Array, batch: int, m: int, n: int, p: int) -> None:
    x, y, z = _check(a), _check(b, "b"), _check(out, "out")
    if (x.size, y.size, z.size) != (batch * m * n, batch * n * p, batch * m * p):
        raise ValueError(f"bmm sizes do not match batch={batch} m={m} n={n} p={p}")
    np.matmul(x.reshape(batch, m, n), y.reshape(batch, n, p), out=z.reshape(batch, m, p))


def _reduce(a: Array, out: Array, reduce_size: int) -> tuple[np.ndarray, np.ndarray]:
    x, z = _check(a), _check(out, "out")
    if reduce_size <= 0 or x.size != z.size * reduce_size:
        raise ValueError(f"cannot reduce {x.size} elements into {z.size} by {reduce_size}")
    return x.reshape(z.size, reduce_size), z


def reduce_sum(a: Array, out: Array, reduce_size: int) -> None:
    x, z = _reduce(a, out, reduce_size)
    np.sum(x, axis=1, out=z)


def reduce_max(a: Array, out: Array, reduce_size: int) -> None:
    x, z = _reduce(a, out, reduce_size)
    np.max(x, axis=1, out=z)
