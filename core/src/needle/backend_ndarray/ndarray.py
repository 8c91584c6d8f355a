"""NDArray: a strided view (shape, strides, offset) of a backend buffer (handle) of one dtype.

Structure operations (reshape, permute, broadcast_to, getitem, as_strided,
flip) only change metadata and never copy; arithmetic is delegated to the
device's backend module, which sees compact buffers only. :meth:`compact` is
the one place that turns a strided view into a dense buffer. This class alone
chooses which backend kernel runs: it promotes dtypes (:mod:`.dtypes`), checks
that the backend declares the dtype for the kernel's group, and composes what a
backend lacks (the optional kernels, and the comparisons of a v1 backend).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..devices import BackendDevice, default_device
from ..devices import device as _lookup_device
from . import dtypes as dt
from . import strides as st

__all__ = [
    "NDArray", "array", "empty", "full", "broadcast_shapes", "broadcast_to", "reshape",
    "maximum", "log", "exp", "tanh", "summation", "flip",
]  # fmt: skip

broadcast_shapes = st.broadcast_shapes
_SCALARS = (float, int)  # checked before the (slower) numbers.Real
_REAL = (numbers.Real, np.bool_)
_SWAPPED = {"lt": "gt", "le": "ge"}  # for two arrays, a < b is b > a


def _as_device(dev: BackendDevice | str | None) -> BackendDevice:
    if dev is None:
        return default_device()
    if isinstance(dev, BackendDevice):
        return dev
    return _lookup_device(dev)


def _freeing_caches(device: BackendDevice, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; when the host runs out of memory, the device's buffer cache
    is emptied (memory numpy may then take) and ``fn`` tried once more."""
    try:
        return fn(*args, **kwargs)
    except MemoryError:
        device.empty_cache()
        return fn(*args, **kwargs)


def _unsupported(device: BackendDevice, kernel: str, dtype: str, group: str) -> dt.DTypeError:
    if not device.enabled():
        device.mod.fail()
    have = ", ".join(n for n in dt.DTYPES if n in device.dtypes.get(group, ())) or "none"
    return dt.DTypeError(
        f"backend {device.name!r} has no {dtype} {kernel} (its {group} kernels take: {have}); "
        "`needle info` lists what each backend supports"
    )


_ROW_OPS = {"ewise_add": "add", "ewise_mul": "mul", "ewise_div": "div", "ewise_maximum": "maximum"}
_COMMUTES = ("add", "mul")  # exactly, signed zeros included (maximum is not)
_ONES: dict[tuple[str, str, int], NDArray] = {}  # (device, dtype, n): ones (1, n) for sums


def _row_width(x: NDArray) -> int | None:
    """``w`` when ``x`` is a whole buffer of ``w`` elements repeated along its leading axes
    (a broadcast row: zero strides, then the compact strides of its trailing axes)."""
    if x._offset or x._handle.size >= x._size or not x._size:
        return None
    width, k = 1, x.ndim
    while k and (x._strides[k - 1] == width or x._shape[k - 1] == 1):
        width *= x._shape[k - 1]
        k -= 1
    if width != x._handle.size or any(s and d != 1 for s, d in zip(x._strides[:k], x._shape)):
        return None
    return width


def _broadcast_rows(kernel: str, a: NDArray, b: NDArray) -> NDArray | None:
    """``a (op) b`` by the backend's ``broadcast_rows`` when one operand is compact and the
    other a broadcast row of it; None otherwise."""
    op = _ROW_OPS.get(kernel)
    if op is None:
        return None
    if a.is_compact():
        width = _row_width(b)
    elif op in _COMMUTES and b.is_compact():
        a, b = b, a
        width = _row_width(b)
    else:
        return None
    if width is None:
        return None
    out = a._fresh()
    a._device.mod.broadcast_rows(op, a._handle, b._handle, out._handle, width)
    return out


