"""``ndl.jit``: record the backend kernel calls of one call of a function, then replay them.

``step = ndl.jit(train_step)`` wraps ``train_step(*tensors)`` (forward, ``backward()``,
optimizer update; it returns tensors). The first call with a new *signature* runs eagerly
while a recorder, installed on every device's kernel module and allocator, notes each
kernel call (its name, the buffers it reads and writes, its scalars and view tuples).
Later calls with the same signature replay that list into preallocated buffers: no graph,
no Python per op, and exactly the values eager would give (bit for bit, same backend).

The signature is the tensor arguments' shapes, dtypes and devices, the other (hashable)
arguments, and, checked at every call, the train/eval flags of the modules the function
called and the buffers of their parameters, buffers and optimizer state. A different
signature records again (the last :data:`CACHE_SIZE` traces are kept).

What a replay needs from the code it replays, and what needle's own layers do:

* **State updated in place.** Optimizers and BatchNorm's running statistics write into
  the buffers they already hold, so the replay writes the same buffers and Python state
  stays valid. Code that rebinds a parameter (``p.data = ...``) inside the traced call is
  detected and refused with :class:`JitError`.
* **Host values that change per step** come from :func:`host_scalars` (Adam's bias
  corrections) and :func:`host_array` (every random draw of ``needle.init``, e.g.
  Dropout's masks): a replay calls them again, in the same order as eager, so seeded runs
  draw the same numbers.
* **No host reads.** Reading a buffer on the host inside the traced call (``.numpy()``,
  ``float()``, ``.item()``) would freeze data-dependent control flow into the trace: it
  raises :class:`JitError` naming the read. Data-dependent Python control flow that does
  not read the device (branching on a Python counter) cannot be seen: it is replayed as
  it went on the first call.
* Returned tensors are copied into fresh buffers (a later replay cannot change them) and
  are detached: they carry no graph. Tensors made inside the call other than the returned
  ones and the parameters' ``.grad`` are scratch: a replay reuses their buffers.
* The function's tensor data must come in through its arguments: a tensor it reads from
  a closure or a global is frozen into the trace as a constant.

A backend that declares the optional ``run_program`` capability receives the recorded
kernel list (``[(kernel name, args), ...]``) and runs it natively; host steps split the
list into segments. Without it core replays the list in Python, as it does for every backend
with ``ndl.jit(fn, native=False)`` or with the environment variable ``NEEDLE_JIT_NATIVE=0``
(read when a call is traced): the two replays give the same values, bit for bit.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .autograd import Tensor, TensorTuple
from .backend_ndarray import NDArray
from .devices import BackendDevice

__all__ = [
    "CACHE_SIZE",
    "JitError",
    "host_access",
    "JitFunction",
    "jit",
    "is_tracing",
    "host_scalars",
    "host_array",
    "untraced",
    "note_module",
    "note_optimizer",
]

#: Traces kept per jitted function (least recently used ones are dropped).
CACHE_SIZE = 8

_TRACE: contextvars.ContextVar[_Trace | None] = contextvars.ContextVar("needle_jit", default=None)
_LOCK = threading.Lock()  # one trace at a time installs its recorders on the devices
# Kernels that touch no buffer of the program (device services): run, never recorded.
_SERVICES = frozenset({"synchronize", "empty_cache", "memory_stats"})
_LITERALS = (int, float, bool, str, tuple, type(None), np.ndarray, np.generic)


class JitError(RuntimeError):
    """A function traced by :func:`jit` does something a replay cannot reproduce."""


def is_tracing() -> bool:
    """True while :func:`jit` records a call in this thread."""
    return _TRACE.get() is not None


class HostScalar(float):
    """A scalar a replay recomputes: made by :func:`host_scalars`, passed to kernels as is."""

    __slots__ = ("cell", "index")


def host_access(what: str) -> None:
    """Declare that ``what`` touches device memory from the host behind the kernels' back
    (a communicator reading a buffer through a pointer, say): inside a trace that cannot be
    replayed, so the trace fails (:class:`JitError`, or an eager call when not strict)."""
    trace = _TRACE.get()
    if trace is not None:
        trace.fail(f"{what} inside a function traced by ndl.jit (host access to device memory)")


def host_scalars(make: Callable[[], Sequence[float]]) -> tuple[float, ...]:
    """``tuple(make())``: scalars computed on the host that a replay computes again.

    Outside a trace this is just ``tuple(make())``. Inside one, ``make`` becomes a step of
    the program (run again, with its side effects, at every replay, in the same place) and
    the returned floats are :class:`HostScalar` objects that the recorder recognises in the
    kernel calls they are passed to. Pass them to kernels unchanged: arithmetic on them
    gives plain floats, which a trace would freeze.
    """
    values = tuple(make())
    trace = _TRACE.get()
    if trace is None:
        return values
    return trace.add_host_scalars(make, values)


def host_array(make: Callable[[], Any], device: BackendDevice, dtype: Any = None) -> NDArray:
    """``NDArray.from_numpy(make(), device, dtype)``, drawn again at every replay.

    For host data that changes from call to call (random numbers from numpy's global
    RNG): a replay calls ``make`` again at the same place, so the draws keep eager's order.
    """
    trace = _TRACE.get()
    if trace is None:
        return NDArray.from_numpy(make(), device, dtype)
    trace.pending_upload = make
    try:
        return NDArray.from_numpy(make(), device, dtype)
    finally:
        trace.pending_upload = None


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Run a block outside the current trace: for constants a cache keeps across calls (made
    once, never recorded, their buffers never reused by a replay)."""
    token = _TRACE.set(None)
    try:
        yield
    finally:
        _TRACE.reset(token)


