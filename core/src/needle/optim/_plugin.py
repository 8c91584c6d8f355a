"""Core's own optimizers, registered through the same hook as a third-party plugin's."""

from __future__ import annotations

from typing import Any

from ..plugins import hookimpl

__all__ = ["needle_optimizers"]


@hookimpl
def needle_optimizers() -> dict[str, Any]:
    """The built-in optimizer classes of :mod:`needle.optim`, by name."""
    from .optimizers import SGD, Adam, Optimizer

    return {"Optimizer": Optimizer, "SGD": SGD, "Adam": Adam}
