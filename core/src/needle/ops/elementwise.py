"""Elementwise ops: arithmetic with tensors and scalars, and the pointwise functions.

Binary ops broadcast their inputs as numpy does (through ``BroadcastTo`` nodes, whose
gradient sums back to each input's shape) and promote dtypes as
:mod:`needle.backend_ndarray.dtypes` says; each input's gradient has the input's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor, TensorOp, Value, is_grad_enabled
from ..backend_ndarray import NDArray
from ..backend_ndarray import dtypes as dt
from ..backend_ndarray import strides as st

__all__ = [
    "EWiseAdd", "AddScalar", "EWiseMul", "MulScalar", "EWisePow", "PowerScalar",
    "EWiseDiv", "DivScalar", "Negate", "Log", "Exp", "ReLU", "Tanh", "Sigmoid", "EWiseMaximum",
    "Cast",
    "add", "add_scalar", "multiply", "mul_scalar", "power", "power_scalar", "divide",
    "divide_scalar", "negate", "log", "exp", "relu", "tanh", "sigmoid", "maximum", "astype",
]  # fmt: skip


def _scalar(value: Any, op: str) -> float | int | bool:
    """``value`` as a Python scalar, keeping its kind (int stays int: scalars are weak)."""
    if type(value) in (float, int, bool):
        return value
    if isinstance(value, np.ndarray) and value.size == 1:  # np.random.randn(1) as a scalar
        value = value.reshape(()).item()
    if isinstance(value, (np.generic, float, int)):
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, (float, int, bool)):
            return value
    raise TypeError(f"{op} needs a real scalar, got {type(value).__name__}")


class _ScalarOp(TensorOp):
    def __init__(self, scalar: float) -> None:
        self.scalar = _scalar(scalar, type(self).__name__)


def _const(array: NDArray) -> Tensor:
    return Tensor.make_const(array)


def _like(grad: Tensor | None, x: Value) -> Tensor | None:
    """``grad`` in the dtype of input ``x`` (a float32 input of a float64 product, say)."""
    if grad is None or grad.cached_data.dtype == x.cached_data.dtype:
        return grad
    return Cast(x.cached_data.dtype)(grad)


class _Binary(TensorOp):
    """A binary op whose inputs broadcast to a common shape first."""

    def __call__(self, a: Any, b: Any) -> Tensor:
        if isinstance(a, Value) and isinstance(b, Value) and a.shape != b.shape:
            from .movement import BroadcastTo

            shape = st.broadcast_shapes(a.shape, b.shape)
            if a.shape != shape:
                a = BroadcastTo(shape)(a)
            if b.shape != shape:
                b = BroadcastTo(shape)(b)
        return Tensor.make_from_op(self, (a, b))


class Cast(TensorOp):
    """The input converted to ``dtype``; the gradient converts back."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dt.canonical(dtype)

    def compute(self, a: NDArray) -> NDArray:
        return a.astype(self.dtype, copy=False)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return _like(out_grad, node.inputs[0])


class EWiseAdd(_Binary):
    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a + b

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor]:
        a, b = node.inputs
        return _like(out_grad, a), _like(out_grad, b)


class AddScalar(_ScalarOp):
    def compute(self, a: NDArray) -> NDArray:
        return a + self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad


class EWiseMul(_Binary):
    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a * b

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = node.inputs  # None for a factor that needs no gradient (a mask, a one-hot)
        grad_a = _like(out_grad * b, a) if a.requires_grad else None
        return grad_a, _like(out_grad * a, b) if b.requires_grad else None


class MulScalar(_ScalarOp):
    def compute(self, a: NDArray) -> NDArray:
        return a * self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad * self.scalar


