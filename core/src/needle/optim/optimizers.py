"""Optimizers (SGD, Adam) and gradient-norm clipping.

Every update works on the parameters' NDArrays (no Tensors, no graph), so a step never
extends the graph, and the parameters' gradients are left untouched. Updates are made in
place: a parameter and its optimizer state keep their buffers from step to step (as in
PyTorch), which is what lets :func:`needle.jit` replay a training step. All the parameters
of one device and dtype are updated by one call of the backend's fused update when it
declares one (``sgd_update``/``adam_update``), else by a composition of elementwise kernels.
The per-step scalars (learning rate, bias corrections) are computed on the host by
:func:`needle.jit.host_scalars`, so a replayed step uses the current ones.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from .. import replay as _jit
from ..autograd import Tensor, no_grad
from ..backend_ndarray import compose
from ..nn.modules_basic import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "clip_grad_norm"]


def clip_grad_norm(params: Iterable[Tensor], max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients in place so their joint 2-norm is at most ``max_norm``.

    Args:
        params: the tensors whose ``.grad`` to clip (those without a gradient are skipped).
        max_norm: the largest allowed total norm.
        eps: added to the norm in the scale ``max_norm / (norm + eps)``.

    Returns:
        The total norm before clipping.
    """
    grads = [p for p in params if p.grad is not None]
    total = 0.0
    with no_grad():
        for p in grads:
            total += float((p.grad.detach() ** 2).sum().numpy())
        norm = math.sqrt(total)
        if norm > max_norm:
            scale = max_norm / (norm + eps)
            for p in grads:
                p.grad = p.grad.detach() * scale
    return norm


