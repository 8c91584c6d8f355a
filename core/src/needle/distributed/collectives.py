"""The job: ``init`` picks a communicator, then collectives on Tensors across its ranks."""

from __future__ import annotations

import atexit
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..backend_ndarray import NDArray
from ..plugins import manager
from .buffers import as_buffer, finish_output, output_buffer
from .communicator import Communicator, CommunicatorError, Work

__all__ = [
    "init",
    "finalize",
    "is_initialized",
    "communicator",
    "rank",
    "world_size",
    "barrier",
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_reduce_scalars",
    "save",
]

ALL_REDUCE_OPS = ("sum", "mean", "max", "min")
# Variables an MPI launcher sets in every process it starts (MPICH/Intel MPI hydra, Open MPI,
# PMIx launchers, MVAPICH); only used to explain a job that found no MPI communicator.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")
_DTYPE_NAMES = ("float32", "float64", "int32", "int64", "bool")

_comm: Communicator | None = None
_previous_excepthook: Any = None


# ---------------------------------------------------------------------------- the job


def init(backend: str | None = None) -> Communicator:
    """Start (or join) the distributed job and return its communicator.

    Args:
        backend: a communicator's name (``"mpi"``, ``"local"``; ``needle info`` lists them).
            None picks one: ``$NEEDLE_COMMUNICATOR`` when set, else the highest-priority
            communicator whose launcher started this process (``mpiexec`` starts the
            ``mpi`` one), else ``local``, a world of one process.

    Once a job of more than one process has started, an exception that nothing catches
    ends every rank of it (after printing the traceback and the failing rank), so no rank
    is left waiting in a collective. Calling ``init`` again returns the same communicator.

    Raises:
        CommunicatorError: the communicator is unknown, cannot run here, or another one
            is already initialized; the message says why and what to install.
    """
    global _comm
    if _comm is not None:
        if backend in (None, _comm.name):
            return _comm
        raise CommunicatorError(
            f"needle.distributed is already initialized with {_comm.name!r}; call "
            f"finalize() before init({backend!r})"
        )
    name = backend or os.environ.get("NEEDLE_COMMUNICATOR", "").strip() or _pick()
    known = manager.communicators()
    if name not in known:
        raise CommunicatorError(
            f"unknown communicator {name!r}; installed: {', '.join(sorted(known)) or 'none'} "
            "(pip install needle-mpi provides 'mpi')"
        )
    record = manager.load_communicator(name)
    if record.status != "loaded":
        raise CommunicatorError(f"communicator {name!r} is {record.status}: {record.reason}")
    comm = record.module.create()
    if not isinstance(comm, Communicator):
        raise CommunicatorError(
            f"{record.spec.module}.create() returned {type(comm).__name__}, which lacks the "
            "methods of needle.distributed.Communicator"
        )
    if not 0 <= comm.rank < comm.world_size:
        raise CommunicatorError(
            f"communicator {name!r} reports rank {comm.rank} of {comm.world_size}"
        )
    _comm = comm
    if comm.world_size > 1:
        _install_excepthook(comm)
        atexit.register(_finalize_at_exit, comm)
    return comm


def _pick() -> str:
    """The communicator whose launcher started this process, by priority; else ``local``."""
    records = sorted(manager.communicators().values(), key=lambda r: -r.spec.priority)
    for record in records:
        if record.spec.name == "local":
            continue
        record = manager.load_communicator(record.spec.name)
        launched = getattr(record.module, "launched", None)
        if launched is None or not launched():
            continue
        if record.status != "loaded":
            raise CommunicatorError(
                f"this process was started by {record.spec.launcher or 'a launcher'} for "
                f"communicator {record.spec.name!r}, which is {record.status}: {record.reason}"
            )
        return record.spec.name
    for var in _LAUNCHER_SIZE_VARS:
        if os.environ.get(var, "1").strip() not in ("", "0", "1"):
            raise CommunicatorError(
                f"this process was started by an MPI launcher ({var}={os.environ[var]}) but no "
                "installed communicator can join that job: pip install needle-mpi"
            )
    return "local"


