"""Neural-network modules: the course's ``needle.nn``.

Built-in modules import directly from here. Modules that plugins provide
(hook ``needle_nn_modules``) appear as attributes too, looked up on first
access; built-ins arrive through the same hook (:mod:`needle.nn._plugin`).
"""

from __future__ import annotations

from typing import Any

from .modules_basic import (
    BatchNorm1d,
    BatchNorm2d,
    Dropout,
    Flatten,
    Identity,
    LayerNorm1d,
    Linear,
    Module,
    Parameter,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    SoftmaxLoss,
    Tanh,
)
from .modules_conv import Conv
from .modules_sequence import LSTM, RNN, Embedding, LSTMCell, RNNCell
from .modules_transformer import (
    AttentionLayer,
    MultiHeadAttention,
    Transformer,
    TransformerLayer,
)

__all__ = [
    "Module",
    "Parameter",
    "Identity",
    "Linear",
    "Flatten",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "Sequential",
    "SoftmaxLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm1d",
    "Dropout",
    "Residual",
    "Conv",
    "RNNCell",
    "RNN",
    "LSTMCell",
    "LSTM",
    "Embedding",
    "MultiHeadAttention",
    "AttentionLayer",
    "TransformerLayer",
    "Transformer",
]


def __getattr__(name: str) -> Any:
    """A module provided by a plugin (hook ``needle_nn_modules``)."""
    if name.startswith("__"):
        raise AttributeError(f"module 'needle.nn' has no attribute {name!r}")
    from ..plugins.manager import extensions

    found = extensions("nn_modules")
    if name in found:
        return found[name]
    raise AttributeError(
        f"module 'needle.nn' has no attribute {name!r} (not built in, and no installed plugin "
        f"provides an nn module of that name; `needle info` lists plugins)"
    )


def __dir__() -> list[str]:
    from ..plugins.manager import PluginError, extensions

    try:
        extra = set(extensions("nn_modules"))
    except PluginError:  # dir() must work even when two plugins clash
        extra = set()
    return sorted(set(globals()) | extra)