def note_module(module: Any) -> None:
    """Called by ``Module.__call__`` while tracing: the module's state joins the guards."""
    trace = _TRACE.get()
    if trace is not None and id(module) not in trace.modules:
        trace.add_module(module)


def note_optimizer(optimizer: Any) -> None:
    """Called by ``Optimizer.step`` while tracing: its parameters and state join the guards."""
    trace = _TRACE.get()
    if trace is not None and id(optimizer) not in trace.optimizers:
        trace.add_optimizer(optimizer)


# ---------------------------------------------------------------------------- recording


class _Slot:
    """A buffer of the program: made during the trace (temporary) or found (external).

    A temporary keeps no reference to its handle (the traced call frees it as eager would,
    so the first call's peak memory is eager's); the program allocates its own buffers.
    """

    __slots__ = ("handle", "temp", "device", "size", "dtype", "first", "last", "live_out",
                 "buffer")  # fmt: skip

    def __init__(self, handle: Any, temp: bool, device: Any = None, dtype: str = "") -> None:
        self.handle = None if temp else handle
        self.temp, self.device = temp, device
        self.size, self.dtype = handle.size, dtype or getattr(handle, "dtype", "float32")
        self.first = self.last = -1
        self.live_out = not temp
        self.buffer = self.handle  # the handle a replay uses (shared between temporaries)


class _Dyn:
    """A kernel argument a host step recomputes: ``cells[cell][index]``."""

    __slots__ = ("cell", "index")

    def __init__(self, cell: int, index: int) -> None:
        self.cell, self.index = cell, index


class _Call:
    """One recorded kernel call (or host step when ``host`` is set)."""

    __slots__ = ("device", "name", "fn", "args", "host")

    def __init__(self, device: Any, name: str, fn: Any, args: tuple, host: Any = None) -> None:
        self.device, self.name, self.fn, self.args, self.host = device, name, fn, args, host


class _Recorder:
    """Stands in for a device's kernel module while a trace runs (other threads pass through)."""

    def __init__(self, mod: Any, device: BackendDevice, trace: _Trace) -> None:
        self._mod, self._device, self._trace = mod, device, trace

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._mod, name)
        if name.startswith("__") or not callable(attr) or name in _SERVICES:
            return attr
        trace, device = self._trace, self._device
        if name == "Array":  # an allocation, as through the device's alloc
            return trace._allocator(device, attr)

        def call(*args: Any) -> Any:
            if _TRACE.get() is not trace:
                return attr(*args)
            return trace.kernel(device, name, attr, args)

        setattr(self, name, call)  # cached: __getattr__ runs once per name
        return call