class EWisePow(_Binary):
    """``a ** b`` elementwise (``b``'s gradient needs ``a > 0``)."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a**b

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = node.inputs
        grad_a = _like(out_grad * b * a ** (b - 1.0), a) if a.requires_grad else None
        return grad_a, _like(out_grad * node * log(a), b) if b.requires_grad else None


class PowerScalar(_ScalarOp):
    """``a ** scalar`` elementwise."""

    def compute(self, a: NDArray) -> NDArray:
        return a**self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        (a,) = node.inputs
        if self.scalar == 0:
            return out_grad * 0.0
        return out_grad * self.scalar * a ** (self.scalar - 1)


class EWiseDiv(_Binary):
    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a / b

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = node.inputs
        grad_a = _like(out_grad / b, a) if a.requires_grad else None
        grad_b = _like(-out_grad * a / (b * b), b) if b.requires_grad else None
        return grad_a, grad_b


class DivScalar(_ScalarOp):
    def compute(self, a: NDArray) -> NDArray:
        return a / self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad / self.scalar


class Negate(TensorOp):
    def compute(self, a: NDArray) -> NDArray:
        return -a

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return -out_grad


class Log(TensorOp):
    def compute(self, a: NDArray) -> NDArray:
        return a.log()

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad / node.inputs[0]


class Exp(TensorOp):
    def compute(self, a: NDArray) -> NDArray:
        return a.exp()

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad * node


class ReLU(TensorOp):
    def compute(self, a: NDArray) -> NDArray:
        return a.maximum(0.0)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        mask = node.inputs[0].realize_cached_data() > 0.0
        if not is_grad_enabled():  # first order: the same kernels on NDArrays, no graph nodes
            return _const(out_grad.cached_data * mask)
        return out_grad * _const(mask)


class Tanh(TensorOp):
    def compute(self, a: NDArray) -> NDArray:
        return a.tanh()

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        if not is_grad_enabled():  # first order: the same kernels on NDArrays, in this order
            y = node.cached_data
            return _const(out_grad.cached_data * ((-(y * y)) + 1.0))
        return out_grad * (1.0 - node * node)


class Sigmoid(TensorOp):
    """``1 / (1 + exp(-a))``, computed as ``(1 + tanh(a / 2)) / 2`` so it never overflows."""

    def compute(self, a: NDArray) -> NDArray:
        return ((a * 0.5).tanh() + 1.0) * 0.5

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        if not is_grad_enabled():  # first order: the same kernels on NDArrays, in this order
            y = node.cached_data
            return _const((out_grad.cached_data * y) * ((-y) + 1.0))
        return out_grad * node * (1.0 - node)


class EWiseMaximum(_Binary):
    """Elementwise maximum; where the two are equal the gradient is split evenly."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a.maximum(b)

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor]:
        x, y = node.inputs
        a, b = x.realize_cached_data(), y.realize_cached_data()
        ge = (a >= b)._cast(out_grad.dtype)
        le = (b >= a)._cast(out_grad.dtype)
        share = ge + le
        return _like(out_grad * _const(ge / share), x), _like(out_grad * _const(le / share), y)


def add(a: Tensor, b: Tensor) -> Tensor:
    return EWiseAdd()(a, b)


def add_scalar(a: Tensor, scalar: float) -> Tensor:
    return AddScalar(scalar)(a)


def multiply(a: Tensor, b: Tensor) -> Tensor:
    return EWiseMul()(a, b)


def mul_scalar(a: Tensor, scalar: float) -> Tensor:
    return MulScalar(scalar)(a)


def power(a: Tensor, b: Tensor) -> Tensor:
    return EWisePow()(a, b)


def power_scalar(a: Tensor, scalar: float) -> Tensor:
    return PowerScalar(scalar)(a)


def divide(a: Tensor, b: Tensor) -> Tensor:
    return EWiseDiv()(a, b)


def divide_scalar(a: Tensor, scalar: float) -> Tensor:
    return DivScalar(scalar)(a)


def negate(a: Tensor) -> Tensor:
    return Negate()(a)


def log(a: Tensor) -> Tensor:
    return Log()(a)


def exp(a: Tensor) -> Tensor:
    return Exp()(a)


def relu(a: Tensor) -> Tensor:
    return ReLU()(a)


def tanh(a: Tensor) -> Tensor:
    return Tanh()(a)


def sigmoid(a: Tensor) -> Tensor:
    return Sigmoid()(a)


def maximum(a: Tensor, b: Tensor) -> Tensor:
    return EWiseMaximum()(a, b)


def astype(a: Tensor, dtype: Any) -> Tensor:
    """``a`` converted to ``dtype`` (itself when it has it); differentiable between floats."""
    return a if a.dtype == dt.canonical(dtype) else Cast(dtype)(a)
