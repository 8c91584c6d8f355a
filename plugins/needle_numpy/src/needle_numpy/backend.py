"""The reference backend: every function of :mod:`needle.contract`, in numpy, for clarity.

A handle is :class:`Array`, a flat numpy buffer of one dtype. Strides and
offsets count elements. This module is the living specification of the
contract: the other backends must give its results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from needle.contract import KERNELS, check_view

__device_name__ = "numpy"
__tile_size__ = 4  # the course's tiled matmul (matmul_tiled)

_ALL = ("float32", "float64", "int32", "int64", "bool")
_NUMBERS = ("float32", "float64", "int32", "int64")
__dtypes__ = {
    "memory": _ALL,
    "arithmetic": _NUMBERS,
    "compare": _NUMBERS,
    "unary": ("float32", "float64"),
    "matmul": _NUMBERS,
    "reduce": _NUMBERS,
}


class Array:
    """A flat buffer of ``size`` elements of ``dtype``."""

    __slots__ = ("array", "__weakref__")

    def __init__(self, size: int, dtype: str = "float32") -> None:
        if size < 0:
            raise ValueError(f"Array size must be >= 0, got {size}")
        if dtype not in _ALL:
            raise ValueError(f"the numpy backend holds {', '.join(_ALL)}, not {dtype!r}")
        self.array = np.empty(size, dtype=dtype)  # numpy's allocator aligns it

    @classmethod
    def _wrap(cls, flat: np.ndarray) -> Array:
        out = cls.__new__(cls)
        out.array = flat
        return out

    @property
    def size(self) -> int:
        return self.array.size

    @property
    def dtype(self) -> str:
        return self.array.dtype.name

    def ptr(self) -> int:
        return self.array.ctypes.data


def _check(a: Array, name: str = "a") -> np.ndarray:
    if not isinstance(a, Array):
        raise TypeError(f"{name} must be a numpy-backend Array, got {type(a).__name__}")
    return a.array


def _view(a: Array, shape: Sequence[int], strides: Sequence[int], offset: int) -> np.ndarray:
    """The strided view of ``a``'s buffer, checked to stay inside it."""
    buf = _check(a)
    check_view(buf.size, shape, strides, offset)
    return np.lib.stride_tricks.as_strided(
        buf[offset:] if 0 not in shape else buf,
        tuple(shape),
        tuple(s * buf.itemsize for s in strides),
        writeable=True,
    )


def _same(*arrays: np.ndarray, dtype: bool = True) -> None:
    """Equal sizes (and, with ``dtype``, equal dtypes) or ``ValueError``."""
    size = arrays[0].size
    if any(x.size != size for x in arrays):
        raise ValueError(f"buffer sizes differ: {[x.size for x in arrays]}")
    if dtype and any(x.dtype != arrays[0].dtype for x in arrays):
        raise ValueError(f"buffer dtypes differ: {[x.dtype.name for x in arrays]}")


def to_numpy(a: Array, shape: Sequence[int], strides: Sequence[int], offset: int) -> np.ndarray:
    return _view(a, shape, strides, offset).copy()


def from_numpy(arr: np.ndarray, out: Array) -> None:
    flat, z = np.asarray(arr).reshape(-1), _check(out, "out")
    _same(flat, z)
    z[:] = flat


def fill(out: Array, val: Any) -> None:
    _check(out, "out")[:] = val


def compact(
    a: Array, out: Array, shape: Sequence[int], strides: Sequence[int], offset: int
) -> None:
    view = _view(a, shape, strides, offset)
    _same(view, _check(out, "out"))
    out.array[:] = view.reshape(-1)


def ewise_setitem(
    a: Array, out: Array, shape: Sequence[int], strides: Sequence[int], offset: int
) -> None:
    view = _view(out, shape, strides, offset)
    _same(view, _check(a))
    view[...] = a.array.reshape(view.shape)


def _flat_ranges(
    handles: Sequence[Array], flat: Array, offsets: Sequence[int], kernel: str
) -> list[tuple[np.ndarray, slice]]:
    """Each handle's array and its range of ``flat``, all checked before anything is copied."""
    buf = _check(flat)
    if len(handles) != len(offsets):
        raise ValueError(f"{kernel}: {len(handles)} buffers but {len(offsets)} offsets")
    ranges = []
    for i, (h, start) in enumerate(zip(handles, offsets)):
        x = _check(h, f"buffer {i}")
        if x.dtype != buf.dtype:
            raise ValueError(f"{kernel}: buffer {i} is {x.dtype}, the flat buffer {buf.dtype}")
        if start < 0 or start + x.size > buf.size:
            raise ValueError(
                f"{kernel}: buffer {i} ({x.size} elements) at offset {start} overruns the flat "
                f"buffer of {buf.size}"
            )
        ranges.append((x, slice(start, start + x.size)))
    return ranges


