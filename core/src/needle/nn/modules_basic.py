"""Module, Parameter and the basic layers: Linear, activations, normalization, dropout, loss."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import init, ops
from .. import replay as _jit
from ..autograd import Tensor
from ..backend_ndarray.compose import one_hot
from ..backend_ndarray.dtypes import canonical, is_float
from ..devices import BackendDevice
from ..devices import device as _lookup_device

__all__ = [
    "Parameter",
    "Module",
    "Identity",
    "Linear",
    "Flatten",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "Sequential",
    "SoftmaxLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm1d",
    "Dropout",
    "Residual",
]

DeviceLike = BackendDevice | str | None


class Parameter(Tensor):
    """A tensor that is a trainable parameter of a :class:`Module`.

    A parameter made directly from an initializer's result (``Parameter(init.rand(...))``)
    remembers the distribution it was drawn from, so :func:`needle.init.reinitialize` can
    draw it again.
    """

    __slots__ = ("_init_recipe",)

    def __init__(self, array: Any, **kwargs: Any) -> None:
        super().__init__(array, **kwargs)
        self._init_recipe = init._take_recipe(array)


def _walk(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``(name, item)`` for every Parameter and Module inside ``value``, in definition order.

    Modules are yielded themselves (not entered); lists, tuples and dicts are
    entered with their index or key as the name part.
    """
    if isinstance(value, (Parameter, Module)):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _walk(item, f"{prefix}.{index}" if prefix else str(index))


