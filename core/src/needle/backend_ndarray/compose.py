"""Array operations composed of kernels: where NDArray chooses between an optional kernel
and a composition of the required ones (ops call these; they never reach a backend).

* :func:`batched_matmul`: numpy's batch broadcasting; ``bmm`` when declared, else one
  ``matmul`` per matrix (one big ``matmul`` when the right side is shared).
* :func:`conv2d`: ``conv2d`` when declared (square kernels, equal padding), else im2col.
* :func:`take_rows`, :func:`scatter_add_rows`: gathers and scatters of rows.
* :func:`one_hot`, :func:`gather`, :func:`scatter_add`: one-hot rows, gathers and
  scatter-adds of rows by an index *array* on the device (no host read of the indices); the
  backend's ``gather_rows``/``scatter_add_rows`` when declared, else one-hot products.
* :func:`softmax_cross_entropy`, :func:`softmax_cross_entropy_grad`: per-row softmax
  cross-entropy and its gradient; the backend's kernels of those names when declared (two
  passes over the logits), else logsumexp and a one-hot pick composed.
* :func:`batch_norm`, :func:`batch_norm_grad`: batch normalization for training over axis 1
  and its gradient; the backend's kernels of those names when declared (one call each way,
  running statistics included), else reductions and elementwise kernels.
* :func:`layer_norm`, :func:`layer_norm_grad`: layer normalization over the last axis and
  its gradient, composed of reductions and elementwise kernels.
* :func:`lstm_step`, :func:`lstm_step_grad`: one LSTM state update from the gates'
  pre-activations, and its gradient: every gate's activation by one ``tanh`` over the
  whole gate matrix (a sigmoid is ``tanh(x / 2) / 2 + 1/2``), then the cell's products.
* :func:`assign`: write an array into another's buffer (state updated in place).
* :func:`sgd_update`, :func:`adam_update`: optimizer updates of many parameters, in place;
  the backend's ``sgd_update``/``adam_update`` when declared (one call for all of them),
  else a composition of elementwise kernels whose last write goes to the state's buffer.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

from . import strides as st
from .ndarray import NDArray

__all__ = [
    "Padding", "pair", "batched_matmul", "conv2d", "take_rows", "scatter_add_rows", "assign",
    "pack", "unpack", "slices", "sgd_update", "adam_update", "one_hot", "gather", "scatter_add",
    "softmax_cross_entropy", "softmax_cross_entropy_grad", "batch_norm", "batch_norm_grad",
    "layer_norm", "layer_norm_grad", "lstm_step", "lstm_step_grad",
]  # fmt: skip

Padding = int | tuple[int, int]


def pair(padding: Padding) -> tuple[int, int]:
    """``(rows, columns)`` of zero padding from an int or a pair."""
    if isinstance(padding, (tuple, list)):
        ph, pw = (operator.index(p) for p in padding)
    else:
        ph = pw = operator.index(padding)
    return ph, pw


def batched_matmul(a: NDArray, b: NDArray) -> NDArray:
    """``a @ b`` on NDArrays of at least 2 dimensions, numpy's batch broadcasting rules."""
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul needs at least 2-D operands, got shapes {a.shape} and {b.shape}")
    if a.device != b.device:
        raise ValueError(f"matmul got arrays on {a.device.name} and {b.device.name}")
    (m, n), (n2, p) = a.shape[-2:], b.shape[-2:]
    if n != n2:
        raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not align ({n} != {n2})")
    if a.ndim == 2 and b.ndim == 2:
        return a @ b
    a, b = a._matmul_operands(b)
    batch = st.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if b.ndim == 2 and a.shape[:-2] == batch:  # (..., m, n) @ (n, p): one big product
        return (a.reshape((st.prod(batch) * m, n)) @ b).reshape(batch + (m, p))
    count = st.prod(batch)
    lhs = a.broadcast_to(batch + (m, n)).compact().reshape((count, m, n))
    rhs = b.broadcast_to(batch + (n, p)).compact().reshape((count, n, p))
    out = NDArray.make((count, m, p), device=a.device, dtype=lhs.dtype)
    if out.size == 0:
        return out.reshape(batch + (m, p))
    if n == 0:
        out.fill(0.0)
    elif a.device.has("bmm"):
        a.device.mod.bmm(lhs.handle, rhs.handle, out.handle, count, m, n, p)
    else:
        for i in range(count):
            out[i] = lhs[i] @ rhs[i]
    return out.reshape(batch + (m, p))


