"""Data-parallel training across processes and machines: ``needle.distributed``.

A job is several processes (ranks), each started by a launcher such as ``mpiexec`` and
running the same script on its own share of the data::

    import needle as ndl
    import needle.distributed as dist

    dist.init()                                   # the MPI communicator under mpiexec
    model = dist.DistributedDataParallel(ndl.models.MLPResNet(784))
    sampler = ndl.data.DistributedSampler(train_set, seed=0)
    loader = ndl.data.DataLoader(train_set, batch_size=50, sampler=sampler)
    for epoch in range(10):
        sampler.set_epoch(epoch)
        ndl.models.epoch(loader, model, opt=opt)  # metrics averaged over the ranks
    dist.save(model.state_dict(), "model.npz")    # written by rank 0

Communicators come from plugins (hook ``needle_communicators``; ``needle info`` lists
them): ``needle-mpi`` provides ``mpi``; core's ``local`` is a world of one process, so the
same script also runs under plain ``python``. Importing this package imports no MPI.
"""

from __future__ import annotations

from .collectives import (
    all_gather,
    all_reduce,
    all_reduce_scalars,
    barrier,
    broadcast,
    communicator,
    finalize,
    init,
    is_initialized,
    rank,
    save,
    world_size,
)
from .communicator import Communicator, CommunicatorError, Work
from .ddp import DistributedDataParallel

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
    "DistributedDataParallel",
    "Communicator",
    "CommunicatorError",
    "Work",
]