class NDArray:
    """An n-dimensional array of one dtype on a needle device.

    Args:
        other: an NDArray (copied, possibly to another device), a numpy array,
            or anything ``np.asarray`` accepts.
        device: the device to hold it; the default device when None.
        dtype: the dtype (see :mod:`needle.backend_ndarray.dtypes` for the rule when None).
    """

    __slots__ = (
        "_shape", "_strides", "_offset", "_device", "_handle", "_compact", "_size", "_dtype",
        "__weakref__",
    )  # fmt: skip
    __array_priority__ = 1000  # numpy defers `ndarray + NDArray` to our reflected ops

    def __init__(
        self, other: Any, device: BackendDevice | str | None = None, dtype: Any = None
    ) -> None:
        if isinstance(other, NDArray):
            dev = other._device if device is None else _as_device(device)
            src = other if dtype is None else other.astype(dtype, copy=False)
            if dev == src._device:
                self._init(src._copy() if src is other else src)  # a copy, never an alias
            else:
                self._init(NDArray.from_numpy(src.numpy(), dev))
            return
        self._init(NDArray.from_numpy(other, _as_device(device), dtype))

    def _init(self, other: NDArray) -> None:
        self._shape = other._shape
        self._strides = other._strides
        self._offset = other._offset
        self._device = other._device
        self._handle = other._handle
        self._compact = other._compact
        self._size = other._size
        self._dtype = other._dtype

    # ------------------------------------------------------------------ construction

    @staticmethod
    def make(
        shape: Sequence[int],
        strides: Sequence[int] | None = None,
        device: BackendDevice | str | None = None,
        handle: Any = None,
        offset: int = 0,
        dtype: Any = None,
    ) -> NDArray:
        """A view on ``handle`` (a fresh, uninitialised buffer of ``dtype`` when None)."""
        array = object.__new__(NDArray)
        array._shape = shape = st.check_shape(shape)
        array._size = size = st.prod(shape)
        array._offset = offset
        array._device = dev = device if type(device) is BackendDevice else _as_device(device)
        if handle is None:
            dtype = "float32" if dtype is None else dt.canonical(dtype)
            if dev.version == 1:  # a contract v1 backend holds float32 only
                dtype = "float32"
            if dtype not in dev.dtypes.get("memory", ()):
                raise _unsupported(dev, "Array", dtype, "memory")
            handle = dev.alloc(size, dtype)
        elif dtype is None:
            dtype = getattr(handle, "dtype", "float32")
        array._handle = handle
        array._dtype = dt.canonical(dtype)
        if strides is None:
            array._strides = st.compact_strides(shape)
            array._compact = offset == 0 and handle.size == size
        else:
            array._strides = st.check_strides(strides, len(shape))
            array._compact = None  # worked out when first asked
        return array

    @staticmethod
    def _alloc(
        shape: tuple[int, ...], dtype: str, dev: BackendDevice, handle: Any = None
    ) -> NDArray:
        """A new dense array for core's own use: ``shape`` a tuple of non-negative ints and
        ``dtype`` one ``dev`` holds (taken from arrays already there), so no checks; over
        ``handle`` (a buffer of exactly that dtype and size) when given."""
        array = object.__new__(NDArray)
        array._shape, array._offset, array._device, array._dtype = shape, 0, dev, dtype
        array._size = size = math.prod(shape)
        array._strides = st.compact_strides(shape)
        if handle is None:
            handle = dev.alloc(size, dtype)
            array._compact = handle.size == size
        else:
            array._compact = True
        array._handle = handle
        return array

    def _fresh(self, dtype: str | None = None) -> NDArray:
        """A new, uninitialised dense array of this one's shape (and dtype) on its device.

        The shape was checked when this array was made, so this skips :meth:`make`'s checks.
        """
        array = object.__new__(NDArray)
        array._shape, array._size, array._offset = self._shape, self._size, 0
        array._device = dev = self._device
        array._dtype = dtype = self._dtype if dtype is None else dtype
        array._handle = handle = dev.alloc(self._size, dtype)
        array._strides = st.compact_strides(self._shape)
        array._compact = handle.size == self._size
        return array

    def _view(self, shape: tuple[int, ...], strides: tuple[int, ...], offset: int) -> NDArray:
        """A view on this array's buffer; ``shape`` and ``strides`` are tuples already checked."""
        array = object.__new__(NDArray)
        array._shape, array._strides, array._offset = shape, strides, offset
        array._size = st.prod(shape)
        array._device, array._handle, array._dtype = self._device, self._handle, self._dtype
        array._compact = None  # worked out when first asked
        return array

    @staticmethod
    def from_numpy(
        data: Any, device: BackendDevice | str | None = None, dtype: Any = None
    ) -> NDArray:
        """Copy ``data`` (anything ``np.asarray`` takes) to ``device``.

        The dtype is ``dtype`` when given, else the data's (see :mod:`.dtypes` for the rule:
        numpy data keeps its dtype, Python numbers and lists give float64). A backend that
        holds float32 only (contract v1) stores everything as float32.
        """
        dev = device if type(device) is BackendDevice else _as_device(device)
        arr = np.asarray(data)
        if arr.dtype.kind not in "biuf":
            raise dt.DTypeError(f"cannot make an NDArray from data of dtype {arr.dtype}")
        if dtype is not None:
            target, wanted = dt.canonical(dtype), dt.numpy_name(dtype)
            if wanted != target:  # a dtype needle lacks: numpy converts the values first
                arr = arr.astype(wanted)
        else:
            target = dt.data_dtype(data, arr.dtype)
        if dev.version == 1:  # a float32-only backend stores everything as float32
            target = "float32"
        if arr.dtype.name == "uint64" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise OverflowError("uint64 data holds values beyond int64, needle's widest integer")
        # (np.ascontiguousarray would make 0-d data 1-d)
        arr = _freeing_caches(dev, np.asarray, arr, dtype=target, order="C")
        out = NDArray.make(arr.shape, device=dev, dtype=target)
        if arr.size:
            dev.mod.from_numpy(arr, out._handle)
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
        return self._dtype

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
        if self._size == 0:
            return np.zeros(self._shape, dtype=self._dtype)
        dev = self._device
        return _freeing_caches(
            dev, dev.mod.to_numpy, self._handle, self._shape, self._strides, self._offset
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.numpy()
        return out if dtype is None else out.astype(dtype)

    def __dlpack__(self, **kwargs: Any) -> Any:
        """A DLPack capsule sharing this view's memory (see :mod:`needle.dlpack`)."""
        from ..dlpack import export

        return export(self, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        from ..dlpack import device_of

        return device_of(self)

    def to(self, device: BackendDevice | str) -> NDArray:
        """This array on ``device`` (itself when it is already there)."""
        device = _as_device(device)
        return self if device == self._device else NDArray(self, device=device)

    def item(self) -> float | int | bool:
        """The one element as a Python scalar."""
        if self._size != 1:
            raise ValueError(f"item() needs an array of one element, not shape {self._shape}")
        return self.numpy().reshape(()).item()

    # ------------------------------------------------------------------ dtypes

    def astype(self, dtype: Any, copy: bool = True) -> NDArray:
        """The values converted to ``dtype`` (numpy's rules; a new array unless ``copy=False``
        and the dtype already matches). A dtype needle lacks converts as numpy converts to it,
        then is stored by the rule of :mod:`.dtypes` (``uint8`` values in ``int32``)."""
        target = dt.canonical(dtype)
        if dt.numpy_name(dtype) != target:
            return NDArray.from_numpy(self.numpy(), self._device, dtype)
        if target == self._dtype:
            return self._copy() if copy else self
        return self._cast(target)

    def _cast(self, dtype: str) -> NDArray:
        """This array as ``dtype`` (itself when it already is, or on a float32-only v1 backend)."""
        if dtype == self._dtype or self._device.version == 1:
            return self
        dev = self._device
        memory = dev.dtypes.get("memory", ())
        if dtype not in memory or self._dtype not in memory:
            raise _unsupported(dev, "cast", dtype, "memory")
        out = self._fresh(dtype)
        if self._size and not self.is_compact() and self._dense():
            out._strides, out._compact = self._strides, False  # the layout kept, as _run does
            dev.mod.cast(self._handle, out._handle)
        elif self._size:
            dev.mod.cast(self.compact()._handle, out._handle)
        return out

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
        if out._size:
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
        shape = st.check_shape(shape)
        strides = st.check_strides(strides, len(shape))
        offset = self._offset if offset is None else operator.index(offset)
        st.check_view_in_bounds(shape, strides, offset, self._handle.size)
        return NDArray.make(shape, strides, self._device, self._handle, offset, self._dtype)

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
        """View as ``new_shape`` with stride 0 along stretched axes, no copy (read-only)."""
        if len(new_shape) == 1 and isinstance(new_shape[0], (tuple, list)):
            new_shape = new_shape[0]
        new_shape = st.check_shape(new_shape, "broadcast shape")
        strides = st.broadcast_to(self._shape, self._strides, new_shape)
        return self._view(new_shape, strides, self._offset)

    def flip(self, axes: int | Sequence[int] | None = None) -> NDArray:
        """Reverse ``axes`` (all when None) with negative strides, no copy."""
        strides, offset = st.flip(self._shape, self._strides, self._offset, axes)
        return self._view(self._shape, strides, offset)

    def process_slice(self, sl: slice, dim: int) -> slice:
        """The course's helper: ``sl`` with explicit start, stop and step for axis ``dim``."""
        return slice(*sl.indices(self._shape[dim]))

    def __getitem__(self, idxs: Any) -> NDArray:
        """Ints, slices (negative start, stop and step) and one Ellipsis; always a view."""
        shape, strides, offset, _ = st.getitem(self._shape, self._strides, self._offset, idxs)
        return self._view(shape, strides, offset)

    def __setitem__(self, idxs: Any, other: Any) -> None:
        """Write an array (broadcast numpy-style to the view) or a scalar into ``self[idxs]``.

        Values are converted to this array's dtype. A view that repeats elements (a
        broadcast view: a zero stride on an axis longer than 1) cannot be written, as in numpy.
        """
        if (
            self._size  # an empty array's compact strides hold zeros too; nothing to write
            and 0 in self._strides
            and any(s == 0 and d > 1 for d, s in zip(self._shape, self._strides))
        ):
            raise ValueError(
                f"cannot write into a broadcast view (shape {self._shape}, strides "
                f"{self._strides}): it repeats elements, so it is read-only; compact() it first"
            )
        view = self[idxs]
        if view.size == 0:
            return
        mod = self._device.mod
        if isinstance(other, _REAL):
            mod.scalar_setitem(
                view.size,
                dt.python_scalar(other, self._dtype),
                self._handle,
                view._shape,
                view._strides,
                view._offset,
            )
            return
        if not isinstance(other, NDArray):
            other = NDArray.from_numpy(other, self._device, self._dtype)
        self._check_device(other)
        if other._shape != view._shape:
            try:
                other = other.broadcast_to(view._shape)
            except ValueError:
                raise ValueError(
                    f"cannot assign an array of shape {other._shape} to a view of shape "
                    f"{view._shape}"
                ) from None
        src = other._cast(self._dtype).compact()
        if src._handle is self._handle:  # overlapping source: copy first
            src = other._copy()
        mod.ewise_setitem(src._handle, self._handle, view._shape, view._strides, view._offset)

    def fill(self, value: Any) -> None:
        """Set every element of the view to ``value``, in place."""
        self[...] = value

    def pad(self, axes: Sequence[tuple[int, int]]) -> NDArray:
        """Zero-pad: ``axes`` holds a (before, after) pair per dimension."""
        if len(axes) != self.ndim or any(len(p) != 2 or min(p) < 0 for p in axes):
            raise ValueError(
                f"pad needs one non-negative (before, after) pair per dimension of {self._shape}, "
                f"got {tuple(axes)}"
            )
        shape = tuple(d + a + b for d, (a, b) in zip(self._shape, axes))
        out = full(shape, 0, dtype=self._dtype, device=self._device)
        out[tuple(slice(a, a + d) for d, (a, _) in zip(self._shape, axes))] = self
        return out

    # ------------------------------------------------------------------ kernels

    def _check_device(self, other: NDArray) -> None:
        if other._device != self._device:
            raise ValueError(
                f"arrays on different devices: {self._device.name} and {other._device.name}"
            )

    def _operands(self, other: NDArray, kernel: str) -> tuple[NDArray, NDArray]:
        """``self`` and ``other`` checked for device and shape, promoted to one dtype."""
        if other._device is not self._device:
            self._check_device(other)
        if other._shape != self._shape:
            raise ValueError(
                f"{kernel} needs arrays of the same shape, got {self._shape} and {other._shape}"
            )
        if other._dtype == self._dtype:
            return self, other
        common = dt.promote(self._dtype, other._dtype)
        return self._cast(common), other._cast(common)

    def _dense(self) -> bool:
        """True when the view covers its whole buffer once, in some order of its axes (a
        transposed compact array): elementwise kernels can run on the buffer as it lies."""
        return (
            self._offset == 0
            and self._size == self._handle.size
            and st.is_dense(self._shape, self._strides)
        )

    def _run(self, kernel: str, group: str, out_dtype: str | None, *args: Any) -> NDArray:
        """``out = kernel(self, *args)`` (``self`` already has the dtype); an NDArray in
        ``args`` is the second operand, of ``self``'s shape.

        The kernels see compact buffers. Operands that are the same transposition of whole
        buffers (an NCHW view of NHWC data, say) are not copied: the kernel runs on the
        buffers as they lie and the result keeps their layout. A single operand that repeats
        elements (a broadcast view) is computed once per element of its buffer.
        """
        dev = self._device
        if self._dtype not in dev.dtypes.get(group, ()):
            raise _unsupported(dev, kernel, self._dtype, group)
        other = args[0] if args and type(args[0]) is NDArray else None
        if self.is_compact() and (other is None or other.is_compact()):
            # The common case first: whole buffers in row-major order, run as they lie.
            out = self._fresh(out_dtype)
            if self._size:
                rest = (other._handle, *args[1:]) if other is not None else args
                getattr(dev.mod, kernel)(self._handle, *rest, out._handle)
            return out
        if other is None and self._size > self._handle.size:
            # A view repeating elements (a broadcast): the kernel runs once per element of
            # the buffer, and the result repeats them in the same way.
            base = NDArray.make((self._handle.size,), None, dev, self._handle, 0, self._dtype)
            return base._run(kernel, group, out_dtype, *args)._view(
                self._shape, self._strides, self._offset
            )
        if (
            self._size
            and not self.is_compact()
            and self._dense()
            and (other is None or (other._strides == self._strides and other._dense()))
        ):
            out = self._fresh(out_dtype)
            out._strides, out._compact = self._strides, False
            rest = (other._handle, *args[1:]) if other is not None else args
            getattr(dev.mod, kernel)(self._handle, *rest, out._handle)
            return out
        if other is not None and group == "arithmetic" and dev.has("broadcast_rows"):
            rows = _broadcast_rows(kernel, self, other)
            if rows is not None:
                return rows
        out = self._fresh(out_dtype)
        if self._size:
            if other is not None:
                args = (other.compact()._handle, *args[1:])
            getattr(dev.mod, kernel)(self.compact()._handle, *args, out._handle)
        return out

    def _arith(self, other: Any, name: str, float_only: bool = False) -> NDArray:
        """``self (name) other`` for the arithmetic kernels ``ewise_<name>``/``scalar_<name>``."""
        if type(other) is NDArray:
            a, b = self._operands(other, f"ewise_{name}")
            dtype = a._dtype
            if float_only and not dt.is_float(dtype):
                dtype = dt.DEFAULT_FLOAT
                a, b = a._cast(dtype), b._cast(dtype)
            if dtype == "bool":  # logical or / and / or: computed in int32
                return a._cast("int32")._arith(b._cast("int32"), name)._cast("bool")
            return a._run(f"ewise_{name}", "arithmetic", None, b)
        if type(other) in _SCALARS or isinstance(other, _REAL):
            dtype = dt.scalar_result(self._dtype, other)
            if float_only:
                dtype = dt.float_of(dtype)
            a = self._cast(dtype)
            if dtype == "bool":
                return a._cast("int32")._arith(int(other), name)._cast("bool")
            return a._run(f"scalar_{name}", "arithmetic", None, dt.python_scalar(other, dtype))
        return NotImplemented

    def _compare(self, other: Any, op: str) -> NDArray:
        """``self (op) other`` elementwise: a bool array (float32 0/1 on a v1 backend)."""
        dev = self._device
        if dev.version == 1:
            return self._compare_v1(other, op)
        if type(other) is NDArray:
            if op in _SWAPPED:  # a < b is b > a
                return other._compare(self, _SWAPPED[op])
            a, b = self._operands(other, f"ewise_{op}")
            if a._dtype == "bool":
                a, b = a._cast("int32"), b._cast("int32")
            return a._run(f"ewise_{op}", "compare", "bool", b)
        if type(other) in _SCALARS or isinstance(other, _REAL):
            dtype = dt.scalar_result(self._dtype, other)
            if dtype == "bool":
                dtype = "int32"
            a = self._cast(dtype)
            return a._run(f"scalar_{op}", "compare", "bool", dt.python_scalar(other, dtype))
        return NotImplemented

    def _compare_v1(self, other: Any, op: str) -> NDArray:
        """Comparisons from a v1 backend's eq and ge (float32 1.0/0.0), NaN-correct."""
        if not (type(other) is NDArray or isinstance(other, _REAL)):
            return NotImplemented
        eq = self._arith_kernel("eq", other)
        if op == "eq":
            return eq
        if op == "ne":
            return 1.0 - eq
        if isinstance(other, NDArray) and op in _SWAPPED:
            return other._compare_v1(self, _SWAPPED[op])
        ge = self._arith_kernel("ge", other)
        if op == "ge":
            return ge
        if op == "gt":
            return ge - eq
        ordered = self._arith_kernel("eq", self)  # 0 where self is NaN
        return ordered - ge + (eq if op == "le" else 0.0)  # lt / le against a scalar

    def _arith_kernel(self, name: str, other: Any) -> NDArray:
        if type(other) is NDArray:
            a, b = self._operands(other, f"ewise_{name}")
            return a._run(f"ewise_{name}", "compare", None, b)
        return self._run(f"scalar_{name}", "compare", None, float(other))

    def _unary(self, name: str) -> NDArray:
        return self._cast(dt.float_of(self._dtype))._run(name, "unary", None)

    def __add__(self, other: Any) -> NDArray:
        return self._arith(other, "add")

    __radd__ = __add__

    def __sub__(self, other: Any) -> NDArray:
        if isinstance(other, NDArray):
            if self._dtype == "bool" and other._dtype == "bool":
                raise TypeError("subtracting bool arrays is not supported (numpy refuses it too)")
            return self + (-other._cast(dt.promote(self._dtype, other._dtype)))
        if isinstance(other, _REAL):
            return self._cast(dt.scalar_result(self._dtype, other)) + (-other)
        return NotImplemented

    def __rsub__(self, other: Any) -> NDArray:
        if not isinstance(other, _REAL):
            return NotImplemented
        return (-self._cast(dt.scalar_result(self._dtype, other))) + other

    def __mul__(self, other: Any) -> NDArray:
        return self._arith(other, "mul")

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> NDArray:
        return self._arith(other, "div", float_only=True)

    def __rtruediv__(self, other: Any) -> NDArray:
        if not isinstance(other, _REAL):
            return NotImplemented
        dtype = dt.float_of(dt.scalar_result(self._dtype, other))
        return full(self._shape, other, dtype=dtype, device=self._device) / self

    def __neg__(self) -> NDArray:
        if self._dtype == "bool":
            raise TypeError("negating a bool array is not supported; use == False")
        return self * -1

    def __pow__(self, other: Any) -> NDArray:
        if isinstance(other, NDArray):
            a, b = self._operands(other, "ewise_power")
            if a._dtype == "bool":
                a, b = a._cast("int64"), b._cast("int64")
            if not dt.is_float(a._dtype) and b.size and (b < 0).any():
                raise ValueError("integers to negative integer powers are not allowed")
            if self._device.has("ewise_power"):
                return a._run("ewise_power", "arithmetic", None, b)
            return (a._unary("ewise_log") * b).exp()._cast(a._dtype)
        if isinstance(other, _REAL):
            dtype = dt.scalar_result(self._dtype, other)
            if dtype == "bool":
                dtype = "int64"
            if not dt.is_float(dtype) and other < 0:
                raise ValueError("integers to negative integer powers are not allowed")
            value = dt.python_scalar(other, dtype)
            return self._cast(dtype)._run("scalar_power", "arithmetic", None, value)
        return NotImplemented

    def __rpow__(self, other: Any) -> NDArray:
        if not isinstance(other, _REAL):
            return NotImplemented
        dtype = dt.scalar_result(self._dtype, other)
        return full(self._shape, other, dtype=dtype, device=self._device) ** self

    def maximum(self, other: Any) -> NDArray:
        return self._arith(other, "maximum")

    def any(self) -> bool:
        """True when some element is nonzero (True)."""
        return bool(self._size) and bool((self != 0).sum().item())

    def __eq__(self, other: Any) -> NDArray:  # type: ignore[override]
        return self._compare(other, "eq")

    def __ne__(self, other: Any) -> NDArray:  # type: ignore[override]
        return self._compare(other, "ne")

    def __ge__(self, other: Any) -> NDArray:
        return self._compare(other, "ge")

    def __gt__(self, other: Any) -> NDArray:
        return self._compare(other, "gt")

    def __le__(self, other: Any) -> NDArray:
        return self._compare(other, "le")

    def __lt__(self, other: Any) -> NDArray:
        return self._compare(other, "lt")

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
        dev = self._device
        if (  # the common case first: one dtype and device, 2-D, aligned, nothing empty
            type(other) is NDArray
            and other._device is dev
            and other._dtype == self._dtype
            and len(self._shape) == 2
            and len(other._shape) == 2
            and self._shape[1] == other._shape[0]
            and self._size
            and other._size
            and self._dtype in dev.dtypes.get("matmul", ())
        ):
            (m, n), p = self._shape, other._shape[1]
            out = NDArray._alloc((m, p), self._dtype, dev)
            if dev.has("matmul_t"):
                (ha, ta), (hb, tb) = self._gemm_operand(), other._gemm_operand()
                if ta or tb:
                    dev.mod.matmul_t(ha, hb, out._handle, m, n, p, ta, tb)
                else:
                    dev.mod.matmul(ha, hb, out._handle, m, n, p)
                return out
            dev.mod.matmul(self.compact()._handle, other.compact()._handle, out._handle, m, n, p)
            return out
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
        a, b = self._matmul_operands(other)
        out = NDArray.make((m, p), device=self._device, dtype=a._dtype)
        if m * p == 0:
            return out
        if n == 0:
            out.fill(0)
            return out
        if self._device.has("matmul_t"):  # a transposed operand is read in place, not copied
            (ha, ta), (hb, tb) = a._gemm_operand(), b._gemm_operand()
            if ta or tb:
                self._device.mod.matmul_t(ha, hb, out._handle, m, n, p, ta, tb)
                return out
        self._device.mod.matmul(a.compact()._handle, b.compact()._handle, out._handle, m, n, p)
        return out

    def _gemm_operand(self) -> tuple[Any, bool]:
        """``(handle, transposed)`` of a 2-D operand: its own buffer when the view is compact or
        the transpose of a whole compact buffer (``transposed``), else a compact copy's."""
        if self.is_compact():
            return self._handle, False
        rows = self._shape[0]
        if self._offset == 0 and self._strides == (1, rows) and self._size == self._handle.size:
            return self._handle, True
        return self._copy()._handle, False

    def _matmul_operands(self, other: NDArray) -> tuple[NDArray, NDArray]:
        """Both operands in one dtype the backend's matmul group takes."""
        common = dt.promote(self._dtype, other._dtype)
        if common == "bool":
            raise dt.DTypeError("matmul of bool arrays is not supported; cast them to int32")
        if common not in self._device.dtypes.get("matmul", ()):
            raise _unsupported(self._device, "matmul", common, "matmul")
        return self._cast(common), other._cast(common)

    # ------------------------------------------------------------------ reductions

    def _reduce(self, axis: Any, keepdims: bool, kernel: str) -> NDArray:
        if kernel == "reduce_sum" and self._dtype in ("bool", "int32"):  # numpy sums to int64
            return self._cast(dt.DEFAULT_INT)._reduce(axis, keepdims, kernel)
        if self._dtype == "bool":  # max of bools: any
            return self._cast("int32")._reduce(axis, keepdims, kernel)._cast("bool")
        dev = self._device
        if self._dtype not in dev.dtypes.get("reduce", ()):
            raise _unsupported(dev, kernel, self._dtype, "reduce")
        if (
            axis == 0
            and not keepdims
            and kernel == "reduce_sum"
            and len(self._shape) == 2
            and self._shape[0]
            and self._dtype in dev.dtypes.get("matmul", ())
            and self.is_compact()
        ):
            return self._column_sums()
        axes = st.normalize_axes(axis, self.ndim)
        keep = [d for i, d in enumerate(self._shape) if i not in axes]
        reduce_size = st.prod(self._shape[a] for a in axes)
        order = [i for i in range(self.ndim) if i not in axes] + list(axes)
        view = self.permute(order) if order != list(range(self.ndim)) else self
        out = NDArray.make(keep, device=dev, dtype=self._dtype)
        if out.size:
            if reduce_size == 0:
                if kernel == "reduce_max":
                    raise ValueError("max of an empty axis has no identity")
                out.fill(0)
            elif (
                kernel == "reduce_sum"
                and order != list(range(self.ndim))
                and axes == tuple(range(len(axes)))
                and self.is_compact()
                and self._dtype in dev.dtypes.get("matmul", ())
            ):
                # A sum over leading axes (bias gradients) is ones(1, r) @ a(r, rest): one GEMM
                # over the data as it lies, instead of transposing it for reduce_sum.
                ones = full((1, reduce_size), 1, dtype=self._dtype, device=dev)
                rest = self._size // reduce_size
                dev.mod.matmul(ones._handle, self._handle, out._handle, 1, reduce_size, rest)
            else:
                getattr(dev.mod, kernel)(view.compact()._handle, out._handle, reduce_size)
        if keepdims:
            out = out.reshape(tuple(1 if i in axes else d for i, d in enumerate(self._shape)))
        return out

    def _column_sums(self) -> NDArray:
        """Sums over axis 0 of a compact 2-D array (a bias gradient): ``ones(1, r) @ self``,
        one GEMM over the data as it lies. The ones are kept between calls (never written)."""
        rows, cols = self._shape
        dev = self._device
        key = (dev.name, self._dtype, rows)
        ones = _ONES.get(key)
        if ones is None or ones._device is not dev:
            if rows <= 1 << 14:  # kept: at most 64 vectors of 64 KiB
                from ..replay import untraced

                with untraced():  # a cached constant: never one of a replay's scratch buffers
                    ones = full((1, rows), 1, dtype=self._dtype, device=dev)
                if len(_ONES) >= 64:
                    _ONES.clear()
                _ONES[key] = ones
            else:
                ones = full((1, rows), 1, dtype=self._dtype, device=dev)
        out = NDArray._alloc((cols,), self._dtype, dev)
        if cols:
            dev.mod.matmul(ones._handle, self._handle, out._handle, 1, rows, cols)
        return out

    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> NDArray:
        """Sum over ``axis`` (an int, a tuple, or None for all); integers and bools sum to int64."""
        return self._reduce(axis, keepdims, "reduce_sum")

    def max(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> NDArray:
        """Maximum over ``axis`` (an int, a tuple, or None for all)."""
        return self._reduce(axis, keepdims, "reduce_max")


def array(a: Any, dtype: Any = "float32", device: BackendDevice | str | None = None) -> NDArray:
    """The course's ``nd.array``: copy ``a`` onto ``device`` as ``dtype`` (float32 by default)."""
    return NDArray(a, device=device, dtype=dtype)


def empty(shape: Sequence[int], dtype: Any = "float32", device: Any = None) -> NDArray:
    """An uninitialised array of ``shape``."""
    return NDArray.make(shape, device=device, dtype=dtype)


def full(
    shape: Sequence[int], fill_value: Any, dtype: Any = "float32", device: Any = None
) -> NDArray:
    """An array of ``shape`` filled with ``fill_value``."""
    out = NDArray.make(shape, device=device, dtype=dtype)
    if out.size:
        out._device.mod.fill(out._handle, dt.python_scalar(fill_value, out._dtype))
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
