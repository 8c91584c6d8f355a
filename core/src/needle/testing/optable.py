"""Every public op, listed once: how to call it, its numpy reference, its samples, its tolerance.

The forward tests and the finite-difference gradient checks of the
conformance suite both iterate :data:`OP_TABLE`; a meta-test checks that every
lowercase helper in :mod:`needle.ops` has an entry.

Each :class:`Sample` gives input shapes and a *layout*:

* ``contiguous``: dense row-major inputs;
* ``noncontiguous``: inputs that are transposed (or sliced) views, so kernels
  see strided data;
* ``broadcast``: inputs that are ``broadcast_to`` views with zero strides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .. import ops
from ..autograd import Tensor

__all__ = [
    "Sample", "OpInfo", "OP_TABLE", "FLOATS", "NUMBERS", "make_input", "reference_conv"
]  # fmt: skip

FLOATS = ("float32", "float64")
NUMBERS = ("float32", "float64", "int32", "int64")


@dataclass(frozen=True)
class Sample:
    shapes: tuple[tuple[int, ...], ...]
    layout: str = "contiguous"
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        shapes = "-".join("x".join(map(str, s)) or "scalar" for s in self.shapes)
        extra = "".join(f"-{k}={v}" for k, v in self.kwargs.items())
        return f"{shapes}-{self.layout}{extra}".replace(" ", "")


@dataclass(frozen=True)
class OpInfo:
    """One op: ``fn(*tensors, **kwargs)`` must match ``ref(*arrays, **kwargs)`` on every sample.

    ``dtypes`` are the input dtypes the op is checked on (gradients: the float ones);
    ``rtol``/``atol`` are float32's tolerances (float64 is checked to 1e-10, integers
    exactly).
    """

    name: str
    fn: Callable[..., Tensor]
    ref: Callable[..., np.ndarray]
    samples: tuple[Sample, ...]
    domain: str = "real"  # real | positive | nonzero | distinct
    grad: bool = True
    rtol: float = 1e-5
    atol: float = 1e-5
    dtypes: tuple[str, ...] = FLOATS


def _drawer(rng: np.random.Generator, domain: str, dtype: str) -> Callable[[Any], np.ndarray]:
    if dtype.startswith("int"):  # small integers: exact products and sums
        if domain == "positive":
            return lambda s: rng.integers(1, 4, s)
        if domain == "nonzero":
            return lambda s: rng.integers(1, 4, s) * rng.choice([-1, 1], s)
        if domain == "distinct":
            return lambda s: rng.permutation(np.arange(int(np.prod(s))) - 3).reshape(s)
        return lambda s: rng.integers(-5, 6, s)
    if domain == "positive":
        return lambda s: rng.uniform(0.5, 2.0, s)
    if domain == "nonzero":
        return lambda s: rng.uniform(0.5, 2.0, s) * rng.choice([-1.0, 1.0], s)
    if domain == "distinct":  # well separated values: no ties for max/relu kinks
        return lambda s: rng.permutation(np.arange(int(np.prod(s))) * 0.37 - 3.1).reshape(s)
    return lambda s: rng.standard_normal(s)


def make_input(
    shape: tuple[int, ...],
    layout: str,
    device: Any,
    rng: np.random.Generator,
    domain: str,
    dtype: str = "float32",
) -> tuple[Tensor, np.ndarray]:
    """A Tensor of ``shape`` and ``dtype`` on ``device``, laid out as ``layout``; and its
    values (float64 for float dtypes, so references are computed accurately)."""
    from ..backend_ndarray import NDArray

    draw = _drawer(rng, domain, dtype)
    if layout == "noncontiguous" and len(shape) >= 2:
        base = draw(shape[::-1]).astype(dtype)
        nd = NDArray(base, device=device).permute(tuple(range(len(shape)))[::-1])
        value = base.transpose()
    elif layout == "noncontiguous" and len(shape) == 1:
        base = draw((shape[0] * 2,)).astype(dtype)
        nd = NDArray(base, device=device)[::2]
        value = base[::2]
    elif layout == "broadcast" and len(shape) >= 1:
        small_shape = (1,) + tuple(shape[1:])
        base = draw(small_shape).astype(dtype)
        nd = NDArray(base, device=device).broadcast_to(shape)
        value = np.broadcast_to(base, shape)
    else:
        value = draw(shape).astype(dtype)
        nd = NDArray(value, device=device)
    exact = np.array(value, dtype=np.float64 if dtype in FLOATS else dtype)
    return Tensor(nd, requires_grad=dtype in FLOATS), exact


def reference_conv(x: np.ndarray, w: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """NHWC x (K, K, Cin, Cout) cross-correlation in plain numpy."""
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, wd, c = x.shape
    k = w.shape[0]
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, ho, wo, w.shape[3]), dtype=np.float64)
    for i in range(k):
        for j in range(k):
            patch = x[:, i : i + ho * stride : stride, j : j + wo * stride : stride, :]
            out += patch @ w[i, j]
    return out


def _conv_weight_grad_ref(
    x: np.ndarray, g: np.ndarray, kernel: tuple[int, int], stride: int = 1, padding: int = 0
) -> np.ndarray:
    """The weight gradient of :func:`reference_conv`: per kernel tap, patch^T @ grad."""
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    _, ho, wo, cout = g.shape
    out = np.zeros((*kernel, x.shape[3], cout), dtype=np.float64)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            patch = x[:, i : i + ho * stride : stride, j : j + wo * stride : stride, :]
            out[i, j] = np.einsum("nhwc,nhwd->cd", patch, g)
    return out


def _dilate_ref(a: np.ndarray, axes: tuple[int, ...], dilation: int) -> np.ndarray:
    shape = [d * (dilation + 1) if i in axes else d for i, d in enumerate(a.shape)]
    out = np.zeros(shape, dtype=a.dtype)
    out[
        tuple(slice(None, None, dilation + 1) if i in axes else slice(None) for i in range(a.ndim))
    ] = a
    return out


def _logsumexp_ref(a: np.ndarray, axes: Any = None) -> np.ndarray:
    top = np.max(a, axis=axes, keepdims=True)
    return (np.log(np.sum(np.exp(a - top), axis=axes, keepdims=True)) + top).squeeze(
        axis=axes if axes is not None else tuple(range(a.ndim))
    )


def _batch_norm_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    axes, at = (0, *range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)  # per channel of axis 1
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return w.reshape(at) * (x - mean) / np.sqrt(var + eps) + b.reshape(at)


def _samples(
    *shapes: tuple[int, ...], layouts: tuple[str, ...] = ("contiguous",), **kw: Any
) -> list[Sample]:
    return [Sample(s, layout, kw) for s in shapes for layout in layouts]


def _index(indices: Any, like: Tensor) -> Tensor:
    """An int64 index tensor on ``like``'s device."""
    return Tensor(np.asarray(indices), device=like.device, dtype="int64", requires_grad=False)


