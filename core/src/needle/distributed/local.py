"""The ``local`` communicator: a job of one process, built into core.

``needle.distributed.init()`` falls back to it when no launcher started the process,
so the same training script runs unchanged under ``python`` and ``mpiexec``. Every
collective is a copy (the reference semantics for a world of one).
"""

from __future__ import annotations

import os

import numpy as np

from .communicator import REDUCE_OPS, CommunicatorError

__all__ = ["LocalCommunicator", "LocalWork", "create"]


class LocalWork:
    """A finished collective."""

    def test(self) -> bool:
        return True

    def wait(self) -> None:
        return None


class LocalCommunicator:
    """Every collective of a world of one process."""

    name = "local"
    rank = 0
    world_size = 1

    def __init__(self) -> None:
        self.finalized = False

    def _check(self) -> None:
        if self.finalized:
            raise CommunicatorError("the local communicator was finalized")

    def barrier(self) -> None:
        self._check()

    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        self._check()
        if op not in REDUCE_OPS:
            raise ValueError(f"unknown reduction {op!r}; known: {', '.join(REDUCE_OPS)}")
        if recv is not send:
            np.copyto(recv, send)

    def start_all_reduce(self, buf: np.ndarray, op: str) -> LocalWork:
        self.all_reduce(buf, buf, op)
        return LocalWork()

    def broadcast(self, buf: np.ndarray, src: int) -> None:
        self._check()
        if src != 0:
            raise ValueError(f"src must be a rank in [0, 1), got {src}")

    def all_gather(self, send: np.ndarray, recv: np.ndarray, counts: list[int]) -> None:
        self._check()
        np.copyto(recv.reshape(-1), send.reshape(-1))

    def abort(self, code: int) -> None:
        os._exit(code)

    def finalize(self) -> None:
        self.finalized = True


def create() -> LocalCommunicator:
    """A new world of one process."""
    return LocalCommunicator()
