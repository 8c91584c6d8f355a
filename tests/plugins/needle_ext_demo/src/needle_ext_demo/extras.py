"""The demo extensions themselves, written against needle's public API only."""

from __future__ import annotations

from typing import Any

import numpy as np
from needle import nn, no_grad, ops, optim
from needle.data import Dataset, Transform

__all__ = ["Swish", "SignSGD", "CountingDataset", "AddOne"]


class Swish(nn.Module):
    """``x * sigmoid(beta * x)``."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: Any) -> Any:
        return x * ops.sigmoid(x * self.beta)


class SignSGD(optim.Optimizer):
    """``w = w - lr * sign(grad)``."""

    hyperparameters = ("lr",)

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params)
        self.lr = lr

    def step(self) -> None:
        from needle import Tensor

        with no_grad():
            for p in self.params:
                if p.grad is not None:
                    sign = np.sign(p.grad.numpy())
                    p.data = p.detach() - Tensor(sign, device=p.device) * self.lr


class CountingDataset(Dataset):
    """Items ``(i, i * i)`` for ``i`` in ``range(n)``."""

    def __init__(self, n: int = 4, transforms: Any = None) -> None:
        super().__init__(transforms)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        x = self.apply_transforms(np.array([float(index)], dtype=np.float32))
        return x, np.float32(index * index)


class AddOne(Transform):
    """Adds one to an array."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x + 1
