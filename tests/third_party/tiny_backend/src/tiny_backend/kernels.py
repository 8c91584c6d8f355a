"""The ``tiny`` device: every function of needle's backend contract, delegating to numpy.

A handle is an :class:`Array` holding a flat float32 numpy buffer. Strides and
offsets count elements. Bad sizes and out-of-range views raise ``ValueError``.
"""

import numpy as np

__device_name__ = "tiny"


class Array:
    def __init__(self, size):
        self.buf = np.empty(size, dtype=np.float32)

    @property
    def size(self):
        return self.buf.size

    def ptr(self):
        return self.buf.ctypes.data


def _sizes(*arrays):
    if len({a.size for a in arrays}) > 1:
        raise ValueError(f"tiny: buffer sizes differ: {[a.size for a in arrays]}")


def _view(a, shape, strides, offset):
    """The strided view (shape, strides, offset) of handle ``a``, checked to lie inside it."""
    shape, strides = tuple(shape), tuple(strides)
    if 0 not in shape:
        lo = offset + sum((d - 1) * s for d, s in zip(shape, strides) if s < 0)
        hi = offset + sum((d - 1) * s for d, s in zip(shape, strides) if s > 0)
        if lo < 0 or hi >= a.size:
            raise ValueError(f"tiny: view {shape}, {strides}, {offset} outside {a.size} elements")
    base = a.buf[offset:] if 0 not in shape else a.buf
    return np.lib.stride_tricks.as_strided(base, shape, [4 * s for s in strides])


def to_numpy(a, shape, strides, offset):
    return _view(a, shape, strides, offset).copy()


def from_numpy(arr, out):
    _sizes(arr, out)
    out.buf[:] = np.ravel(arr)


def fill(out, val):
    out.buf[:] = val


def compact(a, out, shape, strides, offset):
    view = _view(a, shape, strides, offset)
    _sizes(view, out)
    out.buf[:] = view.ravel()


def ewise_setitem(a, out, shape, strides, offset):
    view = _view(out, shape, strides, offset)
    _sizes(view, a)
    view[...] = a.buf.reshape(view.shape)


def scalar_setitem(size, val, out, shape, strides, offset):
    view = _view(out, shape, strides, offset)
    if view.size != size:
        raise ValueError(f"tiny: size {size} but the view has {view.size} elements")
    view[...] = val


def _ewise(fn):
    def kernel(a, b, out):
        _sizes(a, b, out)
        out.buf[:] = fn(a.buf, b.buf)

    return kernel


def _scalar(fn):
    def kernel(a, val, out):
        _sizes(a, out)
        out.buf[:] = fn(a.buf, np.float32(val))

    return kernel


def _unary(fn):
    def kernel(a, out):
        _sizes(a, out)
        out.buf[:] = fn(a.buf)

    return kernel


ewise_add, ewise_mul, ewise_div = _ewise(np.add), _ewise(np.multiply), _ewise(np.divide)
ewise_maximum, ewise_eq, ewise_ge = _ewise(np.maximum), _ewise(np.equal), _ewise(np.greater_equal)
scalar_add, scalar_mul, scalar_div = _scalar(np.add), _scalar(np.multiply), _scalar(np.divide)
scalar_power, scalar_maximum = _scalar(np.power), _scalar(np.maximum)
scalar_eq, scalar_ge = _scalar(np.equal), _scalar(np.greater_equal)
ewise_log, ewise_exp, ewise_tanh = _unary(np.log), _unary(np.exp), _unary(np.tanh)


def matmul(a, b, out, m, n, p):
    if (a.size, b.size, out.size) != (m * n, n * p, m * p):
        raise ValueError(f"tiny: matmul sizes {a.size}, {b.size}, {out.size} vs m={m} n={n} p={p}")
    out.buf[:] = (a.buf.reshape(m, n) @ b.buf.reshape(n, p)).ravel()


def _blocks(a, out, reduce_size):
    if reduce_size <= 0 or a.size != out.size * reduce_size:
        raise ValueError(f"tiny: cannot reduce {a.size} elements to {out.size} by {reduce_size}")
    return a.buf.reshape(out.size, reduce_size)


def reduce_sum(a, out, reduce_size):
    out.buf[:] = _blocks(a, out, reduce_size).sum(axis=1)


def reduce_max(a, out, reduce_size):
    out.buf[:] = _blocks(a, out, reduce_size).max(axis=1)
