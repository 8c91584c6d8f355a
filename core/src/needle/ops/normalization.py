"""Normalization ops: batch normalization in training mode, and layer normalization, each as
one graph node."""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Tensor, TensorOp, is_grad_enabled
from ..backend_ndarray import NDArray
from ..backend_ndarray.compose import batch_norm as batch_norm_nd
from ..backend_ndarray.compose import batch_norm_grad as batch_norm_grad_nd
from ..backend_ndarray.compose import layer_norm as layer_norm_nd
from ..backend_ndarray.compose import layer_norm_grad as layer_norm_grad_nd
from .elementwise import _like

__all__ = ["BatchNorm", "batch_norm", "LayerNorm", "layer_norm"]


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


def _layer_rows(x: Any) -> Any:
    """``x`` (..., D) as rows ``(N, D)`` (the identity for 2-D)."""
    return x if x.ndim == 2 else x.reshape((math.prod(x.shape[:-1]), x.shape[-1]))


class LayerNorm(TensorOp):
    """``weight * (x - mean) / sqrt(var + eps) + bias`` over the last axis of ``x`` (biased
    variance; ``weight`` and ``bias`` of that axis's size), as one node.

    The forward runs the course's composed formula on NDArrays (the same values, bit for
    bit) and keeps the normalized input and the rows' standard deviations (one op object per
    call keeps one call's); a first-order gradient runs on NDArrays from them:
    ``dx = (gn - mean(gn) - xhat * mean(gn * xhat)) / std`` with ``gn = g * weight``.
    Differentiated again, the gradients are rebuilt from ``x`` as Tensor ops.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = eps
        self._saved: tuple[NDArray, NDArray, NDArray] | None = None

    def compute(self, x: NDArray, weight: NDArray, bias: NDArray) -> NDArray:
        d = x.shape[-1] if x.ndim else 0
        if x.ndim < 1 or weight.shape != (d,) or bias.shape != (d,):
            raise ValueError(
                f"layer_norm: weight {weight.shape} and bias {bias.shape} must be the size of "
                f"x's last axis, x {x.shape}"
            )
        rows = x if x.ndim == 2 else x.compact().reshape((math.prod(x.shape[:-1]), d))
        out, normed, std = layer_norm_nd(rows, weight, bias, self.eps)
        out = out.reshape(x.shape)
        self._saved = (out, normed, std)
        return out

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, weight, _ = node.inputs
        saved = self._saved
        if is_grad_enabled() or saved is None or saved[0] is not node.cached_data:
            grads = self._differentiable_gradients(out_grad, x, weight)
        else:
            _, normed, std = saved
            g = out_grad.cached_data.compact()
            g = g if g.ndim == 2 else g.reshape(normed.shape)
            dx, dweight, dbias = layer_norm_grad_nd(g, normed, std, weight.cached_data)
            grads = (Tensor.make_const(dx.reshape(x.shape)), Tensor.make_const(dweight),
                     Tensor.make_const(dbias))  # fmt: skip
        return tuple(_like(g, x) for g, x in zip(grads, node.inputs))

    def _differentiable_gradients(
        self, g: Tensor, x: Tensor, weight: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        rows, grows = _layer_rows(x), _layer_rows(g)
        n, d = shape = rows.shape

        def column(v: Tensor) -> Tensor:
            return v.reshape((n, 1)).broadcast_to(shape)

        centered = rows - column(rows.sum((1,)) / d)
        std = ((centered**2).sum((1,)) / d + self.eps) ** 0.5
        normed = centered / column(std)
        gn = grows * weight.reshape((1, d)).broadcast_to(shape)
        spread = gn - column(gn.sum((1,)) / d) - normed * column((gn * normed).sum((1,)) / d)
        dx = (spread / column(std)).reshape(x.shape)
        return dx, (grows * normed).sum((0,)), grows.sum((0,))


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Layer normalization of ``x`` over its last axis (see :class:`LayerNorm`)."""
    return LayerNorm(eps)(x, weight, bias)
