"""Movement ops: views and re-arrangements of data (no arithmetic)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from ..backend_ndarray import strides as st
from ..backend_ndarray.compose import gather as _gather
from ..backend_ndarray.compose import scatter_add as _scatter_add
from ..backend_ndarray.compose import scatter_add_rows, take_rows

__all__ = [
    "Transpose", "Permute", "Reshape", "BroadcastTo", "Flip", "Dilate", "UnDilate",
    "GetItem", "Pad", "Take", "Gather", "ScatterAdd",
    "transpose", "permute", "reshape", "broadcast_to", "flip", "dilate", "undilate",
    "getitem", "pad", "take", "gather", "scatter_add",
]  # fmt: skip


class Transpose(TensorOp):
    """Swap two axes (the course's semantics): the last two when ``axes`` is None."""

    def __init__(self, axes: tuple[int, int] | None = None) -> None:
        if axes is not None and len(tuple(axes)) != 2:
            raise ValueError(f"transpose swaps two axes; got axes={axes!r} (use permute)")
        self.axes = None if axes is None else tuple(axes)

    def _order(self, ndim: int) -> list[int]:
        if ndim < 2:
            raise ValueError(f"transpose needs at least 2 dimensions, got {ndim}")
        i, j = self.axes if self.axes is not None else (-2, -1)
        i, j = st.normalize_axis(i, ndim), st.normalize_axis(j, ndim)
        order = list(range(ndim))
        order[i], order[j] = order[j], order[i]
        return order

    def compute(self, a: NDArray) -> NDArray:
        return a.permute(self._order(a.ndim))

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return Transpose(self.axes)(out_grad)


class Permute(TensorOp):
    """Reorder all axes: ``axes`` is a permutation of ``range(ndim)``."""

    def __init__(self, axes: Sequence[int]) -> None:
        self.axes = tuple(axes)

    def compute(self, a: NDArray) -> NDArray:
        return a.permute(self.axes)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        ndim = len(self.axes)
        inverse = [0] * ndim
        for position, axis in enumerate(self.axes):
            inverse[st.normalize_axis(axis, ndim)] = position
        return Permute(inverse)(out_grad)


class Reshape(TensorOp):
    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)

    def compute(self, a: NDArray) -> NDArray:
        return a.reshape(self.shape)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return reshape_to(out_grad, node.inputs[0].shape)


