"""Normalization ops: batch normalization in training mode as one graph node."""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Tensor, TensorOp, is_grad_enabled
from ..backend_ndarray import NDArray
from ..backend_ndarray.compose import batch_norm as batch_norm_nd
from ..backend_ndarray.compose import batch_norm_grad as batch_norm_grad_nd
from .elementwise import _like

__all__ = ["BatchNorm", "batch_norm"]


def _rows(vector: Any, shape: tuple[int, ...]) -> Any:
    """A ``(D,)`` Tensor viewed as ``shape`` = ``(N, D)``, repeated down the rows."""
    return vector.reshape((1, shape[1])).broadcast_to(shape)


def _channel_rows(x: Tensor) -> Tensor:
    """``x`` (N, C, ...) as rows ``(N * inner, C)``, differentiably (the identity for 2-D)."""
    if x.ndim == 2:
        return x
    n, c, inner = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    return x.reshape((n, c, inner)).transpose((1, 2)).reshape((n * inner, c))


def _from_channel_rows(rows: Tensor, shape: tuple[int, ...]) -> Tensor:
    if len(shape) == 2:
        return rows
    n, c, inner = shape[0], shape[1], math.prod(shape[2:])
    return rows.reshape((n, inner, c)).transpose((1, 2)).reshape(shape)


def _differentiable_gradients(
    g: Tensor, x: Tensor, weight: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients for ``x``, ``weight`` and ``bias``, rebuilt from ``x`` as Tensors (so
    they can be differentiated again)."""
    rows, grows = _channel_rows(x), _channel_rows(g)
    n, shape = rows.shape[0], rows.shape
    centered = rows - _rows(rows.sum((0,)) / n, shape)
    std = ((centered**2).sum((0,)) / n + eps) ** 0.5
    normed = centered / _rows(std, shape)
    grad_bias = grows.sum((0,))
    grad_weight = (grows * normed).sum((0,))
    # Signs flipped on the (D,) vectors, not on (N, D) arrays: a subtraction is an addition
    # of a negation, and this negates D numbers instead of N * D (the same values).
    spread = grows + _rows(-(grad_bias / n), shape) + normed * _rows(-(grad_weight / n), shape)
    grad_x = _rows(weight / std, shape) * spread
    return _from_channel_rows(grad_x, x.shape), grad_weight, grad_bias


class BatchNorm(TensorOp):
    """``weight * (x - mean) / sqrt(var + eps) + bias`` per channel: axis 1 of ``x``
    ``(N, C)`` or ``(N, C, H, W)`` (any trailing dimensions), with the batch's statistics
    over every other axis (biased variance).

    With ``running = (running_mean, running_var)``, compact ``(C,)`` NDArrays, the forward
    also updates them in place, ``running = (1 - momentum) * running + momentum * batch``:
    one backend call (``batch_norm``) where the backend declares it.

    The gradient with respect to ``x``, with ``xhat`` the normalized input and ``g`` the
    output gradient, is ``weight / std * (g - mean(g) - xhat * mean(g * xhat))``: one
    ``batch_norm_grad`` call for a first-order gradient, from the batch's mean and inverse
    standard deviation that the forward kept (one op object per call keeps one call's).
    """

    def __init__(
        self,
        eps: float = 1e-5,
        momentum: float = 0.0,
        running: tuple[NDArray, NDArray] | None = None,
    ) -> None:
        self.eps = eps
        self.momentum = momentum
        self.running = running
        self._saved: tuple[NDArray, NDArray, NDArray] | None = None

    def compute(self, x: NDArray, weight: NDArray, bias: NDArray) -> NDArray:
        out, mean, invstd = batch_norm_nd(x, weight, bias, self.eps, self.momentum, self.running)
        self._saved = (out, mean, invstd)  # for a first-order gradient of this output
        return out

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, weight, _ = node.inputs
        saved = self._saved
        if is_grad_enabled() or saved is None or saved[0] is not node.cached_data:
            # Differentiated again (or the op was called since): rebuilt from x, as Tensors.
            grads = _differentiable_gradients(out_grad, x, weight, self.eps)
        else:  # first order only: one backend call on the saved statistics, no graph nodes
            _, mean, invstd = saved
            raw = batch_norm_grad_nd(
                out_grad.cached_data, x.cached_data, weight.cached_data, mean, invstd
            )
            grads = tuple(Tensor.make_const(g) for g in raw)
        return tuple(_like(g, x) for g, x in zip(grads, node.inputs))


def batch_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Batch normalization of ``x`` (N, C, ...) per channel (axis 1) with the batch's
    statistics."""
    return BatchNorm(eps)(x, weight, bias)