class Module:
    """Base class of every layer and model.

    Parameters and child modules are found in the instance's attributes (also
    inside lists, tuples and dicts), in definition order. Running statistics
    and other non-trainable state are *buffers*: plain Tensors registered with
    :meth:`register_buffer`; they appear in :meth:`state_dict` but not in
    :meth:`parameters`.
    """

    training: bool = True

    def __init__(self) -> None:
        self.training = True

    # ------------------------------------------------------------------ structure

    def _members(self) -> Iterator[tuple[str, Any]]:
        for name, value in vars(self).items():
            if name.startswith("_buffer"):
                continue
            yield from _walk(value, name)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """``(name, module)`` for each direct child module."""
        for name, value in self._members():
            if isinstance(value, Module):
                yield name, value

    def children(self) -> list[Module]:
        """The direct child modules."""
        return [m for _, m in self.named_children()]

    def _children(self) -> list[Module]:
        """Every module below this one (course name), depth first."""
        out: list[Module] = []
        for child in self.children():
            out.append(child)
            out.extend(child._children())
        return out

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, parameter)`` in definition order, each parameter once."""
        seen: set[int] = set()
        for name, param in self._named_parameters_all(prefix):
            if id(param) not in seen:
                seen.add(id(param))
                yield name, param

    def _named_parameters_all(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, value in self._members():
            full = f"{prefix}{name}"
            if isinstance(value, Parameter):
                yield full, value
            else:
                yield from value._named_parameters_all(full + ".")

    def parameters(self) -> list[Parameter]:
        """Every parameter, in definition order, each once (shared ones are not repeated)."""
        return [p for _, p in self.named_parameters()]

    def register_buffer(self, name: str, tensor: Tensor) -> None:
        """Keep ``tensor`` as attribute ``name``: state saved in :meth:`state_dict`, not trained."""
        names = self.__dict__.setdefault("_buffer_names", [])
        if name not in names:
            names.append(name)
        setattr(self, name, tensor)

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """``(dotted name, tensor)`` for every buffer of this module and its children."""
        for name in self.__dict__.get("_buffer_names", ()):
            yield f"{prefix}{name}", getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}{name}.")

    def to(self, device: BackendDevice | str | None = None, dtype: Any = None) -> Module:
        """Move every parameter (with its gradient) and buffer to ``device`` and/or convert
        the float ones to ``dtype``, in place.

        Parameters stay the same objects, so an optimizer made before the move keeps
        updating them (make it after a dtype change: its state keeps the old dtype).
        Modules that remember a device or dtype for tensors they create (the attention
        layers) remember the new one.

        Args:
            device: a device or a device name (``"cpu"``); None keeps each where it is.
            dtype: a float dtype (``"float64"``); None keeps each tensor's.

        Returns:
            This module.
        """
        if isinstance(device, str):
            device = _lookup_device(device)
        if device is not None and not isinstance(device, BackendDevice):
            raise TypeError(f"Module.to takes a device or a device name, not {device!r}")
        if dtype is not None:
            dtype = canonical(dtype)
            if not is_float(dtype):
                raise TypeError(f"Module.to converts parameters to a float dtype, not {dtype}")

        def moved(data: Any) -> Any:
            if dtype is not None and is_float(data.dtype) and data.dtype != dtype:
                data = data.astype(dtype)
            if device is not None and data.device != device:
                data = data.to(device)
            return data

        for param in self.parameters():
            param.cached_data = moved(param.cached_data)
            if param.grad is not None:
                param.grad = Tensor.make_const(moved(param.grad.cached_data))
        for module in (self, *self._children()):
            for name in module.__dict__.get("_buffer_names", ()):
                setattr(module, name, Tensor.make_const(moved(getattr(module, name).cached_data)))
            if device is not None and "device" in vars(module):
                module.device = device
            if dtype is not None and "dtype" in vars(module):
                module.dtype = dtype
        return self

    # ------------------------------------------------------------------ modes and calls

    def train(self, mode: bool = True) -> Module:
        """Put this module and all below it in training mode (``mode=False``: eval)."""
        for module in (self, *self._children()):
            module.training = mode
        return self

    def eval(self) -> Module:
        """Put this module and all below it in evaluation mode."""
        return self.train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _jit._TRACE.get() is not None:  # a jit trace guards this module's state
            _jit.note_module(self)
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Tensor]:
        """``{dotted name: tensor}`` for every parameter and buffer (detached, no copy)."""
        state: dict[str, Tensor] = {}
        for name, param in self.named_parameters():
            state[name] = param.detach()
        for name, buf in self.named_buffers():
            state[name] = buf.detach()
        return state

    def load_state_dict(self, state: Any, strict: bool = True) -> None:
        """Copy ``state`` (a :meth:`state_dict`, or a loaded checkpoint) into this module.

        Everything is validated before anything is assigned: on an error the
        module is unchanged.

        Args:
            state: ``{name: Tensor | NDArray | numpy array}``.
            strict: require exactly this module's keys.

        Raises:
            KeyError: a key is missing or unexpected (``strict``); the message names it.
            ValueError: a value's shape differs from the module's; the message names the
                key and both shapes.
        """
        from ..checkpoint import as_tensor

        own = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        targets = {**own, **buffers}
        if strict:
            missing = [k for k in targets if k not in state]
            unexpected = [k for k in state if k not in targets]
            if missing or unexpected:
                raise KeyError(
                    f"state does not match {type(self).__name__}: missing keys {missing}, "
                    f"unexpected keys {unexpected}"
                )
        updates: list[tuple[str, Tensor]] = []
        for name, target in targets.items():
            if name not in state:
                continue
            value = as_tensor(state[name], target.device, name)
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"state key {name!r} has shape {tuple(value.shape)}, the module expects "
                    f"{tuple(target.shape)}"
                )
            updates.append((name, value))
        for name, value in updates:
            if name in own:
                own[name].data = value
            else:
                owner, attr = self._owner_of(name)
                setattr(owner, attr, value)

    def _owner_of(self, dotted: str) -> tuple[Module, str]:
        path, _, attr = dotted.rpartition(".")
        owner: Any = self
        for part in path.split(".") if path else ():
            if isinstance(owner, Sequential) and part.isdigit():
                owner = owner.modules[int(part)]
            elif isinstance(owner, (list, tuple)):
                owner = owner[int(part)]
            elif isinstance(owner, dict):
                owner = owner[part]
            else:
                owner = getattr(owner, part)
        return owner, attr

    def save(self, path: str) -> None:
        """Write :meth:`state_dict` to ``path`` (see :func:`needle.save`)."""
        from ..checkpoint import save

        save(self.state_dict(), path)

    def load(self, path: str) -> Module:
        """Read a checkpoint written by :meth:`save` into this module, on its own devices."""
        from ..checkpoint import load

        params = self.parameters()
        self.load_state_dict(load(path, device=params[0].device if params else None))
        return self

    def __repr__(self) -> str:
        children = [f"  ({name}): {child!r}".replace("\n", "\n  ")
                    for name, child in self.named_children()]  # fmt: skip
        if not children:
            return f"{type(self).__name__}()"
        return f"{type(self).__name__}(\n" + "\n".join(children) + "\n)"


def _param(tensor: Tensor) -> Parameter:
    return Parameter(tensor, requires_grad=True)


def _vector(vector: Tensor) -> Tensor:
    """A ``(C,)`` or ``(1, C)`` tensor as ``(C,)``."""
    return vector if vector.ndim == 1 else vector.reshape((vector.shape[-1],))


def _row(vector: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A ``(C,)`` or ``(1, C)`` tensor broadcast along the last axis of ``shape``."""
    row = (1,) * (len(shape) - 1) + (shape[-1],)
    if vector.shape != row:
        vector = vector.reshape(row)
    return vector if row == shape else vector.broadcast_to(shape)


