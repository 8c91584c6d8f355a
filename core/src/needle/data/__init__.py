"""Datasets, transforms and the DataLoader (the course's ``needle.data``).

Built-ins are imported here directly, and their datasets and transforms are
registered through the same hooks as a plugin's (:mod:`needle.data._plugin`);
datasets and transforms registered by plugins (``needle_datasets`` /
``needle_transforms`` hooks) appear as attributes of this module too. A plugin
name that this module already has is reported when the plugin registers.
"""

from __future__ import annotations

from ..plugins.manager import extension_namespace
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
from .samplers import DistributedSampler
from .transforms import RandomCrop, RandomFlipHorizontal, Transform

__all__ = [
    "Dataset",
    "DataLoader",
    "NDArrayDataset",
    "DatasetFormatError",
    "DistributedSampler",
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


# Names beyond the built-ins come from plugins (the built-ins arrive through the same hook).
__getattr__, __dir__ = extension_namespace("needle.data", "datasets", "transforms")