def pack(arrays: Sequence[Array], out: Array, offsets: Sequence[int]) -> None:
    for x, part in _flat_ranges(arrays, out, offsets, "pack"):
        out.array[part] = x


def unpack(a: Array, outs: Sequence[Array], offsets: Sequence[int], scale: float) -> None:
    ranges = _flat_ranges(outs, a, offsets, "unpack")
    if scale != 1.0 and a.array.dtype.kind != "f":
        raise ValueError(f"unpack scales float buffers only, not {a.array.dtype} (scale {scale})")
    for z, part in ranges:
        z[:] = a.array[part] if scale == 1.0 else a.array[part] * a.array.dtype.type(scale)


def slices(a: Array, offsets: Sequence[int], sizes: Sequence[int]) -> tuple[Array, ...]:
    buf = _check(a)
    if len(offsets) != len(sizes):
        raise ValueError(f"slices: {len(offsets)} offsets but {len(sizes)} sizes")
    for i, (start, size) in enumerate(zip(offsets, sizes)):
        if start < 0 or size < 0 or start + size > buf.size:
            raise ValueError(
                f"slices: range {i} ({size} elements at offset {start}) is outside a buffer "
                f"of {buf.size}"
            )
    return tuple(Array._wrap(buf[start : start + size]) for start, size in zip(offsets, sizes))


def scalar_setitem(
    size: int, val: Any, out: Array, shape: Sequence[int], strides: Sequence[int], offset: int
) -> None:
    view = _view(out, shape, strides, offset)
    if view.size != size:
        raise ValueError(f"size {size} does not match the view's {view.size} elements")
    view[...] = val


def cast(a: Array, out: Array) -> None:
    x, z = _check(a), _check(out, "out")
    _same(x, z, dtype=False)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN or inf to int: unspecified
        z[:] = x.astype(z.dtype, casting="unsafe")


# IEEE results (inf, NaN) are the specification, not a reason to warn.
def _ieee() -> np.errstate:
    return np.errstate(all="ignore")


def _binary(fn, compare: bool = False):  # noqa: ANN001, ANN202
    def kernel(a: Array, b: Array, out: Array) -> None:
        x, y, z = _check(a), _check(b, "b"), _check(out, "out")
        _same(x, y)
        _same(x, z, dtype=not compare)
        if compare and z.dtype != np.bool_:
            raise ValueError(f"a comparison writes bool, not {z.dtype}")
        with _ieee():
            fn(x, y, out=z)

    kernel.__name__ = fn.__name__
    return kernel


def _scalar(fn, compare: bool = False):  # noqa: ANN001, ANN202
    def kernel(a: Array, val: Any, out: Array) -> None:
        x, z = _check(a), _check(out, "out")
        _same(x, z, dtype=not compare)
        if compare and z.dtype != np.bool_:
            raise ValueError(f"a comparison writes bool, not {z.dtype}")
        with _ieee():
            fn(x, x.dtype.type(val), out=z)

    kernel.__name__ = fn.__name__
    return kernel


def _unary(fn):  # noqa: ANN001, ANN202
    def kernel(a: Array, out: Array) -> None:
        x, z = _check(a), _check(out, "out")
        _same(x, z)
        with _ieee():
            fn(x, out=z)

    kernel.__name__ = fn.__name__
    return kernel


ewise_add = _binary(np.add)
ewise_mul = _binary(np.multiply)
ewise_div = _binary(np.divide)
ewise_maximum = _binary(np.maximum)
ewise_power = _binary(np.power)
scalar_add = _scalar(np.add)
scalar_mul = _scalar(np.multiply)
scalar_div = _scalar(np.divide)
scalar_power = _scalar(np.power)
scalar_maximum = _scalar(np.maximum)
ewise_eq = _binary(np.equal, compare=True)
ewise_ne = _binary(np.not_equal, compare=True)
ewise_ge = _binary(np.greater_equal, compare=True)
ewise_gt = _binary(np.greater, compare=True)
scalar_eq = _scalar(np.equal, compare=True)
scalar_ne = _scalar(np.not_equal, compare=True)
scalar_ge = _scalar(np.greater_equal, compare=True)
scalar_gt = _scalar(np.greater, compare=True)
scalar_le = _scalar(np.less_equal, compare=True)
scalar_lt = _scalar(np.less, compare=True)
ewise_log = _unary(np.log)
ewise_exp = _unary(np.exp)
ewise_tanh = _unary(np.tanh)


