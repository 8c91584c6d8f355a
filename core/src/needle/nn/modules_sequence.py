"""Sequence layers: RNN and LSTM (cells and multi-layer), and Embedding.

Sequences are time-major: ``(seq_len, batch, features)``, as in the course.
"""

from __future__ import annotations

import math

import numpy as np

from .. import init, ops
from .. import replay as _jit
from ..autograd import Tensor
from .modules_basic import DeviceLike, Module, Parameter

__all__ = ["RNNCell", "RNN", "LSTMCell", "LSTM", "Embedding"]


def _uniform(*shape: int, bound: float, device: DeviceLike, dtype: str) -> Parameter:
    return Parameter(init.rand(*shape, low=-bound, high=bound, device=device, dtype=dtype))


def _bias_row(bias: Tensor, batch: int) -> Tensor:
    return bias.reshape((1, bias.shape[0])).broadcast_to((batch, bias.shape[0]))


class RNNCell(Module):
    """One Elman step: ``h' = act(x @ W_ih + bias_ih + h @ W_hh + bias_hh)``.

    Parameters are drawn uniform in ``+-1/sqrt(hidden_size)`` in the order
    ``W_ih (input, hidden)``, ``W_hh (hidden, hidden)``, ``bias_ih``, ``bias_hh``.

    Args:
        input_size: features of ``x``.
        hidden_size: features of ``h``.
        bias: whether to add the two biases.
        nonlinearity: ``"tanh"`` or ``"relu"``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.nonlinearity = nonlinearity
        k = 1.0 / math.sqrt(hidden_size)
        kw = {"bound": k, "device": device, "dtype": dtype}
        self.W_ih = _uniform(input_size, hidden_size, **kw)
        self.W_hh = _uniform(hidden_size, hidden_size, **kw)
        self.bias_ih = _uniform(hidden_size, **kw) if bias else None
        self.bias_hh = _uniform(hidden_size, **kw) if bias else None

    def forward(self, X: Tensor, h: Tensor | None = None) -> Tensor:
        """``X`` ``(batch, input_size)``, ``h`` ``(batch, hidden_size)`` (zeros when None)."""
        batch = X.shape[0]
        if h is None:  # zeros, multiplied as the course does: W_hh gets a (zero) gradient
            h = init.zeros(batch, self.hidden_size, device=X.device, dtype=X.dtype)
        out = X @ self.W_ih + h @ self.W_hh
        if self.bias_ih is not None:
            out = out + _bias_row(self.bias_ih, batch) + _bias_row(self.bias_hh, batch)
        return ops.tanh(out) if self.nonlinearity == "tanh" else ops.relu(out)


class RNN(Module):
    """A stack of ``num_layers`` :class:`RNNCell` run over a sequence.

    ``forward(X, h0)``: ``X`` ``(seq_len, batch, input_size)``, ``h0``
    ``(num_layers, batch, hidden_size)`` (zeros when None). Returns the last
    layer's outputs ``(seq_len, batch, hidden_size)`` and the final hidden
    states ``(num_layers, batch, hidden_size)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.rnn_cells = [
            RNNCell(
                input_size if layer == 0 else hidden_size,
                hidden_size,
                bias=bias,
                nonlinearity=nonlinearity,
                device=device,
                dtype=dtype,
            )
            for layer in range(num_layers)
        ]

    def forward(self, X: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        inputs = list(ops.split(X, 0))
        starts = list(ops.split(h0, 0)) if h0 is not None else [None] * self.num_layers
        finals = []
        for cell, h in zip(self.rnn_cells, starts):
            outputs = []
            for x in inputs:
                h = cell(x, h)
                outputs.append(h)
            finals.append(h)
            inputs = outputs
        return ops.stack(inputs, 0), ops.stack(finals, 0)


class LSTMCell(Module):
    """One LSTM step with gates in the order i, f, g, o.

    ``gates = x @ W_ih + bias_ih + h @ W_hh + bias_hh`` split into four blocks of
    ``hidden_size``: ``i, f, o = sigmoid(...)``, ``g = tanh(...)``;
    ``c' = f * c + i * g``, ``h' = o * tanh(c')``. Parameters are drawn uniform in
    ``+-1/sqrt(hidden_size)``: ``W_ih (input, 4h)``, ``W_hh (h, 4h)``, ``bias_ih``,
    ``bias_hh``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        k = 1.0 / math.sqrt(hidden_size)
        kw = {"bound": k, "device": device, "dtype": dtype}
        self.W_ih = _uniform(input_size, 4 * hidden_size, **kw)
        self.W_hh = _uniform(hidden_size, 4 * hidden_size, **kw)
        self.bias_ih = _uniform(4 * hidden_size, **kw) if bias else None
        self.bias_hh = _uniform(4 * hidden_size, **kw) if bias else None

    def forward(self, X: Tensor, h: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``X`` ``(batch, input_size)``; ``h = (h0, c0)``, each ``(batch, hidden)``, or None."""
        return self._advance(self._input_gates(X), h)

    def _input_gates(self, X: Tensor) -> Tensor:
        """``X @ W_ih + bias_ih + bias_hh`` for ``X`` ``(rows, input_size)``: the part of the
        gates that does not depend on the state, so a sequence can compute it in one product."""
        gates = X @ self.W_ih
        if self.bias_ih is not None:
            gates = gates + _bias_row(self.bias_ih + self.bias_hh, X.shape[0])
        return gates

    def _advance(self, x_gates: Tensor, h: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """One step from the input's gates ``(batch, 4 * hidden)`` and the state ``h``."""
        batch, hidden = x_gates.shape[0], self.hidden_size
        if h is None:  # zeros, used as the course does: W_hh and f get (zero) gradients
            zeros = init.zeros(batch, hidden, device=x_gates.device, dtype=x_gates.dtype)
            h = (zeros, zeros)
        state = ops.lstm_step(x_gates + h[0] @ self.W_hh, h[1])  # the gates' part: one node
        return state[0], state[1]


class LSTM(Module):
    """A stack of ``num_layers`` :class:`LSTMCell` run over a sequence.

    ``forward(X, h)``: ``X`` ``(seq_len, batch, input_size)``; ``h = (h0, c0)``,
    each ``(num_layers, batch, hidden_size)``, or None for zeros. Returns the
    last layer's outputs ``(seq_len, batch, hidden_size)`` and ``(h_n, c_n)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm_cells = [
            LSTMCell(
                input_size if layer == 0 else hidden_size,
                hidden_size,
                bias=bias,
                device=device,
                dtype=dtype,
            )
            for layer in range(num_layers)
        ]

    def forward(
        self, X: Tensor, h: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if h is None:
            starts: list = [None] * self.num_layers
        else:
            starts = list(zip(ops.split(h[0], 0), ops.split(h[1], 0)))
        finals_h, finals_c = [], []
        seq_len, batch = X.shape[0], X.shape[1]
        layer_input = X
        for cell, state in zip(self.lstm_cells, starts):
            # The input's share of the gates for all steps at once: one (seq * batch) product.
            flat = layer_input.reshape((seq_len * batch, layer_input.shape[2]))
            x_gates = cell._input_gates(flat).reshape((seq_len, batch, 4 * self.hidden_size))
            outputs = []
            for x in ops.split(x_gates, 0):
                state = cell._advance(x, state)
                outputs.append(state[0])
            finals_h.append(state[0])
            finals_c.append(state[1])
            layer_input = ops.stack(outputs, 0)
        return layer_input, (ops.stack(finals_h, 0), ops.stack(finals_c, 0))


def _check_ids(ids: np.ndarray) -> None:
    if ids.size and not np.all(ids == np.round(ids)):
        raise ValueError(f"Embedding indices must be integers, got {ids.reshape(-1)[:5]}")


class Embedding(Module):
    """A lookup table: integer indices ``(seq_len, batch)`` to vectors
    ``(seq_len, batch, embedding_dim)``. The weight ``(num_embeddings, embedding_dim)``
    is drawn from N(0, 1)."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = Parameter(
            init.randn(num_embeddings, embedding_dim, device=device, dtype=dtype)
        )

    def forward(self, x: Tensor) -> Tensor:
        if _jit.is_tracing() or x.device.has("gather_rows"):
            # The ids stay on the device: a gather (a one-hot product without the capability).
            if not _jit.is_tracing() and x.dtype in ("float32", "float64"):
                _check_ids(x.numpy())
            return ops.gather(self.weight, x)
        ids = x.numpy().reshape(-1)
        _check_ids(ids)
        # A gather of rows (its gradient a scatter-add), not a one-hot matmul over the vocabulary.
        rows = ops.take(self.weight, ids.astype(np.int64).tolist())
        return rows.reshape((*x.shape, self.embedding_dim))