class _Trace:
    """The recording of one call."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.calls: list[_Call] = []
        self.slots: dict[int, _Slot] = {}  # id of a live handle -> its slot
        self.all_slots: list[_Slot] = []
        self.cells: list[tuple[Callable[[], Sequence[float]], tuple[float, ...]]] = []
        self.scalars: dict[int, _Dyn] = {}
        self.pending_upload: Callable[[], Any] | None = None
        self.failure: str | None = None
        self.modules: dict[int, Any] = {}
        self.optimizers: dict[int, Any] = {}
        self.snapshot: list[tuple[str, Tensor, Any]] = []  # state buffers when first seen
        self.saved: list[tuple[BackendDevice, Any, Any]] = []
        self.keep: list[HostScalar] = []

    # -- installation

    @contextlib.contextmanager
    def installed(self, devices: Sequence[BackendDevice]) -> Iterator[None]:
        with _LOCK:
            token = _TRACE.set(self)
            for dev in devices:
                self.saved.append((dev, dev.mod, dev.alloc))
                dev.mod = _Recorder(dev.mod, dev, self)
                dev.alloc = self._allocator(dev, dev.alloc)
            try:
                yield
            finally:
                for dev, mod, alloc in reversed(self.saved):
                    dev.mod, dev.alloc = mod, alloc
                self.saved.clear()
                _TRACE.reset(token)

    def _allocator(self, device: BackendDevice, alloc: Callable[..., Any]) -> Callable[..., Any]:
        def allocate(size: int, dtype: str = "float32") -> Any:
            handle = alloc(size, dtype)
            # A dead temporary's id may come back with this handle: it is a new buffer.
            if _TRACE.get() is self:
                slot = self.slots[id(handle)] = _Slot(handle, True, device, dtype)
                self.all_slots.append(slot)
            else:  # made outside the recording (a cached constant, another thread)
                self.slots.pop(id(handle), None)
            return handle

        return allocate

    # -- events

    def fail(self, reason: str) -> None:
        if self.strict:
            raise JitError(reason)
        if self.failure is None:
            self.failure = reason

    def slot(self, handle: Any) -> _Slot:
        found = self.slots.get(id(handle))
        if found is None or not (found.temp or found.handle is handle):
            found = self.slots[id(handle)] = _Slot(handle, temp=False)
            self.all_slots.append(found)
        return found

    def live_out(self, handle: Any) -> _Slot:
        """Mark the buffer ``handle`` (alive after the call) as read after the program."""
        found = self.slot(handle)
        found.live_out = True
        if found.temp:
            found.handle = found.buffer = handle
        return found

    def kernel(self, device: BackendDevice, name: str, fn: Any, args: tuple) -> Any:
        if self.failure is not None:
            return fn(*args)
        if name == "to_numpy":
            shape = args[1] if len(args) > 1 else "?"
            self.fail(
                f"a host read of a device buffer (to_numpy of shape {tuple(shape)}) inside a "
                "function traced by ndl.jit: .numpy(), .item(), float() and Python branches "
                "on tensor values cannot be replayed; read results after the call, from the "
                "tensors it returns"
            )
            return fn(*args)
        if name in ("to_dlpack", "from_dlpack"):
            self.fail(f"{name} inside a function traced by ndl.jit (memory shared with the host)")
            return fn(*args)
        result = fn(*args)
        if name == "from_numpy":
            arr, out = args
            make = self.pending_upload
            slot = self.slot(out)
            if make is not None:  # drawn again at every replay
                dtype = np.asarray(arr).dtype
                self.calls.append(_Call(device, name, fn, (_Upload(make, dtype), slot), "upload"))
            else:  # a constant made on the host during the call
                const = np.array(arr, copy=True)
                self.calls.append(_Call(device, name, fn, (const, slot)))
            return result
        self.calls.append(_Call(device, name, fn, tuple(self._map(a) for a in args)))
        return result

    def _map(self, arg: Any) -> Any:
        """A kernel argument as recorded: handles become slots, host scalars cells."""
        if isinstance(arg, HostScalar):
            return self.scalars[id(arg)]
        if isinstance(arg, tuple):  # view tuples, or the handles of a multi-tensor kernel
            if arg and not isinstance(arg[0], _LITERALS):
                return tuple(self._map(a) for a in arg)
            return arg
        if isinstance(arg, _LITERALS):
            return arg
        return self.slot(arg)

    def add_host_scalars(
        self, make: Callable[[], Sequence[float]], values: tuple[float, ...]
    ) -> tuple[float, ...]:
        cell = len(self.cells)
        self.cells.append((make, values))
        self.calls.append(_Call(None, "host_scalars", None, (cell,), "scalars"))
        out = []
        for i, v in enumerate(values):
            box = HostScalar(v)
            box.cell, box.index = cell, i
            self.scalars[id(box)] = _Dyn(cell, i)
            out.append(box)
        self.keep.extend(out)  # their ids stay unique while the trace runs
        return tuple(out)

    def add_module(self, module: Any) -> None:
        for m in (module, *module._children()):
            if id(m) in self.modules:
                continue
            self.modules[id(m)] = m
            for name, t in _own_state(m):
                self.snapshot.append((f"{type(m).__name__}.{name}", t, t.cached_data.handle))

    def add_optimizer(self, opt: Any) -> None:
        self.optimizers[id(opt)] = opt
        for name, t in opt._state_tensors():
            self.snapshot.append((f"{type(opt).__name__} {name}", t, t.cached_data.handle))


class _Upload:
    """A host step: ``make()`` converted to ``dtype``, copied into a buffer."""

    __slots__ = ("make", "dtype")

    def __init__(self, make: Callable[[], Any], dtype: np.dtype) -> None:
        self.make, self.dtype = make, dtype

    def array(self) -> np.ndarray:
        return np.asarray(self.make(), dtype=self.dtype, order="C")


def _own_state(module: Any) -> Iterator[tuple[str, Tensor]]:
    """``(attribute, tensor)`` for the parameters and buffers held directly by ``module``."""
    for name, value in vars(module).items():
        if isinstance(value, Tensor):
            yield name, value
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, Tensor):
                    yield f"{name}.{i}", item


# ---------------------------------------------------------------------------- the program


class _Program:
    """A finished trace: buffers assigned, calls bound, ready to replay."""

    def __init__(
        self,
        trace: _Trace,
        inputs: list[NDArray],
        outputs: list[NDArray],
        structure: Any,
        guards: list[tuple[Tensor, Any]],
        flags: list[tuple[Any, bool]],
        native: bool = True,
    ) -> None:
        self.inputs = inputs
        self.structure = structure
        self.guards = guards
        self.flags = flags
        self.cells = [make for make, _ in trace.cells]
        self.values: list[tuple[float, ...]] = [v for _, v in trace.cells]
        #: cell -> the calls taking its scalars: (run, index in it, fn or name, args, positions)
        self.users: dict[int, list[tuple[list, int, Any, tuple, list[int]]]] = {}
        calls = trace.calls
        slots = trace.all_slots
        for i, call in enumerate(calls):
            for a in _slots_of(call.args):
                if a.first < 0:
                    a.first = i
                a.last = i
        out_slots = [trace.live_out(nd.handle) for nd in outputs]
        for param_grad in _grad_handles(trace):
            if id(param_grad) in trace.slots:
                trace.live_out(param_grad)
        self.buffers = _share_buffers([s for s in slots if s.temp and s.first >= 0])
        self.outputs = [
            (slot.buffer, nd.shape, nd.strides, nd.offset, nd.device, nd.dtype)
            for slot, nd in zip(out_slots, outputs)
        ]
        self.steps = self._bind(calls, native)

    def _bind(self, calls: list[_Call], native_ok: bool) -> list[tuple[Any, Any]]:
        """``[(kind, payload)]``: runs of kernel calls (a native program, or bound Python
        calls), and host steps between them.

        A call taking host scalars sits in its run with the scalars' values filled in; the
        host step that computes them refills it when they change (Adam's bias corrections
        every step, a learning rate when the user sets one).
        """
        steps: list[tuple[Any, Any]] = []
        run: list[tuple[Any, tuple]] = []
        run_dev: Any = None  # the device of a native run (None: Python calls)

        def flush() -> None:
            nonlocal run, run_dev
            if run:
                if run_dev is None:
                    steps.append(("calls", run))
                else:
                    steps.append(("native", (run_dev.mod.run_program, run)))
            run, run_dev = [], None

        for call in calls:
            if call.host == "scalars":
                flush()
                steps.append(("scalars", call.args[0]))
                continue
            if call.host == "upload":
                flush()
                upload, slot = call.args
                steps.append(("upload", (call.fn, upload, slot.buffer)))
                continue
            dev = call.device
            native = dev if native_ok and dev.has("run_program") else None
            if run and native is not run_dev:
                flush()
            run_dev = native
            head = call.fn if native is None else call.name
            template = tuple(_resolve(a) for a in call.args)
            dynamic = [i for i, a in enumerate(template) if isinstance(a, _Dyn)]
            if dynamic:
                for cell in {template[i].cell for i in dynamic}:
                    self.users.setdefault(cell, []).append((run, len(run), head, template, dynamic))
                run.append((head, self._fill(template, dynamic)))
            else:
                run.append((head, template))
        flush()
        return steps

    def _fill(self, template: tuple, dynamic: list[int]) -> tuple:
        args = list(template)
        for i in dynamic:
            d = args[i]
            args[i] = self.values[d.cell][d.index]
        return tuple(args)

    def valid(self) -> bool:
        for module, flag in self.flags:
            if module.training != flag:
                return False
        for tensor, handle in self.guards:
            if tensor.cached_data.handle is not handle:
                return False
        return True

    def run(self, args: Sequence[Any]) -> Any:
        for nd, arg in zip(self.inputs, (a for a in args if isinstance(a, Tensor))):
            src = arg.cached_data
            if nd.size:
                nd.device.mod.compact(src.handle, nd.handle, src.shape, src.strides, src.offset)
        values = self.values
        for kind, payload in self.steps:
            if kind == "calls":
                for fn, a in payload:
                    fn(*a)
            elif kind == "native":
                run, program = payload
                run(program)
            elif kind == "scalars":
                new = tuple(self.cells[payload]())
                if new != values[payload]:  # refill the calls that take them
                    values[payload] = new
                    for run, index, head, template, dynamic in self.users.get(payload, ()):
                        run[index] = (head, self._fill(template, dynamic))
            else:
                fn, upload, out = payload
                fn(upload.array(), out)
        return _rebuild(self.structure, [_copy_out(*o) for o in self.outputs])


def _slots_of(args: tuple) -> Iterator[_Slot]:
    for a in args:
        if isinstance(a, _Slot):
            yield a
        elif isinstance(a, tuple):
            yield from _slots_of(a)


def _resolve(arg: Any) -> Any:
    if isinstance(arg, _Slot):
        return arg.buffer
    if isinstance(arg, tuple) and arg and isinstance(arg[0], (_Slot, tuple)):
        return tuple(_resolve(a) for a in arg)
    return arg


def _grad_handles(trace: _Trace) -> Iterator[Any]:
    for m in trace.modules.values():
        for _, t in _own_state(m):
            if t.grad is not None:
                yield t.grad.cached_data.handle
    for opt in trace.optimizers.values():
        for p in opt.params:
            if p.grad is not None:
                yield p.grad.cached_data.handle


def _share_buffers(temps: list[_Slot]) -> list[Any]:
    """Give temporaries whose lifetimes do not overlap one buffer (same size and dtype).

    A buffer is reused only after the last call that touched its previous tenant, never
    within one call, so no kernel sees an output aliasing an input it did not expect.
    """
    free: dict[tuple[Any, int, str], list[tuple[int, Any]]] = {}  # -> (free at, buffer)
    buffers = []
    for s in sorted(temps, key=lambda s: s.first):
        key = (id(s.device), s.size, s.dtype)
        pool = free.setdefault(key, [])
        pick = None
        if not s.live_out:
            for j, (free_at, _) in enumerate(pool):
                if free_at < s.first:
                    pick = pool.pop(j)[1]
                    break
        if pick is None:
            pick = s.handle if s.live_out else s.device.alloc(s.size, s.dtype)
            buffers.append(pick)
        s.buffer = pick
        if not s.live_out:
            pool.append((s.last, pick))
    return buffers


def _copy_out(handle: Any, shape: tuple, strides: tuple, offset: int, device: Any, dtype: str):
    out = NDArray.make(shape, device=device, dtype=dtype)
    if out.size:
        device.mod.compact(handle, out.handle, shape, strides, offset)
    return Tensor.make_const(out)


def _flatten(value: Any, leaves: list[NDArray]) -> Any:
    """The structure of a returned value, its tensors' NDArrays appended to ``leaves``."""
    if value is None:
        return None
    if isinstance(value, TensorTuple):
        return ("tuple", [_flatten(Tensor.make_const(x), leaves) for x in value.cached_data])
    if isinstance(value, Tensor):
        leaves.append(value.cached_data)
        return len(leaves) - 1
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, [_flatten(v, leaves) for v in value])
    raise JitError(
        f"a function traced by ndl.jit returned a {type(value).__name__}; it may return "
        "tensors, None, and tuples or lists of them (a Python number would be frozen)"
    )