def _softmax_cross_entropy_ref(a: np.ndarray, labels: Any) -> np.ndarray:
    rows = np.asarray(a, dtype=np.float64)
    top = rows.max(axis=1, keepdims=True)
    lse = np.log(np.exp(rows - top).sum(axis=1)) + top[:, 0]
    return (lse - rows[np.arange(len(rows)), np.asarray(labels)]).astype(a.dtype)


def _layer_norm_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    rows = np.asarray(x, np.float64)
    mean = rows.mean(axis=-1, keepdims=True)
    var = ((rows - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((rows - mean) / np.sqrt(var + eps) * w + b).astype(x.dtype)


def _lstm_step_ref(gates: np.ndarray, c: np.ndarray, use: str = "both") -> np.ndarray:
    x, c = np.asarray(gates, np.float64), np.asarray(c, np.float64)
    hidden = x.shape[1] // 4
    i, f, g, o = (x[:, k * hidden : (k + 1) * hidden] for k in range(4))
    i, f, o = (1.0 / (1.0 + np.exp(-v)) for v in (i, f, o))
    c_next = f * c + i * np.tanh(g)
    h = o * np.tanh(c_next)
    return {"h": h, "c": c_next, "both": h + 2.0 * c_next}[use].astype(gates.dtype)


def _lstm_step(gates: Tensor, c: Tensor, use: str = "both") -> Tensor:
    h, c_next = ops.lstm_step(gates, c).tuple()
    return {"h": h, "c": c_next, "both": h + c_next * 2.0}[use]


def _scatter_add_ref(a: np.ndarray, indices: Any, count: int) -> np.ndarray:
    index = np.asarray(indices, dtype=np.int64)
    out = np.zeros((count,) + a.shape[index.ndim :], dtype=np.result_type(a, np.float32))
    np.add.at(out, index, a)
    return out.astype(a.dtype)


ALL_LAYOUTS = ("contiguous", "noncontiguous", "broadcast")
_UNARY = _samples(((3, 4),), ((2, 3, 4),), layouts=ALL_LAYOUTS) + _samples(
    ((0, 3),), ((1,),), ((),), ((5,),)
)
_BINARY = _samples(((3, 4), (3, 4)), ((2, 3, 4), (2, 3, 4)), layouts=ALL_LAYOUTS) + _samples(
    ((0, 3), (0, 3)), ((1,), (1,)), ((5,), (5,))
)
# numpy's implicit broadcasting of binary Tensor ops (each gradient sums back to its input)
_BROADCASTING = _samples(((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 1, 3), (4, 1)), ((), (2, 3)))
_SCALAR = 1.7

OP_TABLE: tuple[OpInfo, ...] = (
    # elementwise
    OpInfo("add", ops.add, np.add, tuple(_BINARY + _BROADCASTING), dtypes=NUMBERS),
    OpInfo(
        "add_scalar", lambda a: ops.add_scalar(a, _SCALAR), lambda a: a + _SCALAR, tuple(_UNARY)
    ),
    OpInfo("multiply", ops.multiply, np.multiply, tuple(_BINARY + _BROADCASTING), dtypes=NUMBERS),
    OpInfo(
        "mul_scalar", lambda a: ops.mul_scalar(a, _SCALAR), lambda a: a * _SCALAR, tuple(_UNARY)
    ),
    OpInfo("divide", ops.divide, np.divide, tuple(_BINARY), domain="nonzero", rtol=1e-5),
    OpInfo(
        "divide_scalar",
        lambda a: ops.divide_scalar(a, _SCALAR),
        lambda a: a / _SCALAR,
        tuple(_UNARY),
    ),
    OpInfo("power", ops.power, np.power, tuple(_BINARY), domain="positive", rtol=1e-4),
    OpInfo(
        "power_scalar",
        lambda a: ops.power_scalar(a, 3),
        lambda a: a**3,
        tuple(_UNARY),
        rtol=1e-4,
        dtypes=NUMBERS,
    ),
    OpInfo("negate", ops.negate, np.negative, tuple(_UNARY), dtypes=NUMBERS),
    OpInfo("log", ops.log, np.log, tuple(_UNARY), domain="positive"),
    OpInfo("exp", ops.exp, np.exp, tuple(_UNARY), rtol=1e-5),
    OpInfo("relu", ops.relu, lambda a: np.maximum(a, 0), tuple(_UNARY), domain="distinct"),
    OpInfo("tanh", ops.tanh, np.tanh, tuple(_UNARY)),
    OpInfo("sigmoid", ops.sigmoid, lambda a: 1 / (1 + np.exp(-a)), tuple(_UNARY)),
    OpInfo("maximum", ops.maximum, np.maximum, tuple(_BINARY), domain="distinct", dtypes=NUMBERS),
    OpInfo(
        "astype",
        lambda a, dtype: ops.astype(a, dtype),
        lambda a, dtype: a,  # the values, in float64 (finite differences need the precision)
        tuple(
            _samples(((3, 4),), layouts=ALL_LAYOUTS, dtype="float64")
            + _samples(((2, 3),), dtype="float32")
        ),
    ),
    # movement
    OpInfo(
        "transpose",
        lambda a, axes=None: ops.transpose(a, axes),
        lambda a, axes=None: np.swapaxes(a, *(axes or (-2, -1))),
        tuple(
            _samples(((3, 4),), ((2, 3, 4),), layouts=ALL_LAYOUTS)
            + _samples(((2, 3, 4),), axes=(0, 2))
            + _samples(((0, 3),))
        ),
    ),
    OpInfo(
        "permute",
        lambda a, axes: ops.permute(a, axes),
        lambda a, axes: np.transpose(a, axes),
        tuple(_samples(((2, 3, 4),), layouts=ALL_LAYOUTS, axes=(2, 0, 1))),
    ),
    OpInfo(
        "reshape",
        lambda a, shape: ops.reshape(a, shape),
        lambda a, shape: np.reshape(a, shape),
        tuple(
            _samples(((3, 4),), layouts=ALL_LAYOUTS, shape=(2, 6))
            + _samples(((2, 3, 4),), layouts=ALL_LAYOUTS, shape=(4, -1))
            + _samples(((0, 3),), shape=(3, 0))
            + _samples(((1,),), shape=())
        ),
    ),
    OpInfo(
        "broadcast_to",
        lambda a, shape: ops.broadcast_to(a, shape),
        lambda a, shape: np.broadcast_to(a, shape),
        tuple(
            _samples(((3, 1),), shape=(3, 4))
            + _samples(((1, 4),), layouts=("contiguous", "noncontiguous"), shape=(2, 3, 4))
            + _samples(((4,),), shape=(2, 4))
            + _samples(((),), shape=(2, 3))
            + _samples(((1, 3),), shape=(0, 3))
        ),
    ),
    OpInfo(
        "flip",
        lambda a, axes: ops.flip(a, axes),
        lambda a, axes: np.flip(a, axes),
        tuple(
            _samples(((3, 4),), layouts=ALL_LAYOUTS, axes=(0,))
            + _samples(((2, 3, 4),), layouts=ALL_LAYOUTS, axes=(0, 2))
            + _samples(((0, 3),), axes=(1,))
        ),
    ),
    OpInfo(
        "dilate",
        lambda a, axes, dilation: ops.dilate(a, axes, dilation),
        _dilate_ref,
        tuple(
            _samples(((3, 4),), layouts=ALL_LAYOUTS, axes=(0,), dilation=1)
            + _samples(((2, 3, 4),), axes=(1, 2), dilation=2)
        ),
    ),
    OpInfo(
        "undilate",
        lambda a, axes, dilation: ops.undilate(a, axes, dilation),
        lambda a, axes, dilation: a[
            tuple(
                slice(None, None, dilation + 1) if i in axes else slice(None) for i in range(a.ndim)
            )
        ],
        tuple(
            _samples(((6, 4),), layouts=ALL_LAYOUTS, axes=(0,), dilation=1)
            + _samples(((2, 7, 4),), axes=(1, 2), dilation=2)
        ),
    ),
    OpInfo(
        "getitem",
        lambda a, idx: ops.getitem(a, idx),
        lambda a, idx: a[idx],
        tuple(
            _samples(((4, 5),), layouts=ALL_LAYOUTS, idx=(slice(1, None, 2), -1))
            + _samples(((3, 4, 5),), idx=(slice(None, None, -1), 2, slice(-4, -1)))
            + _samples(((3, 4),), idx=(slice(2, 2),))
        ),
    ),
    OpInfo(
        "pad",
        lambda a, axes: ops.pad(a, axes),
        lambda a, axes: np.pad(a, axes),
        tuple(_samples(((3, 4),), layouts=ALL_LAYOUTS, axes=((1, 0), (2, 3)))),
    ),
    # reductions
    OpInfo(
        "summation",
        lambda a, axes=None: ops.summation(a, axes),
        lambda a, axes=None: np.sum(a, axis=axes),
        tuple(
            _samples(((3, 4),), ((2, 3, 4),), layouts=ALL_LAYOUTS)
            + _samples(((2, 3, 4),), layouts=ALL_LAYOUTS, axes=1)
            + _samples(((2, 3, 4),), axes=(0, 2))
            + _samples(((0, 3),), axes=0)
            + _samples(((0, 3),), axes=1)
            + _samples(((1,),), axes=0)
        ),
    ),
    OpInfo(
        "max",
        lambda a, axes=None: ops.max(a, axes),
        lambda a, axes=None: np.max(a, axis=axes),
        tuple(
            _samples(((3, 4),), layouts=("contiguous", "noncontiguous"))
            + _samples(((2, 3, 4),), layouts=("contiguous", "noncontiguous"), axes=1)
            + _samples(((2, 3, 4),), axes=(0, 2))
            + _samples(((1,),), axes=0)
        ),
        domain="distinct",
    ),
    OpInfo(
        "mean",
        lambda a, axes=None: ops.mean(a, axes),
        lambda a, axes=None: np.mean(a, axis=axes),
        tuple(_samples(((3, 4),), layouts=ALL_LAYOUTS) + _samples(((2, 3, 4),), axes=(0, 2))),
    ),
    OpInfo(
        "logsumexp",
        lambda a, axes=None: ops.logsumexp(a, axes),
        _logsumexp_ref,
        tuple(
            _samples(((3, 4),), layouts=ALL_LAYOUTS)
            + _samples(((2, 3, 4),), layouts=ALL_LAYOUTS, axes=(1,))
            + _samples(((2, 3, 4),), axes=(0, 2))
            + _samples(((1, 5),), axes=1)
        ),
    ),
    OpInfo(
        "logsoftmax",
        lambda a, axes=-1: ops.logsoftmax(a, axes),
        lambda a, axes=-1: a - np.expand_dims(_logsumexp_ref(a, axes), axes),
        tuple(_samples(((3, 4),), ((2, 3, 4),), layouts=ALL_LAYOUTS) + _samples(((3, 4),), axes=0)),
    ),
    # normalization
    OpInfo(
        "batch_norm",
        lambda x, w, b, eps=1e-5: ops.batch_norm(x, w, b, eps),
        _batch_norm_ref,
        tuple(
            _samples(((5, 3), (3,), (3,)), ((3, 2, 2, 3), (2,), (2,)), layouts=ALL_LAYOUTS)
            + _samples(((1, 4), (4,), (4,)), ((6, 2), (2,), (2,)), ((2, 3, 4), (3,), (3,)), eps=0.5)
        ),
        rtol=1e-4,
        atol=1e-4,
    ),
    OpInfo(
        "layer_norm",
        lambda x, w, b, eps=1e-5: ops.layer_norm(x, w, b, eps),
        _layer_norm_ref,
        tuple(
            _samples(((5, 3), (3,), (3,)), ((2, 3, 4), (4,), (4,)), layouts=ALL_LAYOUTS)
            + _samples(((1, 4), (4,), (4,)), ((6, 2), (2,), (2,)), eps=0.5)
        ),
        rtol=1e-4,
        atol=1e-4,
    ),
    # recurrent
    OpInfo(
        "lstm_step",
        _lstm_step,
        _lstm_step_ref,
        tuple(
            _samples(((3, 8), (3, 2)), ((2, 12), (2, 3)), layouts=ALL_LAYOUTS)
            + _samples(((4, 8), (4, 2)), use="h")
            + _samples(((4, 8), (4, 2)), use="c")
            + _samples(((1, 4), (1, 1)))
        ),
    ),
    # linear algebra
    OpInfo(
        "matmul",
        ops.matmul,
        np.matmul,
        tuple(
            _samples(((3, 4), (4, 5)), layouts=("contiguous", "noncontiguous"))
            + _samples(((1, 1), (1, 1)), ((7, 1), (1, 3)), ((5, 0), (0, 3)), ((0, 4), (4, 2)))
            + _samples(((2, 3, 0), (0, 4)), ((2, 3, 0), (2, 0, 4)))  # empty inner: zeros
            + _samples(((2, 3, 4), (2, 4, 5)), layouts=("contiguous", "noncontiguous"))
            + _samples(((2, 3, 4), (4, 5)), ((4, 5), (2, 5, 3)), ((2, 1, 3, 4), (5, 4, 2)))
            + _samples(((4, 3, 4), (4, 4, 2)), layouts=("broadcast",))
        ),
        rtol=1e-4,
        atol=1e-4,
    ),
    OpInfo(
        "linear",
        ops.linear,
        lambda x, w, b=None: x @ w if b is None else x @ w + b.reshape(-1),
        tuple(
            _samples(((3, 4), (4, 5), (1, 5)), layouts=("contiguous", "noncontiguous"))
            + _samples(((2, 3, 4), (4, 5), (5,)), ((1, 1), (1, 1), (1,)), ((3, 4), (4, 2)))
        ),
        rtol=1e-4,
        atol=1e-4,
    ),
    OpInfo(
        "take",
        lambda a, indices: ops.take(a, indices),
        lambda a, indices: np.take(a, indices, 0),
        tuple(
            _samples(((5, 3),), layouts=ALL_LAYOUTS, indices=(0, 2, 2, 4, 2))
            + _samples(((6,),), indices=(5, 0, 5))
            + _samples(((4, 2, 3),), layouts=("noncontiguous",), indices=(3, 0))
            + _samples(((3, 2),), indices=())
        ),
    ),
    OpInfo(
        "softmax_cross_entropy",
        lambda a, labels: ops.softmax_cross_entropy(a, _index(labels, a)),
        _softmax_cross_entropy_ref,
        tuple(
            _samples(((4, 5),), layouts=ALL_LAYOUTS, labels=(0, 4, 2, 2))
            + _samples(((1, 1),), labels=(0,))
            + _samples(((3, 7),), labels=(6, 0, 3))
        ),
    ),
    OpInfo(
        "gather",
        lambda a, indices: ops.gather(a, _index(indices, a)),
        lambda a, indices: np.take(a, np.asarray(indices, dtype=np.int64), 0),
        tuple(
            _samples(((5, 3),), layouts=ALL_LAYOUTS, indices=((0, 2, 2), (4, 2, 1)))
            + _samples(((6,),), indices=(5, 0, 5))
            + _samples(((4, 2, 3),), layouts=("noncontiguous",), indices=(3, 0))
        ),
    ),
    OpInfo(
        "scatter_add",
        lambda a, indices, count: ops.scatter_add(a, _index(indices, a), count),
        _scatter_add_ref,
        tuple(
            _samples(((5, 3),), layouts=ALL_LAYOUTS, indices=(0, 2, 2, 4, 2), count=6)
            + _samples(((2, 3, 2),), indices=((1, 1, 0), (2, 0, 1)), count=3)
        ),
    ),
    OpInfo(
        "conv",
        lambda a, b, stride=1, padding=0: ops.conv(a, b, stride, padding),
        reference_conv,
        tuple(
            _samples(((2, 5, 5, 3), (3, 3, 3, 4)), layouts=("contiguous", "noncontiguous"))
            + _samples(((2, 5, 5, 3), (3, 3, 3, 4)), padding=1)
            + _samples(((1, 6, 7, 2), (3, 3, 2, 3)), stride=2, padding=1)
            + _samples(((1, 7, 7, 2), (2, 2, 2, 3)), stride=3)
            + _samples(((1, 4, 4, 2), (1, 1, 2, 3)), padding=2)
            + _samples(((1, 4, 4, 1), (3, 3, 1, 1)), stride=2, padding=3)
        ),
        rtol=1e-4,
        atol=1e-4,
    ),
    OpInfo(
        "conv_weight_grad",
        lambda x, g, kernel, stride=1, padding=0: ops.conv_weight_grad(
            x, g, kernel, stride, padding
        ),
        _conv_weight_grad_ref,
        tuple(
            _samples(
                ((2, 5, 5, 3), (2, 3, 3, 4)), layouts=("contiguous", "noncontiguous"), kernel=(3, 3)
            )
            + _samples(((2, 5, 5, 3), (2, 5, 5, 4)), kernel=(3, 3), padding=1)
            + _samples(((1, 6, 7, 2), (1, 3, 4, 3)), kernel=(3, 3), stride=2, padding=1)
            + _samples(((1, 7, 7, 2), (1, 2, 2, 3)), kernel=(2, 2), stride=3)
            + _samples(((1, 4, 4, 1), (1, 4, 4, 1)), kernel=(3, 3), stride=2, padding=3)
        ),
        rtol=1e-4,
        atol=1e-4,
    ),
    # tuples
    OpInfo(
        "stack",
        lambda a, b, axis: ops.stack([a, b], axis),
        lambda a, b, axis: np.stack([a, b], axis),
        tuple(
            _samples(((3, 4), (3, 4)), layouts=ALL_LAYOUTS, axis=0)
            + _samples(((3, 4), (3, 4)), axis=2)
            + _samples(((2, 3), (2, 3)), axis=-2)
        ),
    ),
    OpInfo(
        "split",
        lambda a, axis, i: ops.split(a, axis)[i],
        lambda a, axis, i: np.take(a, i, axis=axis),
        tuple(
            _samples(((3, 4),), layouts=ALL_LAYOUTS, axis=1, i=2)
            + _samples(((2, 3, 4),), axis=0, i=1)
        ),
    ),
    OpInfo(
        "make_tuple",
        lambda a, b: ops.tuple_get_item(ops.make_tuple(a, b), 1) * 2.0,
        lambda a, b: b * 2.0,
        tuple(_samples(((3, 4), (2, 2)), layouts=ALL_LAYOUTS)),
    ),
    OpInfo(
        "tuple_get_item",
        lambda a, b: ops.tuple_get_item(ops.make_tuple(a, b), 0) + 1.0,
        lambda a, b: a + 1.0,
        tuple(_samples(((3, 4), (2, 2)), layouts=ALL_LAYOUTS)),
    ),
)

# Ops that are exact on integers too: their table rows also run on int32 and int64.
_INTEGER_OPS = {
    "transpose", "permute", "reshape", "broadcast_to", "flip", "dilate", "undilate", "getitem",
    "pad", "summation", "max", "matmul", "take", "gather", "scatter_add", "stack", "split",
}  # fmt: skip
OP_TABLE = tuple(replace(op, dtypes=NUMBERS) if op.name in _INTEGER_OPS else op for op in OP_TABLE)
