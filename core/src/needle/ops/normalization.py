"""Normalization ops: batch normalization in training mode as one graph node."""

from __future__ import annotations

from typing import Any

from ..autograd import Tensor, TensorOp, is_grad_enabled
from ..backend_ndarray import NDArray
from .elementwise import _like

__all__ = ["BatchNorm", "batch_norm"]


def _rows(vector: Any, shape: tuple[int, ...]) -> Any:
    """A ``(D,)`` Tensor or NDArray viewed as ``shape`` = ``(N, D)``, repeated down the rows."""
    return vector.reshape((1, shape[1])).broadcast_to(shape)


def _gradients(g: Any, normed: Any, std: Any, weight: Any) -> tuple[Any, Any, Any]:
    """The gradients for ``x``, ``weight`` and ``bias`` from the output gradient ``g``.

    Works alike on Tensors (a differentiable gradient) and on NDArrays (a first-order one).
    """
    n, shape = g.shape[0], g.shape
    grad_bias = g.sum((0,))
    grad_weight = (g * normed).sum((0,))
    # Signs flipped on the (D,) vectors, not on (N, D) arrays: a subtraction is an addition
    # of a negation, and this negates D numbers instead of N * D (the same values).
    spread = g + _rows(-(grad_bias / n), shape) + normed * _rows(-(grad_weight / n), shape)
    return _rows(weight / std, shape) * spread, grad_weight, grad_bias


class BatchNorm(TensorOp):
    """``weight * (x - mean) / sqrt(var + eps) + bias`` over axis 0 of ``(N, D)`` inputs.

    ``mean`` and ``var`` are the batch's (biased variance). After the forward, the op keeps
    them as ``batch_mean`` and ``batch_var`` (NDArrays) for the running statistics.

    The gradient with respect to ``x``, with ``xhat`` the normalized input and ``g`` the
    output gradient, is ``weight / std * (g - mean(g) - xhat * mean(g * xhat))``.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = eps
        self._saved: tuple[NDArray, NDArray, NDArray] | None = None

    def compute(self, x: NDArray, weight: NDArray, bias: NDArray) -> NDArray:
        n, shape = x.shape[0], x.shape
        mean = x.sum(0) / n
        centered = x - _rows(mean, shape)
        var = (centered**2).sum(0) / n
        std = (var + self.eps) ** 0.5
        normed = centered / _rows(std, shape)
        self.batch_mean, self.batch_var = mean, var
        out = _rows(weight, shape) * normed + _rows(bias, shape)
        self._saved = (out, normed, std)  # for a first-order gradient of this output
        return out

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, weight, _ = node.inputs
        saved = self._saved
        if is_grad_enabled() or saved is None or saved[0] is not node.cached_data:
            # Differentiated again (or the op was called since): rebuilt from x, as Tensors.
            n, shape = x.shape[0], x.shape
            centered = x - _rows(x.sum((0,)) / n, shape)
            std = ((centered**2).sum((0,)) / n + self.eps) ** 0.5
            grads = _gradients(out_grad, centered / _rows(std, shape), std, weight)
        else:  # first order only: on the saved NDArrays, without graph nodes
            _, normed, std = saved
            raw = _gradients(out_grad.cached_data, normed, std, weight.cached_data)
            grads = tuple(Tensor.make_const(g) for g in raw)
        return tuple(_like(g, x) for g, x in zip(grads, node.inputs))


def batch_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Batch normalization of ``(N, D)`` ``x`` with the batch's statistics."""
    return BatchNorm(eps)(x, weight, bias)