def _install_excepthook(comm: Communicator) -> None:
    """An uncaught exception on any rank prints the traceback and the rank, then ends the job."""
    global _previous_excepthook
    previous = _previous_excepthook = sys.excepthook

    def end_job(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        _end_job(comm, previous, exc_type, exc, tb, "uncaught")

    sys.excepthook = end_job


def _end_job(comm: Communicator, hook: Any, exc_type: Any, exc: Any, tb: Any, how: str) -> None:
    """Print the exception (through ``hook``) and which rank it ended, then end the job."""
    code = 130 if issubclass(exc_type, KeyboardInterrupt) else 1
    try:
        hook(exc_type, exc, tb)
        sys.stderr.write(
            f"needle.distributed: {how} {exc_type.__name__} on rank {comm.rank} of "
            f"{comm.world_size}; ending the job\n"
        )
        sys.stderr.flush()
        sys.stdout.flush()
        # The launcher forwards each rank's output through a pipe; the abort kills the
        # job at once, so give it a moment to pass these last lines on.
        time.sleep(0.2)
    finally:
        comm.abort(code)


def _finalize_at_exit(comm: Communicator) -> None:
    """At exit, finalize a job the script left running: a rank that ran out of work while
    another is still in a collective (one batch more) then ends the job with an error,
    rather than leaving that rank waiting for ever."""
    if _comm is not comm:
        return  # finalized already (or another job since)
    try:
        finalize()
    except CommunicatorError:
        return  # it cannot run any more (the script ended MPI itself): nothing to meet
    except BaseException as exc:  # noqa: BLE001 - any failure here must end the job
        _end_job(comm, sys.__excepthook__, type(exc), exc, exc.__traceback__, "at exit:")


def finalize() -> None:
    """End this process's part in the job (no effect when not initialized). Every rank
    calls it, and it returns once all have; a job whose script does not call it ends it
    at exit.

    Raises:
        ValueError: another rank is still at another collective (say, a rank with a batch
            more is in its gradient all-reduce): every rank raises, and the job stays up
            so that the uncaught exception ends it.
    """
    global _comm, _previous_excepthook
    if _comm is not None and _comm.world_size > 1:
        agree(_comm, "finalize")
    comm, _comm = _comm, None
    if _previous_excepthook is not None:
        sys.excepthook, _previous_excepthook = _previous_excepthook, None
    if comm is not None:
        comm.finalize()


def is_initialized() -> bool:
    """True between :func:`init` and :func:`finalize`."""
    return _comm is not None


def communicator() -> Communicator:
    """The communicator :func:`init` started.

    Raises:
        CommunicatorError: not initialized.
    """
    return _require("communicator")


def rank() -> int:
    """This process's rank, 0 when the job is not initialized (a world of one)."""
    return _comm.rank if _comm is not None else 0


def world_size() -> int:
    """The number of processes in the job, 1 when it is not initialized."""
    return _comm.world_size if _comm is not None else 1


def _require(what: str) -> Communicator:
    if _comm is None:
        raise CommunicatorError(f"{what}: call needle.distributed.init() first")
    return _comm


def barrier() -> None:
    """Return once every rank has called it.

    Raises:
        ValueError: another rank is at another collective (every rank raises).
    """
    agree(_require("barrier"), "barrier")  # the check returns once every rank is in it


# ---------------------------------------------------------------------------- collectives


def _data(tensor: Any, what: str) -> NDArray:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what} takes a needle.Tensor, got {type(tensor).__name__}")
    return tensor.realize_cached_data()


def _dtype_code(dtype: str) -> int:
    if dtype in _DTYPE_NAMES:
        return _DTYPE_NAMES.index(dtype)
    return 100 + np.dtype(dtype).num


def _dtype_name(code: int) -> str:
    return _DTYPE_NAMES[code] if 0 <= code < len(_DTYPE_NAMES) else f"dtype #{code - 100}"


