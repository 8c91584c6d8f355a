"""Datasets, transforms and the DataLoader (the course's ``needle.data``).

Built-ins are imported here; datasets and transforms registered by plugins
(``needle_datasets`` / ``needle_transforms`` hooks) appear as attributes of this
module on first access.
"""

from __future__ import annotations

from typing import Any

from .data_basic import DataLoader, Dataset, DatasetFormatError, NDArrayDataset
from .datasets import (
    CIFAR10Dataset,
    Corpus,
    Dictionary,
    MNISTDataset,
    SafeUnpickler,
    batchify,
    get_batch,
    parse_mnist,
)
from .transforms import RandomCrop, RandomFlipHorizontal, Transform

__all__ = [
    "Dataset",
    "DataLoader",
    "NDArrayDataset",
    "DatasetFormatError",
    "Transform",
    "RandomFlipHorizontal",
    "RandomCrop",
    "MNISTDataset",
    "parse_mnist",
    "CIFAR10Dataset",
    "SafeUnpickler",
    "Corpus",
    "Dictionary",
    "batchify",
    "get_batch",
]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    from ..plugins import manager

    for kind in ("datasets", "transforms"):
        found = manager.extensions(kind).get(name)
        if found is not None:
            return found
    raise AttributeError(f"module 'needle.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
