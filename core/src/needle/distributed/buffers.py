"""Tensors' memory as communicator buffers, without copies where the memory is on the host.

:func:`host_view` is the one place that turns device memory into a buffer a communicator
takes. On a host backend (one not declared an accelerator) the view is a numpy array over
the tensor's own memory, so MPI reads and writes the tensor itself through the buffer
protocol: the handle's own (needle-cpu's ``Array`` has one), else DLPack
(``np.from_dlpack``) where the backend exports it, else over
``handle.ptr()`` (``handle.size`` elements of the array's dtype, as the backend contract
says; contract v1 backends). Elsewhere (a GPU) the data are copied through the host; a GPU
communicator would take the DLPack capsule as it is.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np

from ..backend_ndarray import NDArray
from ..devices import BackendDevice
from ..dlpack import KDL_CPU
from ..plugins import manager
from ..replay import host_access

__all__ = ["host_view", "as_buffer", "output_buffer", "finish_output"]


_BUFFERS: dict[type, bool] = {}  # handle types known to lack the buffer protocol
_HOST: dict[str, bool] = {}  # device name -> on the host (a backend declared no accelerator)
_DTYPES: dict[str, np.dtype] = {}  # dtype name -> numpy dtype, made once


def _on_host(device: BackendDevice) -> bool:
    known = _HOST.get(device.name)
    if known is None:
        record = manager.backend(device.name)
        known = _HOST[device.name] = record is not None and not record.spec.accelerator
    return known


def host_view(array: NDArray) -> np.ndarray | None:
    """A numpy array sharing ``array``'s memory, or None when there is no such view.

    There is one for a compact, non-empty NDArray on a host backend whose handle has
    ``ptr()``. The view keeps the handle alive, so it stays valid as long as it is used.
    """
    host_access("a collective of needle.distributed")  # no replay can repeat it
    if not array.is_compact() or array.size == 0 or not _on_host(array.device):
        return None
    handle = array.handle
    dtype = _DTYPES.get(array.dtype) or _DTYPES.setdefault(array.dtype, np.dtype(array.dtype))
    if _BUFFERS.get(type(handle), True):  # the handle's own buffer protocol: the cheapest view
        try:
            # The bytes of the whole buffer, read as the array's dtype; the view holds the
            # exporter, so the memory stays.
            view = np.frombuffer(handle, dtype)
        except (TypeError, ValueError):
            _BUFFERS[type(handle)] = False  # this handle type has none: not tried again
        else:
            if view.size == array.size:
                shape = array.shape
                return view if len(shape) == 1 else view.reshape(shape)
    if array.device.has("to_dlpack") and array.__dlpack_device__()[0] == KDL_CPU:
        return np.from_dlpack(array)  # shares the memory; the capsule keeps it alive
    ptr = getattr(handle, "ptr", None)
    if ptr is None:
        return None
    raw = (ctypes.c_char * (array.size * dtype.itemsize)).from_address(ptr())
    raw.needle_handle = handle  # the memory belongs to the handle: keep it alive with the view
    return np.frombuffer(raw, dtype=dtype).reshape(array.shape)


def as_buffer(array: NDArray) -> np.ndarray:
    """``array``'s data as a C-contiguous host buffer: its own memory when possible, else a copy.

    Only read the result: when it is a copy, writes do not reach ``array``.
    """
    view = host_view(array.compact())
    return view if view is not None else np.ascontiguousarray(array.numpy())


def output_buffer(
    shape: Sequence[int], dtype: str, device: BackendDevice
) -> tuple[NDArray | None, np.ndarray]:
    """A new array on ``device`` and a host buffer a communicator writes it through.

    Returns ``(array, view)`` when ``view`` is the array's own memory, or ``(None, buffer)``
    when the result must be copied to the device afterwards (:func:`finish_output`).
    """
    shape = tuple(shape)
    if _on_host(device):
        out = NDArray._alloc(shape, dtype, device)
        view = host_view(out)
        if view is not None:
            return out, view
    return None, np.empty(shape, dtype=np.dtype(dtype))


def finish_output(out: NDArray | None, buf: np.ndarray, device: BackendDevice) -> NDArray:
    """The NDArray holding ``buf``'s values: ``out`` itself, or ``buf`` copied to ``device``."""
    return out if out is not None else NDArray.from_numpy(buf, device)