def _rebuild(structure: Any, tensors: list[Tensor]) -> Any:
    if structure is None:
        return None
    if isinstance(structure, int):
        return tensors[structure]
    kind, items = structure
    built = [_rebuild(s, tensors) for s in items]
    return list(built) if kind == "list" else tuple(built)


# ---------------------------------------------------------------------------- the wrapper


class JitFunction:
    """A function whose calls are recorded once per signature and replayed after.

    Args:
        fn: the function; its tensor data comes in through its arguments.
        strict: raise :class:`JitError` where a call cannot be replayed (a host read,
            a rebound parameter). With ``strict=False`` such a call finishes eagerly, the
            reason is kept in :attr:`fallback_reason`, and that signature runs eagerly.
        enabled: False runs ``fn`` eagerly every time (the switch the training helpers
            offer).
        native: False replays in Python even on a backend that declares ``run_program``
            (so does the environment variable ``NEEDLE_JIT_NATIVE=0``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        strict: bool = True,
        enabled: bool = True,
        native: bool = True,
    ) -> None:
        functools.update_wrapper(self, fn, updated=())
        self.fn = fn
        self.strict = strict
        self.enabled = enabled
        self.native = native
        self.traces: OrderedDict[Any, list[_Program | None]] = OrderedDict()
        self.fallback_reason: str | None = None
        self.stats = {"traces": 0, "replays": 0, "eager": 0}

    def _key(self, args: Sequence[Any]) -> Any:
        key = []
        for a in args:
            if isinstance(a, Tensor):
                data = a.cached_data
                key.append(("T", data.shape, data.dtype, data.device.name, a.requires_grad))
            else:
                try:
                    hash(a)
                except TypeError:
                    raise JitError(
                        f"ndl.jit arguments are tensors or hashable constants, got "
                        f"{type(a).__name__}"
                    ) from None
                key.append(("C", type(a).__name__, a))
        return tuple(key)

    def __call__(self, *args: Any) -> Any:
        if not self.enabled or is_tracing():
            return self.fn(*args)
        key = self._key(args)
        programs = self.traces.get(key)
        if programs is not None:
            self.traces.move_to_end(key)
            for program in programs:
                if program is None:  # this signature cannot be replayed: eager
                    self.stats["eager"] += 1
                    return self.fn(*args)
                if program.valid():
                    self.stats["replays"] += 1
                    return program.run(args)
        result, program = self._trace(args)
        entry = self.traces.setdefault(key, [])
        entry.insert(0, program)
        del entry[CACHE_SIZE:]
        self.traces.move_to_end(key)
        while len(self.traces) > CACHE_SIZE:
            self.traces.popitem(last=False)
        return result

    def _trace(self, args: Sequence[Any]) -> tuple[Any, _Program | None]:
        from . import devices as _devices

        self.stats["traces"] += 1
        inputs: list[NDArray] = []
        call_args = []
        for a in args:
            if isinstance(a, Tensor):  # the program's own input buffer, refilled per replay
                data = a.cached_data
                own = NDArray.make(data.shape, device=data.device, dtype=data.dtype)
                if own.size:
                    data.device.mod.compact(
                        data.handle, own.handle, data.shape, data.strides, data.offset
                    )
                inputs.append(own)
                call_args.append(Tensor.make_const(own, requires_grad=a.requires_grad))
            else:
                call_args.append(a)
        trace = _Trace(self.strict)
        devices = _devices.live_devices()
        state = np.random.get_state()
        with trace.installed(devices):
            value = self.fn(*call_args)
            leaves: list[NDArray] = []
            structure = _flatten(value, leaves)
        watched = {id(d) for d in devices}
        for nd in (*inputs, *leaves):
            if id(nd.device) not in watched:  # a device object made during the call
                trace.fail(f"device {nd.device.name} was not recorded (made during the call)")
        if trace.failure is None:
            _check_rebinding(trace)
        if trace.failure is None:
            _check_randomness(trace, state)
        if trace.failure is not None:
            self.fallback_reason = trace.failure
            return _rebuild(structure, [_copy_out_nd(x) for x in leaves]), None
        guards = []
        for _, tensor, _ in trace.snapshot:
            guards.append((tensor, tensor.cached_data.handle))
        flags = [(m, m.training) for m in trace.modules.values()]
        native = self.native and os.environ.get("NEEDLE_JIT_NATIVE", "1") != "0"
        program = _Program(trace, inputs, leaves, structure, guards, flags, native)
        return _rebuild(structure, [_copy_out_nd(x) for x in leaves]), program


def _copy_out_nd(nd: NDArray) -> Tensor:
    return _copy_out(nd.handle, nd.shape, nd.strides, nd.offset, nd.device, nd.dtype)


def _check_rebinding(trace: _Trace) -> None:
    for name, tensor, handle in trace.snapshot:
        if tensor.cached_data.handle is not handle:
            trace.fail(
                f"{name} was given a new buffer during a call traced by ndl.jit (p.data = ..., "
                "or an optimizer that rebinds its parameters); a replay needs parameters, "
                "buffers and optimizer state updated in place, as needle's optimizers and "
                "layers do"
            )
            return


def _check_randomness(trace: _Trace, start: Any) -> None:
    """Refuse a trace that drew from numpy's global RNG outside :func:`host_array`."""
    end = np.random.get_state()
    np.random.set_state(start)
    try:
        for call in trace.calls:
            if call.host == "upload":
                call.args[0].make()
        replayed = np.random.get_state()
    finally:
        np.random.set_state(end)
    same = replayed[1].tobytes() == end[1].tobytes() and replayed[2:] == end[2:]
    if not same:
        trace.fail(
            "the traced function drew random numbers from numpy's global RNG outside "
            "needle.init (a replay would repeat the first call's numbers); draw them with "
            "needle.init, or pass them in as arguments"
        )


def jit(
    fn: Callable[..., Any] | None = None,
    *,
    strict: bool = True,
    enabled: bool = True,
    native: bool = True,
) -> Any:
    """Record ``fn``'s kernel calls on its first call per signature and replay them after.

    ``step = ndl.jit(train_step)`` or ``@ndl.jit``; ``ndl.jit(model)`` for inference (the
    model in eval mode). See the module documentation for what a replay reproduces and
    what it refuses.

    Args:
        fn: a function of tensors (and hashable constants) returning tensors, or a Module.
        strict: raise :class:`JitError` on what cannot be replayed (else run eagerly).
        enabled: False turns recording off (every call runs eagerly).
        native: False replays kernel by kernel in Python even where the backend declares
            ``run_program`` (as ``NEEDLE_JIT_NATIVE=0`` does); the values are the same.

    Returns:
        A :class:`JitFunction`.
    """
    if fn is None:
        return lambda f: JitFunction(f, strict=strict, enabled=enabled, native=native)
    return JitFunction(fn, strict=strict, enabled=enabled, native=native)
