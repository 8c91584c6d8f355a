"""needle.distributed's job and collectives in one process (the ``local`` communicator)."""

from __future__ import annotations

import os
import subprocess
import sys

import needle as ndl
import needle.distributed as dist
import numpy as np
import pytest
from needle.distributed import CommunicatorError
from needle.distributed.buffers import host_view

LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "NEEDLE_COMMUNICATOR")

# The tensor dtypes the collectives are checked on (where the backend holds them).
DTYPES = ["float32", "float64", "int32", "int64", "bool"]


def _tensor(device, shape, dtype, seed=0):
    if not device.supports(dtype):
        pytest.skip(f"{device.name} holds no {dtype}")
    values = np.random.default_rng(seed).standard_normal(shape) * 10
    return ndl.Tensor(values.astype(dtype), device=device, requires_grad=False)


def test_a_job_of_one_process_initializes_no_mpi(clean_env) -> None:
    code = (
        "import sys, needle.distributed as d; print(d.init().name); d.finalize(); "
        "print(sorted(m for m in sys.modules if m.startswith('mpi4py')))"
    )
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["local", "[]"]


def test_world_of_one_outside_a_job(clean_env) -> None:
    assert not dist.is_initialized()
    assert (dist.rank(), dist.world_size()) == (0, 1)
    with pytest.raises(CommunicatorError, match="init"):
        dist.barrier()
    with pytest.raises(CommunicatorError, match="init"):
        dist.all_reduce(ndl.Tensor([1.0]))


def test_init_picks_local_without_a_launcher(clean_env) -> None:
    comm = dist.init()
    assert comm.name == "local" and dist.is_initialized()
    assert dist.init() is comm, "init again returns the same communicator"
    with pytest.raises(CommunicatorError, match="already initialized with 'local'"):
        dist.init("someother")
    dist.finalize()
    assert not dist.is_initialized()


def test_init_follows_needle_communicator(clean_env) -> None:
    clean_env.setenv("NEEDLE_COMMUNICATOR", "local")
    assert dist.init().name == "local"


def test_init_unknown_communicator_lists_the_installed(clean_env) -> None:
    with pytest.raises(CommunicatorError, match=r"unknown communicator 'nccl'.*local"):
        dist.init("nccl")


def test_init_under_a_launcher_without_an_mpi_communicator(clean_env) -> None:
    # A launcher started 2 processes but nothing can join its job: each would train alone.
    clean_env.setenv("PMI_SIZE", "2")
    with pytest.raises(CommunicatorError, match="PMI_SIZE=2.*pip install needle-mpi"):
        dist.init()


def _defined(op: str, dtype: str) -> bool:
    """sum/mean of bools and the mean of integers have no exact result of their dtype."""
    return not (dtype == "bool" and op in ("sum", "mean")) and not (
        dtype.startswith("int") and op == "mean"
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
def test_all_reduce_of_one_rank(local_job, device, dtype, op) -> None:
    t = _tensor(device, (3, 4), dtype)
    if not _defined(op, dtype):
        with pytest.raises(TypeError, match=f"op '{op}'.*{dtype}"):
            dist.all_reduce(t, op)
        return
    out = dist.all_reduce(t, op)
    assert out is not t and out.device == device and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), t.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_and_all_gather_of_one_rank(local_job, device, dtype) -> None:
    t = _tensor(device, (2, 3), dtype)
    np.testing.assert_array_equal(dist.broadcast(t, src=0).numpy(), t.numpy())
    np.testing.assert_array_equal(dist.all_gather(t).numpy(), t.numpy())
    scalar = ndl.Tensor(np.float32(2.5), device=device)
    assert dist.all_gather(scalar).shape == (1,), "a 0-d tensor gathers as shape (1,)"
    empty = ndl.Tensor(np.zeros((0, 3), dtype), device=device)
    assert dist.all_reduce(empty, "max").shape == (0, 3)


def test_collectives_reject_bad_arguments(local_job, device) -> None:
    t = _tensor(device, (2,), "float32")
    with pytest.raises(ValueError, match="op must be one of sum, mean, max, min"):
        dist.all_reduce(t, "prod")
    with pytest.raises(TypeError, match="needle.Tensor"):
        dist.all_reduce(np.ones(2))
    with pytest.raises(ValueError, match=r"src must be a rank in \[0, 1\)"):
        dist.broadcast(t, src=1)


def test_all_reduce_scalars(clean_env) -> None:
    assert dist.all_reduce_scalars([1, 2.5]) == [1.0, 2.5], "outside a job: unchanged"
    dist.init("local")
    assert dist.all_reduce_scalars([3, 4], op="mean") == [3.0, 4.0]


def test_save_writes_the_checkpoint(local_job, device, tmp_path) -> None:
    path = tmp_path / "state.npz"
    dist.save({"w": _tensor(device, (2, 2), "float32")}, path)
    assert set(ndl.load(path)) == {"w"}


def test_host_tensors_reach_the_communicator_without_copies(spy_job, device) -> None:
    if host_view(ndl.Tensor([1.0], device=device).realize_cached_data()) is None:
        pytest.skip(f"{device.name} memory is not on the host: its buffers are copied")
    t = _tensor(device, (4, 5), "float32")
    out = dist.all_reduce(t)
    check, (send, recv, op) = [args for name, args in spy_job.calls if name == "all_reduce"]
    assert check[0].dtype == np.int64 and check[0].size == 12, "first the check"
    assert send.ctypes.data == t.realize_cached_data().handle.ptr(), "the input, not a copy"
    assert recv.ctypes.data == out.realize_cached_data().handle.ptr(), "the output, not a copy"


def test_host_view_shares_memory(device) -> None:
    array = ndl.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), device=device)
    view = host_view(array.realize_cached_data())
    if view is None:
        pytest.skip(f"{device.name} memory is not on the host")
    view[1, 2] = 42.0
    assert array.numpy()[1, 2] == 42.0
    assert host_view(array.realize_cached_data()[:, 1:]) is None, "a strided view has none"


def test_a_collective_inside_jit_is_refused_not_frozen(local_job, device) -> None:
    """A replay cannot repeat a communicator's host access: the trace fails (or, not strict,
    the call runs eagerly every time) instead of silently skipping the exchange."""
    t = _tensor(device, (2, 3), "float32")
    with pytest.raises(ndl.JitError, match="needle.distributed"):
        ndl.jit(lambda x: dist.all_reduce(x * 2.0, "sum"))(t)
    lenient = ndl.jit(lambda x: dist.all_reduce(x * 2.0, "sum"), strict=False)
    for _ in range(3):
        np.testing.assert_array_equal(lenient(t).numpy(), t.numpy() * 2.0)