def conv2d(a: NDArray, b: NDArray, stride: int, padding: Padding) -> NDArray:
    """Forward convolution on NDArrays: the backend's ``conv2d`` when it declares one (square
    kernels, equal padding), else im2col (one strided view, one compact) and one matmul."""
    if a.ndim != 4 or b.ndim != 4:
        raise ValueError(
            f"conv needs an NHWC input and a (K, K, Cin, Cout) weight, got shapes {a.shape} "
            f"and {b.shape}"
        )
    n, h, w, cin = a.shape
    kh, kw, cin2, cout = b.shape
    if cin != cin2:
        raise ValueError(f"conv input has {cin} channels, the weight expects {cin2} ({b.shape})")
    if a.device != b.device:
        raise ValueError(f"conv got arrays on {a.device.name} and {b.device.name}")
    a, b = a._matmul_operands(b)
    ph, pw = pair(padding)
    ho, wo = (h + 2 * ph - kh) // stride + 1, (w + 2 * pw - kw) // stride + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"conv kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}"
        )
    out = NDArray._alloc((n, ho, wo, cout), a.dtype, a.device)
    if out.size == 0:
        return out
    if a.size == 0 or b.size == 0:
        out.fill(0.0)
        return out
    if kh == kw and ph == pw and a.device.has("conv2d"):
        a.device.mod.conv2d(
            a.compact().handle, b.compact().handle, out.handle,
            n, h, w, cin, cout, kh, stride, ph,
        )  # fmt: skip
        return out
    if ph or pw:
        a = a.pad(((0, 0), (ph, ph), (pw, pw), (0, 0)))
    sn, sh, sw, sc = a.strides
    cols = a.as_strided((n, ho, wo, kh, kw, cin), (sn, sh * stride, sw * stride, sh, sw, sc))
    patches = cols.compact().reshape((n * ho * wo, kh * kw * cin))
    return (patches @ b.compact().reshape((kh * kw * cin, cout))).reshape((n, ho, wo, cout))


def _row_copies(src: NDArray, dst: NDArray, moves: Sequence[tuple[int, int]], width: int) -> None:
    """Copy row ``i`` of compact ``src`` to row ``j`` of compact ``dst`` for each ``(i, j)``.

    Two contract calls per row through a one-row buffer (``compact`` reads a row at any
    offset, ``ewise_setitem`` writes one at any offset).
    """
    mod = src.device.mod
    row = NDArray.make((width,), device=src.device, dtype=src.dtype).handle
    shape, strides = (width,), (1,)
    for i, j in moves:
        mod.compact(src.handle, row, shape, strides, i * width)
        mod.ewise_setitem(row, dst.handle, shape, strides, j * width)


def take_rows(a: NDArray, rows: Sequence[int]) -> NDArray:
    """Rows ``rows`` of ``a`` along axis 0 (checked indices), as a new array."""
    out = NDArray.make((len(rows),) + a.shape[1:], device=a.device, dtype=a.dtype)
    width = st.prod(a.shape[1:])
    if out.size:
        _row_copies(a.compact(), out, [(i, j) for j, i in enumerate(rows)], width)
    return out


def scatter_add_rows(a: NDArray, indices: Sequence[int], count: int) -> NDArray:
    """Zeros of ``count`` rows with row ``j`` of ``a`` added into row ``indices[j]``."""
    out = a.device.full((count,) + a.shape[1:], 0, a.dtype)
    width = st.prod(a.shape[1:])
    if not out.size or not a.size:
        return out
    a = a.compact()
    first: dict[int, int] = {}  # target row -> first source row
    repeats: list[tuple[int, int]] = []
    for j, i in enumerate(indices):
        if i in first:
            repeats.append((j, i))
        else:
            first[i] = j
    _row_copies(a, out, [(j, i) for i, j in first.items()], width)
    for j, i in repeats:  # a repeated index: add its row (rare; a view sum per repeat)
        out[i] = out[i] + a[j]
    return out


_CLASSES: dict[tuple[str, str, int], NDArray] = {}  # (device, dtype, k) -> (1, k) of 0..k-1


def one_hot(index: NDArray, classes: int, dtype: str = "float32") -> NDArray:
    """``index.shape + (classes,)`` rows of the identity picked by the integer array ``index``,
    computed on the device (``index == 0..classes-1``)."""
    from ..replay import untraced

    count, dev = index.size, index.device
    key = (dev.name, index.dtype, classes)
    row = _CLASSES.get(key)
    if row is None:
        import numpy as np

        with untraced():  # a cached constant: never one of a replay's scratch buffers
            row = NDArray.from_numpy(np.arange(classes).reshape(1, classes), dev, index.dtype)
        _CLASSES[key] = row
    shape = (count, classes)
    hot = index.compact().reshape((count, 1)).broadcast_to(shape) == row.broadcast_to(shape)
    return hot._cast(dtype).reshape(index.shape + (classes,))