# What each rank is about to do, first in every collective's check. A rank at another
# collective than the rest (one with a batch more: its gradient all-reduce meets the others'
# metric all-reduce, or their exit) then raises with them, where MPI would wait forever.
CALLS = (
    "all_reduce", "broadcast", "all_gather", "all_reduce_scalars", "barrier", "finalize",
    "DistributedDataParallel",
)  # fmt: skip
_NO_TENSOR = ("barrier", "finalize")


def _show_op(code: int) -> str:
    return f"op {ALL_REDUCE_OPS[code]!r}" if 0 <= code < len(ALL_REDUCE_OPS) else f"op #{code}"


# How each call's ``extra`` reads in an error message.
_SHOW_EXTRA: dict[str, Callable[[int], str]] = {
    "all_reduce": _show_op,
    "all_reduce_scalars": _show_op,
    "broadcast": lambda src: f"src {src}",
    "DistributedDataParallel": lambda n: f"in {n} bucket{'s' * (n != 1)}",
}
# How a call reads there, where its name alone would not say enough.
_LABELS = {
    "DistributedDataParallel": "DistributedDataParallel's gradient all-reduce",
    "finalize": "finalize (or its exit)",
}

_FINGERPRINTS: dict[tuple[str, str, tuple[int, ...], bool, int], tuple[list[int], np.ndarray]] = {}


def _fingerprint(
    call: str, dtype: str, shape: tuple[int, ...], rows_may_differ: bool, extra: int
) -> tuple[list[int], np.ndarray]:
    """``[call, dtype code, ndim, crc32 of the shape (past axis 0 when rows_may_differ),
    rows (0 when they may differ), extra]`` followed by its negation, as a list and as the
    int64 buffer :func:`agree` sends; remembered, as a training loop passes the same few
    shapes again and again."""
    key = (call, dtype, shape, rows_may_differ, extra)
    found = _FINGERPRINTS.get(key)
    if found is None:
        checked = shape[1:] if rows_may_differ else shape
        code = _dtype_code(dtype) if dtype else -1
        rows = 0 if rows_may_differ else shape[0]
        mine = [CALLS.index(call), code, len(shape), zlib.crc32(repr(checked).encode()), rows]
        mine.append(extra)
        mine += [-v for v in mine]
        if len(_FINGERPRINTS) >= 4096:  # many distinct shapes: start again, keep it bounded
            _FINGERPRINTS.clear()
        found = _FINGERPRINTS[key] = (mine, np.array(mine, np.int64))
    return found


# How long a check waits for the other ranks at full speed before it starts to sleep.
_SPIN_SECONDS = 0.005


def _wait_patiently(work: Work) -> None:
    """Wait for a check. The ranks usually arrive within a millisecond or two of each
    other: test in a loop. Past a few milliseconds the others are busy alone (rank 0
    evaluating or writing a checkpoint while the rest wait in barrier() or at exit): sleep
    between tests, from 50 us up to 2 ms, and leave them the cores (a spinning wait, as in
    MPI's blocking calls, halved the speed of rank 0 using both cores of this machine)."""
    if work.test():
        return
    deadline = time.perf_counter() + _SPIN_SECONDS
    while not work.test():
        if time.perf_counter() > deadline:
            break
    nap = 5e-5
    while not work.test():
        time.sleep(nap)
        nap = min(2 * nap, 2e-3)


