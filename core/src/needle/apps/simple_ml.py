"""The course's ``apps/simple_ml.py``: hw1's MNIST helpers and hw4's training loops."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import init, ops
from ..autograd import Tensor
from ..data.datasets.mnist import parse_mnist as _parse_mnist
from ..models.training import (
    epoch_general_cifar10,
    epoch_general_ptb,
    evaluate_cifar10,
    evaluate_ptb,
    train_cifar10,
    train_ptb,
)

__all__ = [
    "parse_mnist",
    "softmax_loss",
    "nn_epoch",
    "loss_err",
    "epoch_general_cifar10",
    "train_cifar10",
    "evaluate_cifar10",
    "epoch_general_ptb",
    "train_ptb",
    "evaluate_ptb",
]


def parse_mnist(image_filename: str, label_filename: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images and labels (idx files, gzipped or not).

    Returns:
        ``(X, y)``: ``X`` float32 ``(N, 784)`` scaled to [0, 1], ``y`` uint8 ``(N,)``.
    """
    return _parse_mnist(image_filename, label_filename)


def softmax_loss(Z: Tensor, y_one_hot: Tensor) -> Tensor:
    """The mean softmax cross-entropy of logits ``Z`` ``(N, k)`` against one-hot labels."""
    n = Z.shape[0]
    return (ops.logsumexp(Z, (1,)).sum() - (y_one_hot * Z).sum()) / n


def nn_epoch(
    X: np.ndarray, y: np.ndarray, W1: Tensor, W2: Tensor, lr: float = 0.1, batch: int = 100
) -> tuple[Tensor, Tensor]:
    """One epoch of minibatch SGD, in order, for ``relu(X @ W1) @ W2`` with softmax loss.

    Returns:
        The updated ``(W1, W2)`` (new Tensors).
    """
    k = W2.shape[1]
    for start in range(0, X.shape[0], batch):
        x = Tensor(X[start : start + batch], requires_grad=False)
        labels = y[start : start + batch]
        one_hot = init.one_hot(k, labels, dtype=W2.dtype)
        loss = softmax_loss(ops.relu(x @ W1) @ W2, one_hot)
        loss.backward(create_graph=False)
        W1 = Tensor(W1.numpy() - lr * W1.grad.numpy())
        W2 = Tensor(W2.numpy() - lr * W2.grad.numpy())
    return W1, W2


def loss_err(h: Tensor, y: Any) -> tuple[np.ndarray, float]:
    """``(mean softmax loss, error rate)`` of logits ``h`` against integer labels ``y``."""
    labels = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    one_hot = init.one_hot(h.shape[1], labels, device=h.device, dtype=h.dtype)
    return softmax_loss(h, one_hot).numpy(), float(np.mean(h.numpy().argmax(axis=1) != labels))
