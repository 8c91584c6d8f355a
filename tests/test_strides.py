"""Stride and index math (needle.backend_ndarray.strides) against numpy's own strides.

Pure functions, no backend: every view is checked against the numpy array that
the same indexing gives, via ``arr.strides // itemsize`` and the data pointer.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from needle.backend_ndarray import strides as st

ITEM = np.dtype(np.float32).itemsize

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:  # numpy < 2
    byte_bounds = np.byte_bounds


def _base(shape) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def _index(base: np.ndarray, index) -> np.ndarray:
    """numpy's ``base[index]``, always as a view (a trailing Ellipsis keeps 0-d results arrays)."""
    idx = index if isinstance(index, tuple) else (index,)
    if not any(i is Ellipsis for i in idx):
        idx = idx + (Ellipsis,)
    return base[idx]


def _flip(view: np.ndarray, axes) -> np.ndarray:
    """numpy's flip of ``axes`` as a view (np.flip turns 0-d results into scalars)."""
    axes = {a % view.ndim for a in axes}
    flips = tuple(slice(None, None, -1) if a in axes else slice(None) for a in range(view.ndim))
    return view[(*flips, Ellipsis)]


def _layout(view: np.ndarray, base: np.ndarray) -> tuple[tuple, tuple, int]:
    """(shape, strides, offset) of a numpy view of ``base``, in elements."""
    offset = (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // ITEM
    return view.shape, tuple(s // ITEM for s in view.strides), offset


def _as_view(base: np.ndarray, shape, strides, offset) -> np.ndarray:
    """Our (shape, strides, offset) applied to ``base``'s buffer by numpy."""
    flat = base.reshape(-1)
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, np.float32)
    st.check_view_in_bounds(tuple(shape), tuple(strides), offset, flat.size)
    return np.lib.stride_tricks.as_strided(flat[offset:], shape, [s * ITEM for s in strides])


shapes = hs.lists(hs.integers(0, 5), min_size=0, max_size=4).map(tuple)
nonempty_shapes = hs.lists(hs.integers(1, 5), min_size=1, max_size=4).map(tuple)


@hs.composite
def shape_and_index(draw, allow_ellipsis: bool = True):
    """A shape and a valid numpy basic index for it: ints, slices, maybe one Ellipsis."""
    shape = draw(hs.lists(hs.integers(0, 6), min_size=1, max_size=4).map(tuple))
    index = []
    for dim in shape[: draw(hs.integers(0, len(shape)))]:
        if dim > 0 and draw(hs.booleans()):
            index.append(draw(hs.integers(-dim, dim - 1)))
        else:
            start = draw(hs.none() | hs.integers(-dim - 3, dim + 3))
            stop = draw(hs.none() | hs.integers(-dim - 3, dim + 3))
            step = draw(hs.none() | hs.integers(-4, 4).filter(bool))
            index.append(slice(start, stop, step))
    if allow_ellipsis and draw(hs.booleans()):
        index.insert(draw(hs.integers(0, len(index))), Ellipsis)
    if len(index) == 1 and draw(hs.booleans()):
        return shape, index[0]  # a bare index, not a tuple
    return shape, tuple(index)


# ---------------------------------------------------------------------- compact strides


@settings(deadline=None)
@given(nonempty_shapes)
def test_compact_strides_match_numpy(shape) -> None:
    want = tuple(s // ITEM for s in np.empty(shape, np.float32).strides)
    assert st.compact_strides(shape) == want, f"compact_strides{shape}"
    assert st.is_compact(shape, want, 0, int(np.prod(shape)))


def test_compact_strides_of_empty_shapes() -> None:
    # numpy zeroes the strides of empty arrays; the row-major formula still holds here
    assert st.compact_strides((0,)) == (1,)
    assert st.compact_strides((2, 0, 3)) == (0, 3, 1)


def test_compact_strides_of_a_scalar_and_is_compact() -> None:
    assert st.compact_strides(()) == ()
    assert st.prod(()) == 1
    assert not st.is_compact((2, 3), (3, 1), 1, 7), "a non-zero offset is not compact"
    assert not st.is_compact((2, 3), (1, 2), 0, 6), "column-major is not compact"
    assert not st.is_compact((2, 3), (3, 1), 0, 12), "part of a larger buffer is not compact"


# ---------------------------------------------------------------------- reshape


@pytest.mark.parametrize(
    "old,new",
    [((2, 3, 4), (6, 4)), ((2, 3, 4), (-1,)), ((2, 3, 4), (4, -1)), ((2, 3, 4), (2, -1, 2)),
     ((0, 3), (-1, 3)), ((0, 3), (3, 0)), ((), (1, 1)), ((1,), ()), ((5,), (5, 1, -1))],
)  # fmt: skip
def test_reshape_shape_matches_numpy(old, new) -> None:
    assert st.reshape_shape(old, new) == np.empty(old).reshape(new).shape, f"{old} -> {new}"


@pytest.mark.parametrize(
    "old,new,match",
    [((2, 3), (4, 2), "6 elements"), ((2, 3), (-1, -1), "one dimension"),
     ((2, 3), (4, -1), "cannot reshape"), ((0, 3), (0, -1), "cannot reshape")],
)  # fmt: skip
def test_reshape_shape_errors(old, new, match) -> None:
    with pytest.raises(ValueError):
        np.empty(old).reshape(new)  # numpy refuses too
    with pytest.raises(ValueError, match=match):
        st.reshape_shape(old, new)


def test_reshape_shape_rejects_negative_dimensions_other_than_minus_one() -> None:
    # numpy quietly reads any negative dimension as -1; needle names the mistake
    with pytest.raises(ValueError, match="negative dimension"):
        st.reshape_shape((2, 3), (-2, 3))


# ---------------------------------------------------------------------- permute


@settings(deadline=None)
@given(nonempty_shapes.flatmap(lambda s: hs.tuples(hs.just(s), hs.permutations(range(len(s))))))
def test_permute_matches_numpy_transpose(case) -> None:
    shape, axes = case
    base = _base(shape)
    want = _layout(base.transpose(axes), base)
    got_shape, got_strides = st.permute(shape, st.compact_strides(shape), axes)
    assert (got_shape, got_strides) == want[:2], f"permute {shape} by {axes}"


def test_permute_accepts_negative_axes_and_rejects_non_permutations() -> None:
    assert st.permute((2, 3, 4), (12, 4, 1), (-1, 0, 1)) == ((4, 2, 3), (1, 12, 4))
    with pytest.raises(ValueError, match="not a permutation"):
        st.permute((2, 3, 4), (12, 4, 1), (0, 0, 1))
    with pytest.raises(ValueError, match="not a permutation"):
        st.permute((2, 3, 4), (12, 4, 1), (0, 1))
    with pytest.raises(IndexError, match="axis 3"):
        st.permute((2, 3, 4), (12, 4, 1), (0, 1, 3))


# ---------------------------------------------------------------------- broadcasting


@hs.composite
def broadcastable(draw):
    """A target shape and a shape that broadcasts to it (size-1 or dropped leading axes)."""
    target = draw(hs.lists(hs.integers(1, 4), min_size=0, max_size=4).map(tuple))
    keep = draw(hs.integers(0, len(target)))
    source = tuple(d if draw(hs.booleans()) else 1 for d in target[len(target) - keep :])
    return source, target


@settings(deadline=None)
@given(broadcastable())
def test_broadcast_to_matches_numpy(case) -> None:
    shape, target = case
    base = _base(shape)
    want = np.broadcast_to(base, target)
    got = st.broadcast_to(shape, st.compact_strides(shape), target)
    msg = f"broadcast_to {shape} -> {target}"
    assert np.array_equal(_as_view(base, target, got, 0), want), msg
    # the stride of a length-1 axis is never used (numpy writes 0 there, needle keeps it)
    want_strides = _layout(want, base)[1]
    assert [s for s, d in zip(got, target) if d > 1] == [
        s for s, d in zip(want_strides, target) if d > 1
    ], msg


@settings(deadline=None)
@given(hs.lists(shapes, min_size=1, max_size=3))
def test_broadcast_shapes_matches_numpy(shape_list) -> None:
    try:
        want = np.broadcast_shapes(*shape_list)
    except ValueError:
        with pytest.raises(ValueError, match="do not broadcast"):
            st.broadcast_shapes(*shape_list)
        return
    assert st.broadcast_shapes(*shape_list) == want, f"broadcast_shapes{shape_list}"


@pytest.mark.parametrize(
    "shape,target", [((3,), (4,)), ((2, 3), (3,)), ((2, 1), (3, 3)), ((3,), (3, 2))]
)
def test_broadcast_to_errors_name_both_shapes(shape, target) -> None:
    with pytest.raises(ValueError):
        np.broadcast_to(np.empty(shape), target)
    with pytest.raises(ValueError, match=rf"{shape}".replace("(", r"\(").replace(")", r"\)")):
        st.broadcast_to(shape, st.compact_strides(shape), target)


def test_broadcast_shapes_error_names_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\), \(4, 3\)"):
        st.broadcast_shapes((2, 3), (4, 3))


# ---------------------------------------------------------------------- getitem


@settings(deadline=None, max_examples=300)
@given(shape_and_index())
def test_getitem_matches_numpy(case) -> None:
    shape, index = case
    base = _base(shape)
    msg = f"getitem {shape}[{index!r}]"
    try:
        view = _index(base, index)
    except IndexError:  # numpy refuses it: so must needle
        with pytest.raises(IndexError):
            st.getitem(shape, st.compact_strides(shape), 0, index)
        return
    got_shape, got_strides, got_offset, kept = st.getitem(
        shape, st.compact_strides(shape), 0, index
    )
    want_shape, want_strides, want_offset = _layout(view, base)
    assert got_shape == want_shape, msg
    assert np.array_equal(_as_view(base, got_shape, got_strides, got_offset), view), msg
    assert st.prod(kept) == view.size and len(kept) == len(shape), msg
    if view.size:  # numpy's strides and data pointer of empty views are not pinned down
        assert got_strides == want_strides, msg
        assert got_offset == want_offset, msg


@settings(deadline=None)
@given(shape_and_index(allow_ellipsis=False), shape_and_index(allow_ellipsis=False))
def test_getitem_composes_on_views(outer, inner) -> None:
    """Indexing a strided view (non-zero offset, negative strides) is numpy's double index."""
    shape, index = outer
    base = _base(shape)
    view = _index(base, index)
    v_shape, v_strides, v_offset, _ = st.getitem(shape, st.compact_strides(shape), 0, index)
    _, index2 = inner
    if isinstance(index2, tuple) and len(index2) > len(v_shape):
        index2 = index2[: len(v_shape)]
    try:
        want = _index(view, index2)
    except IndexError:
        with pytest.raises(IndexError):
            st.getitem(v_shape, v_strides, v_offset, index2)
        return
    got = st.getitem(v_shape, v_strides, v_offset, index2)
    assert np.array_equal(_as_view(base, *got[:3]), want), f"{shape}[{index!r}][{index2!r}]"


@pytest.mark.parametrize(
    "index",
    [(1, -1), (-2,), (slice(-3, None),), (slice(None, -1), slice(None, None, -1)),
     (slice(-1, -4, -1), 2), (slice(None, None, -2), Ellipsis), (Ellipsis, slice(3, 0, -2)),
     (Ellipsis,), (0, Ellipsis, 1), (slice(10, -10, -3),), (slice(-10, 10, 2), -3), ()],
    ids=repr,
)  # fmt: skip
def test_getitem_examples(index) -> None:
    shape = (4, 3, 5)
    base = _base(shape)
    got = st.getitem(shape, st.compact_strides(shape), 0, index)
    assert got[:3] == _layout(_index(base, index), base), f"getitem {shape}[{index!r}]"


@pytest.mark.parametrize(
    "index,error,match",
    [((4,), IndexError, "index 4 is out of bounds for axis 0 with size 4"),
     ((0, -4), IndexError, "index -4 is out of bounds for axis 1 with size 3"),
     ((0, 0, 0, 0), IndexError, "too many indices"),
     ((Ellipsis, 0, Ellipsis), IndexError, "single ellipsis"),
     ((0, 1.5), TypeError, "axis 1 must be an int or a slice, got float"),
     (("a",), TypeError, "got str"), ((None,), TypeError, "got NoneType"),
     ((slice(None, None, 0),), ValueError, "step")],
    ids=repr,
)  # fmt: skip
def test_getitem_errors(index, error, match) -> None:
    shape = (4, 3, 5)
    with pytest.raises(error, match=match):
        st.getitem(shape, st.compact_strides(shape), 0, index)


# ---------------------------------------------------------------------- flip


@settings(deadline=None)
@given(shape_and_index(allow_ellipsis=False), hs.data())
def test_flip_matches_numpy(case, data) -> None:
    shape, index = case
    base = _base(shape)
    view = _index(base, index)
    v_shape, v_strides, v_offset, _ = st.getitem(shape, st.compact_strides(shape), 0, index)
    ndim = len(v_shape)
    axes = data.draw(
        hs.lists(hs.integers(-ndim, ndim - 1), unique_by=lambda a: a % ndim)
        if ndim
        else hs.just([])
    )
    want = _flip(view, axes)
    strides, offset = st.flip(v_shape, v_strides, v_offset, axes)
    msg = f"flip {shape}[{index!r}] over {axes}"
    assert np.array_equal(_as_view(base, v_shape, strides, offset), want), msg
    if want.size:
        assert (strides, offset) == _layout(want, base)[1:], msg


def test_flip_all_axes_and_errors() -> None:
    assert st.flip((2, 3), (3, 1), 0, None) == ((-3, -1), 5)
    assert st.flip((2, 3), (3, 1), 0, -1) == ((3, -1), 2)
    with pytest.raises(IndexError, match="axis 2"):
        st.flip((2, 3), (3, 1), 0, (2,))
    with pytest.raises(ValueError, match="repeated axis"):
        st.flip((2, 3), (3, 1), 0, (1, -1))


# ---------------------------------------------------------------------- extent and bounds


@settings(deadline=None)
@given(shape_and_index(allow_ellipsis=False), hs.booleans())
def test_extent_matches_numpy_byte_bounds(case, flipped) -> None:
    shape, index = case
    base = _base(shape)
    if base.size == 0:
        return
    view = _index(base, index)
    got = st.getitem(shape, st.compact_strides(shape), 0, index)[:3]
    if flipped:
        view = _flip(view, range(view.ndim))
        got = (got[0], *st.flip(*got, None))
    lo, hi = st.extent(*got)
    if view.size == 0:
        assert hi < lo, "an empty view touches nothing"
        return
    start = base.__array_interface__["data"][0]
    low, high = byte_bounds(view)
    assert (lo, hi) == ((low - start) // ITEM, (high - start) // ITEM - 1), f"{shape}[{index}]"
    st.check_view_in_bounds(*got, base.size)  # any numpy view of base is in bounds


@pytest.mark.parametrize(
    "shape,strides,offset,size,ok",
    [((2, 3), (3, 1), 0, 6, True), ((2, 3), (3, 1), 1, 6, False),
     ((2, 3), (-3, -1), 5, 6, True), ((2, 3), (-3, -1), 4, 6, False),
     ((4,), (0,), 5, 6, True), ((4,), (0,), 6, 6, False), ((3,), (2,), 1, 6, True),
     ((3,), (2,), 2, 6, False), ((0, 5), (100, 1), 50, 6, True), ((), (), 5, 6, True),
     ((), (), 6, 6, False), ((2,), (-1,), 0, 6, False)],
)  # fmt: skip
def test_check_view_in_bounds(shape, strides, offset, size, ok) -> None:
    if ok:
        st.check_view_in_bounds(shape, strides, offset, size)
        if st.prod(shape):  # numpy agrees the view fits
            buf = np.arange(size, dtype=np.float32)
            _as_view(buf, shape, strides, offset)
    else:
        with pytest.raises(ValueError, match=f"outside a buffer of {size}"):
            st.check_view_in_bounds(shape, strides, offset, size)


def test_check_view_in_bounds_rejects_malformed_views() -> None:
    with pytest.raises(ValueError, match="negative dimension"):
        st.check_view_in_bounds((2, -1), (1, 1), 0, 10)
    with pytest.raises(ValueError, match="different lengths"):
        st.check_view_in_bounds((2, 3), (1,), 0, 10)


def test_normalize_axes() -> None:
    assert st.normalize_axes(None, 3) == (0, 1, 2)
    assert st.normalize_axes(-1, 3) == (2,)
    assert st.normalize_axes([2, -3], 3) == (0, 2)
    with pytest.raises(IndexError, match="axis 3 is out of range"):
        st.normalize_axis(3, 3)
    with pytest.raises(TypeError, match="axis must be an integer"):
        st.normalize_axis(1.0, 3)
    with pytest.raises(ValueError, match="repeated axis"):
        st.normalize_axes((1, -2), 3)
