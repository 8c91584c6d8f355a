"""Reverse-mode automatic differentiation: Value, Tensor, Op, and backward.

A Tensor holds an NDArray (``cached_data``) and, when it needs a gradient, the
Op and inputs that made it. ``backward`` sorts the graph topologically and
walks it in reverse, summing the gradient contributions of every use of a
value. As in the course, gradients keep a graph: ``x.grad.backward()``
differentiates a gradient again. Each input's gradient is computed first-order and
held by one node whose own gradient is built from Tensor ops only when it is
differentiated (``_Adjoint``). ``backward(create_graph=False)`` builds no graph
for them (less memory; the training helpers use it).

As in the course, ``backward()`` sets ``.grad`` on every tensor of the graph (an
intermediate's holds the value, detached; a leaf's keeps its graph);
``backward(create_graph=False)`` sets it on leaves (tensors the user made,
parameters) and on tensors that called :meth:`Tensor.retain_grad` only. Ops on
tensors that need no gradient (or inside :func:`no_grad`, which is per thread)
keep no graph, so a training loop cannot grow memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import numbers
import weakref
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any

import numpy as np

from .backend_ndarray import NDArray
from .backend_ndarray import dtypes as dt
from .devices import BackendDevice, default_device
from .devices import device as _lookup_device

__all__ = [
    "Value",
    "Op",
    "TensorOp",
    "TensorTupleOp",
    "Tensor",
    "TensorTuple",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "find_topo_sort",
    "compute_gradient_of_variables",
    "grad",
    "GradReadyHook",
]

# Grad mode is per thread (and per asyncio task): a ContextVar, not a global.
_GRAD_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "needle_grad_enabled", default=True
)
_grad_enabled = _GRAD_ENABLED.get
_SCALARS = (float, int)
_RETAINED: weakref.WeakSet = weakref.WeakSet()  # non-leaf tensors that keep their .grad


def _is_scalar(value: Any) -> bool:
    """A Python or numpy real number (exact types first: the ABC check is slow)."""
    return type(value) in _SCALARS or isinstance(value, numbers.Real)


def __getattr__(name: str) -> Any:
    if name == "TENSOR_COUNTER":  # the course's count of live graph values (memory checks)
        return sum(1 for obj in gc.get_objects() if isinstance(obj, Value))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_grad_enabled() -> bool:
    """False inside :func:`no_grad` (in this thread)."""
    return _GRAD_ENABLED.get()


@contextlib.contextmanager
def _set_grad(enabled: bool) -> Iterator[None]:
    token = _GRAD_ENABLED.set(enabled)
    try:
        yield
    finally:
        _GRAD_ENABLED.reset(token)


def no_grad() -> contextlib.AbstractContextManager:
    """Context manager: ops inside record no graph (inference, optimizer steps)."""
    return _set_grad(False)


def enable_grad() -> contextlib.AbstractContextManager:
    """Context manager: record graphs again inside a :func:`no_grad` block."""
    return _set_grad(True)


class Op:
    """An operator: ``compute`` on NDArrays forward, ``gradient`` on Tensors backward."""

    def __call__(self, *args: Any) -> Any:
        raise NotImplementedError

    def compute(self, *args: NDArray) -> Any:
        """The forward result from the inputs' NDArrays."""
        raise NotImplementedError

    def gradient(self, out_grad: Value, node: Value) -> Value | tuple[Value, ...]:
        """The adjoint of each input, given the adjoint ``out_grad`` of ``node``.

        Written with Tensor ops, so it is differentiable too. An op may return None for
        an input that does not require grad, to skip work nobody reads.
        """
        raise NotImplementedError

    #: True for an op class that overrides :meth:`item_gradient` (set for each subclass;
    #: backward asks only those).
    reads_item = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.reads_item = cls.item_gradient is not Op.item_gradient

    def item_gradient(self, out_grad: Value, node: Value) -> tuple[int, Value] | None:
        """For an op that reads one item of a TensorTuple: ``(index, gradient of that item)``.

        Backward then accumulates the tuple's gradient item by item instead of adding
        whole tuples of zeros (which costs O(n^2) for a tuple read n times). None for
        every other op.
        """
        return None

    def gradient_as_tuple(self, out_grad: Value, node: Value) -> tuple[Value, ...]:
        grads = self.gradient(out_grad, node)
        if isinstance(grads, tuple):
            return grads
        if isinstance(grads, list):
            return tuple(grads)
        return (grads,)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class TensorOp(Op):
    """An op whose output is one Tensor."""

    def __call__(self, *args: Any) -> Tensor:
        return Tensor.make_from_op(self, args)


