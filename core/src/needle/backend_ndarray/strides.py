"""Stride and index math for strided arrays: pure functions, no backend, no state.

Every view operation of :class:`needle.backend_ndarray.NDArray` is a function
from ``(shape, strides, offset)`` to a new ``(shape, strides, offset)``; they
live here, apart from NDArray, so they can be tested on their own; NDArray and the
ops call them, and backends only ever receive their results as kernel arguments.
Strides and offsets count elements, not bytes.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence

__all__ = [
    "check_shape",
    "check_strides",
    "prod",
    "compact_strides",
    "is_compact",
    "is_dense",
    "normalize_axis",
    "normalize_axes",
    "reshape_shape",
    "permute",
    "broadcast_shapes",
    "broadcast_to",
    "getitem",
    "flip",
    "extent",
    "check_view_in_bounds",
]

Shape = tuple[int, ...]


def check_shape(shape: Sequence[int], what: str = "shape") -> Shape:
    """``shape`` as a tuple of non-negative ints, or a ``TypeError``/``ValueError`` naming it."""
    if type(shape) is tuple:  # the common case, checked in a plain loop (3x all()'s speed)
        for d in shape:
            if type(d) is not int or d < 0:
                break
        else:
            return shape
    try:
        out = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of ints, got {shape!r}") from None
    if out and min(out) < 0:
        raise ValueError(f"negative dimension in {what} {out}")
    return out


def check_strides(strides: Sequence[int], ndim: int) -> Shape:
    """``strides`` as a tuple of ``ndim`` ints (any sign), or an error naming them."""
    try:
        out = tuple(operator.index(s) for s in strides)
    except TypeError:
        raise TypeError(f"strides must be a sequence of ints, got {strides!r}") from None
    if len(out) != ndim:
        raise ValueError(f"strides {out} do not have one entry per dimension ({ndim})")
    return out


def prod(shape: Sequence[int]) -> int:
    """Number of elements of ``shape`` (1 for a scalar shape ``()``)."""
    return math.prod(shape)


@functools.lru_cache(maxsize=1024)
def is_dense(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """True when ``(shape, strides)`` from offset 0 visits each of ``prod(shape)`` elements
    exactly once: a compact array with its axes in some order (a transpose)."""
    expect = 1
    for stride, dim in sorted((s, d) for d, s in zip(shape, strides) if d != 1):
        if stride != expect:
            return False
        expect *= dim
    return True


@functools.lru_cache(maxsize=4096)
def compact_strides(shape: tuple[int, ...]) -> Shape:
    """Row-major strides of a dense array of ``shape`` (a tuple; results are cached)."""
    stride, out = 1, []
    for dim in reversed(shape):
        out.append(stride)
        stride *= dim
    return tuple(reversed(out))


def is_compact(shape: Shape, strides: Shape, offset: int, size: int) -> bool:
    """True when the view covers a whole buffer of ``size`` elements densely, in order."""
    return offset == 0 and strides == compact_strides(shape) and prod(shape) == size


def normalize_axis(axis: int, ndim: int) -> int:
    """Turn a possibly negative ``axis`` into ``0 <= axis < ndim`` or raise ``IndexError``."""
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None
    if not -ndim <= axis < ndim:
        raise IndexError(f"axis {axis} is out of range for an array of {ndim} dimensions")
    return axis % ndim


def normalize_axes(axes: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Axes as a sorted tuple of distinct non-negative ints; ``None`` means all axes."""
    if axes is None:
        return tuple(range(ndim))
    if not isinstance(axes, (tuple, list)):
        axes = (axes,)
    out = tuple(sorted(normalize_axis(a, ndim) for a in axes))
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {tuple(axes)}")
    return out


def reshape_shape(old: Shape, new: Sequence[int]) -> Shape:
    """Resolve one ``-1`` in ``new`` and check the element count matches ``old``."""
    if type(new) is tuple and type(old) is tuple and all(type(d) is int for d in new):
        return _reshape_shape_cached(old, new)  # (2.0,) == (2,): only exact ints are cached
    return _reshape_shape(old, new)


@functools.lru_cache(maxsize=1024)
def _reshape_shape_cached(old: Shape, new: Shape) -> Shape:
    """:func:`reshape_shape` for tuples, cached (training loops repeat the same shapes)."""
    return _reshape_shape(old, new)


