"""The course's hw2 ``apps/mlp_resnet.py``: the MLP ResNet and its MNIST training loops."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from .. import data, optim
from ..autograd import Tensor
from ..models import MLPResNet, ResidualBlock
from ..models import training as _training
from ..nn import Module

__all__ = ["ResidualBlock", "MLPResNet", "epoch", "train_mnist"]


def epoch(
    dataloader: Iterable[tuple[Tensor, Tensor]], model: Module, opt: optim.Optimizer | None = None
) -> tuple[float, float]:
    """One pass over ``dataloader``: trains ``model`` with ``opt`` (train mode), or evaluates
    it when ``opt`` is None (eval mode). Seeds numpy's RNG with 4 first, as the course does.

    Returns:
        ``(error rate, mean softmax loss)`` over the samples.
    """
    np.random.seed(4)
    accuracy, loss = _training.epoch(dataloader, model, None, opt, progress=False)
    return 1.0 - accuracy, loss


def train_mnist(
    batch_size: int = 100,
    epochs: int = 10,
    optimizer: type = optim.Adam,
    lr: float = 0.001,
    weight_decay: float = 0.001,
    hidden_dim: int = 100,
    data_dir: str = "data",
) -> tuple[float, float, float, float]:
    """Train ``MLPResNet(784, hidden_dim)`` on MNIST's training files in ``data_dir`` for
    ``epochs`` epochs (shuffled batches), then evaluate it on the test files.

    Returns:
        ``(train error, train loss, test error, test loss)`` of the last epoch.
    """
    np.random.seed(4)

    def load(stem: str) -> Any:
        return data.MNISTDataset(
            os.path.join(data_dir, f"{stem}-images-idx3-ubyte.gz"),
            os.path.join(data_dir, f"{stem}-labels-idx1-ubyte.gz"),
        )

    train_loader = data.DataLoader(load("train"), batch_size=batch_size, shuffle=True)
    test_loader = data.DataLoader(load("t10k"), batch_size=batch_size)
    model = MLPResNet(784, hidden_dim)
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    train_err = train_loss = 0.0
    for _ in range(epochs):
        train_err, train_loss = epoch(train_loader, model, opt)
    test_err, test_loss = epoch(test_loader, model)
    return train_err, train_loss, test_err, test_loss
