"""The built-in datasets: MNIST, CIFAR-10 and the Penn Treebank."""

from __future__ import annotations

from .cifar10 import CIFAR10Dataset, SafeUnpickler, load_cifar_batch, safe_loads
from .mnist import MNISTDataset, parse_mnist, read_idx
from .ptb import Corpus, Dictionary, batchify, get_batch

__all__ = [
    "MNISTDataset",
    "parse_mnist",
    "read_idx",
    "CIFAR10Dataset",
    "SafeUnpickler",
    "load_cifar_batch",
    "safe_loads",
    "Corpus",
    "Dictionary",
    "batchify",
    "get_batch",
]
