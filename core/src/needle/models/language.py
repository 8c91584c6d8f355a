"""The word-level language model of the course's hw4."""

from __future__ import annotations

from typing import Any

from .. import nn
from ..autograd import Tensor

__all__ = ["LanguageModel"]


class LanguageModel(nn.Module):
    """Embedding, a sequence model (RNN, LSTM or Transformer), and a linear read-out.

    ``forward(x, h)`` takes word ids ``x`` of shape ``(seq_len, batch)`` and returns logits
    ``(seq_len * batch, output_size)`` and the sequence model's final hidden state.

    Args:
        embedding_size: width of the word embeddings.
        output_size: vocabulary size.
        hidden_size: width of the recurrent state (ignored by the Transformer, whose
            output width is ``embedding_size``).
        num_layers: stacked layers of the sequence model.
        seq_model: ``"rnn"``, ``"lstm"`` or ``"transformer"``.
        seq_len: the longest sequence the Transformer's positional embedding covers.
        device: where the parameters live (the default device when None).
        dtype: parameter dtype.
    """

    def __init__(
        self,
        embedding_size: int,
        output_size: int,
        hidden_size: int,
        num_layers: int = 1,
        seq_model: str = "rnn",
        seq_len: int = 40,
        device: Any = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.embedding = nn.Embedding(output_size, embedding_size, **kw)
        if seq_model == "rnn":
            self.seq_model = nn.RNN(embedding_size, hidden_size, num_layers, **kw)
        elif seq_model == "lstm":
            self.seq_model = nn.LSTM(embedding_size, hidden_size, num_layers, **kw)
        elif seq_model == "transformer":
            self.seq_model = nn.Transformer(
                embedding_size, hidden_size, num_layers, sequence_len=seq_len, **kw
            )
            hidden_size = embedding_size
        else:
            raise ValueError(f"seq_model must be 'rnn', 'lstm' or 'transformer', got {seq_model!r}")
        self.hidden_size = hidden_size
        self.linear = nn.Linear(hidden_size, output_size, **kw)

    def forward(self, x: Tensor, h: Any = None) -> tuple[Tensor, Any]:
        seq_len, batch = x.shape
        out, h = self.seq_model(self.embedding(x), h)
        return self.linear(out.reshape((seq_len * batch, self.hidden_size))), h
