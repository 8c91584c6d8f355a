"""Tensor initializers: the course's ``needle.init``.

Every random draw comes from numpy's global RNG on the host (``np.random.rand``
/ ``np.random.randn``), is scaled there in float64 as the course does, and is
cast to the requested dtype (float32 by default) once before it moves to the
device. A seeded program therefore draws bit-identical numbers on every backend,
in the order its modules are created.

That order is the course's default, and it makes a model's initial weights depend
on the order its modules were built in. :func:`reinitialize` is the opt-in
alternative: it redraws every parameter from the distribution it was created with,
from a generator seeded by a seed and the parameter's name in the model (its
state-dict key), so the weights no longer depend on creation order.
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .autograd import Tensor
from .backend_ndarray.dtypes import canonical
from .devices import BackendDevice, default_device
from .devices import device as _lookup_device
from .replay import host_array

__all__ = [
    "rand",
    "randn",
    "constant",
    "ones",
    "zeros",
    "randb",
    "one_hot",
    "zeros_like",
    "ones_like",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "reinitialize",
]

DeviceLike = BackendDevice | str | None


def _device(device: DeviceLike) -> BackendDevice:
    if device is None:
        return default_device()
    if isinstance(device, str):
        return _lookup_device(device)
    return device


def _shape(shape: tuple) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(int(d) for d in shape[0])
    return tuple(int(d) for d in shape)


def _dtype(dtype: Any) -> str:
    return "float32" if dtype is None else canonical(dtype)


# The distributions, each drawn from ``rng``: the ``np.random`` module (the course's global
# RNG) or a ``np.random.RandomState`` (reinitialize's per-name generators).
def _uniform(rng: Any, shape: tuple[int, ...], low: float, high: float) -> Any:
    return rng.rand(*shape) * (high - low) + low


def _normal(rng: Any, shape: tuple[int, ...], mean: float, std: float) -> Any:
    return rng.randn(*shape) * std + mean


def _bernoulli(rng: Any, shape: tuple[int, ...], p: float) -> Any:
    return rng.rand(*shape) <= p


def _constant(rng: Any, shape: tuple[int, ...], c: float) -> Any:
    return np.full(shape, c, dtype=np.float32)


@dataclass(frozen=True)
class _Recipe:
    """How an initializer drew a tensor: enough to draw it again with another generator."""

    draw: Callable[..., Any]
    args: tuple[float, ...]

    def __call__(self, rng: Any, shape: tuple[int, ...]) -> Any:
        return self.draw(rng, shape, *self.args)


# The latest initializer result and its recipe, per thread. ``Parameter(init.rand(...))``
# takes the recipe over (see _take_recipe); anything else just replaces it with the next draw.
_last_draw = threading.local()


def _from_host(
    recipe: _Recipe,
    shape: tuple[int, ...],
    device: DeviceLike,
    dtype: Any,
    requires_grad: bool,
) -> Tensor:
    """``recipe`` drawn from numpy's global RNG: a :func:`needle.jit` replay draws again."""
    data = host_array(lambda: np.asarray(recipe(np.random, shape)), _device(device), _dtype(dtype))
    tensor = Tensor(data, requires_grad=requires_grad)
    _last_draw.value = (weakref.ref(tensor), recipe)
    return tensor


def _take_recipe(tensor: Any) -> _Recipe | None:
    """The recipe of ``tensor`` when it is the latest initializer result of this thread.

    Called by :class:`needle.nn.Parameter` when it is made from a tensor, so a parameter
    made directly from an initializer (``Parameter(init.kaiming_uniform(...))``) knows how
    it was drawn; a parameter made from anything else (a reshaped draw, user data) does not.
    """
    last = getattr(_last_draw, "value", None)
    if last is None or last[0]() is not tensor:
        return None
    _last_draw.value = None
    return last[1]


def rand(
    *shape: int,
    low: float = 0.0,
    high: float = 1.0,
    device: DeviceLike = None,
    dtype: Any = "float32",
    requires_grad: bool = False,
) -> Tensor:
    """Uniform numbers in ``[low, high)``.

    Args:
        *shape: the tensor's shape (integers, or one tuple).
        low: lower bound.
        high: upper bound.
        device: the device (default device when None).
        dtype: the dtype (float32 by default).
        requires_grad: whether the result needs a gradient.

    Returns:
        A new leaf tensor, drawn by ``np.random.rand``.
    """
    recipe = _Recipe(_uniform, (low, high))
    return _from_host(recipe, _shape(shape), device, dtype, requires_grad)