def matmul(a: Array, b: Array, out: Array, m: int, n: int, p: int) -> None:
    matmul_t(a, b, out, m, n, p, False, False)


def matmul_t(
    a: Array, b: Array, out: Array, m: int, n: int, p: int, trans_a: bool, trans_b: bool
) -> None:
    x, y, z = _check(a), _check(b, "b"), _check(out, "out")
    kernel = "matmul_t" if trans_a or trans_b else "matmul"
    if (x.size, y.size, z.size) != (m * n, n * p, m * p):
        raise ValueError(
            f"{kernel} sizes {x.size}, {y.size}, {z.size} do not match m={m} n={n} p={p}"
        )
    if not x.dtype == y.dtype == z.dtype:
        raise ValueError(f"{kernel} dtypes differ: {x.dtype}, {y.dtype}, {z.dtype}")
    lhs = x.reshape(n, m).T if trans_a else x.reshape(m, n)
    rhs = y.reshape(p, n).T if trans_b else y.reshape(n, p)
    np.matmul(lhs, rhs, out=z.reshape(m, p))


def bmm(a: Array, b: Array, out: Array, batch: int, m: int, n: int, p: int) -> None:
    x, y, z = _check(a), _check(b, "b"), _check(out, "out")
    if (x.size, y.size, z.size) != (batch * m * n, batch * n * p, batch * m * p):
        raise ValueError(f"bmm sizes do not match batch={batch} m={m} n={n} p={p}")
    if not x.dtype == y.dtype == z.dtype:
        raise ValueError(f"bmm dtypes differ: {x.dtype}, {y.dtype}, {z.dtype}")
    np.matmul(x.reshape(batch, m, n), y.reshape(batch, n, p), out=z.reshape(batch, m, p))


