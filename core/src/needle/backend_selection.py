"""The course's ``needle.backend_selection``: ``array_api`` is the NDArray module."""

from . import backend_ndarray as array_api
from .backend_ndarray import BackendDevice as Device
from .backend_ndarray import NDArray, all_devices, cpu, cpu_numpy, cuda, default_device

__all__ = [
    "array_api",
    "NDArray",
    "Device",
    "cpu",
    "cuda",
    "cpu_numpy",
    "default_device",
    "all_devices",
]
