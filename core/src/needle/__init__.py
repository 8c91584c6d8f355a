"""needle: a deep-learning framework with pluggable backends.

``import needle as ndl`` loads no backend: the ``needle`` entry points are
scanned on first device use and a backend's kernels are imported when its
device is first used. ``ndl.nn``, ``ndl.optim``, ``ndl.data``, ``ndl.init``,
``ndl.models`` and ``ndl.distributed`` are imported on first access.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from . import ops
from .autograd import (
    Op,
    Tensor,
    TensorOp,
    TensorTuple,
    TensorTupleOp,
    Value,
    enable_grad,
    is_grad_enabled,
    no_grad,
)
from .backend_ndarray import NDArray
from .backend_ndarray.dtypes import DTypeError
from .devices import (
    BackendDevice,
    DeviceError,
    DeviceUnavailableError,
    UnknownDeviceError,
    all_devices,
    cpu,
    cpu_numpy,
    cuda,
    default_device,
    device,
)
from .replay import JitError, jit

__version__ = "0.1.0"

# dtypes are named by strings, which compare equal to numpy's dtypes of the same name.
float32, float64, int32, int64, bool = "float32", "float64", "int32", "int64", "bool"  # noqa: A001

_LAZY_SUBMODULES = (
    "init", "nn", "optim", "data", "models", "checkpoint", "apps", "distributed"
)  # fmt: skip
_LAZY_ATTRIBUTES = {"save": "checkpoint", "load": "checkpoint", "from_dlpack": "dlpack"}

__all__ = [
    "float32",
    "float64",
    "int32",
    "int64",
    "bool",
    "DTypeError",
    "Op",
    "Tensor",
    "TensorOp",
    "TensorTuple",
    "TensorTupleOp",
    "Value",
    "NDArray",
    "BackendDevice",
    "DeviceError",
    "DeviceUnavailableError",
    "UnknownDeviceError",
    "device",
    "cpu",
    "cuda",
    "cpu_numpy",
    "default_device",
    "all_devices",
    "no_grad",
    "enable_grad",
    "jit",
    "JitError",
    "is_grad_enabled",
    "ops",
    "__version__",
    *_LAZY_SUBMODULES,
    *_LAZY_ATTRIBUTES,
    *ops.__all__,
]


# The course exposes every op helper at top level (ndl.relu, ndl.summation, ...).
globals().update({_name: getattr(ops, _name) for _name in ops.__all__})


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(f".{_LAZY_ATTRIBUTES[name]}", __name__), name)
    raise AttributeError(f"module 'needle' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public API and the submodules already imported; not the helpers this file imports.
    loaded = {k for k, v in globals().items() if isinstance(v, ModuleType) and k != "importlib"}
    return sorted(set(__all__) | loaded)
