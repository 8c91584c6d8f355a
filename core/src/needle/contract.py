"""The backend contract: what every needle backend implements, declared once.

A backend is a module of flat functions on *handles* (opaque device buffers).
No needle object ever crosses into a backend: kernels receive handles, Python
scalars and ``(shape, strides, offset)`` tuples, with strides and offsets
counted in elements. The numpy backend (``needle-numpy``) is the living
specification: the simplest correct implementation of every function.

Everything about a kernel (name, parameters, group, version, meaning) is one
:class:`Kernel` row of :data:`KERNELS`. Validation (:func:`check_backend`), the
capability list (:func:`capabilities`), the dtype table (:func:`dtypes`) and the
documentation (:func:`describe`, ``needle info --contract``) all derive from it.

Conventions every function follows:

* ``out`` is always a handle the caller allocated with ``Array(size, dtype)``;
  functions write into it and return ``None``.
* Inputs named ``a``/``b`` of elementwise, reduction and matrix kernels are
  *compact* (dense, row-major) buffers; the caller compacts strided views first.
* The elementwise kernels (``ewise_*``, ``scalar_*``, ``broadcast_rows``, ``cast`` between
  equal dtypes) accept ``out`` equal to an input (the same handle): they update it in place,
  as numpy's ufuncs do with ``out=``. Optimizers and BatchNorm use this to keep their state
  in one buffer. No other kernel may be called with ``out`` overlapping an input.
* Handles carry their dtype (``handle.dtype``, one of :data:`DTYPES`). Core calls
  a kernel only with the dtypes the backend declares for the kernel's group, and
  with ``a``, ``b`` and ``out`` of one dtype, except: ``cast`` converts between
  any two declared dtypes, and the ``compare`` kernels write ``bool``.
* Scalars (``val``) arrive as Python ``float`` for float handles, ``int`` for
  integer handles and ``bool`` for bool handles.
* Sizes and dtypes are checked: a handle whose size or dtype does not match the
  call raises ``ValueError`` (never a crash, never a silent truncation).

Versions: core accepts every version in :data:`SUPPORTED_VERSIONS`. A plugin
declares the version it was built for. Version 1 backends hold float32 only:
``Array(size)`` takes no dtype, their compare kernels write 1.0/0.0 float32,
and they declare no dtype table. Version 2 adds dtypes (``Array(size, dtype)``,
``handle.dtype``, ``cast`` and the ``__dtypes__`` table). Optional kernels are
capabilities: core uses one when the backend defines it and composes the
required ones otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CONTRACT_VERSION",
    "SUPPORTED_VERSIONS",
    "DTYPES",
    "GROUPS",
    "Kernel",
    "KERNELS",
    "REQUIRED",
    "OPTIONAL",
    "Handle",
    "ContractError",
    "kernel",
    "check_view",
    "check_backend",
    "capabilities",
    "dtypes",
    "describe",
]

#: The version this needle-core speaks natively.
CONTRACT_VERSION = 2
#: Every version core can drive (a v1 backend keeps working, float32 only).
SUPPORTED_VERSIONS = range(1, CONTRACT_VERSION + 1)

#: The dtypes a handle may hold, by name.
DTYPES = ("float32", "float64", "int32", "int64", "bool")

#: Kernel groups: a backend declares, per group, the dtypes its kernels accept.
GROUPS = {
    "memory": "allocation, host transfer, fills, strided copies and casts",
    "arithmetic": "elementwise arithmetic of two arrays or an array and a scalar",
    "compare": "elementwise comparisons (the result is bool; 1.0/0.0 float32 in v1, which has "
    "only == and >=); false wherever NaN is involved, except !=",
    "unary": "elementwise log, exp and tanh (float dtypes)",
    "matmul": "matrix products and convolution",
    "reduce": "sums and maxima of contiguous blocks",
    "device": "device-wide services (caches, synchronisation): no dtype",
}


@dataclass(frozen=True)
class Kernel:
    """One function of the contract.

    Attributes:
        name: the function's name in every backend (Python, C++ and CUDA alike).
        params: its positional parameters.
        group: its :data:`GROUPS` entry (which dtypes it accepts is declared per group).
        doc: what it computes.
        optional: a capability (core composes required kernels without it).
        since: the contract version that introduced it.
        v1_params: the parameters under contract v1, when they differ.
    """

    name: str
    params: tuple[str, ...]
    group: str
    doc: str
    optional: bool = False
    since: int = 1
    v1_params: tuple[str, ...] | None = None

    def params_for(self, version: int) -> tuple[str, ...]:
        return self.v1_params if version == 1 and self.v1_params is not None else self.params

    def signature(self, version: int = CONTRACT_VERSION) -> str:
        if self.name.startswith("__"):  # an attribute, not a function
            return self.name
        return f"{self.name}({', '.join(self.params_for(version))})"


_VIEW = ("shape", "strides", "offset")


def _binary(name: str, group: str, what: str, optional: bool = False, since: int = 1) -> Kernel:
    return Kernel(name, ("a", "b", "out"), group, f"out = {what} elementwise", optional, since)


def _scalar(name: str, group: str, what: str, since: int = 1) -> Kernel:
    return Kernel(name, ("a", "val", "out"), group, f"out = {what} elementwise", since=since)


def _unary(name: str, what: str) -> Kernel:
    return Kernel(name, ("a", "out"), "unary", f"out = {what}(a) elementwise")


#: The whole contract, in the order the documentation lists it.
KERNELS: tuple[Kernel, ...] = (
    Kernel("__device_name__", (), "memory", "a string: the device's name (not a function)"),
    Kernel(
        "Array",
        ("size", "dtype"),
        "memory",
        "allocate an aligned buffer of `size` elements of `dtype` (contents undefined); the "
        "handle has `.size`, `.dtype` and `.ptr()`",
        v1_params=("size",),
    ),
    Kernel("to_numpy", ("a", *_VIEW), "memory", "a new numpy array holding the view of `a`"),
    Kernel(
        "from_numpy",
        ("arr", "out"),
        "memory",
        "copy the C-contiguous numpy array `arr` (out's dtype and size) into `out`",
    ),
    Kernel("fill", ("out", "val"), "memory", "set every element of `out` to `val`"),
    Kernel(
        "compact",
        ("a", "out", *_VIEW),
        "memory",
        "copy the view (shape, strides, offset) of `a` densely into `out`; strides may be "
        "zero (broadcast) or negative (flip)",
    ),
    Kernel(
        "ewise_setitem",
        ("a", "out", *_VIEW),
        "memory",
        "write compact `a` (prod(shape) elements) into the view of `out`",
    ),
    Kernel(
        "scalar_setitem",
        ("size", "val", "out", *_VIEW),
        "memory",
        "write `val` into every element of the view of `out` (`size` of them)",
    ),
    Kernel(
        "cast",
        ("a", "out"),
        "memory",
        "out = a converted to out's dtype, as numpy's astype (float to int truncates toward "
        "zero; NaN, inf and out-of-range values give an unspecified value, never a crash)",
        since=2,
    ),
    _binary("ewise_add", "arithmetic", "a + b"),
    _binary("ewise_mul", "arithmetic", "a * b"),
    _binary("ewise_div", "arithmetic", "a / b (float dtypes)"),
    _binary("ewise_maximum", "arithmetic", "max(a, b), NaN if either is NaN"),
    _binary("ewise_power", "arithmetic", "a ** b", optional=True),
    _scalar("scalar_add", "arithmetic", "a + val"),
    _scalar("scalar_mul", "arithmetic", "a * val"),
    _scalar("scalar_div", "arithmetic", "a / val (float dtypes)"),
    _scalar(
        "scalar_power", "arithmetic", "a ** val (as pow: no shortcuts that differ at -0.0 or -inf)"
    ),
    _scalar("scalar_maximum", "arithmetic", "max(a, val), NaN if a is NaN"),
    _binary("ewise_eq", "compare", "a == b"),
    _binary("ewise_ne", "compare", "a != b (true where either is NaN)", since=2),
    _binary("ewise_ge", "compare", "a >= b"),
    _binary("ewise_gt", "compare", "a > b", since=2),
    _scalar("scalar_eq", "compare", "a == val"),
    _scalar("scalar_ne", "compare", "a != val", since=2),
    _scalar("scalar_ge", "compare", "a >= val"),
    _scalar("scalar_gt", "compare", "a > val", since=2),
    _scalar("scalar_le", "compare", "a <= val", since=2),
    _scalar("scalar_lt", "compare", "a < val", since=2),
    _unary("ewise_log", "log"),
    _unary("ewise_exp", "exp"),
    _unary("ewise_tanh", "tanh"),
    Kernel(
        "matmul",
        ("a", "b", "out", "m", "n", "p"),
        "matmul",
        "out (m, p) = a (m, n) @ b (n, p), all compact row-major",
    ),
    Kernel(
        "matmul_t",
        ("a", "b", "out", "m", "n", "p", "trans_a", "trans_b"),
        "matmul",
        "out (m, p) = A @ B where A is compact a (m, n), or, when trans_a, compact a (n, m) "
        "read transposed, and B is compact b (n, p), or (p, n) read transposed when trans_b "
        "(a transposed view multiplied without a copy; without it core compacts the view "
        "and calls matmul)",
        optional=True,
        since=2,
    ),
    Kernel(
        "bmm",
        ("a", "b", "out", "batch", "m", "n", "p"),
        "matmul",
        "a batch of compact (m, n) @ (n, p) products (without it core loops over matmul)",
        optional=True,
    ),
    Kernel(
        "conv2d",
        ("a", "weight", "out", "n", "h", "w", "cin", "cout", "k", "stride", "padding"),
        "matmul",
        "NHWC input `a` (n, h, w, cin), weight (k, k, cin, cout), zero padding, compact "
        "(n, ho, wo, cout) output (without it core uses im2col through compact + matmul)",
        optional=True,
    ),
    Kernel(
        "conv2d_grad_input",
        ("grad", "weight", "out", "n", "h", "w", "cin", "cout", "k", "stride", "padding"),
        "matmul",
        "the input gradient of conv2d: out (n, h, w, cin) = for every output pixel, its "
        "gradient row of grad (n, ho, wo, cout) times weight (k, k, cin, cout) transposed, "
        "added over the input positions of its patch (the padding's share dropped; without "
        "it core convolves the dilated, padded gradient with the flipped weight)",
        optional=True,
        since=2,
    ),
    Kernel(
        "conv2d_grad_weight",
        ("a", "grad", "out", "n", "h", "w", "cin", "cout", "k", "stride", "padding"),
        "matmul",
        "the weight gradient of conv2d: out (k, k, cin, cout) = the sum over output pixels of "
        "each input patch (zero padding) times the gradient grad (n, ho, wo, cout) there "
        "(without it core multiplies the transposed im2col matrix by the gradient)",
        optional=True,
        since=2,
    ),
    Kernel(
        "matmul_tiled",
        ("a", "b", "out", "m", "n", "p"),
        "matmul",
        "the course's tiled product: a (m/T, n/T, T, T) @ b (n/T, p/T, T, T) into out "
        "(m/T, p/T, T, T), T = the module's `__tile_size__`",
        optional=True,
    ),
    Kernel(
        "reduce_sum",
        ("a", "out", "reduce_size"),
        "reduce",
        "out[i] = sum(a[i*reduce_size:(i+1)*reduce_size])",
    ),
    Kernel(
        "reduce_max",
        ("a", "out", "reduce_size"),
        "reduce",
        "out[i] = max(a[i*reduce_size:(i+1)*reduce_size]), NaN if the block holds one",
    ),
    Kernel(
        "to_dlpack",
        ("a", *_VIEW),
        "memory",
        "an object with `__dlpack__` and `__dlpack_device__` sharing the view's memory "
        "(it keeps `a` alive)",
        optional=True,
        since=2,
    ),
    Kernel(
        "from_dlpack",
        ("obj",),
        "memory",
        "`(handle, shape)`: a handle sharing the memory of the C-contiguous DLPack producer "
        "`obj` (it keeps `obj` alive) and the producer's shape; raise BufferError when the "
        "memory cannot be shared",
        optional=True,
        since=2,
    ),
    Kernel(
        "broadcast_rows",
        ("op", "a", "b", "out", "width"),
        "arithmetic",
        "out[i, j] = a[i, j] (op) b[j] for compact a and out (rows of width) and compact b "
        "(width,); op is 'add', 'mul', 'div' or 'maximum' (a bias add without a full-size copy "
        "of the bias; without it core compacts the broadcast view and runs ewise_<op>)",
        optional=True,
        since=2,
    ),
    Kernel(
        "softmax_cross_entropy",
        ("logits", "labels", "losses", "probs", "n", "k"),
        "unary",
        "for each row i of compact logits (n, k) and int64 label l = labels[i] in [0, k): "
        "top = the row's max clamped to the dtype's finite range, e = exp(row - top), "
        "s = sum(e); probs[i] = e / s and losses[i] = log(s) + top - row[l] (without it core "
        "composes logsumexp and a one-hot pick)",
        optional=True,
        since=2,
    ),
    Kernel(
        "softmax_cross_entropy_grad",
        ("probs", "labels", "g", "out", "n", "k"),
        "unary",
        "out[i, j] = probs[i, j] * g[i] - (j == labels[i]) * g[i] for compact probs (n, k) "
        "and g (n,): the gradient of softmax_cross_entropy's losses",
        optional=True,
        since=2,
    ),
    Kernel(
        "batch_norm",
        (
            "x",
            "weight",
            "bias",
            "out",
            "mean",
            "invstd",
            "running_mean",
            "running_var",
            "outer",
            "channels",
            "inner",
            "eps",
            "momentum",
        ),  # fmt: skip
        "unary",
        "batch normalization for training, per channel c of compact float x (outer, channels, "
        "inner) over its outer * inner values: in double, mu = their mean and var = the mean "
        "of (x - mu)^2 (biased); mean[c] = mu and invstd[c] = 1 / sqrt(var + eps), rounded; "
        "out = ((x - mean[c]) * invstd[c]) * weight[c] + bias[c], each operation rounded; "
        "when momentum is not 0, in double then rounded, running_mean[c] = (1 - momentum) * "
        "running_mean[c] + momentum * mu and running_var[c] likewise with var (when it is 0 "
        "the running handles are neither read nor written; without it core composes "
        "reductions and elementwise kernels)",
        optional=True,
        since=2,
    ),
    Kernel(
        "batch_norm_grad",
        (
            "g",
            "x",
            "weight",
            "mean",
            "invstd",
            "dx",
            "dweight",
            "dbias",
            "outer",
            "channels",
            "inner",
        ),  # fmt: skip
        "unary",
        "the gradients of batch_norm's out for its adjoint g (x's layout), per channel c with "
        "xhat = (x - mean[c]) * invstd[c] (rounded): dbias[c] = sum(g) and dweight[c] = "
        "sum(g * xhat), summed in double; dx = (weight[c] * invstd[c]) * ((g - dbias[c] / M) "
        "- xhat * (dweight[c] / M)) with M = outer * inner and the two means taken in double, "
        "each operation rounded",
        optional=True,
        since=2,
    ),
    Kernel(
        "pack",
        ("arrays", "out", "offsets"),
        "memory",
        "out[offsets[i] : offsets[i] + arrays[i].size] = arrays[i] for each compact buffer of "
        "the sequence arrays (all of out's dtype; ranges checked to lie in out, none "
        "overlapping out's memory): gradient buckets in one call (without it core copies each "
        "with ewise_setitem)",
        optional=True,
        since=2,
    ),
    Kernel(
        "unpack",
        ("a", "outs", "offsets", "scale"),
        "memory",
        "outs[i] = a[offsets[i] : offsets[i] + outs[i].size] * scale for each compact buffer "
        "of the sequence outs (all of a's dtype; ranges checked to lie in a): the inverse of "
        "pack; scale 1.0 copies the bits (any dtype), any other scales float buffers, each "
        "product rounded to the dtype as scalar_mul's (without it core copies each with "
        "compact, then runs scalar_mul)",
        optional=True,
        since=2,
    ),
    Kernel(
        "slices",
        ("a", "offsets", "sizes"),
        "memory",
        "a tuple of new handles, the i-th holding the sizes[i] elements of compact buffer a "
        "from element offsets[i] (a's dtype) in a's own memory: writes through either are "
        "seen by the other, and the memory lives while any of them does (ranges checked to "
        "lie in a). DistributedDataParallel hands out its averaged gradients this way, "
        "without copying them out of the bucket (without it core copies them with unpack)",
        optional=True,
        since=2,
    ),
    Kernel(
        "gather_rows",
        ("a", "indices", "out", "count", "width"),
        "memory",
        "out (count, width) = rows indices[j] of compact a (rows of width); indices is a "
        "compact int64 buffer of count values in range (checked: IndexError otherwise)",
        optional=True,
        since=2,
    ),
    Kernel(
        "scatter_add_rows",
        ("a", "indices", "out", "count", "width"),
        "arithmetic",
        "out[indices[j]] += a[j] for j = 0..count-1 in order (rows of width; indices int64, "
        "checked); out holds the starting values",
        optional=True,
        since=2,
    ),
    Kernel(
        "sgd_update",
        ("params", "grads", "momenta", "b", "one_minus_b", "neg_lr", "weight_decay"),
        "arithmetic",
        "in place, for each handle triple (tuples of compact buffers of one dtype): "
        "g = grads[i] + params[i] * weight_decay (skipped when weight_decay is 0); "
        "momenta[i] = momenta[i] * b + g * one_minus_b; params[i] = params[i] + momenta[i] * "
        "neg_lr; each operation rounded to the dtype, in that order (without it core runs "
        "the same composition of elementwise kernels)",
        optional=True,
        since=2,
    ),
    Kernel(
        "adam_update",
        (
            "params",
            "grads",
            "firsts",
            "seconds",
            "b1",
            "one_minus_b1",
            "b2",
            "one_minus_b2",
            "weight_decay",
            "step",
            "eps_hat",
        ),  # fmt: skip
        "arithmetic",
        "in place, for each parameter i: g = grads[i] + params[i] * weight_decay (skipped "
        "when 0); m = m * b1 + g * one_minus_b1; v = v * b2 + (g * g) * one_minus_b2; "
        "params[i] = params[i] + (m * step) / (v ** 0.5 + eps_hat), each operation rounded "
        "to the dtype (without it core runs the same composition of elementwise kernels)",
        optional=True,
        since=2,
    ),
    Kernel(
        "run_program",
        ("calls",),
        "device",
        "run a recorded program: a list of (kernel name, args) pairs, in order, exactly as "
        "if each kernel were called with its args (ndl.jit's replay; without it core calls "
        "the kernels one by one)",
        optional=True,
        since=2,
    ),
    Kernel(
        "synchronize",
        (),
        "device",
        "wait until every kernel launched so far has finished",
        optional=True,
    ),
    Kernel(
        "empty_cache",
        (),
        "device",
        "return cached free buffers to the system",
        optional=True,
    ),
    Kernel(
        "memory_stats",
        (),
        "device",
        "a dict of int counters about the backend's memory (e.g. cached_bytes, hits, misses)",
        optional=True,
    ),
)

_BY_NAME = {k.name: k for k in KERNELS}

#: Names every backend defines (``__device_name__`` is a string, the rest callables).
REQUIRED: tuple[str, ...] = tuple(k.name for k in KERNELS if not k.optional)

#: Optional capabilities: ``{name: description}``.
OPTIONAL: dict[str, str] = {k.name: f"{k.signature()}: {k.doc}" for k in KERNELS if k.optional}


@runtime_checkable
class Handle(Protocol):
    """A device buffer of ``size`` elements of ``dtype`` (v1 handles: float32, no ``dtype``)."""

    size: int

    def ptr(self) -> int:
        """An integer identifying the buffer's address (for debugging and aliasing checks)."""


