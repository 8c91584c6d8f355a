"""The backend contract: what every needle backend implements, declared once.

A backend is a module of flat functions on *handles* (opaque device buffers of
float32). No needle object ever crosses into a backend: kernels receive
handles, Python scalars and ``(shape, strides, offset)`` tuples, with strides
and offsets counted in elements. The numpy backend (``needle-numpy``) is the
living specification: the simplest correct implementation of every function.

Conventions every function follows:

* ``out`` is always a handle the caller allocated with ``Array(size)``;
  functions write into it and return ``None``.
* Inputs named ``a``/``b`` of elementwise and reduction kernels are *compact*
  (dense, row-major) buffers; the caller compacts strided views first.
* Sizes are checked: a handle whose size does not match the call raises
  ``ValueError`` (never a crash, never a silent truncation).
* ``eq``/``ge`` write 1.0 where true and 0.0 where false.

Bump :data:`CONTRACT_VERSION` whenever a required function is added, removed
or changes meaning. Plugins declare the version they were built for and a
mismatch is a recorded, explained skip.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CONTRACT_VERSION",
    "REQUIRED",
    "OPTIONAL",
    "Handle",
    "Backend",
    "ContractError",
    "check_backend",
    "capabilities",
]

CONTRACT_VERSION = 1

Shape = Sequence[int]


@runtime_checkable
class Handle(Protocol):
    """A device buffer of ``size`` float32 elements."""

    size: int

    def ptr(self) -> int:
        """An integer identifying the buffer's address (for debugging and aliasing checks)."""


class Backend(Protocol):
    """The functions a backend module defines, under exactly these names."""

    __device_name__: str

    def Array(self, size: int) -> Handle:
        """Allocate an aligned buffer of ``size`` float32 elements (contents undefined)."""

    def to_numpy(self, a: Handle, shape: Shape, strides: Shape, offset: int) -> Any:
        """Return a *new* numpy float32 array holding the strided view of ``a``."""

    def from_numpy(self, arr: Any, out: Handle) -> None:
        """Copy the C-contiguous float32 numpy array ``arr`` (same size) into ``out``."""

    def fill(self, out: Handle, val: float) -> None:
        """Set every element of ``out`` to ``val``."""

    def compact(self, a: Handle, out: Handle, shape: Shape, strides: Shape, offset: int) -> None:
        """Copy the strided view ``(shape, strides, offset)`` of ``a`` densely into ``out``.

        Strides may be zero (broadcast) or negative (flip)."""

    def ewise_setitem(
        self, a: Handle, out: Handle, shape: Shape, strides: Shape, offset: int
    ) -> None:
        """Write compact ``a`` (``prod(shape)`` elements) into the strided view of ``out``."""

    def scalar_setitem(
        self, size: int, val: float, out: Handle, shape: Shape, strides: Shape, offset: int
    ) -> None:
        """Write ``val`` into every element of the strided view of ``out`` (``size`` of them)."""

    def ewise_add(self, a: Handle, b: Handle, out: Handle) -> None: ...
    def ewise_mul(self, a: Handle, b: Handle, out: Handle) -> None: ...
    def ewise_div(self, a: Handle, b: Handle, out: Handle) -> None: ...
    def ewise_maximum(self, a: Handle, b: Handle, out: Handle) -> None: ...
    def ewise_eq(self, a: Handle, b: Handle, out: Handle) -> None: ...
    def ewise_ge(self, a: Handle, b: Handle, out: Handle) -> None: ...
    def scalar_add(self, a: Handle, val: float, out: Handle) -> None: ...
    def scalar_mul(self, a: Handle, val: float, out: Handle) -> None: ...
    def scalar_div(self, a: Handle, val: float, out: Handle) -> None: ...
    def scalar_power(self, a: Handle, val: float, out: Handle) -> None: ...
    def scalar_maximum(self, a: Handle, val: float, out: Handle) -> None: ...
    def scalar_eq(self, a: Handle, val: float, out: Handle) -> None: ...
    def scalar_ge(self, a: Handle, val: float, out: Handle) -> None: ...
    def ewise_log(self, a: Handle, out: Handle) -> None: ...
    def ewise_exp(self, a: Handle, out: Handle) -> None: ...
    def ewise_tanh(self, a: Handle, out: Handle) -> None: ...

    def matmul(self, a: Handle, b: Handle, out: Handle, m: int, n: int, p: int) -> None:
        """``out (m, p) = a (m, n) @ b (n, p)``, all compact row-major."""

    def reduce_sum(self, a: Handle, out: Handle, reduce_size: int) -> None:
        """``out[i] = sum(a[i*reduce_size:(i+1)*reduce_size])``."""

    def reduce_max(self, a: Handle, out: Handle, reduce_size: int) -> None:
        """``out[i] = max(a[i*reduce_size:(i+1)*reduce_size])``."""


