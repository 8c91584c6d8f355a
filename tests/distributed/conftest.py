"""Fixtures for needle.distributed in one process: a local job, and communicators that spy."""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import needle.distributed as dist
import numpy as np
import pytest
from needle import nn
from needle.distributed.local import LocalCommunicator
from needle.plugins import CommunicatorSpec, hookimpl, manager

# Launchers' variables: a test of the local job must not look like an mpiexec child.
LAUNCHER_VARS = (
    "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
    "PMIX_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "NEEDLE_COMMUNICATOR",
)  # fmt: skip


def mpi_installed() -> bool:
    return importlib.util.find_spec("needle_mpi") is not None


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No launcher variables, no job: each test starts and ends outside any job."""
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    dist.finalize()
    yield monkeypatch
    dist.finalize()


@pytest.fixture
def local_job(clean_env: pytest.MonkeyPatch) -> Any:
    """A job of one process on the built-in ``local`` communicator."""
    return dist.init("local")


class SpyCommunicator(LocalCommunicator):
    """The local communicator, recording every call with its buffers."""

    name = "spy"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def all_reduce(self, send: np.ndarray, recv: np.ndarray, op: str) -> None:
        self.calls.append(("all_reduce", (send, recv, op)))
        super().all_reduce(send, recv, op)

    def start_all_reduce(self, buf: np.ndarray, op: str) -> Any:
        self.calls.append(("start_all_reduce", (buf, op)))
        return super().start_all_reduce(buf, op)

    def broadcast(self, buf: np.ndarray, src: int) -> None:
        self.calls.append(("broadcast", (buf, src)))
        super().broadcast(buf, src)

    def all_gather(self, send: np.ndarray, recv: np.ndarray, counts: list[int]) -> None:
        self.calls.append(("all_gather", (send, recv, counts)))
        super().all_gather(send, recv, counts)


class CommPlugin:
    """A throwaway plugin declaring the given communicators."""

    def __init__(self, *specs: CommunicatorSpec) -> None:
        self.specs = specs

    @hookimpl
    def needle_communicators(self) -> list[CommunicatorSpec]:
        return list(self.specs)


def comm_module(monkeypatch: pytest.MonkeyPatch, name: str, **attrs: Any) -> str:
    """A module ``needle_tests_comm_<name>`` in sys.modules with ``attrs``; its import path."""
    mod = types.ModuleType(f"needle_tests_comm_{name}")
    for key, value in attrs.items():
        setattr(mod, key, value)
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod.__name__


@pytest.fixture
def spy_job(clean_env: pytest.MonkeyPatch, fresh_plugins: Any) -> SpyCommunicator:
    """A job of one process on a registered ``spy`` communicator (a plugin like any other)."""
    comm = SpyCommunicator()
    module = comm_module(clean_env, "spy", create=lambda: comm)
    manager.register(CommPlugin(CommunicatorSpec(name="spy", module=module)), name="test-spy")
    assert dist.init("spy") is comm
    return comm


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """The helpers above, for test modules (importlib mode cannot import conftest)."""
    return types.SimpleNamespace(
        CommPlugin=CommPlugin,
        SpyCommunicator=SpyCommunicator,
        module=lambda name, **attrs: comm_module(monkeypatch, name, **attrs),
        mpi_installed=mpi_installed(),
    )


class _TwoHeads(nn.Module):
    """A body and two heads, of which a forward pass uses one: the other gets no gradient."""

    def __init__(self, device: Any) -> None:
        super().__init__()
        self.body = nn.Linear(6, 4, device=device)
        self.left = nn.Linear(4, 3, device=device)
        self.right = nn.Linear(4, 3, device=device)
        self.use_right = False

    def forward(self, x: Any) -> Any:
        h = self.body(x).relu()
        return self.right(h) if self.use_right else self.left(h)


@pytest.fixture
def two_heads() -> type[nn.Module]:
    """The model class of the unused-parameter tests (single-process and under mpiexec)."""
    return _TwoHeads
