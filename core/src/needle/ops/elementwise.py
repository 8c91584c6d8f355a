"""Elementwise ops: arithmetic with tensors and scalars, and the pointwise functions."""

from __future__ import annotations

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray

__all__ = [
    "EWiseAdd", "AddScalar", "EWiseMul", "MulScalar", "EWisePow", "PowerScalar",
    "EWiseDiv", "DivScalar", "Negate", "Log", "Exp", "ReLU", "Tanh", "Sigmoid", "EWiseMaximum",
    "add", "add_scalar", "multiply", "mul_scalar", "power", "power_scalar", "divide",
    "divide_scalar", "negate", "log", "exp", "relu", "tanh", "sigmoid", "maximum",
]  # fmt: skip


def _scalar(value: object, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)  # numpy scalars
        except (TypeError, ValueError):
            raise TypeError(f"{op} needs a real scalar, got {type(value).__name__}") from None
    return float(value)


class _ScalarOp(TensorOp):
    def __init__(self, scalar: float) -> None:
        self.scalar = _scalar(scalar, type(self).__name__)


def _const(array: NDArray) -> Tensor:
    return Tensor.make_const(array)


class EWiseAdd(TensorOp):
    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a + b

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor]:
        return out_grad, out_grad


class AddScalar(_ScalarOp):
    def compute(self, a: NDArray) -> NDArray:
        return a + self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad


class EWiseMul(TensorOp):
    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a * b

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = node.inputs  # None for a factor that needs no gradient (a mask, a one-hot)
        return out_grad * b if a.requires_grad else None, out_grad * a if b.requires_grad else None


class MulScalar(_ScalarOp):
    def compute(self, a: NDArray) -> NDArray:
        return a * self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad * self.scalar


class EWisePow(TensorOp):
    """``a ** b`` elementwise (``b``'s gradient needs ``a > 0``)."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a**b

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor]:
        a, b = node.inputs
        return out_grad * b * a ** (b - 1.0), out_grad * node * log(a)


class PowerScalar(_ScalarOp):
    """``a ** scalar`` elementwise."""

    def compute(self, a: NDArray) -> NDArray:
        return a**self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        (a,) = node.inputs
        if self.scalar == 0:
            return out_grad * 0.0
        return out_grad * self.scalar * a ** (self.scalar - 1)


class EWiseDiv(TensorOp):
    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a / b

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = node.inputs
        grad_a = out_grad / b if a.requires_grad else None
        grad_b = -out_grad * a / (b * b) if b.requires_grad else None
        return grad_a, grad_b


class DivScalar(_ScalarOp):
    def compute(self, a: NDArray) -> NDArray:
        return a / self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad / self.scalar


class Negate(TensorOp):
    def compute(self, a: NDArray) -> NDArray:
        return a * -1.0

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
        return out_grad * _const(node.inputs[0].realize_cached_data() > 0.0)


class Tanh(TensorOp):
    def compute(self, a: NDArray) -> NDArray:
        return a.tanh()

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad * (1.0 - node * node)


class Sigmoid(TensorOp):
    """``1 / (1 + exp(-a))``, computed as ``(1 + tanh(a / 2)) / 2`` so it never overflows."""

    def compute(self, a: NDArray) -> NDArray:
        return ((a * 0.5).tanh() + 1.0) * 0.5

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return out_grad * node * (1.0 - node)


class EWiseMaximum(TensorOp):
    """Elementwise maximum; where the two are equal the gradient is split evenly."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return a.maximum(b)

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor]:
        a, b = (x.realize_cached_data() for x in node.inputs)
        ge, le = a >= b, b >= a
        share = ge + le
        return out_grad * _const(ge / share), out_grad * _const(le / share)


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
