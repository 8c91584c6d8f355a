"""Samplers: the order in which a DataLoader visits a dataset's indices."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """This rank's share of a dataset's indices, for data-parallel training.

    Every epoch the indices ``0..len(dataset)-1`` are put in one order, the same on every
    rank (a permutation drawn from ``seed + epoch`` when shuffling, else ascending), and
    dealt round-robin: rank ``r`` takes positions ``r, r + num_replicas, ...``. Every rank
    gets the same number of indices, so every rank takes the same number of steps. When
    ``num_replicas`` does not divide the dataset, ``drop_last=False`` pads the order with
    its first indices (a few samples are seen twice per epoch) and ``drop_last=True``
    leaves the last ones out (a few are not seen in that epoch).

    Pass it to ``DataLoader(dataset, batch_size, sampler=...)`` and call
    :meth:`set_epoch` before each epoch so each epoch gets a new order.

    Args:
        dataset: anything with ``len()``.
        num_replicas: the number of ranks (``needle.distributed.world_size()`` when None).
        rank: this rank (``needle.distributed.rank()`` when None).
        shuffle: a new permutation per epoch; ascending order when False.
        seed: the permutations' seed, the same on every rank. The sampler draws from its
            own generator, never from numpy's global one.
        drop_last: drop the tail instead of padding to a multiple of ``num_replicas``.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_replicas is None or rank is None:
            from .. import distributed

            num_replicas = distributed.world_size() if num_replicas is None else num_replicas
            rank = distributed.rank() if rank is None else rank
        if int(num_replicas) != num_replicas or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
        if int(rank) != rank or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an integer in [0, {num_replicas}), got {rank!r}")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        n = len(dataset)
        if drop_last:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (call it with the same value on every rank)."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, in order."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = np.arange(n)
        if self.total_size > n:  # pad with the first indices (again, when they are too few)
            order = np.resize(order, self.total_size)
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
