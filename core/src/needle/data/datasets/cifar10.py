"""CIFAR-10 from the "python version" batches (``data_batch_1..5``, ``test_batch``).

The batches are pickles. They are read with :class:`SafeUnpickler`, which builds only plain
containers and numeric numpy arrays: a pickle naming any other callable is refused, so a
hostile file cannot run code, and arrays are made from the file's bytes with a dtype made
here (never one the pickle built), so it cannot reach memory outside them either.
"""

from __future__ import annotations

import io
import math
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


# Array items are plain numbers: bool, signed and unsigned integers, floats, complex numbers.
_ARRAY_KINDS = "biufc"
_MAX_NDIM = 32
_MAX_DEPTH = 64


def _plain_dtype(spec: Any, byteorder: str = "=") -> np.dtype:
    """A fresh numeric dtype from a type code such as ``"u1"`` or ``"<f4"``.

    Only the code travels from the file: the dtype is made here, so a pickle cannot
    give it fields, a subarray, objects or offsets.
    """
    if isinstance(spec, bytes):  # Python 2 pickles (the real CIFAR-10 files) hold byte strings
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or len(spec) > 8:
        raise UnsafePickleError(f"refusing numpy dtype {spec!r}: expected a short type code")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError) as exc:
        raise UnsafePickleError(f"refusing numpy dtype {spec!r}: {exc}") from None
    if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafePickleError(
            f"refusing numpy dtype {spec!r} ({dtype}): only bool, integer, float and complex "
            "items are allowed"
        )
    return dtype.newbyteorder(byteorder) if byteorder in "<>" else dtype


class _PickledDtype:
    """What a pickle's ``numpy.dtype(code, align, copy)`` and its BUILD state describe.

    It records the type code and the byte order and nothing else; :meth:`resolve` makes
    a fresh dtype from them. A state that gives the dtype fields or a subarray is
    refused: applying such a state to a real dtype is how a pickle can place fields
    outside the item and read or write the heap.
    """

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        self.spec = _plain_dtype(spec).str
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 5:
            raise UnsafePickleError(f"refusing numpy dtype state {state!r}")
        _version, byteorder, subarray, names, fields = state[:5]
        if isinstance(byteorder, bytes):
            byteorder = byteorder.decode("latin1")
        if subarray is not None:
            raise UnsafePickleError(f"refusing numpy dtype {self.spec!r} with a subarray")
        if names is not None or fields is not None:
            raise UnsafePickleError(f"refusing numpy dtype {self.spec!r} with fields")
        if byteorder not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"refusing numpy byte order {byteorder!r}")
        self.byteorder = byteorder

    def resolve(self) -> np.dtype:
        return _plain_dtype(self.spec, self.byteorder)


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """A new array holding ``raw``, checked against the shape and item size it claims."""
    if isinstance(dtype, str):
        dtype = _PickledDtype(dtype)
    if not isinstance(dtype, _PickledDtype):
        raise UnsafePickleError(f"refusing an array of dtype {dtype!r}")
    item = dtype.resolve()
    if not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickleError(
            f"refusing array data of type {type(raw).__name__} (object arrays are not data)"
        )
    if (
        not isinstance(shape, tuple)
        or len(shape) > _MAX_NDIM
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise UnsafePickleError(f"refusing array shape {shape!r}")
    if order not in ("C", "F"):
        raise UnsafePickleError(f"refusing array order {order!r}")
    needed = math.prod(shape) * item.itemsize
    if len(raw) != needed:
        raise DatasetFormatError(
            f"array data is {len(raw)} bytes, but shape {shape} of {item} needs {needed}"
        )
    flat = np.frombuffer(raw, dtype=item) if needed else np.zeros(0, dtype=item)
    return flat.reshape(shape, order=order).copy(order="K")


class _PickledArray:
    """An array a pickle is rebuilding (numpy's ``_reconstruct`` then BUILD).

    ``_reconstruct`` would hand out uninitialized memory of a shape the file chooses;
    this placeholder holds nothing until the BUILD state brings the bytes, and
    :func:`_materialize` swaps it for the real array once the whole pickle is read.
    """

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise UnsafePickleError("refusing to fill one array twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError(f"refusing array state of type {type(state).__name__}")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _PickledArray:
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"refusing to rebuild array subtype {subtype!r}")
    return _PickledArray()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    # numpy's reduction of an array at pickle protocol 5.
    return _array_from_bytes(buf, dtype, shape, order)


class _ArrayType:
    """Stands for ``numpy.ndarray`` in a pickle: named as ``_reconstruct``'s subtype only.

    The real class would let a pickle call ``ndarray(shape, dtype)``, which returns
    uninitialized memory.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("refusing to call numpy.ndarray directly")


_NDARRAY = _ArrayType()


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 pickles ``bytes`` at protocol <= 2 as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise UnsafePickleError("refusing _codecs.encode of anything but text")
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _PickledDtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("_codecs", "encode"): _latin1_encode,
}


def _materialize(obj: Any, memo: dict[int, Any], depth: int = 0) -> Any:
    """``obj`` with every array placeholder replaced by its array (containers in place)."""
    if isinstance(obj, _PickledArray):
        if obj.array is None:
            raise UnsafePickleError("refusing an array whose data was never filled in")
        return obj.array
    if isinstance(obj, _PickledDtype):
        return obj.resolve()
    if not isinstance(obj, (dict, list, tuple, set, frozenset)):
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]
    if depth > _MAX_DEPTH:
        raise UnsafePickleError(f"refusing containers nested deeper than {_MAX_DEPTH}")
    memo[key] = obj
    if isinstance(obj, dict):
        for k in list(obj):
            if isinstance(k, (_PickledArray, _PickledDtype)):
                raise UnsafePickleError("refusing an array or dtype as a dict key")
            obj[k] = _materialize(obj[k], memo, depth + 1)
        return obj
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            obj[i] = _materialize(item, memo, depth + 1)
        return obj
    items = [_materialize(item, memo, depth + 1) for item in obj]
    if all(a is b for a, b in zip(items, obj)):
        return obj
    if not isinstance(obj, tuple):
        raise UnsafePickleError("refusing arrays inside a set")
    memo[key] = rebuilt = tuple(items)
    return rebuilt


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for data only: dicts, lists, tuples, str, bytes, numbers and numpy arrays.

    Of all globals a pickle may name it admits only numpy's array-rebuilding functions
    (``_reconstruct``, ``_frombuffer``, and ``ndarray`` and ``dtype`` as their arguments)
    and ``_codecs.encode`` with the latin-1 codec (how Python 3 writes bytes at protocol 2).
    Arrays are made here from the bytes in the file and a fresh dtype of a plain numeric
    type code (bool, integer, float, complex), checked against the shape; a pickled dtype
    is never used as it is, so a file cannot give one fields or a subarray. Anything else
    raises :class:`UnsafePickleError` (a :class:`pickle.UnpicklingError`).
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

    def load(self) -> Any:
        """The unpickled object, its arrays built and checked."""
        return _materialize(super().load(), {})


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