def reduce_to_shape(grad: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum ``grad`` over the axes that broadcasting stretched to undo ``broadcast_to(shape)``."""
    from .reduction import Summation

    if grad.shape == shape:
        return grad
    lead = len(grad.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and grad.shape[lead + i] != 1
    )
    if axes:  # keepdims when no axis is dropped: the sum then has ``shape`` already
        grad = Summation(axes, keepdims=not lead)(grad)
    return reshape_to(grad, shape)


def reshape_to(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``a`` reshaped to ``shape``: ``a`` itself when it has that shape (no graph node)."""
    return a if a.shape == shape else Reshape(shape)(a)


class BroadcastTo(TensorOp):
    """View as a larger shape (new leading axes, or size-1 axes stretched); no copy."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)

    def compute(self, a: NDArray) -> NDArray:
        return a.broadcast_to(self.shape)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return reduce_to_shape(out_grad, node.inputs[0].shape)


class Flip(TensorOp):
    """Reverse the order of elements along ``axes`` (all axes when None)."""

    def __init__(self, axes: int | Sequence[int] | None = None) -> None:
        self.axes = axes

    def compute(self, a: NDArray) -> NDArray:
        return a.flip(self.axes)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return Flip(self.axes)(out_grad)


def _dilation_slices(shape: tuple[int, ...], axes: Sequence[int], dilation: int) -> tuple:
    axes = st.normalize_axes(tuple(axes), len(shape))
    step = dilation + 1
    return tuple(slice(None, None, step) if i in axes else slice(None) for i in range(len(shape)))


class Dilate(TensorOp):
    """Insert ``dilation`` zeros after every element along ``axes``."""

    def __init__(self, axes: Sequence[int], dilation: int) -> None:
        self.axes = tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)
        self.dilation = operator.index(dilation)
        if self.dilation < 0:
            raise ValueError(f"dilation must be >= 0, got {dilation}")

    def compute(self, a: NDArray) -> NDArray:
        if self.dilation == 0:
            return a
        idx = _dilation_slices(a.shape, self.axes, self.dilation)
        shape = tuple(d * (self.dilation + 1) if s.step else d for d, s in zip(a.shape, idx))
        out = a.device.full(shape, 0, a.dtype)
        out[idx] = a
        return out

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return UnDilate(self.axes, self.dilation)(out_grad)


class UnDilate(TensorOp):
    """Keep every ``dilation + 1``-th element along ``axes`` (the inverse of Dilate)."""

    def __init__(self, axes: Sequence[int], dilation: int) -> None:
        self.axes = tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)
        self.dilation = operator.index(dilation)
        if self.dilation < 0:
            raise ValueError(f"dilation must be >= 0, got {dilation}")

    def compute(self, a: NDArray) -> NDArray:
        return a[_dilation_slices(a.shape, self.axes, self.dilation)]

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        grad = Dilate(self.axes, self.dilation)(out_grad)
        shape = node.inputs[0].shape
        if grad.shape != shape:  # Dilate ends in `dilation` zeros the input may not have had
            grad = GetItem(tuple(slice(0, d) for d in shape))(grad)
        return grad


class GetItem(TensorOp):
    """``a[idxs]`` with ints, slices and one Ellipsis: a view."""

    def __init__(self, idxs: Any) -> None:
        self.idxs = idxs

    def compute(self, a: NDArray) -> NDArray:
        return a[self.idxs]

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return _ScatterItem(self.idxs, node.inputs[0].shape)(out_grad)


class _ScatterItem(TensorOp):
    """Zeros of ``shape`` with ``a`` written at ``idxs``: the adjoint of GetItem."""

    def __init__(self, idxs: Any, shape: tuple[int, ...]) -> None:
        self.idxs, self.shape = idxs, shape

    def compute(self, a: NDArray) -> NDArray:
        out = a.device.full(self.shape, 0, a.dtype)
        out[self.idxs] = a
        return out

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return GetItem(self.idxs)(out_grad)


class Pad(TensorOp):
    """Zero padding: ``axes`` holds a ``(before, after)`` pair for every dimension."""

    def __init__(self, axes: Sequence[tuple[int, int]]) -> None:
        self.axes = tuple(tuple(p) for p in axes)

    def compute(self, a: NDArray) -> NDArray:
        return a.pad(self.axes)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        shape = node.inputs[0].shape
        return GetItem(tuple(slice(b, b + d) for d, (b, _) in zip(shape, self.axes)))(out_grad)


def _check_rows(rows: Sequence[int], count: int) -> tuple[int, ...]:
    rows = tuple(operator.index(i) for i in rows)
    for i in rows:
        if not 0 <= i < count:
            raise IndexError(f"take: index {i} out of range for {count} rows")
    return rows


class Take(TensorOp):
    """Rows of ``a`` (along axis 0) at the integer ``indices``: ``numpy.take(a, indices, 0)``.

    A gather of rows, no arithmetic; the gradient adds each row of ``out_grad`` into the
    row it was read from (indices may repeat).
    """

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = tuple(operator.index(i) for i in indices)

    def compute(self, a: NDArray) -> NDArray:
        if a.ndim < 1:
            raise ValueError("take needs an array of at least one dimension")
        rows = _check_rows(self.indices, a.shape[0])
        return take_rows(a, rows)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return _ScatterAddRows(self.indices, node.inputs[0].shape[0])(out_grad)


class _ScatterAddRows(TensorOp):
    """Zeros of ``count`` rows with row ``j`` of ``a`` added into row ``indices[j]``: the
    adjoint of Take."""

    def __init__(self, indices: Sequence[int], count: int) -> None:
        self.indices, self.count = tuple(indices), count

    def compute(self, a: NDArray) -> NDArray:
        return scatter_add_rows(a, self.indices, self.count)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return Take(self.indices)(out_grad)


class Gather(TensorOp):
    """Rows of ``a`` (axis 0) at the integers of the tensor ``index``: shape
    ``index.shape + a.shape[1:]``. Unlike :class:`Take` the indices stay on the device (no
    host read), so :func:`needle.jit` can trace it; the gradient is a :class:`ScatterAdd`."""

    def compute(self, a: NDArray, index: NDArray) -> NDArray:
        return _gather(a, index)

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, None]:
        a, index = node.inputs
        return ScatterAdd(a.shape[0])(out_grad, index), None


class ScatterAdd(TensorOp):
    """Zeros of ``count`` rows with row ``j`` of ``a`` added into row ``index[j]``: the
    adjoint of :class:`Gather`."""

    def __init__(self, count: int) -> None:
        self.count = operator.index(count)

    def compute(self, a: NDArray, index: NDArray) -> NDArray:
        return _scatter_add(a, index, self.count)

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, None]:
        return Gather()(out_grad, node.inputs[1]), None


def transpose(a: Tensor, axes: tuple[int, int] | None = None) -> Tensor:
    return Transpose(axes)(a)


def permute(a: Tensor, axes: Sequence[int]) -> Tensor:
    return Permute(axes)(a)


def reshape(a: Tensor, shape: Sequence[int]) -> Tensor:
    return Reshape(shape)(a)


def broadcast_to(a: Tensor, shape: Sequence[int]) -> Tensor:
    return BroadcastTo(shape)(a)


def flip(a: Tensor, axes: int | Sequence[int] | None = None) -> Tensor:
    return Flip(axes)(a)


def dilate(a: Tensor, axes: Sequence[int], dilation: int) -> Tensor:
    return Dilate(axes, dilation)(a)


def undilate(a: Tensor, axes: Sequence[int], dilation: int) -> Tensor:
    return UnDilate(axes, dilation)(a)


def getitem(a: Tensor, idxs: Any) -> Tensor:
    return GetItem(idxs)(a)


def pad(a: Tensor, axes: Sequence[tuple[int, int]]) -> Tensor:
    return Pad(axes)(a)


def take(a: Tensor, indices: Sequence[int]) -> Tensor:
    return Take(indices)(a)


def gather(a: Tensor, index: Tensor) -> Tensor:
    return Gather()(a, index)


def scatter_add(a: Tensor, index: Tensor, count: int) -> Tensor:
    return ScatterAdd(count)(a, index)