class TensorTupleOp(Op):
    """An op whose output is a TensorTuple."""

    def __call__(self, *args: Any) -> TensorTuple:
        return TensorTuple.make_from_op(self, args)


def _check_same_device(op: Op, inputs: Sequence[Value]) -> None:
    first = inputs[0].device
    for x in inputs[1:]:
        other = x.device
        if other is not first and other != first:
            raise ValueError(
                f"{type(op).__name__} got inputs on different devices: "
                f"{first.name} and {other.name}"
            )


class Value:
    """A node of the computational graph."""

    __slots__ = ("op", "inputs", "cached_data", "requires_grad", "grad", "__weakref__")

    op: Op | None
    inputs: tuple[Value, ...]
    cached_data: Any
    requires_grad: bool

    def realize_cached_data(self) -> Any:
        """The node's data (computed eagerly when it was made)."""
        return self.cached_data

    def is_leaf(self) -> bool:
        return self.op is None

    def _init(
        self,
        op: Op | None,
        inputs: Sequence[Value],
        *,
        cached_data: Any = None,
        requires_grad: bool | None = None,
    ) -> None:
        if requires_grad is None:
            requires_grad = any(x.requires_grad for x in inputs)
        self.op = op
        self.inputs = tuple(inputs)
        self.cached_data = cached_data
        self.requires_grad = requires_grad
        self.grad = None

    @classmethod
    def make_const(cls, data: Any, *, requires_grad: bool = False) -> Value:
        """A leaf holding ``data`` (an NDArray, a tuple of them for TensorTuple, or a Value's)."""
        if isinstance(data, Value):
            data = data.realize_cached_data()
        value = cls.__new__(cls)
        value._init(None, (), cached_data=data, requires_grad=requires_grad)
        return value

    @classmethod
    def make_from_op(cls, op: Op, inputs: Sequence[Value]) -> Value:
        """Run ``op`` on ``inputs``; keep the graph only if a gradient can flow."""
        datas, needs_grad = [], False
        for x in inputs:  # one pass: check types, gather data, see if a gradient can flow
            if not isinstance(x, Value):
                raise TypeError(
                    f"{type(op).__name__} takes Tensors, got {type(x).__name__}; wrap data "
                    "in needle.Tensor"
                )
            datas.append(x.cached_data)
            needs_grad = needs_grad or x.requires_grad
        if len(inputs) > 1:
            _check_same_device(op, inputs)
        value = cls.__new__(cls)
        value.grad = None
        value.cached_data = op.compute(*datas)
        if needs_grad and _grad_enabled():
            value.op, value.inputs, value.requires_grad = op, tuple(inputs), True
        else:
            value.op, value.inputs, value.requires_grad = None, (), False
        return value