#: Every backend defines these names. ``__device_name__`` is a string, the rest are callables.
REQUIRED: tuple[str, ...] = (
    "__device_name__",
    "Array",
    "to_numpy",
    "from_numpy",
    "fill",
    "compact",
    "ewise_setitem",
    "scalar_setitem",
    "ewise_add",
    "ewise_mul",
    "ewise_div",
    "ewise_maximum",
    "ewise_eq",
    "ewise_ge",
    "scalar_add",
    "scalar_mul",
    "scalar_div",
    "scalar_power",
    "scalar_maximum",
    "scalar_eq",
    "scalar_ge",
    "ewise_log",
    "ewise_exp",
    "ewise_tanh",
    "matmul",
    "reduce_sum",
    "reduce_max",
)

#: Optional capabilities. A backend declares one by defining it; core uses it
#: when present and composes the required primitives otherwise.
OPTIONAL: dict[str, str] = {
    "ewise_power": "ewise_power(a, b, out): out = a ** b elementwise "
    "(without it core computes exp(b * log(a)), valid for a > 0)",
    "bmm": "bmm(a, b, out, batch, m, n, p): batch of compact (m, n) @ (n, p) products "
    "(without it core loops over matmul)",
    "conv2d": "conv2d(a, w, out, n, h, w, cin, cout, k, stride, padding): NHWC input, "
    "(k, k, cin, cout) weight, zero padding, compact (n, ho, wo, cout) output "
    "(without it core uses im2col through compact + matmul)",
    "matmul_tiled": "matmul_tiled(a, b, out, m, n, p) on tiled layouts, with __tile_size__",
}


class ContractError(TypeError):
    """A backend module does not implement the contract; the message names every problem."""


def _arity(fn: Any) -> int | None:
    """Number of positional parameters of ``fn``, or None when it cannot be known (C functions)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


_ARITY = {
    "to_numpy": 4,
    "from_numpy": 2,
    "fill": 2,
    "compact": 5,
    "ewise_setitem": 5,
    "scalar_setitem": 6,
    "matmul": 6,
    "reduce_sum": 3,
    "reduce_max": 3,
    "ewise_log": 2,
    "ewise_exp": 2,
    "ewise_tanh": 2,
    "ewise_power": 3,
    "bmm": 7,
    "conv2d": 11,
}
for _name in REQUIRED:
    if _name.startswith(("ewise_", "scalar_")) and _name not in _ARITY:
        _ARITY[_name] = 3


def check_backend(module: ModuleType | Any, name: str | None = None) -> None:
    """Raise :class:`ContractError` naming every missing or wrong function of ``module``."""
    problems: list[str] = []
    for fn_name in REQUIRED:
        if not hasattr(module, fn_name):
            problems.append(f"missing {fn_name}")
            continue
        value = getattr(module, fn_name)
        if fn_name == "__device_name__":
            if not isinstance(value, str):
                problems.append(f"__device_name__ is {type(value).__name__}, not str")
            continue
        if not callable(value):
            problems.append(f"{fn_name} is not callable")
            continue
        want, got = _ARITY.get(fn_name), _arity(value)
        if want is not None and got is not None and got != want:
            problems.append(f"{fn_name} takes {got} positional arguments, the contract says {want}")
    for fn_name in OPTIONAL:
        value = getattr(module, fn_name, None)
        if value is not None and not callable(value):
            problems.append(f"optional {fn_name} is defined but not callable")
    if problems:
        label = name or getattr(module, "__name__", repr(module))
        raise ContractError(
            f"backend {label!r} does not meet needle backend contract v{CONTRACT_VERSION}: "
            + "; ".join(problems)
        )


def capabilities(module: ModuleType | Any) -> tuple[str, ...]:
    """The optional capabilities ``module`` declares, in :data:`OPTIONAL` order."""
    return tuple(n for n in OPTIONAL if callable(getattr(module, n, None)))