def _indices(index: NDArray) -> NDArray:
    return index._cast("int64").compact()


def gather(a: NDArray, index: NDArray) -> NDArray:
    """Rows of ``a`` (axis 0) at the integers of ``index`` (any shape), as a new array of shape
    ``index.shape + a.shape[1:]``; out-of-range indices raise ``IndexError`` where the
    backend checks them (``gather_rows``)."""
    if a.ndim < 1:
        raise ValueError("gather needs an array of at least one dimension")
    if a.device != index.device:
        raise ValueError(f"gather got arrays on {a.device.name} and {index.device.name}")
    count, rows, width = index.size, a.shape[0], st.prod(a.shape[1:])
    dev = a.device
    if dev.has("gather_rows") and dev.supports("int64"):
        out = NDArray.make((count, width), device=dev, dtype=a.dtype)
        if out.size:
            dev.mod.gather_rows(
                a.compact().handle, _indices(index).handle, out.handle, count, width
            )
    else:
        out = one_hot(index.reshape((count,)), rows, a.dtype) @ a.compact().reshape((rows, width))
    return out.reshape(index.shape + a.shape[1:])


def scatter_add(a: NDArray, index: NDArray, count: int) -> NDArray:
    """Zeros of ``count`` rows (of ``a.shape[index.ndim:]``) with row ``j`` of ``a`` added
    into row ``index[j]``, in order: the adjoint of :func:`gather`."""
    n = index.size
    rest = a.shape[index.ndim :]
    width = st.prod(rest)
    dev = a.device
    if dev.has("scatter_add_rows") and dev.supports("int64"):
        out = dev.full((count,) + rest, 0, a.dtype)
        if out.size and n:
            flat = a.compact()
            dev.mod.scatter_add_rows(flat.handle, _indices(index).handle, out.handle, n, width)
        return out
    hot = one_hot(index.reshape((n,)), count, a.dtype).permute((1, 0))
    return (hot.compact() @ a.compact().reshape((n, width))).reshape((count,) + rest)


def _labels_for(logits: NDArray, labels: NDArray) -> tuple[int, int]:
    if logits.ndim != 2:
        raise ValueError(f"softmax cross-entropy needs (N, k) logits, got shape {logits.shape}")
    n, k = logits.shape
    if labels.size != n:
        raise ValueError(f"softmax cross-entropy got {labels.size} labels for logits {(n, k)}")
    if labels.device != logits.device:
        raise ValueError(f"logits on {logits.device.name}, labels on {labels.device.name}")
    return n, k


def softmax_cross_entropy(logits: NDArray, labels: NDArray) -> tuple[NDArray, NDArray]:
    """``(losses, probs)``: per row ``i`` of float ``logits`` ``(N, k)`` with integer label
    ``l``, ``logsumexp(row) - row[l]``, and the row's softmax (for the gradient)."""
    n, k = _labels_for(logits, labels)
    dev = logits.device
    if dev.has("softmax_cross_entropy") and dev.supports("int64"):
        losses = NDArray._alloc((n,), logits.dtype, dev)
        probs = NDArray._alloc((n, k), logits.dtype, dev)
        dev.mod.softmax_cross_entropy(
            logits.compact().handle, _indices(labels).handle, losses.handle, probs.handle, n, k
        )
        return losses, probs
    import numpy as np

    big = float(np.finfo(logits.dtype).max)
    top = -((-logits.max(1, keepdims=True).maximum(-big)).maximum(-big))
    e = (logits + (-top).broadcast_to((n, k))).exp()
    total = e.sum(1, keepdims=True)
    picked = (logits * one_hot(labels.reshape((n,)), k, logits.dtype)).sum(1, keepdims=True)
    losses = (total.log() + top - picked).reshape((n,))
    return losses, e / total.broadcast_to((n, k))


def softmax_cross_entropy_grad(probs: NDArray, labels: NDArray, g: NDArray) -> NDArray:
    """``probs * g[:, None] - one_hot(labels) * g[:, None]``: the gradient of the losses of
    :func:`softmax_cross_entropy` for their adjoint ``g`` ``(N,)``."""
    n, k = _labels_for(probs, labels)
    dev = probs.device
    g = g._cast(probs.dtype).compact()
    if dev.has("softmax_cross_entropy_grad") and dev.supports("int64"):
        out = NDArray._alloc((n, k), probs.dtype, dev)
        dev.mod.softmax_cross_entropy_grad(
            probs.compact().handle, _indices(labels).handle, g.handle, out.handle, n, k
        )
        return out
    column = g.reshape((n, 1)).broadcast_to((n, k))
    return probs * column - one_hot(labels.reshape((n,)), k, probs.dtype) * column


