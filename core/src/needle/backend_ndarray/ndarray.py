"""NDArray: a strided view (shape, strides, offset) of a backend buffer (handle).

Structure operations (reshape, permute, broadcast_to, getitem, as_strided,
flip) only change metadata and never copy; arithmetic is delegated to the
device's backend module, which sees compact buffers only. :meth:`compact` is
the one place that turns a strided view into a dense buffer.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..devices import BackendDevice, default_device
from ..devices import device as _lookup_device
from . import strides as st

__all__ = [
    "NDArray", "array", "empty", "full", "broadcast_shapes", "broadcast_to", "reshape",
    "maximum", "log", "exp", "tanh", "summation", "flip",
]  # fmt: skip

broadcast_shapes = st.broadcast_shapes
_SCALARS = (float, int)  # checked before the (slower) numbers.Real


def _as_device(dev: BackendDevice | str | None) -> BackendDevice:
    if dev is None:
        return default_device()
    if isinstance(dev, BackendDevice):
        return dev
    return _lookup_device(dev)


class NDArray:
    """An n-dimensional float32 array on a needle device.

    Args:
        other: an NDArray (copied, possibly to another device), a numpy array,
            or anything ``np.asarray`` accepts.
        device: the device to hold it; the default device when None.
    """

    __slots__ = (
        "_shape", "_strides", "_offset", "_device", "_handle", "_compact", "_size", "__weakref__"
    )  # fmt: skip
    __array_priority__ = 1000  # numpy defers `ndarray + NDArray` to our reflected ops

    def __init__(self, other: Any, device: BackendDevice | str | None = None) -> None:
        if isinstance(other, NDArray):
            dev = other._device if device is None else _as_device(device)
            if dev == other._device:
                self._init(other._copy())  # a copy, never an alias
            else:
                self._init(NDArray.from_numpy(other.numpy(), dev))
            return
        self._init(NDArray.from_numpy(other, _as_device(device)))

    def _init(self, other: NDArray) -> None:
        self._shape = other._shape
        self._strides = other._strides
        self._offset = other._offset
        self._device = other._device
        self._handle = other._handle
        self._compact = other._compact
        self._size = other._size

    # ------------------------------------------------------------------ construction

    @staticmethod
    def make(
        shape: Sequence[int],
        strides: Sequence[int] | None = None,
        device: BackendDevice | str | None = None,
        handle: Any = None,
        offset: int = 0,
    ) -> NDArray:
        """A view on ``handle`` (a fresh, uninitialised buffer when None)."""
        array = object.__new__(NDArray)
        array._shape = shape = tuple(shape)
        array._size = size = st.prod(shape)
        array._offset = offset
        array._device = dev = device if type(device) is BackendDevice else _as_device(device)
        if handle is None:
            if shape and min(shape) < 0:
                raise ValueError(f"negative dimension in shape {shape}")
            handle = dev.mod.Array(size)
        array._handle = handle
        if strides is None:
            array._strides = st.compact_strides(shape)
            array._compact = offset == 0 and handle.size == size
        else:
            array._strides = tuple(strides)
            array._compact = None  # worked out when first asked
        return array

    def _fresh(self) -> NDArray:
        """A new, uninitialised dense array of this one's shape on its device.

        The shape was checked when this array was made, so this skips :meth:`make`'s checks.
        """
        array = object.__new__(NDArray)
        array._shape, array._size, array._offset = self._shape, self._size, 0
        array._device = self._device
        array._handle = handle = self._device.mod.Array(self._size)
        array._strides = st.compact_strides(self._shape)
        array._compact = handle.size == self._size
        return array

    def _view(self, shape: tuple[int, ...], strides: tuple[int, ...], offset: int) -> NDArray:
        """A view on this array's buffer; ``shape`` and ``strides`` are tuples already checked."""
        array = object.__new__(NDArray)
        array._shape, array._strides, array._offset = shape, strides, offset
        array._size = st.prod(shape)
        array._device, array._handle = self._device, self._handle
        array._compact = None  # worked out when first asked
        return array

    @staticmethod
    def from_numpy(data: Any, device: BackendDevice | str | None = None) -> NDArray:
        """Copy ``data`` (anything ``np.asarray`` takes) to ``device`` as float32."""
        arr = np.asarray(data)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"cannot make a float32 NDArray from data of dtype {arr.dtype}")
        arr = np.asarray(arr, dtype=np.float32, order="C")
        out = NDArray.make(arr.shape, device=device)
        if arr.size:
            out._device.mod.from_numpy(arr, out._handle)
        return out

    # ------------------------------------------------------------------ properties

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def strides(self) -> tuple[int, ...]:
        return self._strides

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def device(self) -> BackendDevice:
        return self._device

    @property
    def handle(self) -> Any:
        return self._handle

    @property
    def dtype(self) -> str:
        return "float32"

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d array")
        return self._shape[0]

    def __repr__(self) -> str:
        return f"NDArray({self.numpy()!r}, device={self._device!r})"

    def __str__(self) -> str:
        return str(self.numpy())

    # ------------------------------------------------------------------ host transfer

    def numpy(self) -> np.ndarray:
        """A new numpy array with the view's contents (never aliases device memory)."""
        if self.size == 0:
            return np.zeros(self._shape, dtype=np.float32)
        return self._device.mod.to_numpy(self._handle, self._shape, self._strides, self._offset)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.numpy()
        return out if dtype is None else out.astype(dtype)

    def to(self, device: BackendDevice | str) -> NDArray:
        """This array on ``device`` (itself when it is already there)."""
        device = _as_device(device)
        return self if device == self._device else NDArray(self, device=device)

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs an array of one element, not shape {self._shape}")
        return float(self.numpy().reshape(()))

    # ------------------------------------------------------------------ views

    def is_compact(self) -> bool:
        """True when the view is the whole buffer, dense and in row-major order."""
        if self._compact is None:
            self._compact = (
                self._offset == 0
                and self._size == self._handle.size
                and self._strides == st.compact_strides(self._shape)
            )
        return self._compact

    def _copy(self) -> NDArray:
        """A dense, bit-exact copy in a new buffer."""
        out = self._fresh()
        if out.size:
            self._device.mod.compact(
                self._handle, out._handle, self._shape, self._strides, self._offset
            )
        return out

    def compact(self) -> NDArray:
        """This array if compact, else a dense copy of the view."""
        if self.is_compact():
            return self
        return self._copy()

    def as_strided(
        self, shape: Sequence[int], strides: Sequence[int], offset: int | None = None
    ) -> NDArray:
        """A view with arbitrary ``shape``/``strides`` (and offset) on the same buffer.

        Raises ``ValueError`` if the view would reach outside the buffer.
        """
        shape, strides = tuple(shape), tuple(strides)
        offset = self._offset if offset is None else operator.index(offset)
        st.check_view_in_bounds(shape, strides, offset, self._handle.size)
        return NDArray.make(shape, strides, self._device, self._handle, offset)

    @property
    def flat(self) -> NDArray:
        return self.reshape((self.size,))

    def reshape(self, *new_shape: Any) -> NDArray:
        """A view with ``new_shape`` (one ``-1`` allowed); copies only if the view isn't compact."""
        if len(new_shape) == 1 and isinstance(new_shape[0], (tuple, list)):
            new_shape = new_shape[0]
        shape = st.reshape_shape(self._shape, new_shape)
        return self.compact()._view(shape, st.compact_strides(shape), 0)

    def permute(self, *axes: Any) -> NDArray:
        """Reorder dimensions (``axes`` a permutation of ``range(ndim)``), no copy."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        shape, strides = st.permute(self._shape, self._strides, axes)
        return self._view(shape, strides, self._offset)

    def swapaxes(self, a: int, b: int) -> NDArray:
        axes = list(range(self.ndim))
        a, b = st.normalize_axis(a, self.ndim), st.normalize_axis(b, self.ndim)
        axes[a], axes[b] = axes[b], axes[a]
        return self.permute(axes)

    def broadcast_to(self, *new_shape: Any) -> NDArray:
        """View as ``new_shape`` with stride 0 along stretched axes, no copy."""
        if len(new_shape) == 1 and isinstance(new_shape[0], (tuple, list)):
            new_shape = new_shape[0]
        new_shape = tuple(new_shape)
        strides = st.broadcast_to(self._shape, self._strides, new_shape)
        return self._view(new_shape, strides, self._offset)

    def flip(self, axes: int | Sequence[int] | None = None) -> NDArray:
        """Reverse ``axes`` (all when None) with negative strides, no copy."""
        strides, offset = st.flip(self._shape, self._strides, self._offset, axes)
        return self._view(self._shape, strides, offset)

    def __getitem__(self, idxs: Any) -> NDArray:
        """Ints, slices (negative start, stop and step) and one Ellipsis; always a view."""
        shape, strides, offset, _ = st.getitem(self._shape, self._strides, self._offset, idxs)
        return self._view(shape, strides, offset)

    def __setitem__(self, idxs: Any, other: Any) -> None:
        """Write an array (broadcast numpy-style to the view) or a scalar into ``self[idxs]``."""
        view = self[idxs]
        if view.size == 0:
            return
        mod = self._device.mod
        if isinstance(other, numbers.Real):
            mod.scalar_setitem(
                view.size, float(other), self._handle, view._shape, view._strides, view._offset
            )
            return
        if not isinstance(other, NDArray):
            other = NDArray.from_numpy(other, self._device)
        self._check_device(other)
        if other._shape != view._shape:
            try:
                other = other.broadcast_to(view._shape)
            except ValueError:
                raise ValueError(
                    f"cannot assign an array of shape {other._shape} to a view of shape "
                    f"{view._shape}"
                ) from None
        src = other.compact()
        if src._handle is self._handle:  # overlapping source: copy first
            src = other._copy()
        mod.ewise_setitem(src._handle, self._handle, view._shape, view._strides, view._offset)

    def fill(self, value: float) -> None:
        """Set every element of the view to ``value``, in place."""
        self[...] = value

    def pad(self, axes: Sequence[tuple[int, int]]) -> NDArray:
        """Zero-pad: ``axes`` holds a (before, after) pair per dimension."""
        if len(axes) != self.ndim or any(len(p) != 2 or min(p) < 0 for p in axes):
            raise ValueError(
                f"pad needs one non-negative (before, after) pair per dimension of {self._shape}, "
                f"got {tuple(axes)}"
            )
        out = full(
            tuple(d + a + b for d, (a, b) in zip(self._shape, axes)), 0.0, device=self._device
        )
        out[tuple(slice(a, a + d) for d, (a, _) in zip(self._shape, axes))] = self
        return out

    # ------------------------------------------------------------------ arithmetic

    def _check_device(self, other: NDArray) -> None:
        if other._device != self._device:
            raise ValueError(
                f"arrays on different devices: {self._device.name} and {other._device.name}"
            )

    def _ewise_or_scalar(self, other: Any, ewise: str, scalar: str) -> NDArray:
        mod = self._device.mod
        if type(other) is NDArray:
            if other._device is not self._device:
                self._check_device(other)
            if other._shape != self._shape:
                raise ValueError(
                    f"{ewise} needs arrays of the same shape, got {self._shape} and {other._shape}"
                )
            out = self._fresh()
            if self._size:
                getattr(mod, ewise)(self.compact()._handle, other.compact()._handle, out._handle)
        elif type(other) in _SCALARS or isinstance(other, numbers.Real):
            out = self._fresh()
            if self._size:
                getattr(mod, scalar)(self.compact()._handle, float(other), out._handle)
        else:
            return NotImplemented
        return out

    def _unary(self, name: str) -> NDArray:
        out = self._fresh()
        if self._size:
            getattr(self._device.mod, name)(self.compact()._handle, out._handle)
        return out

    def __add__(self, other: Any) -> NDArray:
        return self._ewise_or_scalar(other, "ewise_add", "scalar_add")

    __radd__ = __add__

    def __sub__(self, other: Any) -> NDArray:
        if isinstance(other, NDArray):
            return self + (-other)
        if isinstance(other, numbers.Real):
            return self + (-other)
        return NotImplemented

    def __rsub__(self, other: Any) -> NDArray:
        return (-self) + other

    def __mul__(self, other: Any) -> NDArray:
        return self._ewise_or_scalar(other, "ewise_mul", "scalar_mul")

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> NDArray:
        return self._ewise_or_scalar(other, "ewise_div", "scalar_div")

    def __rtruediv__(self, other: Any) -> NDArray:
        if not isinstance(other, numbers.Real):
            return NotImplemented
        return full(self._shape, float(other), device=self._device) / self

    def __neg__(self) -> NDArray:
        return self * -1.0

    def __pow__(self, other: Any) -> NDArray:
        if isinstance(other, NDArray):
            self._check_device(other)
            if self._device.has("ewise_power"):
                return self._ewise_or_scalar(other, "ewise_power", "scalar_power")
            if other._shape != self._shape:
                raise ValueError(f"power needs equal shapes, got {self._shape}, {other._shape}")
            return (self.log() * other).exp()
        if isinstance(other, numbers.Real):
            return self._ewise_or_scalar(other, "ewise_power", "scalar_power")
        return NotImplemented

    def __rpow__(self, other: Any) -> NDArray:
        if not isinstance(other, numbers.Real):
            return NotImplemented
        return full(self._shape, float(other), device=self._device) ** self

    def maximum(self, other: Any) -> NDArray:
        return self._ewise_or_scalar(other, "ewise_maximum", "scalar_maximum")

    def __eq__(self, other: Any) -> NDArray:  # type: ignore[override]
        return self._ewise_or_scalar(other, "ewise_eq", "scalar_eq")

    def __ge__(self, other: Any) -> NDArray:
        return self._ewise_or_scalar(other, "ewise_ge", "scalar_ge")

    def __ne__(self, other: Any) -> NDArray:  # type: ignore[override]
        return 1.0 - (self == other)

    def __gt__(self, other: Any) -> NDArray:
        return (self >= other) * (self != other)

    def __lt__(self, other: Any) -> NDArray:
        return 1.0 - (self >= other)

    def __le__(self, other: Any) -> NDArray:
        return 1.0 - (self > other)

    __hash__ = None  # type: ignore[assignment]  # == is elementwise

    def log(self) -> NDArray:
        return self._unary("ewise_log")

    def exp(self) -> NDArray:
        return self._unary("ewise_exp")

    def tanh(self) -> NDArray:
        return self._unary("ewise_tanh")

    # ------------------------------------------------------------------ linear algebra

    def __matmul__(self, other: NDArray) -> NDArray:
        """2-D matrix product ``(m, n) @ (n, p)``."""
        if not isinstance(other, NDArray):
            return NotImplemented
        self._check_device(other)
        if self.ndim != 2 or other.ndim != 2:
            raise ValueError(
                f"NDArray @ needs 2-D arrays, got shapes {self._shape} and {other._shape}"
            )
        (m, n), (n2, p) = self._shape, other._shape
        if n != n2:
            raise ValueError(f"matmul shapes {self._shape} and {other._shape} do not align")
        out = NDArray.make((m, p), device=self._device)
        if m * p == 0:
            return out
        if n == 0:
            out.fill(0.0)
            return out
        self._device.mod.matmul(
            self.compact()._handle, other.compact()._handle, out._handle, m, n, p
        )
        return out

    # ------------------------------------------------------------------ reductions

    def _reduce(self, axis: Any, keepdims: bool, kernel: str) -> NDArray:
        axes = st.normalize_axes(axis, self.ndim)
        keep = [d for i, d in enumerate(self._shape) if i not in axes]
        reduce_size = st.prod(self._shape[a] for a in axes)
        order = [i for i in range(self.ndim) if i not in axes] + list(axes)
        view = self.permute(order) if order != list(range(self.ndim)) else self
        out = NDArray.make(keep, device=self._device)
        if out.size:
            if reduce_size == 0:
                if kernel == "reduce_max":
                    raise ValueError("max of an empty axis has no identity")
                out.fill(0.0)
            elif (
                kernel == "reduce_sum"
                and order != list(range(self.ndim))
                and axes == tuple(range(len(axes)))
                and self.is_compact()
            ):
                # A sum over leading axes (bias gradients) is ones(1, r) @ a(r, rest): one GEMM
                # over the data as it lies, instead of transposing it for reduce_sum.
                ones = full((1, reduce_size), 1.0, device=self._device)
                rest = self._size // reduce_size
                self._device.mod.matmul(
                    ones._handle, self._handle, out._handle, 1, reduce_size, rest
                )
            else:
                getattr(self._device.mod, kernel)(view.compact()._handle, out._handle, reduce_size)
        if keepdims:
            out = out.reshape(tuple(1 if i in axes else d for i, d in enumerate(self._shape)))
        return out

    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> NDArray:
        """Sum over ``axis`` (an int, a tuple, or None for all)."""
        return self._reduce(axis, keepdims, "reduce_sum")

    def max(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> NDArray:
        """Maximum over ``axis`` (an int, a tuple, or None for all)."""
        return self._reduce(axis, keepdims, "reduce_max")


def array(a: Any, dtype: str = "float32", device: BackendDevice | str | None = None) -> NDArray:
    """The course's ``nd.array``: copy ``a`` onto ``device`` as float32."""
    if dtype not in ("float32", np.float32):
        raise TypeError(f"needle arrays hold float32, not {dtype}")
    return NDArray(a, device=device)