class TensorTuple(Value):
    """A tuple of tensors that flows through the graph as one value (stack/split)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.cached_data)

    def __getitem__(self, index: int) -> Tensor:
        from .ops import tuple_get_item

        return tuple_get_item(self, index)

    def tuple(self) -> tuple[Tensor, ...]:
        return tuple(self[i] for i in range(len(self)))

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.tuple())

    def __repr__(self) -> str:
        return f"needle.TensorTuple({self.tuple()!r})"

    def __add__(self, other: TensorTuple) -> TensorTuple:
        from .ops import make_tuple

        if not isinstance(other, TensorTuple) or len(self) != len(other):
            raise ValueError("can only add TensorTuples of the same length")
        return make_tuple(*[self[i] + other[i] for i in range(len(self))])

    @property
    def device(self) -> BackendDevice:
        return self.cached_data[0].device if self.cached_data else default_device()

    def detach(self) -> TensorTuple:
        return TensorTuple.make_const(self.cached_data)


def _to_ndarray(array: Any, device: BackendDevice | None, dtype: Any) -> NDArray:
    if isinstance(array, NDArray):
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        if device is None or device == array.device:
            return array
        return array.to(device)
    return NDArray.from_numpy(array, device if device is not None else default_device(), dtype)


def _wants_grad(data: NDArray, requires_grad: bool | None) -> bool:
    """Float tensors require grad unless told not to; integer and bool tensors never do."""
    if dt.is_float(data.dtype):
        return True if requires_grad is None else bool(requires_grad)
    if requires_grad:
        raise TypeError(
            f"only float tensors can require gradients; this one is {data.dtype} (make it "
            f"with dtype='float32', or leave requires_grad unset)"
        )
    return False


class Tensor(Value):
    """An n-dimensional array that records how it was made, for ``backward``.

    Args:
        array: a Tensor, NDArray, numpy array, list or number.
        device: a device or device name; the default device when None (a
            Tensor or NDArray argument keeps its own device).
        dtype: ``float32``, ``float64``, ``int32``, ``int64`` or ``bool``; when None,
            numpy data keeps its dtype and Python lists and numbers give float64, as in the
            course (see :mod:`needle.backend_ndarray.dtypes` for the whole rule).
        requires_grad: whether gradients flow to this tensor. Float tensors require
            grad by default (as in the course); integer and bool tensors never do, and
            asking for it explicitly raises ``TypeError``.
    """

    __slots__ = ()
    __array_priority__ = 1000  # numpy defers `ndarray + Tensor` to our reflected ops

    def __init__(
        self,
        array: Any,
        *,
        device: BackendDevice | str | None = None,
        dtype: Any = None,
        requires_grad: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise TypeError(f"Tensor() got unexpected arguments: {', '.join(kwargs)}")
        if isinstance(device, str):
            device = _lookup_device(device)
        if isinstance(array, Tensor):
            if device is None:
                device = array.device
            data = _to_ndarray(array.realize_cached_data(), device, dtype)
        else:
            data = _to_ndarray(array, device, dtype)
        self._init(None, (), cached_data=data, requires_grad=_wants_grad(data, requires_grad))

    @staticmethod
    def from_numpy(array: Any, dtype: Any = None) -> Tensor:
        return Tensor(array, dtype=dtype, requires_grad=False)

    # ------------------------------------------------------------------ data access

    @property
    def data(self) -> Tensor:
        """The same data without the graph (a new leaf that needs no gradient)."""
        return self.detach()

    @data.setter
    def data(self, value: Tensor) -> None:
        # As the course: the new data must have this tensor's dtype; its shape may differ.
        if not isinstance(value, Tensor):
            raise TypeError(f"Tensor.data must be set to a Tensor, not {type(value).__name__}")
        new = value.realize_cached_data()
        old = self.cached_data
        if new.device != old.device:
            raise ValueError(f"cannot set data on {old.device.name} from {new.device.name}")
        if new.dtype != old.dtype:
            raise TypeError(f"cannot set data of dtype {old.dtype} to dtype {new.dtype}")
        self.cached_data = new

    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data, outside any graph."""
        return Tensor.make_const(self.cached_data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.cached_data.shape

    @property
    def dtype(self) -> str:
        """The dtype's name (``"float32"``; it compares equal to the numpy dtype)."""
        return self.cached_data.dtype

    @property
    def device(self) -> BackendDevice:
        return self.cached_data.device

    @property
    def ndim(self) -> int:
        return len(self.cached_data.shape)

    def numpy(self) -> np.ndarray:
        """A new numpy array with the tensor's values (never aliases device memory)."""
        return self.cached_data.numpy()

    def item(self) -> float | int | bool:
        return self.cached_data.item()

    def __dlpack__(self, **kwargs: Any) -> Any:
        """A DLPack capsule sharing this tensor's memory (``numpy.from_dlpack(t)``,
        ``torch.from_dlpack(t)``); see :mod:`needle.dlpack`."""
        return self.cached_data.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.cached_data.__dlpack_device__()

    def astype(self, dtype: Any) -> Tensor:
        """This tensor converted to ``dtype``; differentiable between float dtypes."""
        return ops.astype(self, dtype)

    def to(self, device: BackendDevice | str | None = None, dtype: Any = None) -> Tensor:
        """This tensor on ``device`` and/or as ``dtype``, as a new leaf (itself when it
        already is)."""
        out = self
        if dtype is not None and dt.canonical(dtype) != self.dtype:
            data = self.cached_data.astype(dtype)
            out = Tensor(data, requires_grad=self.requires_grad and dt.is_float(data.dtype))
        if device is None:
            return out
        device = _lookup_device(device) if isinstance(device, str) else device
        if device == out.device:
            return out
        return Tensor(out.cached_data.to(device), requires_grad=out.requires_grad)

    def __repr__(self) -> str:
        return f"needle.Tensor({self.numpy()!r}, device={self.device.name!r})"

    def __str__(self) -> str:
        return str(self.numpy())

    def __len__(self) -> int:
        return len(self.cached_data)

    __hash__ = object.__hash__  # tensors are graph nodes: identity, not value

    # ------------------------------------------------------------------ autograd

    def register_grad_ready_hook(self, fn: Callable[[Tensor], None]) -> GradReadyHook:
        """Call ``fn(self)`` whenever a backward pass has finished this leaf's gradient.

        During ``backward``, right after ``self.grad`` is set to its final value for that
        pass (every use has been summed), and before ``backward`` returns; the hook may
        read and replace ``self.grad``. ``DistributedDataParallel`` uses it to start
        communicating gradients while the rest of the backward pass runs.

        Returns:
            A handle whose ``remove()`` unregisters ``fn``.

        Raises:
            ValueError: this tensor is not a leaf (it was computed by an op).
        """
        if self.op is not None:
            raise ValueError("grad-ready hooks are for leaf tensors (parameters, inputs)")
        hooks = _grad_ready_hooks.get(id(self))
        if hooks is None:
            hooks = _grad_ready_hooks[id(self)] = []
            weakref.finalize(self, _grad_ready_hooks.pop, id(self), None)
        hooks.append(fn)
        return GradReadyHook(id(self), fn)

    def backward(self, out_grad: Tensor | None = None, create_graph: bool = True) -> None:
        """Set ``x.grad`` to d(self)/d(x) for every tensor ``x`` this one was computed from.

        As in the course, ``.grad`` is overwritten (not accumulated), ``out_grad``
        defaults to ones of this tensor's shape, every tensor of the graph gets its
        ``.grad``, and the gradients keep their own graph, so they can be differentiated
        again (``x.grad.backward()``). ``create_graph=False`` builds no graph for the
        gradients and sets ``.grad`` on leaves (and :meth:`retain_grad` tensors) only:
        faster and leaner, for training loops.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: nothing it was computed "
                "from requires grad (or it was computed inside no_grad())"
            )
        if out_grad is None:
            out_grad = Tensor.make_const(self.device.full(self.shape, 1, self.dtype))
        elif out_grad.shape != self.shape:
            raise ValueError(f"out_grad has shape {out_grad.shape}, the tensor {self.shape}")
        with _set_grad(create_graph):
            compute_gradient_of_variables(self, out_grad)

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` on this non-leaf tensor in ``backward(create_graph=False)`` too."""
        if self.op is not None:
            _RETAINED.add(self)
        return self

    # ------------------------------------------------------------------ operators

    def __add__(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return ops.EWiseAdd()(self, other)
        if _is_scalar(other):
            return ops.AddScalar(other)(self)
        return NotImplemented

    __radd__ = __add__

    def __mul__(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return ops.EWiseMul()(self, other)
        if _is_scalar(other):
            return ops.MulScalar(other)(self)
        return NotImplemented

    __rmul__ = __mul__

    def __pow__(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return ops.EWisePow()(self, other)
        if _is_scalar(other):
            return ops.PowerScalar(other)(self)
        return NotImplemented

    def __rpow__(self, other: Any) -> Tensor:
        if _is_scalar(other):
            base = self.device.full(self.shape, other, dt.scalar_result(self.dtype, other))
            return ops.EWisePow()(Tensor.make_const(base), self)
        return NotImplemented

    def __sub__(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return ops.EWiseAdd()(self, ops.Negate()(other))
        if _is_scalar(other):
            return ops.AddScalar(-other)(self)
        return NotImplemented

    def __rsub__(self, other: Any) -> Tensor:
        if _is_scalar(other):
            return ops.AddScalar(other)(ops.Negate()(self))
        return NotImplemented

    def __truediv__(self, other: Any) -> Tensor:
        if isinstance(other, Tensor):
            return ops.EWiseDiv()(self, other)
        if _is_scalar(other):
            return ops.DivScalar(other)(self)
        return NotImplemented

    def __rtruediv__(self, other: Any) -> Tensor:
        if _is_scalar(other):
            return ops.MulScalar(other)(ops.PowerScalar(-1)(self))
        return NotImplemented

    def __matmul__(self, other: Tensor) -> Tensor:
        if not isinstance(other, Tensor):
            return NotImplemented
        return ops.MatMul()(self, other)

    def __neg__(self) -> Tensor:
        return ops.Negate()(self)

    def matmul(self, other: Tensor) -> Tensor:
        return self @ other

    def sum(self, axes: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return ops.summation(self, axes, keepdims=keepdims)

    def mean(self, axes: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return ops.mean(self, axes, keepdims=keepdims)

    def max(self, axes: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return ops.max(self, axes, keepdims=keepdims)

    def broadcast_to(self, shape: Sequence[int]) -> Tensor:
        return ops.BroadcastTo(shape)(self)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return ops.Reshape(shape)(self)

    def transpose(self, axes: tuple[int, int] | None = None) -> Tensor:
        return ops.Transpose(axes)(self)

    def __getitem__(self, idxs: Any) -> Tensor:
        return ops.getitem(self, idxs)

    def permute(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return ops.permute(self, axes)

    def exp(self) -> Tensor:
        return ops.exp(self)

    def log(self) -> Tensor:
        return ops.log(self)

    def relu(self) -> Tensor:
        return ops.relu(self)

    def tanh(self) -> Tensor:
        return ops.tanh(self)

    def sigmoid(self) -> Tensor:
        return ops.sigmoid(self)


def find_topo_sort(node_list: Sequence[Value], stop: Container[int] = ()) -> list[Value]:
    """Nodes reachable from ``node_list`` with every node after all of its inputs.

    Iterative depth-first post-order, so deep graphs (long RNN unrolls) cannot
    hit Python's recursion limit. Nodes whose ``id`` is in ``stop`` are listed but their
    inputs are not followed.
    """
    order: list[Value] = []
    visited: set[int] = set()
    for root in node_list:
        if id(root) in visited:
            continue
        visited.add(id(root))
        # Each entry: a node and the iterator over its inputs still to visit.
        stack = [(root, iter(() if id(root) in stop else root.inputs))]
        while stack:
            node, pending = stack[-1]
            for inp in pending:
                if id(inp) not in visited:
                    visited.add(id(inp))
                    stack.append((inp, iter(() if id(inp) in stop else inp.inputs)))
                    break
            else:  # every input is placed: the node follows them
                stack.pop()
                order.append(node)
    return order


def compute_gradient_of_variables(output_tensor: Tensor, out_grad: Tensor) -> None:
    """Set ``.grad`` on every node that requires grad, reverse-topologically.

    Each node's gradient is the sum of the contributions of all its uses. Reads of single
    items of a TensorTuple are collected per item and assembled into one tuple gradient.
    """
    grads: dict[int, list[Value]] = {id(output_tensor): [out_grad]}
    items: dict[int, dict[int, list[Value]]] = {}  # TensorTuple id -> item -> contributions
    keep_all = _grad_enabled()  # the course's semantics: .grad on every node
    for node in reversed(find_topo_sort([output_tensor])):
        contributions = grads.pop(id(node), None)
        per_item = items.pop(id(node), None) if items else None
        if not node.requires_grad or (contributions is None and per_item is None):
            continue
        if per_item is not None:
            contributions = (contributions or []) + [_assemble_tuple(node, per_item)]
        total = contributions[0]
        for g in contributions[1:]:
            total = total + g
        if node.op is None:
            node.grad = total
            if _grad_ready_hooks:
                _run_grad_ready_hooks(node)
            continue
        if _RETAINED and node in _RETAINED:
            node.grad = total
        elif keep_all:
            # The course keeps .grad on every node. An intermediate's gradient graph reaches
            # back to the intermediate itself (relu's mask, a product's other factor), so a
            # graph-carrying .grad there makes a reference cycle per node that only the
            # cyclic garbage collector frees: keep the value, detached, as course code reads it.
            node.grad = total.detach()
        item = node.op.item_gradient(total, node) if node.op.reads_item else None
        if item is not None:
            source = node.inputs[0]
            if source.requires_grad:
                items.setdefault(id(source), {}).setdefault(item[0], []).append(item[1])
            continue
        for inp, g in zip(node.inputs, _input_grads(node, total)):
            if inp.requires_grad and g is not None:
                grads.setdefault(id(inp), []).append(g)


def grad(
    output: Tensor,
    inputs: Sequence[Tensor],
    out_grad: Tensor | None = None,
    create_graph: bool = True,
) -> tuple[Tensor | None, ...]:
    """The gradients of ``output`` with respect to ``inputs``, leaving every ``.grad`` alone.

    Like ``torch.autograd.grad``: ``out_grad`` defaults to ones; an input that ``output``
    does not depend on gets None. With ``create_graph`` (the default, as ``backward``)
    the gradients can be differentiated again.
    """
    if out_grad is None:
        out_grad = Tensor.make_const(output.device.full(output.shape, 1, output.dtype))
    with _set_grad(create_graph):
        return _gradients(output, inputs, out_grad, partial=False)


def _gradients(
    output: Value, wrt: Sequence[Value], out_grad: Value, partial: bool
) -> tuple[Value | None, ...]:
    """d ``output`` / d ``wrt[k]``, None where ``output`` does not depend on it.

    ``partial``: each of ``wrt`` is an independent variable (paths through one are not
    followed further), and a repeated entry gets its gradient in its first place only (backward
    adds the places up). Otherwise the total derivative, in every place an entry appears.
    """
    places: dict[int, list[int]] = {}
    for k, x in enumerate(wrt):
        places.setdefault(id(x), []).append(k)
    found: list[Value | None] = [None] * len(wrt)
    grads: dict[int, list[Value]] = {id(output): [out_grad]}
    for node in reversed(find_topo_sort([output], stop=places if partial else ())):
        contributions = grads.pop(id(node), None)
        if contributions is None or not node.requires_grad:
            continue
        total = contributions[0]
        for g in contributions[1:]:
            total = total + g
        where = places.get(id(node))
        if where is not None:
            for k in where[:1] if partial else where:
                found[k] = total
            if partial:
                continue
        if node.op is None:
            continue
        for inp, g in zip(node.inputs, _input_grads(node, total)):
            if inp.requires_grad and g is not None:
                grads.setdefault(id(inp), []).append(g)
    return tuple(found)


# ------------------------------------------------------------------ differentiable gradients
# With grad mode on (the course's backward), gradients must be differentiable again. Building
# them from Tensor ops makes a graph node of every step of every op's gradient (a BatchNorm
# gradient is ~25 nodes) and runs the ops' slow, composed gradients. Instead each input's
# gradient is computed first-order, as create_graph=False does, and wrapped in one _Adjoint
# node whose own gradient rebuilds the op's gradient as Tensor ops when (if ever) it is
# differentiated: the values are the same, the graph is built on demand.


def _input_grads(node: Value, out_grad: Value) -> tuple[Value | None, ...]:
    """The gradients of ``node``'s inputs given its ``out_grad``: differentiable again when
    grad mode is on."""
    if not _grad_enabled():
        return node.op.gradient_as_tuple(out_grad, node)
    token = _GRAD_ENABLED.set(False)  # not _set_grad: this runs once per node of a backward
    try:
        raw = node.op.gradient_as_tuple(out_grad, node)
    finally:
        _GRAD_ENABLED.reset(token)
    out: list[Value | None] = []
    inputs = None
    for index, g in enumerate(raw):
        if g is None or g.op is not None or g.requires_grad:
            out.append(g)  # none, or a node of the graph already (an identity's gradient)
            continue
        if inputs is None:
            inputs = (out_grad, *node.inputs)
        # A new node, not g itself: g may be a tensor of the caller's (out_grad, say).
        adjoint = type(g).__new__(type(g))
        adjoint.cached_data, adjoint.grad = g.cached_data, None
        adjoint.op, adjoint.inputs, adjoint.requires_grad = _Adjoint(node, index), inputs, True
        out.append(adjoint)
    return tuple(out)


class _Adjoint(Op):
    """Input ``index``'s gradient through ``node``'s op, as a function of the output gradient
    and ``node``'s inputs (this node's inputs, in that order)."""

    def __init__(self, node: Value, index: int) -> None:
        self.node, self.index = node, index

    def compute(self, out_grad: Any, *inputs: Any) -> Any:
        with _set_grad(False):
            g = self.node.op.gradient_as_tuple(type(self.node).make_const(out_grad), self.node)
        return g[self.index].cached_data

    def gradient(self, out_grad: Value, node: Value) -> tuple[Value | None, ...]:
        with _set_grad(True):  # the op's gradient as Tensor ops, to differentiate it
            expr = self.node.op.gradient_as_tuple(node.inputs[0], self.node)[self.index]
        return _gradients(expr, node.inputs, out_grad, partial=True)

    def __repr__(self) -> str:
        return f"_Adjoint({type(self.node.op).__name__}, input {self.index})"


# ------------------------------------------------------------------ grad-ready hooks
# Leaf id -> the functions Tensor.register_grad_ready_hook registered; an entry goes
# when its tensor is collected (weakref.finalize), so ids are never reused stale.
_grad_ready_hooks: dict[int, list[Callable[[Tensor], None]]] = {}


class GradReadyHook:
    """The handle of a grad-ready hook; ``remove()`` unregisters it (again: no effect)."""

    __slots__ = ("_key", "_fn")

    def __init__(self, key: int, fn: Callable[[Tensor], None]) -> None:
        self._key, self._fn = key, fn

    def remove(self) -> None:
        hooks = _grad_ready_hooks.get(self._key, [])
        for i, fn in enumerate(hooks):
            if fn is self._fn:
                del hooks[i]
                if not hooks:
                    _grad_ready_hooks.pop(self._key, None)
                return


def _run_grad_ready_hooks(leaf: Value) -> None:
    for fn in tuple(_grad_ready_hooks.get(id(leaf), ())):
        fn(leaf)


def _assemble_tuple(node: TensorTuple, per_item: dict[int, list[Value]]) -> TensorTuple:
    """The tuple gradient of ``node``: per item, the sum of its contributions, or zeros."""
    parts = []
    for i, data in enumerate(node.cached_data):
        got = per_item.get(i)
        if got is None:
            parts.append(Tensor.make_const(data.device.full(data.shape, 0, data.dtype)))
            continue
        total = got[0]
        for g in got[1:]:
            total = total + g
        parts.append(total)
    return ops.make_tuple(*parts)


# ops builds on the classes above; imported last, it is bound here for Tensor's operators.
from . import ops  # noqa: E402
