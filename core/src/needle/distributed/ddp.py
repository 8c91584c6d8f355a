"""DistributedDataParallel: one model replica per rank, gradients averaged in buckets."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..autograd import Tensor, TensorTuple, find_topo_sort, is_grad_enabled
from ..backend_ndarray import NDArray, compose
from ..nn.modules_basic import Module, Parameter
from ..replay import host_access
from .buffers import host_view
from .collectives import agree, broadcast, communicator
from .communicator import Communicator, Work

__all__ = ["DistributedDataParallel"]


class _Bucket:
    """Gradients of a few parameters (one device and dtype) reduced as one flat buffer."""

    def __init__(self, params: list[Parameter]) -> None:
        self.params = params
        self.shapes = [tuple(p.shape) for p in params]
        self.sizes = [int(np.prod(shape, dtype=np.int64)) for shape in self.shapes]
        self.offsets = [int(x) for x in np.cumsum([0, *self.sizes[:-1]])]
        self.device = params[0].device
        self.dtype = params[0].dtype
        self.total = sum(self.sizes)
        self.flat: NDArray | None = None  # this round's buffer
        self.copied = False  # this round's reduction runs in a host copy of it
        self.buf: np.ndarray | None = None  # what the communicator reduces
        self.work: Work | None = None
        # This round's gradient of each parameter (_ZERO: none, counted as zeros), packed
        # into ``flat`` in one call once the last one arrives.
        self.grads: list[NDArray | None] = [None] * len(params)
        self.ready = 0

    def launch(self, comm: Communicator) -> None:
        # A new buffer every round: the last round's is the memory of the gradients handed
        # out then (finish), which their holders may still read. The allocator recycles it
        # once they are gone (needle-cpu keeps freed buffers of 256 KiB and more for reuse).
        self.flat = flat = NDArray._alloc((self.total,), self.dtype, self.device)
        offsets, grads = [], []
        for start, size, grad in zip(self.offsets, self.sizes, self.grads):
            if grad is _ZERO:
                flat[start : start + size] = 0.0
            else:
                offsets.append(start)
                grads.append(grad)
        # Divided by the ranks on the way in, while the memory is still in cache: the sum
        # over ranks is then the mean (exactly so for a power-of-two number of ranks).
        compose.pack(flat, offsets, grads, 1.0 / comm.world_size)
        self.grads = [None] * len(self.params)
        host = host_view(flat)  # the bucket's own memory, when it is on the host
        self.copied = host is None  # reduced in a host copy (a device bucket)
        self.buf = flat.numpy() if self.copied else host
        self.work = comm.start_all_reduce(self.buf, "sum")

    def finish(self) -> None:
        """Wait for the reduction; set every parameter's gradient to the mean over ranks."""
        self.work.wait()
        flat = NDArray.from_numpy(self.buf, self.device) if self.copied else self.flat
        # Each gradient is its range of the bucket itself where the backend can hand ranges
        # out as buffers of their own (the contract's slices; PyTorch's
        # gradient_as_bucket_view), else a copy of it.
        grads = compose.slices(flat, self.offsets, self.shapes)
        for p, grad in zip(self.params, grads):
            p.grad = Tensor.make_const(grad)
        self.buf, self.work, self.flat, self.ready = None, None, None, 0


# Stands for "no gradient this round: zeros" in _Bucket.grads (find_unused_parameters).
_ZERO: Any = object()