def empty(shape: Sequence[int], dtype: str = "float32", device: Any = None) -> NDArray:
    """An uninitialised array of ``shape``."""
    return NDArray.make(shape, device=device)


def full(
    shape: Sequence[int], fill_value: float, dtype: str = "float32", device: Any = None
) -> NDArray:
    """An array of ``shape`` filled with ``fill_value``."""
    out = NDArray.make(shape, device=device)
    if out.size:
        out._device.mod.fill(out._handle, float(fill_value))
    return out


# The course's module-level array API (``array_api.exp(a)``, ...), one line each.
def broadcast_to(array: NDArray, new_shape: Sequence[int]) -> NDArray:
    return array.broadcast_to(new_shape)


def reshape(array: NDArray, new_shape: Sequence[int]) -> NDArray:
    return array.reshape(new_shape)


def maximum(a: NDArray, b: NDArray | float) -> NDArray:
    return a.maximum(b)


def log(a: NDArray) -> NDArray:
    return a.log()


def exp(a: NDArray) -> NDArray:
    return a.exp()


def tanh(a: NDArray) -> NDArray:
    return a.tanh()


def summation(
    a: NDArray, axis: int | Sequence[int] | None = None, keepdims: bool = False
) -> NDArray:
    return a.sum(axis=axis, keepdims=keepdims)


def flip(a: NDArray, axes: int | Sequence[int] | None = None) -> NDArray:
    return a.flip(axes)