class _Channels:
    """``x`` (N, C, ...) as a compact buffer ``(outer, C, inner)`` that normalizes per C, and
    the way back. A view whose memory is channels-last (a convolution's NHWC output seen as
    NCHW) is taken as it lies, ``(N * H * W, C, 1)``: no transposed copies either way."""

    def __init__(self, x: NDArray, kernel: str) -> None:
        if x.ndim < 2:
            raise ValueError(f"{kernel} needs 2 or more dimensions, got shape {x.shape}")
        channels, self.shape = x.shape[1], x.shape
        self.perm: tuple[int, ...] | None = None
        if x.ndim > 2 and not x.is_compact():
            perm = (0, *range(2, x.ndim), 1)
            if x.permute(perm).is_compact():
                self.perm = perm
        if self.perm is None:
            self.layout = (x.shape[0], channels, st.prod(x.shape[2:]))
        else:
            self.layout = (x.size // channels if channels else 0, channels, 1)

    def data(self, a: NDArray) -> NDArray:
        """``a`` (of ``x``'s shape) as the compact buffer of this layout."""
        if self.perm is None:
            return a.compact()
        return a.permute(self.perm).compact()

    def rows(self, a: NDArray) -> NDArray:
        """``a`` as compact rows ``(outer * inner, C)`` (core's composition works on those)."""
        outer, channels, inner = self.layout
        data = self.data(a)
        if inner == 1:
            return data.reshape((outer, channels))
        cube = data.reshape(self.layout).permute((0, 2, 1))
        return cube.compact().reshape((outer * inner, channels))

    def back(self, data: NDArray) -> NDArray:
        """A compact buffer of this layout as an array of ``x``'s shape."""
        if self.perm is None:
            return data.reshape(self.shape)
        moved = tuple(self.shape[i] for i in self.perm)
        return data.reshape(moved).permute(tuple(self.perm.index(i) for i in range(len(moved))))

    def from_rows(self, rows: NDArray) -> NDArray:
        outer, channels, inner = self.layout
        if inner == 1:
            return self.back(rows)
        cube = rows.reshape((outer, inner, channels)).permute((0, 2, 1)).compact()
        return self.back(cube)


def _per_row(vector: NDArray, shape: tuple[int, int]) -> NDArray:
    return vector.reshape((1, shape[1])).broadcast_to(shape)


def batch_norm(
    x: NDArray,
    weight: NDArray,
    bias: NDArray,
    eps: float,
    momentum: float = 0.0,
    running: tuple[NDArray, NDArray] | None = None,
) -> tuple[NDArray, NDArray, NDArray]:
    """``(out, mean, invstd)``: ``x`` (N, C, ...) normalized per channel (axis 1) with its
    batch's statistics, then scaled by ``weight`` and shifted by ``bias`` (both (C,)). With
    ``running = (running_mean, running_var)`` (compact (C,) buffers) and ``momentum``, those
    are updated in place: ``running = (1 - momentum) * running + momentum * batch``, with the
    biased batch variance (the course's). ``out`` has ``x``'s memory layout."""
    view = _Channels(x, "batch_norm")
    outer, channels, inner = view.layout
    if weight.size != channels or bias.size != channels:
        raise ValueError(f"batch_norm of {channels} channels got weight and bias of "
                         f"{weight.size} and {bias.size} values")  # fmt: skip
    if running is None:
        momentum = 0.0
    elif any(r.size != channels or not r.is_compact() for r in running):
        raise ValueError(f"batch_norm updates compact running statistics of {channels} values")
    dev, dtype = x.device, x.dtype
    weight, bias = weight._cast(dtype).compact(), bias._cast(dtype).compact()
    if dev.has("batch_norm") and all(r.dtype == dtype for r in running or ()):
        data = view.data(x)
        out = NDArray._alloc(data.shape, dtype, dev)
        mean = NDArray._alloc((channels,), dtype, dev)
        invstd = NDArray._alloc((channels,), dtype, dev)
        run = running if momentum != 0 else (mean, invstd)  # untouched when momentum is 0
        dev.mod.batch_norm(
            data.handle, weight.handle, bias.handle, out.handle, mean.handle, invstd.handle,
            run[0].handle, run[1].handle, outer, channels, inner, float(eps), float(momentum),
        )  # fmt: skip
        return view.back(out), mean, invstd
    rows = view.rows(x)
    count, shape = outer * inner, rows.shape
    mean = rows.sum(0) / count
    centered = rows - _per_row(mean, shape)
    var = (centered * centered).sum(0) / count
    invstd = (var + eps) ** -0.5
    out = (centered * _per_row(invstd, shape)) * _per_row(weight, shape) + _per_row(bias, shape)
    if momentum != 0:
        for buffer, batch in zip(running, (mean, var)):
            assign(buffer, buffer * (1 - momentum) + batch * momentum)
    return view.from_rows(out), mean, invstd


def batch_norm_grad(
    g: NDArray, x: NDArray, weight: NDArray, mean: NDArray, invstd: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """``(dx, dweight, dbias)``: the gradients of :func:`batch_norm`'s ``out`` for its adjoint
    ``g``, from the ``mean`` and ``invstd`` it returned (``dx`` in ``x``'s memory layout)."""
    view = _Channels(x, "batch_norm_grad")
    outer, channels, inner = view.layout
    if g.shape != x.shape:
        raise ValueError(f"batch_norm_grad: gradient of shape {g.shape} for x {x.shape}")
    dev, dtype = x.device, x.dtype
    g, weight = g._cast(dtype), weight._cast(dtype).compact()
    if dev.has("batch_norm_grad"):
        data = view.data(x)
        dx = NDArray._alloc(data.shape, dtype, dev)
        dweight = NDArray._alloc((channels,), dtype, dev)
        dbias = NDArray._alloc((channels,), dtype, dev)
        dev.mod.batch_norm_grad(
            view.data(g).handle, data.handle, weight.handle, mean.compact().handle,
            invstd.compact().handle, dx.handle, dweight.handle, dbias.handle, outer, channels,
            inner,
        )  # fmt: skip
        return view.back(dx), dweight, dbias
    rows, grows = view.rows(x), view.rows(g)
    count, shape = outer * inner, rows.shape
    xhat = (rows - _per_row(mean, shape)) * _per_row(invstd, shape)
    dbias = grows.sum(0)
    dweight = (grows * xhat).sum(0)
    # Signs flipped on the (C,) vectors, not on the (M, C) arrays: D negations, not M * D.
    spread = grows + _per_row(-(dbias / count), shape) + xhat * _per_row(-(dweight / count), shape)
    dx = _per_row(weight * invstd, shape) * spread
    return view.from_rows(dx), dweight, dbias


def assign(target: NDArray, value: NDArray) -> None:
    """Write ``value`` (same shape; cast to ``target``'s dtype) into compact ``target``'s buffer."""
    if value.shape != target.shape:
        raise ValueError(f"cannot assign shape {value.shape} to shape {target.shape}")
    if not target.is_compact():
        raise ValueError("assign writes into a compact array only")
    value = value._cast(target.dtype)
    if target.size:
        target.device.mod.compact(
            value.handle, target.handle, value.shape, value.strides, value.offset
        )


def pack(
    flat: NDArray, offsets: Sequence[int], arrays: Sequence[NDArray], scale: float = 1.0
) -> None:
    """Copy each of ``arrays`` (flattened) into compact 1-D ``flat`` at its offset, for
    gradient buckets: the backend's ``pack`` (one call for all) when declared, else one
    ``ewise_setitem`` each. A ``scale`` other than 1.0 then multiplies the whole of ``flat``
    in place (float dtypes), while it is still in cache: DDP's mean over ranks."""
    dev = flat.device
    handles = []
    for array in arrays:  # DDP calls this once a step for every gradient: kept tight
        if (array._device is not dev and array.device != dev) or array._dtype != flat._dtype:
            raise ValueError(
                f"pack: a {array.dtype} array on {array.device.name} into a {flat.dtype} "
                f"buffer on {dev.name}"
            )
        handles.append(array.compact().handle)
    scale = _float_scale("pack", flat.dtype, scale)
    _copy_ranges("pack", flat, offsets, handles)
    if scale != 1.0 and flat.size:
        dev.mod.scalar_mul(flat.handle, scale, flat.handle)


def unpack(
    flat: NDArray,
    offsets: Sequence[int],
    shapes: Sequence[tuple[int, ...]],
    scale: float = 1.0,
) -> list:
    """New compact arrays holding the parts of compact 1-D ``flat`` at ``offsets`` with
    ``shapes``, times ``scale`` (a float dtype's; 1.0: the bits as they are): the inverse of
    :func:`pack`, through the backend's ``unpack`` when declared."""
    dev, dtype = flat.device, flat.dtype
    scale = _float_scale("unpack", dtype, scale)
    parts = [NDArray._alloc(st.check_shape(shape), dtype, dev) for shape in shapes]
    handles = [part.handle for part in parts]
    _copy_ranges("unpack", flat, offsets, handles, scale)
    return parts


def slices(flat: NDArray, offsets: Sequence[int], shapes: Sequence[tuple[int, ...]]) -> list:
    """Compact arrays holding the parts of compact 1-D ``flat`` at ``offsets`` with
    ``shapes``: in ``flat``'s own memory through the backend's ``slices`` when declared
    (writes through a part show in ``flat`` and the memory lives while any part does), else
    copies (:func:`unpack`). DDP hands out averaged gradients this way, without a copy."""
    dev = flat.device
    if not dev.has("slices"):
        return unpack(flat, offsets, shapes)
    if not flat.is_compact() or len(flat.shape) != 1:
        raise ValueError("slices: the flat buffer must be a compact 1-D array")
    shapes = [st.check_shape(shape) for shape in shapes]
    handles = dev.mod.slices(flat.handle, tuple(offsets), tuple(math.prod(s) for s in shapes))
    return [NDArray._alloc(s, flat.dtype, dev, h) for s, h in zip(shapes, handles)]


def _float_scale(kind: str, dtype: str, scale: float) -> float:
    scale = float(scale)
    if scale != 1.0 and not dtype.startswith("float"):
        raise ValueError(f"{kind} scales float arrays only, not {dtype} (scale {scale})")
    return scale


def _copy_ranges(
    kind: str, flat: NDArray, offsets: Sequence[int], handles: list, scale: float = 1.0
) -> None:
    """pack (handles into flat) or unpack (flat, times ``scale``, into handles) at element
    ``offsets``."""
    if len(offsets) != len(handles):
        raise ValueError(f"{kind}: {len(handles)} arrays but {len(offsets)} offsets")
    if not flat.is_compact() or len(flat.shape) != 1:
        raise ValueError(f"{kind}: the flat buffer must be a compact 1-D array")
    for start, handle in zip(offsets, handles):
        if start < 0 or start + handle.size > flat.size:
            raise ValueError(f"{kind}: {handle.size} elements at {start} overrun {flat.size}")
    dev = flat.device
    mod = dev.mod
    if dev.has(kind):
        if kind == "pack":
            mod.pack(tuple(handles), flat.handle, tuple(offsets))
        else:
            mod.unpack(flat.handle, tuple(handles), tuple(offsets), scale)
    elif kind == "pack":
        for start, handle in zip(offsets, handles):
            if handle.size:
                mod.ewise_setitem(handle, flat.handle, (handle.size,), (1,), start)
    else:
        for start, handle in zip(offsets, handles):
            if handle.size:
                mod.compact(flat.handle, handle, (handle.size,), (1,), start)
                if scale != 1.0:
                    mod.scalar_mul(handle, scale, handle)


def _kernel(device: Any, name: str, *args: Any) -> None:
    getattr(device.mod, name)(*args)


def _check_state(kind: str, *groups: Sequence[NDArray]) -> tuple[Any, str]:
    first = groups[0][0]
    device, dtype = first.device, first.dtype
    for group in groups:
        for x in group:
            if (
                (x._device is not device and x.device != device)
                or x._dtype != dtype
                or not x.is_compact()
            ):
                raise ValueError(
                    f"{kind}: every parameter, gradient and state must be a compact {dtype} "
                    f"array on {device.name}; got a {x.dtype} array on {x.device.name}"
                )
    return device, dtype


def _decayed(device: Any, w: NDArray, g: NDArray, wd: float, tmp: Any) -> Any:
    """The handle of ``g + w * wd`` (a fresh buffer; ``tmp`` is scratch), or ``g``'s own
    when ``wd`` is 0."""
    if not wd:
        return g.handle
    _kernel(device, "scalar_mul", w.handle, wd, tmp)
    grad = w._fresh().handle
    _kernel(device, "ewise_add", g.handle, tmp, grad)
    return grad


def sgd_update(
    params: Sequence[NDArray],
    grads: Sequence[NDArray],
    momenta: Sequence[NDArray],
    scalars: Sequence[float],
) -> None:
    """In place, for each parameter ``w`` with gradient ``g`` and momentum ``u``:
    ``g += w * wd`` (when ``wd``), ``u = u * b + g * (1 - b)``, ``w = w + u * neg_lr``.

    ``scalars`` is ``(b, 1 - b, neg_lr, wd)`` (Python floats or host scalars of a trace).
    Every array is compact, of one dtype and on one device.
    """
    if not params:
        return
    device, dtype = _check_state("sgd_update", params, grads, momenta)
    b, one_minus_b, neg_lr, wd = scalars
    if device.has("sgd_update"):
        device.mod.sgd_update(
            tuple(w.handle for w in params), tuple(g.handle for g in grads),
            tuple(u.handle for u in momenta), b, one_minus_b, neg_lr, wd,
        )  # fmt: skip
        return
    for w, g, u in zip(params, grads, momenta):
        if w.size == 0:
            continue
        tmp = w._fresh().handle
        grad = _decayed(device, w, g, wd, tmp)
        _kernel(device, "scalar_mul", u.handle, b, u.handle)
        _kernel(device, "scalar_mul", grad, one_minus_b, tmp)
        _kernel(device, "ewise_add", u.handle, tmp, u.handle)
        _kernel(device, "scalar_mul", u.handle, neg_lr, tmp)
        _kernel(device, "ewise_add", w.handle, tmp, w.handle)


def adam_update(
    params: Sequence[NDArray],
    grads: Sequence[NDArray],
    firsts: Sequence[NDArray],
    seconds: Sequence[NDArray],
    scalars: Sequence[float],
) -> None:
    """In place, for each parameter ``w`` with gradient ``g`` and moments ``m``, ``v``:
    ``g += w * wd`` (when ``wd``), ``m = m * b1 + g * (1 - b1)``,
    ``v = v * b2 + (g * g) * (1 - b2)``, ``w = w + (m * step) / (v ** 0.5 + eps_hat)``.

    ``scalars`` is ``(b1, 1 - b1, b2, 1 - b2, wd, step, eps_hat)``; ``step`` and ``eps_hat``
    carry the learning rate, the sign and both bias corrections.
    """
    if not params:
        return
    device, dtype = _check_state("adam_update", params, grads, firsts, seconds)
    b1, one_minus_b1, b2, one_minus_b2, wd, step, eps_hat = scalars
    if device.has("adam_update"):
        device.mod.adam_update(
            tuple(w.handle for w in params), tuple(g.handle for g in grads),
            tuple(m.handle for m in firsts), tuple(v.handle for v in seconds),
            b1, one_minus_b1, b2, one_minus_b2, wd, step, eps_hat,
        )  # fmt: skip
        return
    for w, g, m, v in zip(params, grads, firsts, seconds):
        if w.size == 0:
            continue
        tmp, den = w._fresh().handle, w._fresh().handle
        grad = _decayed(device, w, g, wd, tmp)
        _kernel(device, "scalar_mul", m.handle, b1, m.handle)
        _kernel(device, "scalar_mul", grad, one_minus_b1, tmp)
        _kernel(device, "ewise_add", m.handle, tmp, m.handle)
        _kernel(device, "ewise_mul", grad, grad, tmp)
        _kernel(device, "scalar_mul", tmp, one_minus_b2, tmp)
        _kernel(device, "scalar_mul", v.handle, b2, v.handle)
        _kernel(device, "ewise_add", v.handle, tmp, v.handle)
        _kernel(device, "scalar_power", v.handle, 0.5, den)
        _kernel(device, "scalar_add", den, eps_hat, den)
        _kernel(device, "scalar_mul", m.handle, step, tmp)
        _kernel(device, "ewise_div", tmp, den, tmp)
        _kernel(device, "ewise_add", w.handle, tmp, w.handle)


def _column(v: NDArray, shape: tuple[int, int]) -> NDArray:
    """A ``(N, 1)`` array repeated along the rows' width: ``(N, D)``."""
    return v.broadcast_to(shape)


def layer_norm(
    x: NDArray, weight: NDArray, bias: NDArray, eps: float
) -> tuple[NDArray, NDArray, NDArray]:
    """``weight * (x - mean) / sqrt(var + eps) + bias`` over each row of ``x`` ``(N, D)``
    (biased variance), with ``weight`` and ``bias`` ``(D,)``.

    Returns ``(out, normed, std)``: ``normed = (x - mean) / std`` and ``std`` ``(N, 1)``, for
    :func:`layer_norm_grad`. The kernels and their order are those of the composed course
    formula (``x.sum / D``, ``x - mean``, ``** 2``, ``sum / D``, ``+ eps``, ``** 0.5``, a
    division, the weight's product and the bias's sum), so the values are the same bits.
    """
    n, d = x.shape
    shape = (n, d)
    centered = x - _column(x.sum(1, keepdims=True) / d, shape)
    var = (centered**2).sum(1, keepdims=True) / d
    std = (var + eps) ** 0.5
    normed = centered / _column(std, shape)
    row = (1, d)
    out = weight.reshape(row).broadcast_to(shape) * normed + bias.reshape(row).broadcast_to(shape)
    return out, normed, std


def layer_norm_grad(
    g: NDArray, normed: NDArray, std: NDArray, weight: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """``(dx, dweight, dbias)`` of :func:`layer_norm` for the adjoint ``g`` of its ``out``,
    from the ``normed`` and ``std`` it returned: with ``gn = g * weight``,
    ``dx = (gn - mean(gn) - normed * mean(gn * normed)) / std``, means over each row."""
    n, d = g.shape
    shape = (n, d)
    dbias = g.sum(0)
    dweight = (g * normed).sum(0)
    gn = g * weight.reshape((1, d)).broadcast_to(shape)
    # Signs flipped on the (N, 1) means, not on (N, D) arrays: N negations, not N * D.
    spread = (
        gn
        + _column(-(gn.sum(1, keepdims=True) / d), shape)
        + normed * _column(-((gn * normed).sum(1, keepdims=True) / d), shape)
    )
    return spread / _column(std, shape), dweight, dbias


# (device, dtype, hidden) -> the LSTM's per-column rows (1, 4 * hidden): made once, kept.
_LSTM_ROWS: dict[tuple[str, str, int], tuple[NDArray, NDArray, NDArray]] = {}


def _lstm_rows(hidden: int, dtype: str, dev: Any) -> tuple[NDArray, NDArray, NDArray]:
    """``scale``, ``shift`` and ``scale**2`` over the columns of the gate blocks i, f, g, o:
    scale 1/2, 1/2, 1, 1/2 and shift 1/2, 1/2, 0, 1/2 per block, so ``tanh(x * scale) * scale
    + shift`` is the sigmoid of the i, f and o columns and the tanh of the g columns (halving
    is exact, so the sigmoid is ``(tanh(x / 2) + 1) / 2`` to the bit, as ``ops.sigmoid``)."""
    key = (dev.name, dtype, hidden)
    rows = _LSTM_ROWS.get(key)
    if rows is None or rows[0]._device is not dev:
        import numpy as np

        from ..replay import untraced

        scale = np.full(4 * hidden, 0.5)
        scale[2 * hidden : 3 * hidden] = 1.0
        shift = np.where(scale == 1.0, 0.0, 0.5)
        with untraced():  # cached constants: never one of a replay's scratch buffers
            rows = tuple(
                NDArray.from_numpy(v.reshape(1, -1), dev, dtype) for v in (scale, shift, scale**2)
            )
        if len(_LSTM_ROWS) >= 64:
            _LSTM_ROWS.clear()
        _LSTM_ROWS[key] = rows
    return rows


def _gate_blocks(act: NDArray) -> list[NDArray]:
    hidden = act.shape[1] // 4
    return [act[:, k * hidden : (k + 1) * hidden] for k in range(4)]


def lstm_step(gates: NDArray, c: NDArray) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """One LSTM step from ``gates`` ``(n, 4 * hidden)``, the pre-activations of the gates i,
    f, g, o in that order, and the cell state ``c`` ``(n, hidden)``.

    Returns ``(h, c', act, t)``: ``c' = f * c + i * g``, ``h = o * tanh(c')``, the gates'
    activations ``act`` and ``t = tanh(gates * scale)`` (what :func:`lstm_step_grad` needs).
    """
    if gates.ndim != 2 or gates.shape[1] % 4 or c.shape != (gates.shape[0], gates.shape[1] // 4):
        raise ValueError(
            f"lstm_step: gates {gates.shape} must be (n, 4 * hidden) and c (n, hidden), "
            f"got c {c.shape}"
        )
    n, width = gates.shape
    scale, shift, _ = _lstm_rows(width // 4, gates.dtype, gates.device)
    shape = (n, width)
    t = (gates * scale.broadcast_to(shape)).tanh()
    act = t * scale.broadcast_to(shape) + shift.broadcast_to(shape)
    i, f, g, o = _gate_blocks(act)
    c_next = f * c + i * g
    return o * c_next.tanh(), c_next, act, t


def lstm_step_grad(
    act: NDArray, t: NDArray, c: NDArray, c_next: NDArray, dh: NDArray, dc: NDArray
) -> tuple[NDArray, NDArray]:
    """The gradients of :func:`lstm_step` for its gates and ``c``, from the step's ``act``
    and ``t``, its input ``c`` and output ``c_next``, and the adjoints ``dh`` and ``dc`` of
    its outputs ``h`` and ``c_next``."""
    n, width = act.shape
    i, f, g, o = _gate_blocks(act)
    tc = c_next.tanh()
    d_o = dh * tc
    dc_total = (dh * o) * ((-(tc * tc)) + 1.0) + dc  # through h = o * tanh(c') and c' itself
    d_act = NDArray._alloc((n, width), act.dtype, act.device)
    hidden = width // 4
    for k, block in enumerate((dc_total * g, dc_total * c, dc_total * i, d_o)):
        d_act[:, k * hidden : (k + 1) * hidden] = block
    # d act / d gates = scale**2 * (1 - t**2): the sigmoid's s (1 - s), the tanh's 1 - g**2
    _, _, square = _lstm_rows(hidden, act.dtype, act.device)
    d_gates = (d_act * ((-(t * t)) + 1.0)) * square.broadcast_to((n, width))
    return d_gates, dc_total * f