def agree(
    comm: Communicator,
    call: str,
    dtype: str = "",
    shape: tuple[int, ...] = (),
    need: str = "",
    extra: int = 0,
    rows_may_differ: bool = False,
) -> np.ndarray | None:
    """Check, before a collective whose buffers must match, that every rank is making the
    same ``call`` (one of :data:`CALLS`) with the same dtype and shape (except the first
    axis when ``rows_may_differ``: then return each rank's row count) and the same
    ``extra`` (an op, a source rank). Raises the same ValueError on every rank, saying
    what every rank must pass (``need``) and what each did.

    It is one all-reduce (max) of a few integers, the same on every rank whatever the call,
    so ranks at different calls meet in it and find out; it returns only once every rank
    has reached it (a barrier)."""
    shape = shape or (1,)
    mine, send = _fingerprint(call, dtype, shape, rows_may_differ, extra)
    n = len(mine) // 2
    # The fingerprint and its negation, reduced by max, give on every rank each value's
    # maximum and minus its minimum: equal to this rank's own exactly when every rank's is
    # the same (so all ranks take the same branch below).
    extremes = send.copy()
    _wait_patiently(comm.start_all_reduce(extremes, "max"))
    if extremes.tolist() == mine:
        if not rows_may_differ:
            return None
        rows = np.empty(comm.world_size, np.int64)
        comm.all_gather(np.array(shape[:1], np.int64), rows, [1] * comm.world_size)
        return rows
    # They differ: gather every rank's fingerprint and whole shape, to say which is which.
    table = np.empty((comm.world_size, n), np.int64)
    comm.all_gather(send[:n], table, [n] * comm.world_size)
    width = int(table[:, 2].max())
    padded = np.full(width, -1, np.int64)
    padded[: len(shape)] = shape
    shapes = np.empty((comm.world_size, width), np.int64)
    comm.all_gather(padded, shapes, [width] * comm.world_size)
    same_call = bool((table[:, 0] == table[0, 0]).all())
    described = []
    for r in range(comm.world_size):
        call_r, code, ndim, extra_r = (int(table[r][i]) for i in (0, 1, 2, 5))
        name = CALLS[call_r] if 0 <= call_r < len(CALLS) else f"call #{call_r}"
        text = f"rank {r}" if same_call else f"rank {r} {_LABELS.get(name, name)}"
        if name not in _NO_TENSOR:
            text += f" {_dtype_name(code)} {tuple(int(d) for d in shapes[r][:ndim])}"
            if name in _SHOW_EXTRA:
                text += f" {_SHOW_EXTRA[name](extra_r)}"
        described.append(text)
    if same_call:
        raise ValueError(f"{call}: every rank must pass {need}; got {', '.join(described)}")
    raise ValueError(
        f"{call}: the ranks are at different collectives: {', '.join(described)}. Every rank "
        "must make the same collective calls in the same order; with DistributedDataParallel "
        "that means as many backward passes on every rank (give each rank as many batches, "
        "as DistributedSampler does)"
    )


def _check_op(op: str, dtype: np.dtype) -> None:
    if op not in ALL_REDUCE_OPS:
        raise ValueError(f"all_reduce: op must be one of {', '.join(ALL_REDUCE_OPS)}, got {op!r}")
    if dtype.kind == "b" and op in ("sum", "mean"):
        raise TypeError(
            f"all_reduce: op {op!r} is undefined for bool tensors; use 'max' (any) or 'min' (all)"
        )
    if dtype.kind in "iu" and op == "mean":
        raise TypeError(
            f"all_reduce: op 'mean' of {dtype.name} tensors is not an integer; use 'sum' and divide"
        )


def all_reduce(tensor: Tensor, op: str = "sum") -> Tensor:
    """The elementwise reduction of ``tensor`` over every rank, as a new Tensor on each.

    Args:
        tensor: the same dtype and shape on every rank.
        op: ``"sum"``, ``"mean"`` (floating dtypes), ``"max"`` or ``"min"``; for bool,
            ``"max"`` is any and ``"min"`` is all.

    Returns:
        A Tensor on ``tensor``'s device, outside any graph.

    Raises:
        ValueError: an unknown op, or ranks passed different dtypes, shapes or ops (every
            rank raises, naming each rank's tensor and op).
        TypeError: the op does not apply to the dtype.
    """
    comm = _require("all_reduce")
    data = _data(tensor, "all_reduce")
    _check_op(op, np.dtype(data.dtype))
    # Buffers first, so that the ranks leave the check and enter the all-reduce together
    # (1 MiB: ~20 us less than with the buffers made in between).
    send = as_buffer(data)
    out, recv = output_buffer(data.shape, data.dtype, data.device)
    agree(
        comm, "all_reduce", data.dtype, tuple(data.shape),
        "a tensor of the same dtype and shape, with the same op", ALL_REDUCE_OPS.index(op),
    )  # fmt: skip
    comm.all_reduce(send, recv, "sum" if op == "mean" else op)
    if op == "mean":
        np.divide(recv, comm.world_size, out=recv)
    return Tensor.make_const(finish_output(out, recv, data.device))