def randn(
    *shape: int,
    mean: float = 0.0,
    std: float = 1.0,
    device: DeviceLike = None,
    dtype: Any = "float32",
    requires_grad: bool = False,
) -> Tensor:
    """Normal numbers with the given ``mean`` and ``std``, drawn by ``np.random.randn``.

    Args:
        *shape: the tensor's shape.
        mean: the mean.
        std: the standard deviation.
        device: the device (default device when None).
        dtype: the dtype (float32 by default).
        requires_grad: whether the result needs a gradient.
    """
    recipe = _Recipe(_normal, (mean, std))
    return _from_host(recipe, _shape(shape), device, dtype, requires_grad)


def constant(
    *shape: int,
    c: float = 1.0,
    device: DeviceLike = None,
    dtype: Any = "float32",
    requires_grad: bool = False,
) -> Tensor:
    """A tensor filled with ``c`` (no randomness drawn).

    Args:
        *shape: the tensor's shape.
        c: the fill value.
        device: the device (default device when None).
        dtype: the dtype (float32 by default).
        requires_grad: whether the result needs a gradient.
    """
    data = _device(device).full(_shape(shape), c, _dtype(dtype))
    tensor = Tensor(data, requires_grad=requires_grad)
    _last_draw.value = (weakref.ref(tensor), _Recipe(_constant, (float(c),)))
    return tensor


def ones(
    *shape: int, device: DeviceLike = None, dtype: Any = "float32", requires_grad: bool = False
) -> Tensor:
    """A tensor of ones. See :func:`constant`."""
    return constant(*shape, c=1.0, device=device, dtype=dtype, requires_grad=requires_grad)


def zeros(
    *shape: int, device: DeviceLike = None, dtype: Any = "float32", requires_grad: bool = False
) -> Tensor:
    """A tensor of zeros. See :func:`constant`."""
    return constant(*shape, c=0.0, device=device, dtype=dtype, requires_grad=requires_grad)


def randb(
    *shape: int,
    p: float = 0.5,
    device: DeviceLike = None,
    dtype: Any = "bool",
    requires_grad: bool = False,
) -> Tensor:
    """Bernoulli(``p``) samples: True where ``np.random.rand(*shape) <= p``.

    Args:
        *shape: the tensor's shape.
        p: the probability of a True (1).
        device: the device (default device when None).
        dtype: ``"bool"`` (the course's default) or a number dtype (1 and 0).
        requires_grad: whether the result needs a gradient (float dtypes only).
    """
    recipe = _Recipe(_bernoulli, (p,))
    return _from_host(recipe, _shape(shape), device, dtype, requires_grad)


def one_hot(
    n: int,
    i: Any,
    device: DeviceLike = None,
    dtype: Any = "float32",
    requires_grad: bool = False,
) -> Tensor:
    """One-hot rows: row ``k`` is the ``i[k]``-th row of the ``n``-by-``n`` identity.

    Args:
        n: the number of classes.
        i: integer labels (a Tensor, NDArray, numpy array or list), any shape.
        device: the device (default device when None).
        dtype: the dtype (float32 by default).
        requires_grad: whether the result needs a gradient.

    Returns:
        A tensor of shape ``i.shape + (n,)``.
    """
    labels = np.asarray(i.numpy() if hasattr(i, "numpy") else i)
    if labels.size and not np.all(labels == np.round(labels)):
        raise ValueError(f"one_hot labels must be integers, got {labels.ravel()[:5]}")
    data = _device(device).one_hot(n, labels.astype(np.int64), _dtype(dtype))
    return Tensor(data, requires_grad=requires_grad)


