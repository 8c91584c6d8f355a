"""What a communicator is: the protocol every ``needle_communicators`` plugin implements.

A communicator moves *buffers* between the processes (ranks) of one job. Core hands it
C-contiguous numpy arrays that usually alias the tensors' own host memory (see
:mod:`needle.distributed.buffers`), so a communicator over MPI passes them to MPI through
the buffer protocol without copying. Dtypes are whatever the arrays hold (float32,
float64, int32, int64, bool); ``op`` is ``"sum"``, ``"max"`` or ``"min"`` (core checks
that the op suits the dtype and computes means itself). Every rank calls the same
collectives in the same order, as with MPI: core makes sure of it, opening each of its
calls with a small ``all_reduce`` (max, int64) that says which call it is on each rank, so
a communicator's collectives never meet a different one (``needle.distributed.barrier()``
is that check alone; the communicator's own ``barrier`` serves direct use).

Core's built-in ``local`` communicator (a world of one process) is the reference.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Communicator", "Work", "CommunicatorError", "REDUCE_OPS"]

#: The reductions a communicator implements (``"mean"`` is a sum divided by core).
REDUCE_OPS = ("sum", "max", "min")


class CommunicatorError(RuntimeError):
    """A communicator cannot start or was used wrongly; the message says why."""


@runtime_checkable
class Work(Protocol):
    """A collective started without waiting (:meth:`Communicator.start_all_reduce`)."""

    def test(self) -> bool:
        """True once the collective has finished; lets the communicator make progress."""

    def wait(self) -> None:
        """Block until the collective has finished."""


@runtime_checkable
class Communicator(Protocol):
    """The collectives of one job, on host buffers (numpy arrays, C-contiguous).

    Attributes:
        name: the communicator's name (``"mpi"``, ``"local"``).
        rank: this process's index, ``0 <= rank < world_size``.
        world_size: the number of processes in the job.
    """

    name: str
    rank: int
    world_size: int

    def barrier(self) -> None:
        """Return once every rank has called it."""

    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        """``recv`` = the elementwise ``op`` of every rank's ``send`` (``recv`` may be ``send``)."""

    def start_all_reduce(self, buf: np.ndarray, op: str) -> Work:
        """Start an in-place all-reduce of ``buf`` and return at once; ``buf`` is final
        after ``wait()``. A communicator without non-blocking collectives may finish the
        work before returning."""

    def broadcast(self, buf: np.ndarray, src: int) -> None:
        """Overwrite ``buf`` on every rank with rank ``src``'s ``buf``."""

    def all_gather(self, send: np.ndarray, recv: np.ndarray, counts: list[int]) -> None:
        """``recv`` = every rank's ``send`` concatenated in rank order, rank ``r``
        contributing ``counts[r]`` elements (``recv.size == sum(counts)``)."""

    def abort(self, code: int) -> None:
        """End every process of the job now, with exit status ``code``."""

    def finalize(self) -> None:
        """Release the communicator; it is not used again in this process."""