def _reshape_shape(old: Shape, new: Sequence[int]) -> Shape:
    new = tuple(operator.index(d) for d in new)
    if new.count(-1) > 1:
        raise ValueError(f"can only infer one dimension in reshape to {new}")
    if any(d < -1 for d in new):
        raise ValueError(f"negative dimension in reshape to {new}")
    size = prod(old)
    if -1 in new:
        known = prod(d for d in new if d != -1)
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape array of shape {old} into {new}")
        new = tuple(size // known if d == -1 else d for d in new)
    if prod(new) != size:
        raise ValueError(
            f"cannot reshape array of shape {old} ({size} elements) into {new} ({prod(new)})"
        )
    return new


def permute(shape: Shape, strides: Shape, axes: Sequence[int]) -> tuple[Shape, Shape]:
    """Reorder dimensions: ``axes`` must be a permutation of ``range(ndim)``."""
    ndim = len(shape)
    axes = tuple(axes)
    if all(type(a) is int for a in axes):  # (1.0, 0) == (1, 0): only exact ints are cached
        axes = _permutation(axes, ndim)
    else:
        axes = _permutation.__wrapped__(axes, ndim)
    return tuple(shape[a] for a in axes), tuple(strides[a] for a in axes)


@functools.lru_cache(maxsize=1024)
def _permutation(axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """``axes`` normalized and checked to be a permutation of ``range(ndim)`` (cached)."""
    axes = tuple(normalize_axis(a, ndim) for a in axes)
    if sorted(axes) != list(range(ndim)):
        raise ValueError(f"axes {axes} are not a permutation of {ndim} dimensions")
    return axes


def broadcast_shapes(*shapes: Sequence[int]) -> Shape:
    """The numpy broadcast of ``shapes`` or ``ValueError`` naming them."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(-ndim, 0):
        dims = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {', '.join(map(str, map(tuple, shapes)))} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcast_to(shape: Shape, strides: Shape, new_shape: Sequence[int]) -> Shape:
    """Strides viewing ``shape`` as ``new_shape``: stretched axes get stride 0.

    New leading axes may be added; an existing axis broadcasts only from size 1.
    """
    new_shape = check_shape(new_shape, "broadcast shape")
    lead = len(new_shape) - len(shape)
    if lead < 0:
        raise ValueError(f"cannot broadcast shape {shape} to fewer dimensions {new_shape}")
    out = [0] * lead
    for old, stride, new in zip(shape, strides, new_shape[lead:]):
        if old == new:
            out.append(stride)
        elif old == 1:
            out.append(0)
        else:
            raise ValueError(f"cannot broadcast shape {shape} to {new_shape}")
    return tuple(out)


def _slice_of(index: object, dim: int, axis: int) -> tuple[int, int, int, bool]:
    """(start, length, step, keep_axis) of one index along an axis of size ``dim``."""
    if isinstance(index, slice):
        start, stop, step = index.indices(dim)
        return start, len(range(start, stop, step)), step, True
    try:
        i = operator.index(index)
    except TypeError:
        raise TypeError(
            f"index along axis {axis} must be an int or a slice, got {type(index).__name__}"
        ) from None
    if not -dim <= i < dim:
        raise IndexError(f"index {i} is out of bounds for axis {axis} with size {dim}")
    return i % dim, 1, 1, False


def getitem(
    shape: Shape, strides: Shape, offset: int, idxs: object
) -> tuple[Shape, Shape, int, Shape]:
    """View for ``a[idxs]`` with ints and slices (any sign of start, stop and step).

    Returns ``(shape, strides, offset, kept_shape)``: ``kept_shape`` keeps an
    axis of length 1 for each integer index (the layout setitem writes into),
    ``shape`` drops them (numpy's result shape).
    """
    if not isinstance(idxs, tuple):
        idxs = (idxs,)
    if any(i is Ellipsis for i in idxs):
        if sum(i is Ellipsis for i in idxs) > 1:
            raise IndexError("an index can only have a single ellipsis")
        at = next(k for k, i in enumerate(idxs) if i is Ellipsis)
        fill = (slice(None),) * (len(shape) - len(idxs) + 1)
        idxs = idxs[:at] + fill + idxs[at + 1 :]
    if len(idxs) > len(shape):
        raise IndexError(f"too many indices ({len(idxs)}) for array of {len(shape)} dimensions")
    idxs = idxs + (slice(None),) * (len(shape) - len(idxs))
    new_shape, new_strides, kept = [], [], []
    for axis, (index, dim, stride) in enumerate(zip(idxs, shape, strides)):
        start, length, step, keep = _slice_of(index, dim, axis)
        offset += start * stride
        kept.append(length)
        if keep:
            new_shape.append(length)
            new_strides.append(stride * step)
    return tuple(new_shape), tuple(new_strides), offset, tuple(kept)


def flip(shape: Shape, strides: Shape, offset: int, axes: Sequence[int]) -> tuple[Shape, int]:
    """Strides and offset that reverse ``axes``: negative strides, no copy."""
    strides = list(strides)
    for a in normalize_axes(axes, len(shape)):
        if shape[a] > 0:
            offset += (shape[a] - 1) * strides[a]
        strides[a] = -strides[a]
    return tuple(strides), offset


def extent(shape: Shape, strides: Shape, offset: int) -> tuple[int, int]:
    """Lowest and highest element index a view touches (``(offset, offset - 1)`` when empty)."""
    if prod(shape) == 0:
        return offset, offset - 1
    lo = hi = offset
    for dim, stride in zip(shape, strides):
        reach = (dim - 1) * stride
        if reach < 0:
            lo += reach
        else:
            hi += reach
    return lo, hi


def check_view_in_bounds(shape: Shape, strides: Shape, offset: int, size: int) -> None:
    """Raise ``ValueError`` when a view of a ``size``-element buffer reaches outside it
    (:func:`needle.contract.check_view`, the contract's one bounds check)."""
    from ..contract import check_view

    check_view(size, shape, strides, offset)
