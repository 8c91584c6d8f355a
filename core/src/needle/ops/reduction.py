"""Reduction ops: sum, max, mean, logsumexp and logsoftmax."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..autograd import Tensor, TensorOp, is_grad_enabled
from ..backend_ndarray import NDArray
from ..backend_ndarray import strides as st
from ..backend_ndarray.compose import one_hot
from ..backend_ndarray.compose import softmax_cross_entropy as softmax_cross_entropy_nd
from ..backend_ndarray.compose import softmax_cross_entropy_grad as softmax_cross_entropy_grad_nd
from ..backend_ndarray.dtypes import float_of
from .movement import BroadcastTo, reshape_to

__all__ = [
    "Summation", "Max", "LogSumExp", "LogSoftmax", "SoftmaxCrossEntropy",
    "summation", "max", "mean", "logsumexp", "logsoftmax", "softmax_cross_entropy",
]  # fmt: skip

Axes = int | Sequence[int] | None


def _kept_shape(shape: tuple[int, ...], axes: Axes) -> tuple[int, ...]:
    """``shape`` with the reduced ``axes`` set to 1 (keepdims layout)."""
    reduced = st.normalize_axes(axes, len(shape))
    return tuple(1 if i in reduced else d for i, d in enumerate(shape))


def _expand(grad: Tensor, shape: tuple[int, ...], axes: Axes) -> Tensor:
    """Broadcast a reduced ``grad`` back over the input's ``shape``."""
    grad = reshape_to(grad, _kept_shape(shape, axes))
    return grad if grad.shape == shape else BroadcastTo(shape)(grad)


class Summation(TensorOp):
    """Sum over ``axes`` (None: all; an int; or a tuple)."""

    def __init__(self, axes: Axes = None, keepdims: bool = False) -> None:
        self.axes = tuple(axes) if isinstance(axes, list) else axes
        self.keepdims = keepdims

    def compute(self, a: NDArray) -> NDArray:
        return a.sum(self.axes, keepdims=self.keepdims)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        return _expand(out_grad, node.inputs[0].shape, self.axes)


class Max(TensorOp):
    """Maximum over ``axes``; the gradient is shared evenly among tied maxima."""

    def __init__(self, axes: Axes = None, keepdims: bool = False) -> None:
        self.axes = tuple(axes) if isinstance(axes, list) else axes
        self.keepdims = keepdims

    def compute(self, a: NDArray) -> NDArray:
        return a.max(self.axes, keepdims=self.keepdims)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        a = node.inputs[0].realize_cached_data()
        top = node.realize_cached_data().reshape(_kept_shape(a.shape, self.axes))
        mask = a == top.broadcast_to(a.shape)
        count = mask.sum(self.axes, keepdims=True).broadcast_to(a.shape)
        return _expand(out_grad, a.shape, self.axes) * Tensor.make_const(mask / count)


def _finite_max(a: NDArray, axes: Axes) -> NDArray:
    """The max over ``axes`` (keepdims), clamped to the dtype's finite range: the shift that
    keeps ``exp`` in range, and that is finite for rows of -inf or holding +inf."""
    big = float(np.finfo(a.dtype).max)
    top = a.max(axes, keepdims=True).maximum(-big)
    return -((-top).maximum(-big))


class LogSumExp(TensorOp):
    """``log(sum(exp(a), axes))``, computed stably (subtracting the max), so 1e10 inputs work.

    A row of -inf gives -inf and a row holding +inf gives +inf, as numpy's formula does.
    The gradient is the softmax, ``exp(a - max) / sum(exp(a - max))``, exact at ties. A
    first-order gradient (``backward(create_graph=False)``) reuses the forward's
    ``exp(a - max)`` and its sum, saved with the output: two passes over ``a`` instead of
    eight.
    """

    def __init__(self, axes: Axes = None) -> None:
        self.axes = tuple(axes) if isinstance(axes, list) else axes
        self._saved: tuple[NDArray, NDArray, NDArray] | None = None

    def compute(self, a: NDArray) -> NDArray:
        a = a.astype(float_of(a.dtype), copy=False)
        top = _finite_max(a, self.axes)
        # Negate the reduced max before broadcasting it: one pass over ``a`` fewer.
        e = (a + (-top).broadcast_to(a.shape)).exp()
        total = e.sum(self.axes, keepdims=True)
        out = (total.log() + top).reshape(
            tuple(d for i, d in enumerate(a.shape) if i not in st.normalize_axes(self.axes, a.ndim))
        )
        self._saved = (out, e, total) if is_grad_enabled() else None
        return out

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        a = node.inputs[0]
        saved = self._saved
        if saved is not None and saved[0] is node.cached_data and not is_grad_enabled():
            _, e, total = saved  # first order: the forward's exp and sum, no graph
            g = out_grad.cached_data.reshape(total.shape)
            grad = e * (g / total).broadcast_to(e.shape)
            return Tensor.make_const(grad.astype(a.dtype, copy=False))
        top = Tensor.make_const(_finite_max(a.realize_cached_data(), self.axes))
        e = (a + BroadcastTo(a.shape)(-top)).exp()  # the shift is a constant: exact softmax
        total = _expand(Summation(self.axes)(e), a.shape, self.axes)
        return _expand(out_grad, a.shape, self.axes) * (e / total)