def matmul_tiled(a: Array, b: Array, out: Array, m: int, n: int, p: int) -> None:
    t = __tile_size__
    x, y, z = _check(a), _check(b, "b"), _check(out, "out")
    if m % t or n % t or p % t or (x.size, y.size, z.size) != (m * n, n * p, m * p):
        raise ValueError(f"matmul_tiled needs m, n, p divisible by {t} and matching buffers")
    lhs = x.reshape(m // t, n // t, t, t)
    rhs = y.reshape(n // t, p // t, t, t)
    z.reshape(m // t, p // t, t, t)[...] = np.einsum("ikab,kjbc->ijac", lhs, rhs)


def _reduce(a: Array, out: Array, reduce_size: int) -> tuple[np.ndarray, np.ndarray]:
    x, z = _check(a), _check(out, "out")
    if reduce_size <= 0 or x.size != z.size * reduce_size:
        raise ValueError(f"cannot reduce {x.size} elements into {z.size} by {reduce_size}")
    if x.dtype != z.dtype:
        raise ValueError(f"reduce dtypes differ: {x.dtype} into {z.dtype}")
    return x.reshape(z.size, reduce_size), z


def reduce_sum(a: Array, out: Array, reduce_size: int) -> None:
    x, z = _reduce(a, out, reduce_size)
    np.sum(x, axis=1, out=z)


def reduce_max(a: Array, out: Array, reduce_size: int) -> None:
    x, z = _reduce(a, out, reduce_size)
    np.max(x, axis=1, out=z)


def to_dlpack(a: Array, shape: Sequence[int], strides: Sequence[int], offset: int) -> np.ndarray:
    return _view(a, shape, strides, offset)  # numpy exports DLPack; the view keeps `a` alive


def from_dlpack(obj: Any) -> tuple[Array, tuple[int, ...]]:
    shared = np.from_dlpack(obj)  # numpy keeps the producer alive
    if shared.dtype.name not in _ALL:
        raise BufferError(f"the numpy backend cannot hold {shared.dtype} data")
    if not shared.flags.c_contiguous:
        raise BufferError("the producer's memory is not one C-contiguous block")
    return Array._wrap(shared.reshape(-1)), shared.shape


def _labels(labels: Array, n: int, k: int, kernel: str) -> np.ndarray:
    idx = _check(labels, "labels")
    if idx.dtype != np.int64 or idx.size != n:
        raise ValueError(f"{kernel}: labels must be {n} int64 values, got {idx.size} {idx.dtype}")
    if n and (idx.min() < 0 or idx.max() >= k):
        raise IndexError(f"{kernel}: labels must lie in [0, {k}), got {idx.min()}..{idx.max()}")
    return idx


def softmax_cross_entropy(
    logits: Array, labels: Array, losses: Array, probs: Array, n: int, k: int
) -> None:
    x, loss, p = _check(logits), _check(losses, "losses"), _check(probs, "probs")
    _same(x, p)
    if x.size != n * k or loss.size != n or loss.dtype != x.dtype or x.dtype.kind != "f":
        raise ValueError(f"softmax_cross_entropy: buffers do not hold float ({n}, {k}) and ({n},)")
    idx = _labels(labels, n, k, "softmax_cross_entropy")
    if not n or not k:
        return
    rows, big = x.reshape(n, k), np.finfo(x.dtype).max
    with _ieee():
        top = np.clip(rows.max(axis=1, keepdims=True), -big, big)
        e = np.exp(rows - top)
        total = e.sum(axis=1, keepdims=True)
        np.divide(e, total, out=p.reshape(n, k))
        loss[:] = (np.log(total) + top)[:, 0] - rows[np.arange(n), idx]


def softmax_cross_entropy_grad(
    probs: Array, labels: Array, g: Array, out: Array, n: int, k: int
) -> None:
    p, grad, z = _check(probs, "probs"), _check(g, "g"), _check(out, "out")
    _same(p, z)
    if p.size != n * k or grad.size != n or grad.dtype != p.dtype:
        raise ValueError(f"softmax_cross_entropy_grad: buffers do not hold ({n}, {k}) and ({n},)")
    idx = _labels(labels, n, k, "softmax_cross_entropy_grad")
    if not n or not k:
        return
    with _ieee():
        np.multiply(p.reshape(n, k), grad[:, None], out=z.reshape(n, k))
        z.reshape(n, k)[np.arange(n), idx] -= grad


def _norm_views(
    kernel: str, x: Array, full: Sequence[Array], channel: Sequence[Array], shape: tuple
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """x and the ``full`` handles as (outer, channels, inner), the ``channel`` ones as
    (1, channels, 1): checked sizes and one float dtype."""
    outer, channels, inner = shape
    xs = _check(x, "x")
    if min(shape) < 0 or xs.size != outer * channels * inner or xs.dtype.kind != "f":
        raise ValueError(f"{kernel}: x holds {xs.size} {xs.dtype} values, not float {shape}")
    fulls = [_check(a) for a in full]
    chans = [_check(a) for a in channel]
    _same(xs, *fulls)
    if any(c.size != channels or c.dtype != xs.dtype for c in chans):
        raise ValueError(f"{kernel}: a per-channel handle is not {channels} {xs.dtype} values")
    return (
        xs.reshape(shape),
        [f.reshape(shape) for f in fulls],
        [c.reshape(1, channels, 1) for c in chans],
    )


def batch_norm(
    x: Array, weight: Array, bias: Array, out: Array, mean: Array, invstd: Array,
    running_mean: Array, running_var: Array, outer: int, channels: int, inner: int, eps: float,
    momentum: float,
) -> None:  # fmt: skip
    shape = (outer, channels, inner)
    running = (running_mean, running_var) if momentum != 0 else ()
    v, (z,), (w, b, m, inv, *run) = _norm_views(
        "batch_norm", x, [out], [weight, bias, mean, invstd, *running], shape
    )
    with _ieee():
        mu = v.sum(axis=(0, 2), keepdims=True, dtype=np.float64) / (outer * inner)
        var = ((v - mu) ** 2).sum(axis=(0, 2), keepdims=True) / (outer * inner)
        m[...] = mu
        inv[...] = 1.0 / np.sqrt(var + eps)
        if run:
            run[0][...] = (1.0 - momentum) * run[0].astype(np.float64) + momentum * mu
            run[1][...] = (1.0 - momentum) * run[1].astype(np.float64) + momentum * var
        z[...] = ((v - m) * inv) * w + b


def batch_norm_grad(
    g: Array, x: Array, weight: Array, mean: Array, invstd: Array, dx: Array, dweight: Array,
    dbias: Array, outer: int, channels: int, inner: int,
) -> None:  # fmt: skip
    shape = (outer, channels, inner)
    v, (gv, z), (w, m, inv, dw, db) = _norm_views(
        "batch_norm_grad", x, [g, dx], [weight, mean, invstd, dweight, dbias], shape
    )
    with _ieee():
        xhat = (v - m) * inv
        sum_g = gv.sum(axis=(0, 2), keepdims=True, dtype=np.float64)
        sum_gx = (gv * xhat).sum(axis=(0, 2), keepdims=True, dtype=np.float64)
        db[...], dw[...] = sum_g, sum_gx
        k2 = (sum_g / (outer * inner)).astype(v.dtype)
        k3 = (sum_gx / (outer * inner)).astype(v.dtype)
        z[...] = (w * inv) * ((gv - k2) - xhat * k3)


_ROW_OPS = {"add": np.add, "mul": np.multiply, "div": np.divide, "maximum": np.maximum}


def broadcast_rows(op: str, a: Array, b: Array, out: Array, width: int) -> None:
    fn = _ROW_OPS.get(op)
    if fn is None:
        raise ValueError(f"broadcast_rows: op must be one of {sorted(_ROW_OPS)}, not {op!r}")
    x, y, z = _check(a), _check(b, "b"), _check(out, "out")
    _same(x, z)
    if width <= 0 or y.size != width or x.size % width or x.dtype != y.dtype:
        raise ValueError(f"broadcast_rows: {x.size} elements are not rows of b's {y.size}")
    with _ieee():
        fn(x.reshape(-1, width), y, out=z.reshape(-1, width))


def _rows(a: Array, indices: Array, out: Array, count: int, width: int, rows_of: Array):
    x, idx, z = _check(a), _check(indices, "indices"), _check(out, "out")
    if idx.dtype != np.int64 or idx.size != count:
        raise ValueError(f"indices must be {count} int64 values, got {idx.size} {idx.dtype}")
    if x.dtype != z.dtype or width < 0:
        raise ValueError(f"row kernels need one dtype and width >= 0: {x.dtype}, {z.dtype}")
    table = _check(rows_of)
    if width == 0 or table.size % width:
        if width == 0:
            return None
        raise ValueError(f"a buffer of {table.size} elements is not rows of {width}")
    n = table.size // width
    if count and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"row indices must lie in [0, {n}), got {idx.min()}..{idx.max()}")
    return x, idx, z


def gather_rows(a: Array, indices: Array, out: Array, count: int, width: int) -> None:
    found = _rows(a, indices, out, count, width, a)
    if found is None:
        return
    x, idx, z = found
    _same(z, np.empty(count * width), dtype=False)
    np.take(x.reshape(-1, width), idx, axis=0, out=z.reshape(count, width))


def scatter_add_rows(a: Array, indices: Array, out: Array, count: int, width: int) -> None:
    found = _rows(a, indices, out, count, width, out)
    if found is None:
        return
    x, idx, z = found
    _same(x, np.empty(count * width), dtype=False)
    np.add.at(z.reshape(-1, width), idx, x.reshape(count, width))


def _arrays(handles: Sequence[Array], name: str) -> list[np.ndarray]:
    return [_check(h, name) for h in handles]


def sgd_update(
    params: Sequence[Array],
    grads: Sequence[Array],
    momenta: Sequence[Array],
    b: float,
    one_minus_b: float,
    neg_lr: float,
    weight_decay: float,
) -> None:
    """Momentum SGD in place, one operation after another as the contract lists them."""
    groups = zip(_arrays(params, "params"), _arrays(grads, "grads"), _arrays(momenta, "momenta"))
    for w, g, u in groups:
        _same(w, g, u)
        t = w.dtype.type
        with _ieee():
            if weight_decay:
                g = g + w * t(weight_decay)
            u *= t(b)
            u += g * t(one_minus_b)
            w += u * t(neg_lr)


def adam_update(
    params: Sequence[Array],
    grads: Sequence[Array],
    firsts: Sequence[Array],
    seconds: Sequence[Array],
    b1: float,
    one_minus_b1: float,
    b2: float,
    one_minus_b2: float,
    weight_decay: float,
    step: float,
    eps_hat: float,
) -> None:
    """Adam in place, one operation after another as the contract lists them."""
    groups = zip(
        _arrays(params, "params"), _arrays(grads, "grads"),
        _arrays(firsts, "firsts"), _arrays(seconds, "seconds"),
    )  # fmt: skip
    for w, g, m, v in groups:
        _same(w, g, m, v)
        t = w.dtype.type
        with _ieee():
            if weight_decay:
                g = g + w * t(weight_decay)
            m *= t(b1)
            m += g * t(one_minus_b1)
            v *= t(b2)
            v += (g * g) * t(one_minus_b2)
            w += (m * t(step)) / (np.power(v, t(0.5)) + t(eps_hat))


def run_program(calls: Sequence[tuple[str, tuple]]) -> None:
    """Run ``(kernel name, args)`` pairs in order, as if each kernel were called."""
    table = globals()
    for name, args in calls:
        fn = table.get(name) if name in _PROGRAM_KERNELS else None
        if fn is None:
            raise ValueError(f"run_program: {name!r} is not a kernel of this backend")
        fn(*args)


_PROGRAM_KERNELS = frozenset(
    k.name for k in KERNELS if k.name not in ("__device_name__", "Array", "run_program")
)