def broadcast(tensor: Tensor, src: int = 0) -> Tensor:
    """Rank ``src``'s ``tensor`` on every rank, as a new Tensor (on each rank's device).

    Raises:
        ValueError: ``src`` is not a rank, or ranks passed different dtypes, shapes or
            ``src`` (every rank raises).
    """
    comm = _require("broadcast")
    data = _data(tensor, "broadcast")
    if not 0 <= src < comm.world_size:
        raise ValueError(f"broadcast: src must be a rank in [0, {comm.world_size}), got {src}")
    out, buf = output_buffer(data.shape, data.dtype, data.device)
    if comm.rank == src:
        np.copyto(buf, as_buffer(data))
    agree(
        comm, "broadcast", data.dtype, tuple(data.shape),
        "a tensor of the same dtype and shape, with the same src", src,
    )  # fmt: skip
    comm.broadcast(buf, src)
    return Tensor.make_const(finish_output(out, buf, data.device))


def all_gather(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along axis 0, in rank order, on every rank.

    The ranks' tensors may differ in length along axis 0; a 0-d tensor counts as shape
    ``(1,)``, so gathering scalars gives a vector of ``world_size()``.

    Raises:
        ValueError: ranks passed different dtypes or shapes past the first axis.
    """
    comm = _require("all_gather")
    data = _data(tensor, "all_gather")
    shape = tuple(data.shape) or (1,)
    rows = agree(
        comm, "all_gather", data.dtype, shape,
        "a tensor of the same dtype and shape past the first axis", rows_may_differ=True,
    )  # fmt: skip
    row_size = int(np.prod(shape[1:], dtype=np.int64))
    out_shape = (int(rows.sum()), *shape[1:])
    out, recv = output_buffer(out_shape, data.dtype, data.device)
    comm.all_gather(as_buffer(data).reshape(-1), recv, [int(r) * row_size for r in rows])
    return Tensor.make_const(finish_output(out, recv, data.device))


def all_reduce_scalars(values: Sequence[float], op: str = "sum") -> list[float]:
    """Reduce a few Python numbers over every rank (in float64), e.g. metric totals.

    Without an initialized job (a world of one) the values come back unchanged.

    Raises:
        ValueError: an unknown op, or ranks passed different numbers of values or different
            ops (every rank raises).
    """
    values = [float(v) for v in values]
    if _comm is None or _comm.world_size == 1:
        return values
    _check_op(op, np.dtype(np.float64))
    agree(
        _comm, "all_reduce_scalars", "float64", (len(values),),
        "as many values, with the same op", ALL_REDUCE_OPS.index(op),
    )  # fmt: skip
    buf = np.array(values, np.float64)
    _comm.all_reduce(buf, buf, "sum" if op == "mean" else op)
    if op == "mean":
        buf /= _comm.world_size
    return buf.tolist()


def save(obj: Any, path: str | os.PathLike, src: int = 0) -> None:
    """Write a checkpoint (see :func:`needle.save`) from rank ``src`` only.

    Every rank calls it; when it returns, the file is written (the ranks wait for
    ``src``). Without an initialized job it is :func:`needle.save`.
    """
    from ..checkpoint import save as save_checkpoint

    if rank() == src:
        save_checkpoint(obj, path)
    if _comm is not None:
        barrier()