class LogSoftmax(TensorOp):
    """``a - logsumexp(a)`` over ``axes`` (the last axis by default), stable."""

    def __init__(self, axes: Axes = -1) -> None:
        self.axes = tuple(axes) if isinstance(axes, list) else axes

    def compute(self, a: NDArray) -> NDArray:
        lse = LogSumExp(self.axes).compute(a)
        return a - lse.reshape(_kept_shape(a.shape, self.axes)).broadcast_to(a.shape)

    def gradient(self, out_grad: Tensor, node: Tensor) -> Tensor:
        shape = node.shape
        total = _expand(Summation(self.axes)(out_grad), shape, self.axes)
        return out_grad - node.exp() * total


class SoftmaxCrossEntropy(TensorOp):
    """Per-row softmax cross-entropy of logits ``(N, k)`` against integer labels ``(N,)``:
    ``logsumexp(row) - row[label]``, shape ``(N,)``. The labels' gradient is zero (None when
    they need none).

    One fused kernel when the backend declares ``softmax_cross_entropy`` (it also keeps the
    softmax, which the first-order gradient reuses: one pass); composed otherwise. The
    gradient ``(softmax - one_hot) * g`` is built from Tensor ops when it is differentiated
    again.
    """

    def __init__(self) -> None:
        self._saved: tuple[NDArray, NDArray] | None = None

    def compute(self, logits: NDArray, labels: NDArray) -> NDArray:
        losses, probs = softmax_cross_entropy_nd(logits, labels)
        self._saved = (losses, probs) if is_grad_enabled() else None
        return losses

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor | None]:
        logits, labels = node.inputs
        data = labels.cached_data
        label_grad = None  # float labels that require grad get zeros (they are indices)
        if labels.requires_grad:
            label_grad = Tensor.make_const(data.device.full(data.shape, 0, data.dtype))
        saved = self._saved
        if saved is not None and saved[0] is node.cached_data and not is_grad_enabled():
            grad = softmax_cross_entropy_grad_nd(saved[1], data, out_grad.cached_data)
            return Tensor.make_const(grad), label_grad
        n, k = logits.shape
        top = Tensor.make_const(_finite_max(logits.realize_cached_data(), (1,)))
        e = (logits + BroadcastTo((n, k))(-top)).exp()  # the shift is a constant: exact
        probs = e / _expand(Summation((1,))(e), (n, k), (1,))
        hot = Tensor.make_const(one_hot(data.reshape((n,)), k, logits.dtype))
        return (probs - hot) * _expand(out_grad, (n, k), (1,)), label_grad


def summation(a: Tensor, axes: Axes = None, keepdims: bool = False) -> Tensor:
    return Summation(axes, keepdims)(a)


def max(a: Tensor, axes: Axes = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Max(axes, keepdims)(a)


def mean(a: Tensor, axes: Axes = None, keepdims: bool = False) -> Tensor:
    """Arithmetic mean over ``axes``."""
    count = st.prod(a.shape[i] for i in st.normalize_axes(axes, len(a.shape)))
    return Summation(axes, keepdims)(a) / float(count)


def logsumexp(a: Tensor, axes: Axes = None) -> Tensor:
    return LogSumExp(axes)(a)


def logsoftmax(a: Tensor, axes: Axes = -1) -> Tensor:
    return LogSoftmax(axes)(a)


def softmax_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    return SoftmaxCrossEntropy()(logits, labels)
