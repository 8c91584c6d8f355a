"""dtypes: names, the conversion rule for numpy data, and type promotion (pure functions).

needle's dtypes are named by strings (``"float32"``, ``"float64"``, ``"int32"``,
``"int64"``, ``"bool"``), which compare equal to the numpy dtypes of the same name.

The rules, in one place:

* **numpy data keeps its dtype**; Python scalars, lists and tuples give the default
  float dtype (``float32``), as in the course; an explicit ``dtype=`` wins.
* **dtypes needle lacks** are stored in the smallest needle dtype that holds every value
  of theirs exactly, after converting the values as numpy converts them to that dtype:
  ``int8``, ``int16``, ``uint8``, ``uint16`` -> ``int32``; ``uint32`` -> ``int64``;
  ``uint64`` -> ``int64`` when every value fits (else ``OverflowError``); ``float16`` ->
  ``float32``. Complex, string, object and datetime data raise :class:`DTypeError`.
* **Promotion by category** (bool < integer < float), with Python and numpy scalars
  *weak*, as in PyTorch: two arrays give the wider dtype of the higher category
  (``int32 + float32 -> float32``, ``float32 + float64 -> float64``, ``int64 + int32 ->
  int64``); a scalar changes the dtype only when its category is higher than the
  array's (``float32 * 2.5 -> float32``, ``int32 * 2.5 -> float32``, ``bool + 1 -> int64``).
* Ops that need a float (log, exp, tanh, true division, mean) turn integer and bool
  inputs into the default float dtype; sums of integers and bools are ``int64``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = [
    "DTYPES",
    "FLOATS",
    "INTEGERS",
    "DEFAULT_FLOAT",
    "DEFAULT_INT",
    "PYTHON_FLOAT",
    "DTypeError",
    "canonical",
    "numpy_name",
    "storage_dtype",
    "data_dtype",
    "promote",
    "scalar_result",
    "is_float",
    "python_scalar",
    "float_of",
]

DTYPES = ("float32", "float64", "int32", "int64", "bool")
FLOATS = ("float32", "float64")
INTEGERS = ("int32", "int64")
DEFAULT_FLOAT = "float32"
DEFAULT_INT = "int64"
PYTHON_FLOAT = "float64"  # what Python numbers and lists become (the course's, numpy's float)

_CATEGORY = {"bool": 0, "int32": 1, "int64": 1, "float32": 2, "float64": 2}
_WIDTH = {"bool": 1, "int32": 4, "int64": 8, "float32": 4, "float64": 8}
# dtypes needle lacks -> where their values are stored (numpy converts them first).
_STORED_AS = {
    "int8": "int32",
    "int16": "int32",
    "uint8": "int32",
    "uint16": "int32",
    "uint32": "int64",
    "uint64": "int64",
    "float16": "float32",
}
_PROMOTED: dict[tuple[str, str], str] = {}


class DTypeError(TypeError):
    """A dtype needle (or a backend) cannot hold or compute with; the message names it."""


def numpy_name(dtype: Any) -> str:
    """numpy's name for ``dtype`` (needle's names are numpy's)."""
    if isinstance(dtype, str) and dtype in _CATEGORY:
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise DTypeError(f"{dtype!r} is not a dtype") from None


def canonical(dtype: Any) -> str:
    """The needle dtype named by ``dtype`` (a string, a numpy dtype or type, or a Python type
    as numpy reads it: ``float`` is float64, ``int`` int64).

    A dtype needle lacks maps by the storage rule (``uint8`` -> ``int32``); see the module.
    """
    if type(dtype) is str and dtype in _CATEGORY:
        return dtype
    return storage_dtype(numpy_name(dtype))


def storage_dtype(name: str) -> str:
    """Where values of numpy dtype ``name`` are stored (itself for needle's own dtypes)."""
    if name in _CATEGORY:
        return name
    if name in _STORED_AS:
        return _STORED_AS[name]
    raise DTypeError(
        f"needle holds {', '.join(DTYPES)} (and converts int8, int16, uint8, uint16, uint32, "
        f"uint64 and float16 to them); it cannot hold data of dtype {name}"
    )


def data_dtype(data: Any, inferred: np.dtype | None = None) -> str:
    """The dtype ``Tensor(data)`` takes with no ``dtype=``: numpy data keeps its own (by the
    storage rule); Python data is read as numpy reads it (``inferred``), with integers and
    floats as float64 and bools as bool."""
    if isinstance(data, (np.ndarray, np.generic)):
        return storage_dtype(data.dtype.name)
    kind = (np.asarray(data).dtype if inferred is None else inferred).kind
    if kind == "b":
        return "bool"
    if kind in "iuf":
        return PYTHON_FLOAT
    return storage_dtype((np.asarray(data).dtype if inferred is None else inferred).name)


def promote(a: str, b: str) -> str:
    """The dtype of a binary op between arrays of dtypes ``a`` and ``b``."""
    if a == b:
        return a
    key = (a, b)
    found = _PROMOTED.get(key)
    if found is None:
        ca, cb = _CATEGORY[a], _CATEGORY[b]
        if ca != cb:
            found = a if ca > cb else b
        else:
            found = a if _WIDTH[a] >= _WIDTH[b] else b
        _PROMOTED[key] = found
    return found


def _scalar_category(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        return 0
    if isinstance(value, (int, np.integer)):
        return 1
    return 2


def scalar_result(dtype: str, value: Any) -> str:
    """The dtype of ``array op value`` for a Python or numpy scalar ``value`` (weak)."""
    if type(value) is float:  # the common case first
        return dtype if dtype in FLOATS else DEFAULT_FLOAT
    category = _scalar_category(value)
    if category <= _CATEGORY[dtype]:
        return dtype
    return DEFAULT_INT if category == 1 else DEFAULT_FLOAT


def is_float(dtype: str) -> bool:
    return dtype == "float32" or dtype == "float64"


def float_of(dtype: str) -> str:
    """``dtype`` if it is a float dtype, else the default float dtype."""
    return dtype if dtype == "float32" or dtype == "float64" else DEFAULT_FLOAT


def python_scalar(value: Any, dtype: str) -> float | int | bool:
    """``value`` as the Python scalar a kernel takes for ``dtype`` (float, int or bool)."""
    if not isinstance(value, (numbers.Real, np.bool_)):
        raise TypeError(f"expected a real scalar, got {type(value).__name__}")
    if dtype == "float32" or dtype == "float64":
        return float(value)
    if dtype == "bool":
        return bool(value)
    return int(value)
