"""Attention and Transformer layers (the course's hw4-extra signatures)."""

from __future__ import annotations

import math

import numpy as np

from .. import init, ops
from ..autograd import Tensor
from ..devices import BackendDevice
from .modules_basic import (
    DeviceLike,
    Dropout,
    LayerNorm1d,
    Linear,
    Module,
    ReLU,
    Sequential,
)
from .modules_sequence import Embedding

__all__ = ["MultiHeadAttention", "AttentionLayer", "TransformerLayer", "Transformer"]


class MultiHeadAttention(Module):
    """Scaled dot-product attention over heads, with optional causal mask and dropout.

    ``forward(q, k, v)`` takes ``(batch, num_head, len, dim_head)`` tensors and
    returns ``(result, probs)``: ``result`` ``(batch, num_head, q_len, dim_head)``
    and the attention probabilities ``(batch, num_head, q_len, kv_len)`` after
    dropout.
    """

    def __init__(
        self,
        *,
        dropout: float = 0.0,
        causal: bool = False,
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.device = device
        self.dtype = dtype
        self.causal = causal
        self.dropout = Dropout(dropout)

    def create_causal_mask(self, i: int, j: int, device: BackendDevice) -> Tensor:
        """A ``(1, 1, i, j)`` additive mask: ``-max_float`` above the shifted diagonal."""
        upper = np.triu(np.ones((1, 1, i, j), dtype=np.float32), j - i + 1)
        return Tensor(-np.finfo(np.float32).max * upper, device=device, requires_grad=False)

    def matmul(self, a: Tensor, b_transpose: Tensor) -> Tensor:
        """``a @ b_transpose^T`` over the last two axes (batch axes broadcast)."""
        return a @ b_transpose.transpose()

    def softmax(self, logit: Tensor) -> Tensor:
        """Softmax over the last axis as the course computes it: ``exp(x - max) / sum``, the
        max a constant (exact at ties; the course's golden values depend on this form)."""
        axis = logit.ndim - 1
        top = logit.realize_cached_data().max(axis, keepdims=True).broadcast_to(logit.shape)
        probs = ops.exp(logit - Tensor.make_const(top))
        total = probs.sum((axis,)).reshape((*logit.shape[:-1], 1)).broadcast_to(logit.shape)
        return probs / total

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        batch, heads, q_len, q_dim = q.shape
        _, _, kv_len, k_dim = k.shape
        if not q_dim == k_dim == v.shape[-1]:
            raise ValueError(f"q, k, v head sizes differ: {q.shape}, {k.shape}, {v.shape}")
        scores = self.matmul(q, k) / math.sqrt(q_dim)
        if self.causal:
            mask = self.create_causal_mask(q_len, kv_len, q.device)
            scores = scores + mask.broadcast_to(scores.shape)
        probs = self.dropout(self.softmax(scores))
        return probs @ v, probs


class AttentionLayer(Module):
    """Pre-norm multi-head attention with q, k, v and output projections (no biases).

    ``forward(q, k=None, v=None)``: ``q`` ``(batch, q_len, q_features)``, ``k`` and
    ``v`` ``(batch, kv_len, k/v_features)`` (``q`` when None). Returns
    ``(batch, q_len, out_features)``.
    """

    def __init__(
        self,
        q_features: int,
        num_head: int,
        dim_head: int,
        *,
        k_features: int | None = None,
        v_features: int | None = None,
        out_features: int | None = None,
        dropout: float = 0.0,
        causal: bool = True,
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.device = device
        self.dtype = dtype
        k_features = q_features if k_features is None else k_features
        v_features = q_features if v_features is None else v_features
        out_features = q_features if out_features is None else out_features
        self.q_features = q_features
        self.k_features = k_features
        self.v_features = v_features
        self.out_features = out_features
        self.num_head = num_head
        self.dim_head = dim_head
        kw = {"device": device, "dtype": dtype}
        self.prenorm_q = LayerNorm1d(q_features, **kw)
        self.prenorm_k = LayerNorm1d(k_features, **kw)
        self.prenorm_v = LayerNorm1d(v_features, **kw)
        inner = num_head * dim_head
        self.q_projection = Linear(q_features, inner, bias=False, **kw)
        self.k_projection = Linear(k_features, inner, bias=False, **kw)
        self.v_projection = Linear(v_features, inner, bias=False, **kw)
        self.attn = MultiHeadAttention(dropout=dropout, causal=causal, **kw)
        self.out_projection = Linear(inner, out_features, bias=False, **kw)

    def _heads(self, x: Tensor, norm: LayerNorm1d, proj: Linear) -> Tensor:
        batch, length, features = x.shape
        flat = proj(norm(x.reshape((batch * length, features))))
        return flat.reshape((batch, length, self.num_head, self.dim_head)).transpose((1, 2))

    def forward(self, q: Tensor, k: Tensor | None = None, v: Tensor | None = None) -> Tensor:
        k = q if k is None else k
        v = q if v is None else v
        batch, q_len, _ = q.shape
        heads_q = self._heads(q, self.prenorm_q, self.q_projection)
        heads_k = self._heads(k, self.prenorm_k, self.k_projection)
        heads_v = self._heads(v, self.prenorm_v, self.v_projection)
        out, self.probs = self.attn(heads_q, heads_k, heads_v)
        flat = out.transpose((1, 2)).reshape((batch * q_len, self.num_head * self.dim_head))
        return self.out_projection(flat).reshape((batch, q_len, self.out_features))


class TransformerLayer(Module):
    """A pre-norm Transformer block.

    ``x = x + dropout(attention(x))``, then
    ``x = x + dropout(linear2(dropout(relu(linear1(layernorm(x))))))``. Input and
    output ``(batch, seq_len, q_features)``.
    """

    def __init__(
        self,
        q_features: int,
        num_head: int,
        dim_head: int,
        hidden_size: int,
        *,
        dropout: float = 0.0,
        causal: bool = True,
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.device = device
        self.dtype = dtype
        kw = {"device": device, "dtype": dtype}
        self.q_features = q_features
        self.attn = AttentionLayer(
            q_features, num_head, dim_head, dropout=dropout, causal=causal, **kw
        )
        self.dropout1 = Dropout(dropout)
        self.layernorm = LayerNorm1d(q_features, **kw)
        self.linear1 = Linear(q_features, hidden_size, **kw)
        self.relu = ReLU()
        self.dropout2 = Dropout(dropout)
        self.linear2 = Linear(hidden_size, q_features, **kw)
        self.dropout3 = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, features = x.shape
        x = x + self.dropout1(self.attn(x))
        flat = x.reshape((batch * length, features))
        hidden = self.dropout2(self.relu(self.linear1(self.layernorm(flat))))
        flat = flat + self.dropout3(self.linear2(hidden))
        return flat.reshape((batch, length, features))


class Transformer(Module):
    """A stack of :class:`TransformerLayer` with a learned positional embedding.

    ``forward(x, h=None)``: ``x`` ``(seq_len, batch, embedding_size)``
    (``(batch, seq_len, ...)`` when ``batch_first``). Returns ``(output, zeros)``:
    the output has ``x``'s shape; the second item stands in for a recurrent
    state, so a language model can swap an LSTM for a Transformer.
    """

    def __init__(
        self,
        embedding_size: int,
        hidden_size: int,
        num_layers: int,
        *,
        num_head: int = 8,
        dim_head: int = 32,
        dropout: float = 0.0,
        causal: bool = True,
        device: DeviceLike = None,
        dtype: str = "float32",
        batch_first: bool = False,
        sequence_len: int = 2048,
    ) -> None:
        super().__init__()
        self.device = device
        self.dtype = dtype
        self.batch_first = batch_first
        self.embedding_size = embedding_size
        self.sequence_len = sequence_len
        self.positional_embedding = Embedding(sequence_len, embedding_size, device, dtype)
        self.layers = Sequential(
            *[
                TransformerLayer(
                    embedding_size,
                    num_head,
                    dim_head,
                    hidden_size,
                    dropout=dropout,
                    causal=causal,
                    device=device,
                    dtype=dtype,
                )
                for _ in range(num_layers)
            ]
        )

    def forward(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not self.batch_first:
            x = x.transpose((0, 1))
        batch, length, _ = x.shape
        if length > self.sequence_len:
            raise ValueError(f"sequence length {length} exceeds sequence_len {self.sequence_len}")
        positions = np.broadcast_to(np.arange(length, dtype=np.float32)[:, None], (length, batch))
        pos = self.positional_embedding(Tensor(positions, device=x.device, requires_grad=False))
        x = self.layers(x + pos.transpose((0, 1)))
        if not self.batch_first:
            x = x.transpose((0, 1))
        return x, init.zeros_like(x)
