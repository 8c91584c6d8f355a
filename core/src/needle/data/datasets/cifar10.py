"""CIFAR-10 from the "python version" batches (``data_batch_1..5``, ``test_batch``).

The batches are pickles. They are read with :class:`SafeUnpickler`, which builds only plain
containers and numeric numpy arrays: a pickle naming any other callable is refused, so a
hostile file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data_basic import Dataset, DatasetFormatError
from ._files import read_bytes

__all__ = ["CIFAR10Dataset", "SafeUnpickler", "UnsafePickleError", "load_cifar_batch", "safe_loads"]

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
_IMAGE_SIZE = 3 * 32 * 32


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something :class:`SafeUnpickler` does not build."""


def _checked_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError(f"refusing numpy dtype {dtype} (holds Python objects)")
    return dtype


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 pickles ``bytes`` at protocol <= 2 as _codecs.encode(str, "latin1").
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    # numpy's reduction of an array at pickle protocol 5.
    dtype = _checked_dtype(dtype)
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
}


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing to rebuild array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, _checked_dtype(dtype))


for _module in _NUMPY_MODULES:
    _ALLOWED[(_module, "_reconstruct")] = _reconstruct


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for data only: dicts, lists, tuples, str, bytes, numbers and numpy arrays.

    Of all globals a pickle may name it admits only numpy's array-rebuilding functions
    (``_reconstruct``, ``ndarray``, ``dtype``, ``_frombuffer``; never object dtypes) and
    ``_codecs.encode`` with the latin-1 codec (how Python 3 writes bytes at protocol 2).
    Anything else raises :class:`UnsafePickleError` (a :class:`pickle.UnpicklingError`).
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only plain data and numpy arrays "
                "are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing persistent ids")


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (Python 2 strings read as bytes)."""
    return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


def _field(batch: dict, name: str) -> Any:
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise KeyError(name)


def load_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file as ``(X uint8 (N, 3072), y int64 (N,))``.

    Raises:
        FileNotFoundError: the file is missing.
        DatasetFormatError: it is not a safe pickle of a dict with ``data`` (N x 3072
            bytes) and ``labels`` (N digits 0-9).
    """
    raw = read_bytes(path, "CIFAR-10 batch")
    try:
        batch = safe_loads(raw)
    except UnsafePickleError as exc:
        raise DatasetFormatError(f"{path}: not a safe CIFAR-10 pickle: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle can fail in many ways
        raise DatasetFormatError(
            f"{path}: truncated or corrupt pickle: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    try:
        data, labels = _field(batch, "data"), _field(batch, "labels")
    except KeyError as exc:
        raise DatasetFormatError(f"{path}: the batch dict has no {exc.args[0]!r} entry") from None
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGE_SIZE:
        raise DatasetFormatError(
            f"{path}: 'data' should be uint8 of shape (N, {_IMAGE_SIZE}), "
            f"got {data.dtype} {data.shape}"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(f"{path}: 'labels' are not integers: {exc}") from None
    if labels.shape != (len(data),):
        raise DatasetFormatError(
            f"{path}: {len(data)} images but 'labels' has shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetFormatError(
            f"{path}: labels must lie in 0-9, found {labels.min()}..{labels.max()}"
        )
    return data, labels


class CIFAR10Dataset(Dataset):
    """CIFAR-10; sample ``i`` is ``(image (3, 32, 32) float32 in [0, 1], label)``.

    Transforms see each image as ``32 x 32 x 3`` (H x W x C).

    Args:
        base_folder: the folder holding ``data_batch_1..5`` and ``test_batch``.
        train: load the five training batches (else the test batch).
        p: kept for the course's signature (the probability transforms may use).
        transforms: transforms applied to each image.
    """

    def __init__(
        self,
        base_folder: str | os.PathLike,
        train: bool,
        p: float = 0.5,
        transforms: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(transforms)
        self.p = p
        names = TRAIN_FILES if train else TEST_FILES
        parts = [load_cifar_batch(Path(base_folder) / name) for name in names]
        data = np.concatenate([x for x, _ in parts])
        self.X = (data.astype(np.float32) / np.float32(255.0)).reshape(-1, 3, 32, 32)
        self.y = np.concatenate([y for _, y in parts])

    def __getitem__(self, index: Any) -> tuple[np.ndarray, Any]:
        x, y = self.X[index], self.y[index]
        if self.transforms:
            if x.ndim == 3:
                x = self._transform(x)
            else:
                x = np.stack([self._transform(xi) for xi in x])
        return x, y

    def _transform(self, chw: np.ndarray) -> np.ndarray:
        hwc = self.apply_transforms(chw.transpose(1, 2, 0))
        return np.ascontiguousarray(hwc.transpose(2, 0, 1))

    def __len__(self) -> int:
        return len(self.y)
