"""Reference models of the course and the loops that train them.

``MLPResNet`` / ``ResidualBlock`` (hw2), ``ResNet9`` and ``LanguageModel`` (hw4);
``epoch`` / ``train`` / ``evaluate`` for classifiers and ``epoch_general_ptb`` /
``train_ptb`` / ``evaluate_ptb`` for language models (the course's hw4 names
``epoch_general_cifar10`` / ``train_cifar10`` / ``evaluate_cifar10`` are aliases).
"""

from __future__ import annotations

from .language import LanguageModel
from .mlp_resnet import MLPResNet, ResidualBlock
from .resnet9 import ConvBN, ResNet9
from .training import (
    epoch,
    epoch_general_cifar10,
    epoch_general_ptb,
    evaluate,
    evaluate_cifar10,
    evaluate_ptb,
    progress_bar,
    train,
    train_cifar10,
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
    "epoch_general_cifar10",
    "train_cifar10",
    "evaluate_cifar10",
]
