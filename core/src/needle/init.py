"""Tensor initializers: the course's ``needle.init``.

Every random draw comes from numpy's global RNG on the host (``np.random.rand``
/ ``np.random.randn``), is scaled there in float64 as the course does, and is
cast to the requested dtype (float32 by default) once before it moves to the
device. A seeded program therefore draws bit-identical numbers on every backend,
in the order its modules are created.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


def _from_host(
    draw: Callable[[], np.ndarray], device: DeviceLike, dtype: Any, requires_grad: bool
) -> Tensor:
    """A tensor of the host numbers ``draw()`` makes; a :func:`needle.jit` replay draws again."""
    data = host_array(lambda: np.asarray(draw()), _device(device), _dtype(dtype))
    return Tensor(data, requires_grad=requires_grad)


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
    shape = _shape(shape)
    return _from_host(
        lambda: np.random.rand(*shape) * (high - low) + low, device, dtype, requires_grad
    )


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
    shape = _shape(shape)
    return _from_host(lambda: np.random.randn(*shape) * std + mean, device, dtype, requires_grad)


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
    return Tensor(data, requires_grad=requires_grad)


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
    shape = _shape(shape)
    return _from_host(lambda: np.random.rand(*shape) <= p, device, dtype, requires_grad)


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
