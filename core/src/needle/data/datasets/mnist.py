"""MNIST in the idx format (``*-idx3-ubyte[.gz]`` images, ``*-idx1-ubyte[.gz]`` labels)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data_basic import Dataset, DatasetFormatError
from ._files import read_bytes

__all__ = ["MNISTDataset", "parse_mnist", "read_idx"]

_IDX_UBYTE = 0x08


def read_idx(path: str | os.PathLike, ndim: int, what: str) -> np.ndarray:
    """An unsigned-byte idx file (gzipped or not) as a uint8 array of ``ndim`` dimensions.

    Raises:
        FileNotFoundError: the file is missing.
        DatasetFormatError: bad magic number, wrong number of dimensions, or a data size
            that does not match the header (truncated or padded file).
    """
    data = read_bytes(path, what)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(
            f"{path}: {len(data)} bytes, shorter than the {header}-byte idx header ({what})"
        )
    magic = int.from_bytes(data[:4], "big")
    expected = (_IDX_UBYTE << 8) | ndim
    if magic != expected:
        raise DatasetFormatError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected:08x} "
            f"(unsigned-byte idx with {ndim} dimension{'s' if ndim > 1 else ''}; {what})"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(shape)  # Python ints: np.prod wraps at 2**64 (2**31 * 2**31 * 4 gives 0)
    if len(data) - header != size:
        raise DatasetFormatError(
            f"{path}: header says shape {shape} ({size} bytes of data) but the file holds "
            f"{len(data) - header} bytes after the header ({what}; truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def parse_mnist(
    image_filename: str | os.PathLike, label_filename: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST idx files (course hw0 layout).

    Returns:
        ``(X, y)``: ``X`` float32 of shape ``(N, rows * cols)`` scaled to [0, 1],
        ``y`` uint8 of shape ``(N,)``.

    Raises:
        FileNotFoundError: a file is missing.
        DatasetFormatError: a file is corrupt, or the two files disagree on ``N``.
    """
    images = read_idx(image_filename, 3, "MNIST images")
    labels = read_idx(label_filename, 1, "MNIST labels")
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"{image_filename} holds {len(images)} images but {label_filename} holds "
            f"{len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise DatasetFormatError(f"{label_filename}: label {int(labels.max())} is not a digit 0-9")
    X = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return X, labels.copy()


class MNISTDataset(Dataset):
    """MNIST digits from idx files; sample ``i`` is ``(image (784,), label)``.

    Images are float32 in [0, 1]. Transforms see each image as ``28 x 28 x 1``.

    Args:
        image_filename: the ``*-images-idx3-ubyte[.gz]`` file.
        label_filename: the ``*-labels-idx1-ubyte[.gz]`` file.
        transforms: transforms applied to each image.
    """

    def __init__(
        self,
        image_filename: str | os.PathLike,
        label_filename: str | os.PathLike,
        transforms: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(transforms)
        self.images, self.labels = parse_mnist(image_filename, label_filename)
        self._rows = int(round(np.sqrt(self.images.shape[1])))

    def __getitem__(self, index: Any) -> tuple[np.ndarray, Any]:
        x, y = self.images[index], self.labels[index]
        if self.transforms:
            side = self._rows
            if np.ndim(x) == 1:
                x = self.apply_transforms(x.reshape(side, side, 1)).reshape(side * side)
            else:
                x = np.stack(
                    [self.apply_transforms(xi.reshape(side, side, 1)).reshape(-1) for xi in x]
                )
        return x, y

    def __len__(self) -> int:
        return len(self.labels)
