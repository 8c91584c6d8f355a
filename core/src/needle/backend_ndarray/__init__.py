"""The course's ``needle.backend_ndarray``: the strided NDArray and the device functions."""

from ..devices import (
    BackendDevice,
    all_devices,
    cpu,
    cpu_numpy,
    cuda,
    default_device,
    device,
)
from .ndarray import (
    NDArray,
    array,
    broadcast_shapes,
    broadcast_to,
    empty,
    exp,
    flip,
    full,
    log,
    maximum,
    reshape,
    summation,
    tanh,
)

__all__ = [
    "NDArray",
    "array",
    "empty",
    "full",
    "broadcast_shapes",
    "broadcast_to",
    "reshape",
    "maximum",
    "log",
    "exp",
    "tanh",
    "summation",
    "flip",
    "BackendDevice",
    "device",
    "cpu",
    "cuda",
    "cpu_numpy",
    "default_device",
    "all_devices",
]
