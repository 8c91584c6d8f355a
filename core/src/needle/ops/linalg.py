"""Linear algebra: matrix products, 2-D and batched with broadcast batch dimensions."""

from __future__ import annotations

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from ..backend_ndarray import strides as st
from .elementwise import _like
from .movement import Transpose, reduce_to_shape

__all__ = ["MatMul", "matmul"]


def batched_matmul(a: NDArray, b: NDArray) -> NDArray:
    """``a @ b`` on NDArrays of at least 2 dimensions, numpy's batch broadcasting rules."""
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul needs at least 2-D operands, got shapes {a.shape} and {b.shape}")
    if a.device != b.device:
        raise ValueError(f"matmul got arrays on {a.device.name} and {b.device.name}")
    (m, n), (n2, p) = a.shape[-2:], b.shape[-2:]
    if n != n2:
        raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not align ({n} != {n2})")
    if a.ndim == 2 and b.ndim == 2:
        return a @ b
    a, b = a._matmul_operands(b)
    batch = st.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if b.ndim == 2 and a.shape[:-2] == batch:  # (..., m, n) @ (n, p): one big product
        return (a.reshape((st.prod(batch) * m, n)) @ b).reshape(batch + (m, p))
    count = st.prod(batch)
    lhs = a.broadcast_to(batch + (m, n)).compact().reshape((count, m, n))
    rhs = b.broadcast_to(batch + (n, p)).compact().reshape((count, n, p))
    out = NDArray.make((count, m, p), device=a.device, dtype=lhs.dtype)
    if out.size == 0:
        return out.reshape(batch + (m, p))
    if n == 0:
        out.fill(0.0)
    elif a.device.has("bmm"):
        a.device.mod.bmm(lhs.handle, rhs.handle, out.handle, count, m, n, p)
    else:
        for i in range(count):
            out[i] = lhs[i] @ rhs[i]
    return out.reshape(batch + (m, p))


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