class Identity(Module):
    """Returns its input."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Linear(Module):
    """``y = x @ weight + bias``, weight ``(in_features, out_features)``, bias ``(1, out)``.

    The weight is drawn by ``kaiming_uniform(in_features, out_features)`` and then
    the bias by ``kaiming_uniform(out_features, 1)`` reshaped to ``(1, out_features)``.
    Inputs may have leading batch axes: ``(..., in_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _param(
            init.kaiming_uniform(in_features, out_features, device=device, dtype=dtype)
        )
        self.bias = None
        if bias:
            # The course's kaiming_uniform(out_features, 1) draw, made in its final shape.
            self.bias = _param(
                init.kaiming_uniform(
                    out_features, 1, shape=(1, out_features), device=device, dtype=dtype
                )
            )

    def forward(self, X: Tensor) -> Tensor:
        if X.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}) got input of shape {X.shape}"
            )
        # One graph node: the product, then the bias by a broadcasting kernel (no copy of it).
        return ops.linear(X, self.weight, self.bias)


class Flatten(Module):
    """``(N, d1, d2, ...)`` to ``(N, d1 * d2 * ...)``."""

    def forward(self, X: Tensor) -> Tensor:
        size = 1
        for d in X.shape[1:]:
            size *= d
        return X.reshape((X.shape[0], size))


