"""The MLP ResNet of the course's hw2."""

from __future__ import annotations

from typing import Any

from .. import nn

__all__ = ["ResidualBlock", "MLPResNet"]


def ResidualBlock(  # noqa: N802 - course name; it builds a Module
    dim: int,
    hidden_dim: int,
    norm: Any = nn.BatchNorm1d,
    drop_prob: float = 0.1,
    *,
    device: Any = None,
    dtype: str = "float32",
) -> nn.Module:
    """``ReLU(x + norm(Linear(Dropout(ReLU(norm(Linear(x)))))))``.

    Args:
        dim: input and output width.
        hidden_dim: width of the inner layer.
        norm: the normalization layer class, called as ``norm(width, device=..., dtype=...)``.
        drop_prob: dropout probability after the inner ReLU.
        device: where the parameters live (the default device when None).
        dtype: parameter dtype.
    """
    kw = {"device": device, "dtype": dtype}
    return nn.Sequential(
        nn.Residual(
            nn.Sequential(
                nn.Linear(dim, hidden_dim, **kw),
                norm(hidden_dim, **kw),
                nn.ReLU(),
                nn.Dropout(drop_prob),
                nn.Linear(hidden_dim, dim, **kw),
                norm(dim, **kw),
            )
        ),
        nn.ReLU(),
    )


def MLPResNet(  # noqa: N802 - course name; it builds a Module
    dim: int,
    hidden_dim: int = 100,
    num_blocks: int = 3,
    num_classes: int = 10,
    norm: Any = nn.BatchNorm1d,
    drop_prob: float = 0.1,
    *,
    device: Any = None,
    dtype: str = "float32",
) -> nn.Module:
    """``Linear(dim, hidden) -> ReLU -> num_blocks x ResidualBlock(hidden, hidden // 2)
    -> Linear(hidden, num_classes)``.

    Parameters are drawn from numpy's global RNG in module order, as in the course.

    Args:
        dim: input features (784 for MNIST).
        hidden_dim: width of the residual stream.
        num_blocks: residual blocks.
        num_classes: output logits.
        norm: normalization layer class.
        drop_prob: dropout probability inside each block.
        device: where the parameters live (the default device when None).
        dtype: parameter dtype.
    """
    kw = {"device": device, "dtype": dtype}
    return nn.Sequential(
        nn.Linear(dim, hidden_dim, **kw),
        nn.ReLU(),
        *[
            ResidualBlock(hidden_dim, hidden_dim // 2, norm, drop_prob, **kw)
            for _ in range(num_blocks)
        ],
        nn.Linear(hidden_dim, num_classes, **kw),
    )