class Optimizer:
    """Base class: holds the parameters; subclasses implement :meth:`step`.

    Args:
        params: the parameters to update (e.g. ``model.parameters()``).
    """

    #: Hyperparameters saved by :meth:`state_dict` (subclasses extend it).
    hyperparameters: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Parameter]) -> None:
        self.params: list[Parameter] = list(params)

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        raise NotImplementedError

    def reset_grad(self) -> None:
        """Forget every parameter's gradient."""
        for p in self.params:
            p.grad = None

    zero_grad = reset_grad

    def clip_grad_norm(self, max_norm: float = 0.25) -> float:
        """Clip this optimizer's parameters' gradients; see :func:`clip_grad_norm`."""
        return clip_grad_norm(self.params, max_norm)

    # ------------------------------------------------------------------ state

    def _slots(self) -> dict[str, dict[Parameter, Tensor]]:
        """``{slot name: {param: tensor}}``: the per-parameter state (momentum, moments)."""
        return {}

    def _state_tensors(self) -> list[tuple[str, Tensor]]:
        """``(name, tensor)`` for every parameter and state tensor (what a step writes)."""
        out = [(f"param {i}", p) for i, p in enumerate(self.params)]
        for slot, table in self._slots().items():
            out += [(f"{slot} {i}", table[p]) for i, p in enumerate(self.params) if p in table]
        return out

    def _zeros_state(self, table: dict[Parameter, Tensor]) -> None:
        """Zeros for every parameter missing from ``table`` (state lives from the start, so
        every step, the first included, updates the same buffers in place)."""
        for p in self.params:
            if p not in table:
                data = p.cached_data
                table[p] = Tensor.make_const(data.device.full(data.shape, 0, data.dtype))

    def _groups(self, *tables: dict[Parameter, Tensor]) -> list[tuple[list, ...]]:
        """Parameters with a gradient, grouped by (device, dtype): ``(params, grads, *state)``
        as NDArrays, one tuple per group."""
        groups: dict[tuple[str, str], tuple[list, ...]] = {}
        for p in self.params:  # runs every step: kept tight
            grad_tensor = p.grad
            if grad_tensor is None:
                continue
            states = []
            for table in tables:
                state = table.get(p)
                if state is None:
                    self._zeros_state(table)
                    state = table[p]
                states.append(state.cached_data)
            w, grad = p.cached_data, grad_tensor.cached_data
            if grad.dtype != w.dtype or not grad.is_compact():
                grad = grad._cast(w.dtype).compact()
            key = (w.device.name, w.dtype)
            group = groups.get(key)
            if group is None:
                group = groups[key] = tuple([] for _ in range(2 + len(tables)))
            group[0].append(w)
            group[1].append(grad)
            for lst, state in zip(group[2:], states):
                lst.append(state)
        return list(groups.values())

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters, step counters and per-parameter state, by parameter index.

        ``{"type": name, "hyper": {...}, "state": {"0": {"u": Tensor}, ...}}``,
        data only, ready for :func:`needle.save`.
        """
        state: dict[str, dict[str, Tensor]] = {}
        for slot, table in self._slots().items():
            for index, p in enumerate(self.params):
                if p in table:
                    state.setdefault(str(index), {})[slot] = table[p].detach()
        hyper = {name: getattr(self, name) for name in self.hyperparameters}
        return {"type": type(self).__name__, "hyper": hyper, "state": state}

    def _check_hyperparameter(self, name: str, value: Any) -> Any:
        """``value`` as hyperparameter ``name`` takes it; raises ValueError when it cannot.

        Every hyperparameter is a finite real number; subclasses narrow ranges.
        """
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"{type(self).__name__} hyperparameter {name!r} must be a finite number, "
                f"got {value!r}"
            )
        if not math.isfinite(value):
            raise ValueError(
                f"{type(self).__name__} hyperparameter {name!r} must be a finite number, "
                f"got {value!r}"
            )
        return value

    def _check_range(self, name: str, value: float, what: str, ok: bool) -> None:
        if not ok:
            raise ValueError(
                f"{type(self).__name__} hyperparameter {name!r} must be {what}, got {value!r}"
            )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; validated before anything changes.

        Raises:
            TypeError: ``state`` is not a dict.
            ValueError: wrong optimizer type, a malformed entry, an index past the
                parameter list, an unknown slot, a shape that differs from its
                parameter's, or a hyperparameter of the wrong type or range.
        """
        from ..checkpoint import as_tensor

        if not isinstance(state, Mapping):
            raise TypeError(f"an optimizer state is a dict, not {type(state).__name__}")
        kind = state.get("type")
        if kind != type(self).__name__:
            raise ValueError(f"state is for optimizer {kind!r}, not {type(self).__name__}")
        per_param = state.get("state") or {}
        if not isinstance(per_param, Mapping):
            raise ValueError(f"the state's 'state' must be a dict, not {type(per_param).__name__}")
        slots = self._slots()
        updates: list[tuple[dict[Parameter, Tensor], Parameter, Tensor]] = []
        for index, entries in per_param.items():
            try:
                i = int(index)
            except (TypeError, ValueError):
                raise ValueError(f"state key {index!r} is not a parameter index") from None
            if not 0 <= i < len(self.params):
                raise ValueError(f"state names parameter {i}, the optimizer has {len(self.params)}")
            if not isinstance(entries, Mapping):
                raise ValueError(
                    f"the state of parameter {i} must be a dict, not {type(entries).__name__}"
                )
            p = self.params[i]
            for slot, value in entries.items():
                if slot not in slots:
                    raise ValueError(f"unknown optimizer state {slot!r} for parameter {i}")
                tensor = as_tensor(value, p.device, f"state/{index}/{slot}")
                if tuple(tensor.shape) != tuple(p.shape):
                    raise ValueError(
                        f"optimizer state {slot!r} of parameter {i} has shape "
                        f"{tuple(tensor.shape)}, the parameter {tuple(p.shape)}"
                    )
                updates.append((slots[slot], p, tensor))
        hyper = state.get("hyper") or {}
        if not isinstance(hyper, Mapping):
            raise ValueError(f"the state's 'hyper' must be a dict, not {type(hyper).__name__}")
        unknown = set(hyper) - set(self.hyperparameters)
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown, key=str)}")
        hyper = {name: self._check_hyperparameter(name, value) for name, value in hyper.items()}
        for table in slots.values():
            table.clear()
        for table, p, tensor in updates:
            table[p] = tensor
        for table in slots.values():
            self._zeros_state(table)
        for name, value in hyper.items():
            setattr(self, name, value)