class ContractError(TypeError):
    """A backend module does not implement the contract; the message names every problem."""


def kernel(name: str) -> Kernel:
    """The :class:`Kernel` row called ``name`` (``KeyError`` when the contract has none)."""
    return _BY_NAME[name]


def check_view(size: int, shape: Sequence[int], strides: Sequence[int], offset: int) -> int:
    """The number of elements of the view ``(shape, strides, offset)`` of a ``size``-element
    buffer; ``ValueError`` naming the view when it reaches outside the buffer.

    The one bounds check of the contract: backends written in Python call it before they
    touch memory (compiled backends check the same rule natively).
    """
    shape, strides = tuple(shape), tuple(strides)
    if len(shape) != len(strides):
        raise ValueError(f"shape {shape} and strides {strides} have different lengths")
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    from .backend_ndarray.strides import extent, prod

    count = prod(shape)
    if count == 0:
        return 0
    lo, hi = extent(shape, strides, offset)
    if lo < 0 or hi >= size:
        raise ValueError(
            f"view (shape={shape}, strides={strides}, offset={offset}) reaches elements "
            f"{lo}..{hi} outside a buffer of {size}"
        )
    return count


def _arity(fn: Any) -> int | None:
    """Number of positional parameters of ``fn``, or None when it cannot be known."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _applies(k: Kernel, version: int) -> bool:
    return k.since <= version


def check_backend(
    module: ModuleType | Any, name: str | None = None, version: int = CONTRACT_VERSION
) -> None:
    """Raise :class:`ContractError` naming every missing or wrong function of ``module``.

    ``version`` is the contract version the backend declares; the checks are those of
    that version (a v1 backend needs no ``cast`` and no dtype table).
    """
    problems: list[str] = []
    if version not in SUPPORTED_VERSIONS:
        problems.append(
            f"contract v{version} is not one of v{SUPPORTED_VERSIONS[0]}..v{SUPPORTED_VERSIONS[-1]}"
        )
    for k in KERNELS:
        if not _applies(k, version):
            continue
        value = getattr(module, k.name, None)
        if value is None:
            if not k.optional:
                problems.append(f"missing {k.name}")
            continue
        if k.name == "__device_name__":
            if not isinstance(value, str):
                problems.append(f"__device_name__ is {type(value).__name__}, not str")
            continue
        if not callable(value):
            problems.append(f"{'optional ' if k.optional else ''}{k.name} is not callable")
            continue
        want, got = len(k.params_for(version)), _arity(value)
        if got is not None and got != want:
            problems.append(
                f"{k.name} takes {got} positional arguments, the contract says {want} "
                f"({k.signature(version)})"
            )
    if version >= 2:
        problems.extend(_check_dtype_table(module))
    if problems:
        label = name or getattr(module, "__name__", repr(module))
        raise ContractError(
            f"backend {label!r} does not meet needle backend contract v{version}: "
            + "; ".join(problems)
        )


def _check_dtype_table(module: Any) -> list[str]:
    table = getattr(module, "__dtypes__", None)
    if not isinstance(table, dict):
        return ["__dtypes__ (a dict: kernel group -> tuple of dtype names) is missing"]
    problems = []
    for group, names in table.items():
        if group not in GROUPS or group == "device":
            problems.append(f"__dtypes__ names an unknown kernel group {group!r}")
            continue
        if isinstance(names, str) or not isinstance(names, Iterable):
            problems.append(f"__dtypes__[{group!r}] is not a tuple of dtype names")
            continue
        unknown = [n for n in names if n not in DTYPES]
        if unknown:
            problems.append(f"__dtypes__[{group!r}] names unknown dtypes {unknown}")
    memory = table.get("memory", ())
    if "float32" not in memory:
        problems.append("__dtypes__['memory'] must include float32")
    for group, names in table.items():
        if group in GROUPS and group not in ("memory", "device") and not isinstance(names, str):
            beyond = [n for n in names if n not in memory]
            if beyond:
                problems.append(f"__dtypes__[{group!r}] has {beyond}, which 'memory' lacks")
    return problems


def capabilities(module: ModuleType | Any, version: int = CONTRACT_VERSION) -> tuple[str, ...]:
    """The optional kernels ``module`` defines, in :data:`KERNELS` order."""
    return tuple(
        k.name
        for k in KERNELS
        if k.optional and _applies(k, version) and callable(getattr(module, k.name, None))
    )


def dtypes(module: ModuleType | Any, version: int = CONTRACT_VERSION) -> dict[str, tuple[str, ...]]:
    """``{group: dtypes}`` the backend accepts (v1 backends: float32 everywhere)."""
    groups = [g for g in GROUPS if g != "device"]
    if version == 1:
        return {g: ("float32",) for g in groups}
    table = getattr(module, "__dtypes__", {})
    return {g: tuple(d for d in DTYPES if d in table.get(g, ())) for g in groups}


def describe(version: int = CONTRACT_VERSION) -> str:
    """The contract as a Markdown table (the documentation derives from :data:`KERNELS`)."""
    lines = [
        f"needle backend contract v{version}",
        "",
        "| kernel | group | required | since | meaning |",
        "|---|---|---|---|---|",
    ]
    for k in KERNELS:
        if _applies(k, version):
            need = "optional" if k.optional else "required"
            lines.append(
                f"| `{k.signature(version)}` | {k.group} | {need} | v{k.since} | {k.doc} |"
            )
    lines += ["", "Kernel groups (a backend declares the dtypes of each in `__dtypes__`):", ""]
    lines += [f"- `{g}`: {doc}" for g, doc in GROUPS.items()]
    return "\n".join(lines)
