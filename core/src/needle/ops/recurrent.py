"""Recurrent ops: one LSTM step's elementwise part as one graph node."""

from __future__ import annotations

from ..autograd import Tensor, TensorTuple, TensorTupleOp, is_grad_enabled
from ..backend_ndarray import NDArray
from ..backend_ndarray.compose import lstm_step as lstm_step_nd
from ..backend_ndarray.compose import lstm_step_grad as lstm_step_grad_nd
from .tuple_ops import split, stack

__all__ = ["LSTMStep", "lstm_step"]


def _gates(gates: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n, width = gates.shape
    i, f, g, o = split(gates.reshape((n, 4, width // 4)), 1)
    return i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()


class LSTMStep(TensorTupleOp):
    """``(h, c')`` from ``gates`` ``(n, 4 * hidden)`` (pre-activations of i, f, g, o) and the
    cell state ``c`` ``(n, hidden)``: ``i, f, o = sigmoid``, ``g = tanh`` of their blocks,
    ``c' = f * c + i * g``, ``h = o * tanh(c')``.

    One node instead of some fifteen (split, activations, products), so a sequence builds a
    short graph. A first-order gradient runs on NDArrays from the activations the forward
    kept (one op object per call keeps one call's); differentiated again, the gradient is
    rebuilt from the inputs as Tensor ops.
    """

    def __init__(self) -> None:
        self._saved: tuple[NDArray, NDArray, NDArray] | None = None

    def compute(self, gates: NDArray, c: NDArray) -> tuple[NDArray, NDArray]:
        h, c_next, act, t = lstm_step_nd(gates, c)
        self._saved = (c_next, act, t)
        return h, c_next

    def gradient(self, out_grad: TensorTuple, node: TensorTuple) -> tuple[Tensor, Tensor]:
        gates, c = node.inputs
        dh, dc = out_grad.realize_cached_data()
        saved = self._saved
        if not is_grad_enabled() and saved is not None and saved[0] is node.cached_data[1]:
            c_next, act, t = saved
            d_gates, d_c = lstm_step_grad_nd(act, t, c.cached_data, c_next, dh, dc)
            return Tensor.make_const(d_gates), Tensor.make_const(d_c)
        # Differentiated again (or the op was called since): rebuilt from the inputs.
        dh, dc = out_grad[0], out_grad[1]
        i, f, g, o = _gates(gates)
        tc = (f * c + i * g).tanh()
        d_c_next = dh * o * (1.0 - tc * tc) + dc
        d_pre = (
            d_c_next * g * i * (1.0 - i),
            d_c_next * c * f * (1.0 - f),
            d_c_next * i * (1.0 - g * g),
            dh * tc * o * (1.0 - o),
        )
        return stack(d_pre, 1).reshape(gates.shape), d_c_next * f


def lstm_step(gates: Tensor, c: Tensor) -> TensorTuple:
    """One LSTM step (see :class:`LSTMStep`): a TensorTuple ``(h, c')``."""
    return LSTMStep()(gates, c)
