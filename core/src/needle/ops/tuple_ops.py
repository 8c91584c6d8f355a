"""Tuple ops: stack, split, and the TensorTuple plumbing they need."""

from __future__ import annotations

import operator
from collections.abc import Sequence

from ..autograd import Tensor, TensorOp, TensorTuple, TensorTupleOp
from ..backend_ndarray import NDArray
from ..backend_ndarray import strides as st

__all__ = [
    "MakeTensorTuple", "TupleGetItem", "Stack", "Split",
    "make_tuple", "tuple_get_item", "stack", "split",
]  # fmt: skip


class MakeTensorTuple(TensorTupleOp):
    def compute(self, *args: NDArray) -> tuple[NDArray, ...]:
        return tuple(args)

    def gradient(self, out_grad: TensorTuple, node: TensorTuple) -> tuple[Tensor, ...]:
        return tuple(out_grad[i] for i in range(len(out_grad)))


class TupleGetItem(TensorOp):
    def __init__(self, index: int) -> None:
        self.index = operator.index(index)

    def __call__(self, a: TensorTuple) -> Tensor:
        if not isinstance(a, TensorTuple):
            raise TypeError(f"tuple_get_item takes a TensorTuple, got {type(a).__name__}")
        if not -len(a.cached_data) <= self.index < len(a.cached_data):
            raise IndexError(f"index {self.index} out of range for {len(a.cached_data)} tensors")
        return super().__call__(a)

    def compute(self, a: tuple[NDArray, ...]) -> NDArray:
        return a[self.index]

    def item_gradient(self, out_grad: Tensor, node: Tensor) -> tuple[int, Tensor]:
        return self.index % len(node.inputs[0].cached_data), out_grad

    def gradient(self, out_grad: Tensor, node: Tensor) -> TensorTuple:
        parts = node.inputs[0].realize_cached_data()
        index = self.index % len(parts)
        grads = [
            out_grad if i == index else Tensor.make_const(x.device.full(x.shape, 0, x.dtype))
            for i, x in enumerate(parts)
        ]
        return MakeTensorTuple()(*grads)


class Stack(TensorOp):
    """Join equally shaped tensors along a new axis ``axis``."""

    def __init__(self, axis: int) -> None:
        self.axis = operator.index(axis)

    def __call__(self, args: Sequence[Tensor] | TensorTuple) -> Tensor:
        if not isinstance(args, TensorTuple):
            args = make_tuple(*args)
        return super().__call__(args)

    def compute(self, args: tuple[NDArray, ...]) -> NDArray:
        if not args:
            raise ValueError("stack needs at least one tensor")
        shape = args[0].shape
        for x in args[1:]:
            if x.shape != shape:
                raise ValueError(f"stack needs equal shapes, got {shape} and {x.shape}")
        axis = st.normalize_axis(self.axis, len(shape) + 1)
        dtype = args[0].dtype
        for x in args[1:]:
            if x.dtype != dtype:
                raise TypeError(f"stack needs one dtype, got {dtype} and {x.dtype}")
        out = args[0].device.empty(shape[:axis] + (len(args),) + shape[axis:], dtype)
        index = [slice(None)] * (len(shape) + 1)
        for i, x in enumerate(args):
            index[axis] = i
            out[tuple(index)] = x
        return out

    def gradient(self, out_grad: Tensor, node: Tensor) -> TensorTuple:
        return Split(self.axis)(out_grad)


class Split(TensorTupleOp):
    """The slices of a tensor along ``axis``, as a TensorTuple (the inverse of Stack)."""

    def __init__(self, axis: int) -> None:
        self.axis = operator.index(axis)

    def compute(self, a: NDArray) -> tuple[NDArray, ...]:
        axis = st.normalize_axis(self.axis, a.ndim)
        index = [slice(None)] * a.ndim
        parts = []
        for i in range(a.shape[axis]):
            index[axis] = i
            parts.append(a[tuple(index)].compact())
        return tuple(parts)

    def gradient(self, out_grad: TensorTuple, node: TensorTuple) -> Tensor:
        return Stack(self.axis)(out_grad)


def make_tuple(*args: Tensor) -> TensorTuple:
    return MakeTensorTuple()(*args)


def tuple_get_item(value: TensorTuple, index: int) -> Tensor:
    return TupleGetItem(index)(value)


def stack(args: Sequence[Tensor], axis: int) -> Tensor:
    return Stack(axis)(args)


def split(a: Tensor, axis: int) -> TensorTuple:
    return Split(axis)(a)
