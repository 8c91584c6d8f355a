"""Core's built-in datasets and transforms, registered through the same hooks as plugins'."""

from __future__ import annotations

from typing import Any

from ..plugins import hookimpl
from . import datasets, transforms
from .data_basic import NDArrayDataset

__all__ = ["needle_datasets", "needle_transforms"]


@hookimpl
def needle_datasets() -> dict[str, Any]:
    """The built-in Dataset classes."""
    return {
        "NDArrayDataset": NDArrayDataset,
        "MNISTDataset": datasets.MNISTDataset,
        "CIFAR10Dataset": datasets.CIFAR10Dataset,
    }


@hookimpl
def needle_transforms() -> dict[str, Any]:
    """The built-in Transform classes."""
    return {
        "RandomFlipHorizontal": transforms.RandomFlipHorizontal,
        "RandomCrop": transforms.RandomCrop,
    }