class _Reducer:
    """Follows a backward pass through grad-ready hooks and launches buckets in order."""

    def __init__(
        self, module: Module, comm: Communicator, bucket_cap_mb: float, find_unused: bool
    ) -> None:
        self.comm = comm
        self.find_unused = find_unused
        self.names = {id(p): name for name, p in module.named_parameters()}
        self.params = [p for p in module.parameters() if p.requires_grad]
        cap = bucket_cap_mb * 2**20
        self.buckets: list[_Bucket] = []
        group: list[Parameter] = []
        size = 0.0
        for p in reversed(self.params):  # gradients arrive roughly from the last layer back
            nbytes = np.prod(p.shape, dtype=np.int64) * np.dtype(p.dtype).itemsize
            if group and (
                size + nbytes > cap or (p.device, p.dtype) != (group[0].device, group[0].dtype)
            ):
                self.buckets.append(_Bucket(group))
                group, size = [], 0.0
            group.append(p)
            size += nbytes
        if group:
            self.buckets.append(_Bucket(group))
        self.total = sum(bucket.total for bucket in self.buckets)
        self.slot = {
            id(p): (bucket, i) for bucket in self.buckets for i, p in enumerate(bucket.params)
        }
        self.next_launch = 0  # buckets[:next_launch] are launched this round
        self.sync = True
        self.accumulated: dict[int, NDArray] = {}  # local gradient sums under no_sync()
        ref = weakref.ref(self)

        def on_grad_ready(p: Tensor) -> None:
            reducer = ref()
            if reducer is not None:
                reducer.grad_ready(p)

        handles = [p.register_grad_ready_hook(on_grad_ready) for p in self.params]
        weakref.finalize(self, lambda: [h.remove() for h in handles])

    def grad_ready(self, p: Tensor) -> None:
        """The hook: ``p``'s gradient of this backward pass is final. Called once per
        parameter per pass, so kept short: the gradient waits in its bucket until the
        bucket is full."""
        # What happens next is Python (buckets, no_sync sums) and a communicator reading
        # memory behind the kernels' back: nothing a replay of ndl.jit repeats, so a traced
        # step runs eagerly instead (a replay would skip the all-reduce).
        host_access("DistributedDataParallel's gradient hook")
        grad = p.grad.realize_cached_data()
        if self.accumulated:
            earlier = self.accumulated.pop(id(p), None)
            if earlier is not None:
                grad = earlier + grad
        if not self.sync:
            self.accumulated[id(p)] = grad
            return
        self._put(p, grad)

    def _put(self, p: Tensor, grad: Any) -> None:
        bucket, i = self.slot[id(p)]
        if bucket.grads[i] is not None or bucket.ready == len(bucket.params):
            raise RuntimeError(
                f"parameter {self.names.get(id(p), '?')!r} got a second gradient before every "
                "parameter got one; a backward pass that does not reach every parameter needs "
                "DistributedDataParallel(..., find_unused_parameters=True)"
            )
        bucket.grads[i] = grad
        bucket.ready += 1
        if bucket.ready == len(bucket.params):
            self._launch_full_buckets()
        elif self.next_launch:
            for launched in self.buckets[: self.next_launch]:
                launched.work.test()  # lets the communicator progress while backward goes on

    def _launch_full_buckets(self) -> None:
        """Start every full bucket's all-reduce, in bucket order: so every rank issues the
        same collectives in the same order, whatever order its gradients arrived in. Once
        the last has started, wait for all and hand out the averaged gradients."""
        buckets = self.buckets
        while self.next_launch < len(buckets):
            bucket = buckets[self.next_launch]
            if bucket.ready < len(bucket.params):
                break
            if self.next_launch == 0:
                self._agree()
            bucket.launch(self.comm)
            self.next_launch += 1
        for bucket in buckets[: self.next_launch]:
            bucket.work.test()
        if self.next_launch == len(buckets):
            for bucket in buckets:
                bucket.finish()
            self.next_launch = 0

    def _agree(self) -> None:
        """Before a round's first all-reduce, check that every rank is starting one too: a
        rank with a batch more than the others would otherwise wait in it for ever (their
        next collective is another, or none). On a mismatch every rank raises, and this
        round is dropped (its gradients stay as this rank computed them)."""
        if self.comm.world_size == 1:
            return
        first = self.buckets[0]
        try:
            agree(
                self.comm, "DistributedDataParallel", first.dtype, (self.total,),
                "the same model", len(self.buckets),
            )  # fmt: skip
        except ValueError:
            for bucket in self.buckets:
                bucket.grads, bucket.ready = [None] * len(bucket.params), 0
            raise

    def before_forward(self) -> None:
        if any(bucket.ready for bucket in self.buckets):
            missing = []
            for p in self.params:
                bucket, i = self.slot[id(p)]
                if bucket.ready < len(bucket.params) and bucket.grads[i] is None:
                    missing.append(self.names.get(id(p), "?"))
            raise RuntimeError(
                f"the last backward pass gave no gradient to parameters {missing}, so gradients "
                "were not averaged; use DistributedDataParallel(..., find_unused_parameters=True)"
            )

    def after_forward(self, output: Any) -> None:
        if not (self.find_unused and self.sync and is_grad_enabled()):
            return
        roots = [t for t in _tensors(output) if t.requires_grad]
        reached = {id(node) for node in find_topo_sort(roots)}
        for p in self.params:
            if id(p) not in reached:
                earlier = self.accumulated.pop(id(p), None)
                self._put(p, _ZERO if earlier is None else earlier)


