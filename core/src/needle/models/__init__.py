"""Reference models of the course and the loops that train them.

``MLPResNet`` / ``ResidualBlock`` (hw2), ``ResNet9`` and ``LanguageModel`` (hw4);
``epoch`` / ``train`` / ``evaluate`` for classifiers and ``epoch_general_ptb`` /
``train_ptb`` / ``evaluate_ptb`` for language models.
"""

from __future__ import annotations

from .language import LanguageModel
from .mlp_resnet import MLPResNet, ResidualBlock
from .resnet9 import ConvBN, ResNet9
from .training import (
    epoch,
    epoch_general_ptb,
    evaluate,
    evaluate_ptb,
    progress_bar,
    train,
    train_ptb,
)

__all__ = [
    "MLPResNet",
    "ResidualBlock",
    "ResNet9",
    "ConvBN",
    "LanguageModel",
    "epoch",
    "train",
    "evaluate",
    "epoch_general_ptb",
    "train_ptb",
    "evaluate_ptb",
    "progress_bar",
]
