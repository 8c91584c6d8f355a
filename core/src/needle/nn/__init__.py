"""Neural-network modules: the course's ``needle.nn``.

Built-in modules are imported here directly, and registered through the same
hook as a plugin's (:mod:`needle.nn._plugin`), so the plugin registry lists them
and a plugin that provides one of their names is reported when it registers.
Modules that plugins provide (hook ``needle_nn_modules``) appear as attributes too.
"""

from __future__ import annotations

from ..plugins.manager import extension_namespace
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


# Names beyond the built-ins come from plugins (the built-ins arrive through the same hook).
__getattr__, __dir__ = extension_namespace("needle.nn", "nn_modules")
