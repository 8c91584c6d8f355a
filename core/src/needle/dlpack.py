"""DLPack: hand arrays to numpy, PyTorch, JAX and back without copies.

``Tensor.__dlpack__`` / ``__dlpack_device__`` and :func:`from_dlpack` follow the
array API standard. On host backends (numpy, cpu) both directions share memory:

* **Export**: the backend's ``to_dlpack`` gives an object sharing the view's memory
  (for the host backends, a numpy view of the buffer), whose ``__dlpack__`` makes the
  capsule. A view is exported as it lies, with its shape, strides and offset, so a
  transposed or sliced tensor arrives as a strided array, not a copy; the capsule
  holds the buffer alive until the consumer releases it. ``copy=True`` exports a
  compact copy instead.
* **Import**: the backend's ``from_dlpack`` wraps a C-contiguous producer's memory
  in a handle that keeps the producer alive; writes through either side are seen by
  the other. A strided producer (or a backend without ``from_dlpack``) is copied,
  unless ``copy=False`` forbids it (``BufferError``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend_ndarray import NDArray
from .devices import BackendDevice, default_device
from .devices import device as _lookup_device

__all__ = ["from_dlpack", "export", "device_of", "KDL_CPU", "KDL_CUDA"]

KDL_CPU, KDL_CUDA = 1, 2  # DLDeviceType codes


def device_of(array: NDArray) -> tuple[int, int]:
    """``(DLDeviceType, device id)`` of the array's memory."""
    dev = array.device
    if dev.has("to_dlpack"):
        return tuple(_shared(array).__dlpack_device__())  # type: ignore[return-value]
    return (KDL_CPU, 0)  # without sharing, exports go through host copies


def _shared(array: NDArray) -> Any:
    return array.device.mod.to_dlpack(array.handle, array.shape, array.strides, array.offset)


def export(
    array: NDArray,
    *,
    stream: Any = None,
    max_version: tuple[int, int] | None = None,
    dl_device: tuple[int, int] | None = None,
    copy: bool | None = None,
) -> Any:
    """The DLPack capsule of ``array`` (see the module for when memory is shared)."""
    source = array.compact()._copy() if copy else array
    if source.device.has("to_dlpack"):
        producer = _shared(source)
    elif copy is False:
        raise BufferError(
            f"backend {array.device.name!r} cannot share its memory through DLPack "
            "(it has no to_dlpack); export with copy=None or copy=True"
        )
    else:
        producer = source.numpy()  # a host copy
    kwargs: dict[str, Any] = {}
    if stream is not None:
        kwargs["stream"] = stream
    if max_version is not None:
        kwargs["max_version"] = max_version
    if dl_device is not None:
        kwargs["dl_device"] = dl_device
    if copy is not None and max_version is not None:  # the newer protocol's keyword
        kwargs["copy"] = False  # any copy asked for was made above
    return producer.__dlpack__(**kwargs)


def from_dlpack(
    x: Any, *, device: BackendDevice | str | None = None, copy: bool | None = None
) -> Any:
    """A Tensor holding ``x``'s data (any object with ``__dlpack__``), as the array API's
    ``from_dlpack``: shared when possible (see the module), copied when ``copy=True``.

    Args:
        x: a numpy array, PyTorch tensor, JAX array, needle Tensor, ...
        device: the needle device to put it on; by default the producer's: the default
            device for host memory, ``cuda`` for CUDA memory.
        copy: True: always copy; False: never copy (``BufferError`` when sharing is
            impossible); None: share when possible.
    """
    from .autograd import Tensor

    if not hasattr(x, "__dlpack__"):
        raise TypeError(f"from_dlpack needs an object with __dlpack__, got {type(x).__name__}")
    kind, _ = x.__dlpack_device__()
    if device is None:
        target = _lookup_device("cuda") if kind == KDL_CUDA else default_device()
    else:
        target = _lookup_device(device) if isinstance(device, str) else device
    if copy is not True and target.has("from_dlpack"):
        try:
            handle, shape = target.mod.from_dlpack(x)
            return Tensor.make_const(NDArray.make(shape, device=target, handle=handle))
        except BufferError:
            if copy is False:
                raise
    elif copy is False:
        raise BufferError(f"device {target.name!r} cannot share memory through DLPack")
    if kind != KDL_CPU:
        raise BufferError(
            f"DLPack data on device type {kind} can only be shared with a backend that "
            f"imports it; {target.name!r} cannot"
        )
    return Tensor.make_const(NDArray.from_numpy(np.from_dlpack(x), target))
