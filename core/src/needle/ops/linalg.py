"""Linear algebra: matrix products, 2-D and batched with broadcast batch dimensions."""

from __future__ import annotations

import math

from ..autograd import Tensor, TensorOp, is_grad_enabled
from ..backend_ndarray import NDArray
from ..backend_ndarray.compose import batched_matmul
from .elementwise import _like
from .movement import Transpose, reduce_to_shape

__all__ = ["MatMul", "matmul", "Linear", "linear"]


class MatMul(TensorOp):
    """Matrix product of the last two axes; leading (batch) axes broadcast."""

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return batched_matmul(a, b)

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = node.inputs
        grad_a = grad_b = None  # None for an input that needs none (a constant one-hot, data)
        if a.ndim == 2 and b.ndim == 2 and not is_grad_enabled():
            # First order, 2-D: products of NDArrays, the transposes read in place (matmul_t).
            g = out_grad.cached_data
            if a.requires_grad:
                grad_a = Tensor.make_const(g @ b.cached_data.permute((1, 0)))
            if b.requires_grad:
                grad_b = Tensor.make_const(a.cached_data.permute((1, 0)) @ g)
            return _like(grad_a, a), _like(grad_b, b)
        if a.requires_grad:
            grad_a = _like(reduce_to_shape(MatMul()(out_grad, Transpose()(b)), a.shape), a)
        if b.requires_grad:
            grad_b = _like(reduce_to_shape(MatMul()(Transpose()(a), out_grad), b.shape), b)
        return grad_a, grad_b


def matmul(a: Tensor, b: Tensor) -> Tensor:
    return MatMul()(a, b)


class _Operands:
    """The ``inputs`` of a product, for :meth:`MatMul.gradient` (all it reads of a node)."""

    __slots__ = ("inputs",)

    def __init__(self, a: Tensor, b: Tensor) -> None:
        self.inputs = (a, b)


class Linear(TensorOp):
    """``x @ weight + bias`` as one graph node: the matrix product, then the bias (any shape
    that broadcasts to the product's last axis) added by one broadcasting kernel where the
    backend has it. Inputs are ``(x, weight)`` or ``(x, weight, bias)``; the values are those
    of ``matmul`` followed by ``broadcast_to`` and ``add``, and so are the gradients."""

    def compute(self, x: NDArray, weight: NDArray, *bias: NDArray) -> NDArray:
        out = batched_matmul(x, weight)
        if not bias:
            return out
        b, dev = bias[0], out.device
        if (
            b.dtype == out.dtype
            and b.size == out.shape[-1]
            and out.size
            and b.is_compact()
            and out.is_compact()
            and dev.has("broadcast_rows")
        ):  # the kernel ewise add would pick, into the product's own fresh buffer
            dev.mod.broadcast_rows("add", out.handle, b.handle, out.handle, b.size)
            return out
        row = b.reshape((1,) * (out.ndim - 1) + (out.shape[-1],))
        return out + row.broadcast_to(out.shape)

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, *bias = node.inputs
        grads = MatMul().gradient(out_grad, _Operands(x, weight))
        if not bias:
            return grads
        b, grad_b = bias[0], None
        if b.requires_grad and not is_grad_enabled() and math.prod(b.shape) == out_grad.shape[-1]:
            # First order: the column sums on NDArrays (no Summation/Reshape graph nodes).
            g = out_grad.cached_data
            sums = g.reshape((math.prod(g.shape[:-1]), g.shape[-1])).sum(0)
            grad_b = Tensor.make_const(sums.reshape(b.shape))
        elif b.requires_grad:
            grad_b = reduce_to_shape(out_grad, b.shape)
        return (*grads, _like(grad_b, b))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight + bias`` (``bias`` broadcast along the last axis), one graph node."""
    if bias is None:
        return Linear()(x, weight)
    return Linear()(x, weight, bias)
