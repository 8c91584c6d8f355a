"""Helpers of needle-cuda's own tests: host <-> device copies of numpy arrays.

The tests call ``needle_cuda._ext`` directly, so a failure names the kernel, the dtype and the
shape. Kernel tests run wherever kernels run: on a GPU, or on the CPU emulation of the same
kernels (``tests/emulate/build_emulated_ext.sh``, ``__build_archs__ == "emulated"``), where the
sizes stay small.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


@pytest.fixture
def put() -> Callable[..., object]:
    """``put(values, dtype=None)``: a new handle holding a copy of ``values``."""
    from needle_cuda import _ext

    def put(values: object, dtype: str | None = None) -> object:
        x = np.ascontiguousarray(values, dtype=dtype)
        handle = _ext.Array(x.size, x.dtype.name)
        _ext.from_numpy(x, handle)
        return handle

    return put


@pytest.fixture
def get() -> Callable[..., np.ndarray]:
    """``get(handle, shape=None)``: the handle's elements as a numpy array of that shape."""
    from needle_cuda import _ext

    def get(handle: object, shape: tuple[int, ...] | None = None) -> np.ndarray:
        shape = (handle.size,) if shape is None else tuple(shape)
        strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
        return _ext.to_numpy(handle, shape, strides, 0)

    return get