def zeros_like(array: Tensor, *, device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """Zeros with ``array``'s shape, on ``array``'s device unless ``device`` is given."""
    return zeros(
        *array.shape, device=device or array.device, dtype=array.dtype, requires_grad=requires_grad
    )


def ones_like(array: Tensor, *, device: DeviceLike = None, requires_grad: bool = False) -> Tensor:
    """Ones with ``array``'s shape, on ``array``'s device unless ``device`` is given."""
    return ones(
        *array.shape, device=device or array.device, dtype=array.dtype, requires_grad=requires_grad
    )


def xavier_uniform(fan_in: int, fan_out: int, gain: float = 1.0, **kwargs: Any) -> Tensor:
    """Glorot uniform: ``U(-a, a)``, ``a = gain * sqrt(6 / (fan_in + fan_out))``, shape
    ``(fan_in, fan_out)``. Extra keyword arguments go to :func:`rand`."""
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rand(fan_in, fan_out, low=-a, high=a, **kwargs)


def xavier_normal(fan_in: int, fan_out: int, gain: float = 1.0, **kwargs: Any) -> Tensor:
    """Glorot normal: ``N(0, std^2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``, shape
    ``(fan_in, fan_out)``. Extra keyword arguments go to :func:`randn`."""
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return randn(fan_in, fan_out, mean=0.0, std=std, **kwargs)


def _relu_gain(nonlinearity: str) -> float:
    if nonlinearity != "relu":
        raise ValueError(f"only nonlinearity='relu' is supported, got {nonlinearity!r}")
    return math.sqrt(2.0)


def kaiming_uniform(
    fan_in: int,
    fan_out: int,
    shape: Sequence[int] | None = None,
    nonlinearity: str = "relu",
    **kwargs: Any,
) -> Tensor:
    """He uniform: ``U(-bound, bound)``, ``bound = sqrt(2) * sqrt(3 / fan_in)``.

    Args:
        fan_in: inputs per unit (for a conv: ``cin * k * k``).
        fan_out: outputs per unit.
        shape: the tensor's shape; ``(fan_in, fan_out)`` when None.
        nonlinearity: ``"relu"``.
        **kwargs: ``device``, ``dtype``, ``requires_grad`` for :func:`rand`.
    """
    bound = _relu_gain(nonlinearity) * math.sqrt(3.0 / fan_in)
    shape = (fan_in, fan_out) if shape is None else tuple(shape)
    return rand(*shape, low=-bound, high=bound, **kwargs)


def kaiming_normal(
    fan_in: int,
    fan_out: int,
    shape: Sequence[int] | None = None,
    nonlinearity: str = "relu",
    **kwargs: Any,
) -> Tensor:
    """He normal: ``N(0, std^2)``, ``std = sqrt(2) / sqrt(fan_in)``.

    Args:
        fan_in: inputs per unit.
        fan_out: outputs per unit.
        shape: the tensor's shape; ``(fan_in, fan_out)`` when None.
        nonlinearity: ``"relu"``.
        **kwargs: ``device``, ``dtype``, ``requires_grad`` for :func:`randn`.
    """
    std = _relu_gain(nonlinearity) / math.sqrt(fan_in)
    shape = (fan_in, fan_out) if shape is None else tuple(shape)
    return randn(*shape, mean=0.0, std=std, **kwargs)


def _name_seed(seed: int, name: str) -> np.ndarray:
    """MT19937 seed words for ``(seed, name)``: a hash, so nearby seeds or names don't correlate."""
    digest = hashlib.sha256(f"needle.init.reinitialize\0{seed}\0{name}".encode()).digest()
    return np.frombuffer(digest, dtype="<u4")


def reinitialize(module: Any, seed: int) -> Any:
    """Redraw every parameter of ``module`` from a seed and the parameter's name.

    Each parameter is drawn again from the distribution it was created with (the same
    initializer and bounds), by a generator seeded from ``seed`` and the parameter's
    state-dict key (``"0.weight"``, ``"encoder.bias"``, ...). Its initial values then depend
    only on the seed, its name and its shape, not on the order modules were created in:
    two models with the same state-dict keys get identical parameters however they were
    built. numpy's global RNG is neither read nor advanced.

    This is opt-in. Without it, parameters keep the course's values (drawn from numpy's
    global RNG in creation order). Buffers (running statistics) are left as they are.
    Keys are relative to ``module``: reinitializing a submodule on its own names its
    parameters without the parent's prefix.

    Example::

        np.random.seed(0)
        model = ndl.models.MLPResNet(784, hidden_dim=100)
        ndl.init.reinitialize(model, seed=0)

    Args:
        module: a :class:`needle.nn.Module`.
        seed: an integer.

    Returns:
        ``module``, with new parameter values (the Parameter objects are kept, so an
        optimizer made before still updates them).

    Raises:
        TypeError: ``seed`` is not an integer.
        ValueError: a parameter was not made directly from an initializer
            (``Parameter(init.rand(...))``), so its distribution is unknown; the message
            names each such parameter, and no parameter is changed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"reinitialize: seed must be an integer, got {seed!r}")
    named = list(module.named_parameters())
    unknown = [name for name, p in named if getattr(p, "_init_recipe", None) is None]
    if unknown:
        raise ValueError(
            f"reinitialize: {len(unknown)} parameter(s) of {type(module).__name__} were not "
            f"made directly from a needle.init initializer, so how to redraw them is unknown: "
            f"{', '.join(unknown)}. Create them as Parameter(init.<initializer>(...)) "
            "(reshaping a draw loses it; pass the shape to the initializer instead)."
        )
    for name, param in named:
        rng = np.random.RandomState(_name_seed(int(seed), name))
        values = param._init_recipe(rng, tuple(param.shape))
        param.data = Tensor(
            np.ascontiguousarray(values, dtype=np.dtype(param.dtype)),
            device=param.device,
            dtype=param.dtype,
            requires_grad=False,
        )
    return module
