"""Normalization ops: batch normalization in training mode as one graph node."""

from __future__ import annotations

from ..autograd import Tensor, TensorOp, is_grad_enabled
from ..backend_ndarray import NDArray
from .movement import BroadcastTo, Reshape

__all__ = ["BatchNorm", "batch_norm"]


def _rows(vector: NDArray, shape: tuple[int, ...]) -> NDArray:
    """A ``(D,)`` array viewed as ``shape`` = ``(N, D)``, repeated down the rows."""
    return vector.reshape((1, shape[1])).broadcast_to(shape)


def _tensor_rows(vector: Tensor, shape: tuple[int, ...]) -> Tensor:
    return BroadcastTo(shape)(Reshape((1, shape[1]))(vector))


class BatchNorm(TensorOp):
    """``weight * (x - mean) / sqrt(var + eps) + bias`` over axis 0 of ``(N, D)`` inputs.

    ``mean`` and ``var`` are the batch's (biased variance). After the forward, the op keeps
    them as ``batch_mean`` and ``batch_var`` (NDArrays) for the running statistics.

    The gradient with respect to ``x``, with ``xhat`` the normalized input and ``g`` the
    output gradient, is ``weight / std * (g - mean(g) - xhat * mean(g * xhat))``.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def compute(self, x: NDArray, weight: NDArray, bias: NDArray) -> NDArray:
        n, shape = x.shape[0], x.shape
        mean = x.sum(0) / n
        centered = x - _rows(mean, shape)
        var = (centered**2).sum(0) / n
        std = (var + self.eps) ** 0.5
        normed = centered / _rows(std, shape)
        self.batch_mean, self.batch_var = mean, var
        self.normed, self.std = normed, std  # for a first-order gradient
        return _rows(weight, shape) * normed + _rows(bias, shape)

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, weight, _ = node.inputs
        n, shape = x.shape[0], x.shape
        if is_grad_enabled():  # the gradient is differentiated again: rebuild it from x
            centered = x - _tensor_rows(x.sum((0,)) / n, shape)
            std = ((centered**2).sum((0,)) / n + self.eps) ** 0.5
            normed = centered / _tensor_rows(std, shape)
        else:
            normed, std = Tensor.make_const(self.normed), Tensor.make_const(self.std)
        grad_bias = out_grad.sum((0,))
        grad_weight = (out_grad * normed).sum((0,))
        spread = out_grad - _tensor_rows(grad_bias / n, shape)
        spread = spread - normed * _tensor_rows(grad_weight / n, shape)
        return _tensor_rows(weight / std, shape) * spread, grad_weight, grad_bias


def batch_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Batch normalization of ``(N, D)`` ``x`` with the batch's statistics."""
    return BatchNorm(eps)(x, weight, bias)