def _tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, (Tensor, TensorTuple)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


class DistributedDataParallel(Module):
    """Train one replica of ``module`` per rank on different data, as one model.

    Building it broadcasts rank 0's parameters and buffers to every rank. Each backward
    pass then leaves, in every parameter's ``.grad``, the mean of that gradient over the
    ranks, by the time ``loss.backward()`` returns: with the loss a mean over each rank's
    batch, ``N`` ranks with batches of ``B/N`` take the same steps as one process with
    batches of ``B``. Gradients are reduced in buckets of about ``bucket_cap_mb``
    (parameters taken from the last to the first), and each bucket's all-reduce starts
    as soon as its gradients are final, overlapping the rest of the backward pass where
    the communicator allows.

    BatchNorm keeps per-rank statistics: each rank normalizes with its own batch and keeps
    its own running mean and variance (they start equal, broadcast from rank 0). Evaluate
    and save from rank 0 (:func:`needle.distributed.save`) for one set of statistics.

    The averaged gradients are new tensors outside any graph. Where the backend has the
    ``slices`` capability (numpy, cpu), each is its parameter's range of the bucket the
    ranks reduced (nothing is copied out of it); a bucket's memory lives until all of its
    gradients are gone, and every backward pass reduces in a new one. ``state_dict`` and
    ``load_state_dict`` are the wrapped module's, so checkpoints load into the plain module.

    Args:
        module: the model; the same architecture on every rank.
        bucket_cap_mb: the size of a gradient bucket in MiB.
        find_unused_parameters: look, after each forward pass, for parameters the output
            does not depend on, and count their gradient as zero; needed when a step may
            leave some parameters out (it costs one walk of the graph per step).

    Raises:
        CommunicatorError: ``needle.distributed.init()`` was not called.
    """

    def __init__(
        self, module: Module, bucket_cap_mb: float = 25.0, find_unused_parameters: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(
                f"DistributedDataParallel wraps a needle.nn.Module, not {type(module).__name__}"
            )
        if bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        comm = communicator()
        self.module = module
        self.training = module.training
        if comm.world_size > 1:
            state = module.state_dict()
            module.load_state_dict({name: broadcast(t, src=0) for name, t in state.items()})
        self._reducer = _Reducer(module, comm, bucket_cap_mb, find_unused_parameters)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._reducer.before_forward()
        output = self.module(*args, **kwargs)
        self._reducer.after_forward(output)
        return output

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients locally, without communicating, for gradient accumulation.

        Backward passes inside leave each parameter's local gradient of that pass in
        ``.grad``, and add it to a per-parameter sum; the next backward pass outside the
        block adds its own and averages the sums over the ranks, so ``.grad`` is then the
        mean over ranks of the gradients summed over the micro-batches.
        """
        previous, self._reducer.sync = self._reducer.sync, False
        try:
            yield
        finally:
            self._reducer.sync = previous

    def state_dict(self) -> dict[str, Tensor]:
        """The wrapped module's state (keys without a ``module.`` prefix)."""
        return self.module.state_dict()

    def load_state_dict(self, state: Any, strict: bool = True) -> None:
        """Load into the wrapped module; see :meth:`needle.nn.Module.load_state_dict`."""
        self.module.load_state_dict(state, strict)
