"""Linear algebra: matrix products, 2-D and batched with broadcast batch dimensions."""

from __future__ import annotations

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from ..backend_ndarray.compose import batched_matmul
from .elementwise import _like
from .movement import Transpose, reduce_to_shape

__all__ = ["MatMul", "matmul"]


class MatMul(TensorOp):
    """Matrix product of the last two axes; leading (batch) axes broadcast."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return batched_matmul(a, b)

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = node.inputs
        grad_a = grad_b = None  # None for an input that needs none (a constant one-hot, data)
        if a.requires_grad:
            grad_a = _like(reduce_to_shape(MatMul()(out_grad, Transpose()(b)), a.shape), a)
        if b.requires_grad:
            grad_b = _like(reduce_to_shape(MatMul()(Transpose()(a), out_grad), b.shape), b)
        return grad_a, grad_b


def matmul(a: Tensor, b: Tensor) -> Tensor:
    return MatMul()(a, b)