class ReLU(Module):
    """``max(x, 0)``."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class Tanh(Module):
    """``tanh(x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``."""

    def forward(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class Sequential(Module):
    """Applies its modules in order."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        self.modules = modules

    def __getitem__(self, index: int) -> Module:
        return self.modules[index]

    def __len__(self) -> int:
        return len(self.modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.modules)

    def _members(self) -> Iterator[tuple[str, Any]]:
        # Children are named by position ("0.weight"), as in PyTorch.
        for name, value in vars(self).items():
            if name == "modules":
                yield from _walk(value, "")
            elif not name.startswith("_buffer"):
                yield from _walk(value, name)

    def forward(self, x: Any) -> Any:
        for module in self.modules:
            x = module(x)
        return x


# Up to this many classes SoftmaxLoss picks the true logits with a one-hot product (a few
# elementwise passes over N x k); beyond it a gather (two backend calls per sample) is cheaper.
_ONE_HOT_MAX_CLASSES = 1024
_STARTS: dict[tuple[str, int, int], Any] = {}


def _row_starts(n: int, k: int, device: BackendDevice) -> Any:
    """The int64 NDArray ``0, k, 2k, ...`` (n of them), cached outside any jit trace."""
    found = _STARTS.get((device.name, n, k))
    if found is None:
        from ..backend_ndarray import NDArray

        with _jit.untraced():
            found = NDArray.from_numpy(np.arange(n, dtype=np.int64) * k, device, "int64")
        _STARTS[(device.name, n, k)] = found
    return found


class SoftmaxLoss(Module):
    """Mean softmax cross-entropy of logits ``(N, k)`` against integer labels ``y`` ``(N,)``."""

    def forward(self, logits: Tensor, y: Tensor) -> Tensor:
        n, k = logits.shape
        if logits.device.has("softmax_cross_entropy") and logits.device.supports("int64"):
            # One fused kernel (and a one-pass gradient); the labels stay on the device.
            if not isinstance(y, Tensor):
                y = Tensor(np.asarray(y), device=logits.device, dtype="int64", requires_grad=False)
            if not _jit.is_tracing() and y.dtype in ("float32", "float64"):
                labels = y.numpy()
                if labels.size and np.any(labels != np.round(labels)):
                    raise IndexError(f"SoftmaxLoss labels must be integers, got {labels[:5]}")
            if y.cached_data.size != n:
                raise ValueError(f"SoftmaxLoss got {y.cached_data.size} labels for logits {(n, k)}")
            return ops.softmax_cross_entropy(logits, y.reshape((n,))).sum() / n
        if _jit.is_tracing():  # the labels stay on the device (no host read to replay)
            if not isinstance(y, Tensor) or y.cached_data.size != n:
                raise ValueError(f"SoftmaxLoss needs a tensor of {n} labels for logits {(n, k)}")
            labels = y.cached_data.reshape((n,))
            if k <= _ONE_HOT_MAX_CLASSES or not logits.device.has("gather_rows"):
                hot = Tensor.make_const(one_hot(labels, k, logits.dtype))
                true_logit = (logits * hot).sum((1,))
            else:  # the flat positions i * k + label, gathered on the device
                picks = labels._cast("int64") + _row_starts(n, k, logits.device)
                flat = logits.reshape((n * k, 1))
                true_logit = ops.gather(flat, Tensor.make_const(picks)).reshape((n,))
            return (ops.logsumexp(logits, (1,)) - true_logit).sum() / n
        labels = np.asarray(y.numpy() if hasattr(y, "numpy") else y).reshape(-1)
        if labels.shape != (n,):
            raise ValueError(f"SoftmaxLoss got {labels.size} labels for logits of shape {(n, k)}")
        if n and (labels.min() < 0 or labels.max() >= k or np.any(labels != np.round(labels))):
            raise IndexError(f"SoftmaxLoss labels must be integers in [0, {k}), got {labels[:5]}")
        labels = labels.astype(np.int64)
        if k <= _ONE_HOT_MAX_CLASSES:  # a few passes over a small (N, k) one-hot matrix
            y_one_hot = Tensor(logits.device.one_hot(k, labels), requires_grad=False)
            true_logit = (logits * y_one_hot).sum((1,))
        else:  # gathered from the flat logits: a row copy per sample, no (N, k) matrix
            picks = (np.arange(n) * k + labels).tolist()
            true_logit = ops.take(logits.reshape((n * k,)), picks)
        return (ops.logsumexp(logits, (1,)) - true_logit).sum() / n


class BatchNorm1d(Module):
    """Batch normalization over axis 0 of ``(N, dim)`` inputs.

    Training uses the batch statistics and updates the running ones,
    ``running = (1 - momentum) * running + momentum * batch`` with the biased
    batch variance; evaluation uses the running statistics. The running
    statistics are buffers, updated without a graph.
    """

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.momentum = momentum
        self.weight = _param(init.ones(dim, device=device, dtype=dtype))
        self.bias = _param(init.zeros(dim, device=device, dtype=dtype))
        self.register_buffer("running_mean", init.zeros(dim, device=device, dtype=dtype))
        self.register_buffer("running_var", init.ones(dim, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__}({self.dim}) got input of shape {x.shape}")
        return self._normalize(x)

    def _normalize(self, x: Tensor) -> Tensor:
        """``x`` normalized per channel of axis 1 (any trailing dimensions)."""
        if self.training:
            running = []
            for buffer in (self.running_mean, self.running_var):
                data = buffer.cached_data
                if not data.is_compact():  # a strided buffer loaded from a checkpoint
                    data = buffer.cached_data = data.compact()
                running.append(data)
            # One graph node; it updates the running statistics in place (no graph).
            return ops.BatchNorm(self.eps, self.momentum, tuple(running))(x, self.weight, self.bias)
        shape = (1, self.dim) + (1,) * (x.ndim - 2)
        mean = self.running_mean.reshape(shape).broadcast_to(x.shape)
        std = ((self.running_var + self.eps) ** 0.5).reshape(shape).broadcast_to(x.shape)
        return self.weight.reshape(shape).broadcast_to(x.shape) * ((x - mean) / std) + (
            self.bias.reshape(shape).broadcast_to(x.shape)
        )


class BatchNorm2d(BatchNorm1d):
    """Batch normalization per channel of ``(N, C, H, W)`` inputs (statistics over N, H, W).

    The channel axis is normalized where it lies: no transposed copies of the input."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(f"BatchNorm2d({self.dim}) expects (N, {self.dim}, H, W) input, "
                             f"got shape {x.shape}")  # fmt: skip
        return self._normalize(x)


class LayerNorm1d(Module):
    """Layer normalization over the last axis (size ``dim``), with weight and bias."""

    def __init__(
        self, dim: int, eps: float = 1e-5, device: DeviceLike = None, dtype: str = "float32"
    ) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = _param(init.ones(dim, device=device, dtype=dtype))
        self.bias = _param(init.zeros(dim, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"LayerNorm1d({self.dim}) got input of shape {x.shape}")
        # One node; the course's composed formula, the same values (see ops.LayerNorm).
        return ops.layer_norm(x, _vector(self.weight), _vector(self.bias), self.eps)


class Dropout(Module):
    """In training, zero each entry with probability ``p`` and scale the rest by ``1/(1-p)``.

    One ``init.randb`` draw (keep where ``rand <= 1 - p``) per training forward;
    evaluation returns the input unchanged.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        # The mask in x's dtype (1.0 and 0.0, the product's bits as with the course's bool
        # mask): no cast kernel forward, nor backward.
        mask = init.randb(*x.shape, p=1 - self.p, device=x.device, dtype=x.dtype)
        return x * mask / (1 - self.p)


class Residual(Module):
    """``fn(x) + x``."""

    def __init__(self, fn: Module | Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x