class SGD(Optimizer):
    """Stochastic gradient descent with dampened momentum and L2 weight decay.

    ``u = momentum * u + (1 - momentum) * (grad + weight_decay * w)``;
    ``w = w - lr * u`` (``u`` starts at zero).

    Args:
        params: the parameters.
        lr: learning rate.
        momentum: momentum factor ``b`` in ``[0, 1)``.
        weight_decay: L2 penalty added to the gradient.
    """

    hyperparameters = ("lr", "momentum", "weight_decay")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params)
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.u: dict[Parameter, Tensor] = {}
        self._zeros_state(self.u)

    def _slots(self) -> dict[str, dict[Parameter, Tensor]]:
        return {"u": self.u}

    def _check_hyperparameter(self, name: str, value: Any) -> Any:
        value = super()._check_hyperparameter(name, value)
        if name == "momentum":
            self._check_range(name, value, "in [0, 1)", 0 <= value < 1)
        return value

    def _scalars(self) -> tuple[float, ...]:
        b = self.momentum
        return (b, 1 - b, -self.lr, self.weight_decay)

    def step(self) -> None:
        _jit.note_optimizer(self)
        scalars = _jit.host_scalars(self._scalars)
        for params, grads, momenta in self._groups(self.u):
            compose.sgd_update(params, grads, momenta, scalars)


class Adam(Optimizer):
    """Adam with bias correction; L2 weight decay is added to the gradient.

    ``g = grad + weight_decay * w``; ``m = b1 m + (1 - b1) g``;
    ``v = b2 v + (1 - b2) g^2``; ``w = w - lr * m_hat / (sqrt(v_hat) + eps)`` with
    ``m_hat = m / (1 - b1^t)`` and ``v_hat = v / (1 - b2^t)``.

    Args:
        params: the parameters.
        lr: learning rate.
        beta1: decay of the first moment.
        beta2: decay of the second moment.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient.
    """

    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay", "t")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params)
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weight_decay = weight_decay
        self.t = 0
        self.m: dict[Parameter, Tensor] = {}
        self.v: dict[Parameter, Tensor] = {}
        self._zeros_state(self.m)
        self._zeros_state(self.v)

    def _slots(self) -> dict[str, dict[Parameter, Tensor]]:
        return {"m": self.m, "v": self.v}

    def _check_hyperparameter(self, name: str, value: Any) -> Any:
        if name == "t":  # the step count: bias corrections divide by 1 - beta**t
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0
            self._check_range(name, value, "a whole number >= 0", ok)
            return int(value)
        value = super()._check_hyperparameter(name, value)
        if name in ("beta1", "beta2"):
            self._check_range(name, value, "in [0, 1)", 0 <= value < 1)
        elif name == "eps":
            self._check_range(name, value, ">= 0", value >= 0)
        return value

    def _advance(self) -> tuple[float, ...]:
        """Count the step and return its scalars (run again by every replay of a jit trace)."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # w - lr * m_hat / (sqrt(v_hat) + eps), with sqrt(v_hat) = sqrt(v) / c and
        # c = sqrt(1 - b2^t): w - (lr * c / (1 - b1^t)) * m / (sqrt(v) + eps * c). The
        # scalars fold lr, the sign and both bias corrections: three passes fewer.
        c = (1 - b2**self.t) ** 0.5
        step = -self.lr * c / (1 - b1**self.t)
        return (b1, 1 - b1, b2, 1 - b2, self.weight_decay, step, self.eps * c)

    def step(self) -> None:
        _jit.note_optimizer(self)
        scalars = _jit.host_scalars(self._advance)
        for params, grads, firsts, seconds in self._groups(self.m, self.v):
            compose.adam_update(params, grads, firsts, seconds, scalars)
