"""needle.distributed across processes: run by ``mpiexec -n N python -m pytest`` (N >= 2).

``nox -s tests-mpi`` runs it with 2 and with 3 ranks. A plain ``pytest tests`` run does not
collect it (its name does not start with ``test_``); run directly outside ``mpiexec`` it
skips. Every rank runs every test, so each test makes the same collectives on every rank
and asserts only after its last collective.
"""

from __future__ import annotations

import os
import tempfile

import needle as ndl
import needle.distributed as dist
import numpy as np
import pytest
from needle import nn, optim
from needle.data import DistributedSampler

if not any(v in os.environ for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")):
    pytest.skip("run under mpiexec: nox -s tests-mpi", allow_module_level=True)

# Communicator-level dtypes: every dtype a tensor may hold once contract v2 lands.
COMM_DTYPES = ["float32", "float64", "int32", "int64", "bool"]
# Tensor-level dtypes: every dtype a tensor may hold (where the backend holds it).
DTYPES = ["float32", "float64", "int32", "int64", "bool"]


@pytest.fixture(scope="module", autouse=True)
def job():
    comm = dist.init()
    assert comm.name == "mpi" and comm.world_size >= 2, (comm.name, comm.world_size)
    return comm


def _values(rank: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    rng = np.random.default_rng(1000 + rank)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith("int"):
        return rng.integers(-50, 50, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _reduce(arrays: list[np.ndarray], op: str) -> np.ndarray:
    stack = np.stack(arrays)
    if stack.dtype == bool:
        return stack.any(0) if op == "max" else stack.all(0)
    reduced = {"sum": stack.sum, "max": stack.max, "min": stack.min, "mean": stack.mean}[op](0)
    return reduced.astype(stack.dtype)  # numpy sums int32 into int64; MPI keeps the dtype


def _check(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


# ---------------------------------------------------------------------------- collectives


@pytest.mark.parametrize("dtype", COMM_DTYPES)
def test_communicator_collectives_for_every_dtype(job, dtype) -> None:
    rank, world = job.rank, job.world_size
    mine = _values(rank, (5, 7), dtype)
    everyone = [_values(r, (5, 7), dtype) for r in range(world)]
    ops = ["max", "min"] if dtype == "bool" else ["sum", "max", "min"]
    got = {}
    for op in ops:
        recv = np.empty_like(mine)
        job.all_reduce(mine, recv, op)
        got[op] = recv
        inplace = mine.copy()
        job.all_reduce(inplace, inplace, op)
        got[op + " in place"] = inplace
        started = mine.copy()
        job.start_all_reduce(started, op).wait()
        got[op + " started"] = started
    for src in range(world):
        buf = mine.copy()
        job.broadcast(buf, src)
        got[f"broadcast from {src}"] = buf
    gathered = np.empty((world, 5, 7), dtype)
    job.all_gather(mine, gathered, [35] * world)
    uneven = np.empty(sum(r + 1 for r in range(world)), dtype)
    job.all_gather(mine.reshape(-1)[: rank + 1], uneven, [r + 1 for r in range(world)])
    job.barrier()
    for op in ops:
        for how in ("", " in place", " started"):
            _check(got[op + how], _reduce(everyone, op), f"all_reduce {op}{how} {dtype}")
    for src in range(world):
        _check(got[f"broadcast from {src}"], everyone[src], f"broadcast from {src}")
    _check(gathered, np.stack(everyone), "all_gather")
    want = np.concatenate([everyone[r].reshape(-1)[: r + 1] for r in range(world)])
    _check(uneven, want, "all_gather with uneven counts")


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_collectives(job, device, dtype) -> None:
    if not device.supports(dtype):
        pytest.skip(f"{device.name} holds no {dtype}")
    rank, world = job.rank, job.world_size
    everyone = [_values(r, (3, 4), dtype) for r in range(world)]
    t = ndl.Tensor(everyone[rank], device=device)
    ops = ("max", "min") if dtype == "bool" else ("sum", "max", "min")
    ops += ("mean",) if dtype.startswith("float") else ()  # the others raise (single-process test)
    reduced = {op: dist.all_reduce(t, op) for op in ops}
    broadcast = [dist.broadcast(t, src) for src in range(world)]
    rows = ndl.Tensor(np.full((rank + 1, 2), rank, dtype), device=device)
    gathered = dist.all_gather(rows)
    scalars = dist.all_gather(ndl.Tensor(np.array(rank, dtype), device=device))
    for op, out in reduced.items():
        assert out.device == device
        _check(out.numpy(), _reduce(everyone, op), f"all_reduce {op}")
    for src, out in enumerate(broadcast):
        _check(out.numpy(), everyone[src], f"broadcast from {src}")
    want = np.concatenate([np.full((r + 1, 2), r, dtype) for r in range(world)])
    _check(gathered.numpy(), want, "all_gather")
    _check(scalars.numpy(), np.arange(world).astype(dtype), "all_gather of scalars")


def _raised(calls, device) -> tuple[list[str], float]:
    """Make each call on every rank: the ValueErrors raised, and the total of a last
    all-reduce of ones (the number of ranks when the job is still in step)."""
    errors = []
    for call in calls:
        try:
            call()
        except ValueError as exc:
            errors.append(str(exc))
    return errors, float(dist.all_reduce(ndl.Tensor([1.0], device=device)).numpy()[0])


def test_ranks_that_disagree_raise_on_every_rank(job, device) -> None:
    rank, world = job.rank, job.world_size
    ones = ndl.Tensor(np.ones(3, np.float32), device=device)
    calls = (
        lambda: dist.all_reduce(ndl.Tensor(np.ones((rank + 1, 2), np.float32), device=device)),
        lambda: dist.broadcast(ndl.Tensor(np.ones((2, rank + 1), np.float32), device=device)),
        lambda: dist.all_gather(ndl.Tensor(np.ones((2, rank + 1), np.float32), device=device)),
        # Buffers that match but calls that do not: each rank would get a different answer
        # (MPI applies each rank's own op, takes each rank's own root) or the job would die.
        lambda: dist.all_reduce(ones, "max" if rank else "sum"),
        lambda: dist.broadcast(ones, src=rank),
        lambda: dist.all_reduce_scalars([1.0] * (rank + 1)),
    )
    errors, total = _raised(calls, device)
    assert len(errors) == 6, errors
    assert "rank 0 float32 (1, 2)" in errors[0] and "rank 1 float32 (2, 2)" in errors[0]
    assert "shape past the first axis" in errors[2]
    assert "same op" in errors[3] and "rank 0 float32 (3,) op 'sum'" in errors[3]
    assert "rank 1 float32 (3,) op 'max'" in errors[3]
    assert "same src" in errors[4] and "rank 1 float32 (3,) src 1" in errors[4]
    assert "as many values" in errors[5] and "rank 1 float64 (2,)" in errors[5]
    assert total == world, "the job is still in step"


def test_ranks_at_different_collectives_raise_on_every_rank(job, device) -> None:
    rank = job.rank
    t = ndl.Tensor(np.ones(3, np.float32), device=device)
    calls = (
        lambda: dist.barrier() if rank == 0 else dist.all_reduce(t),
        lambda: dist.all_gather(t) if rank == 0 else dist.all_reduce(t, "max"),
        # The same dtype, shape and number (op 'sum' is 0, like src 0): only the call differs.
        lambda: dist.broadcast(t, src=0) if rank == 0 else dist.all_reduce(t),
    )
    errors, total = _raised(calls, device)
    assert len(errors) == 3, errors
    assert all("the ranks are at different collectives" in e for e in errors), errors
    assert "rank 0 barrier, rank 1 all_reduce float32 (3,) op 'sum'" in errors[0]
    assert "rank 0 all_gather float32 (3,), rank 1 all_reduce float32 (3,) op 'max'" in errors[1]
    assert "rank 0 broadcast float32 (3,) src 0, rank 1 all_reduce" in errors[2]
    assert total == job.world_size, "the job is still in step"


def test_a_rank_with_a_backward_pass_more_raises_on_every_rank(job, device) -> None:
    """Rank 0 has a batch more; the others go on to the epoch's metrics. Every rank raises,
    the round is dropped, and training goes on in step."""
    X, y = _data(steps=2, batch=4)
    model = dist.DistributedDataParallel(_mlp(device, seed=300 + job.rank))
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.SoftmaxLoss()

    def step(i: int) -> None:
        opt.reset_grad()
        loss_fn(model(ndl.Tensor(X[i], device=device)), ndl.Tensor(y[i], device=device)).backward()
        opt.step()

    step(0)
    error = ""
    try:
        if job.rank == 0:
            step(1)
        else:
            dist.all_reduce_scalars([1.0, 2.0])
    except ValueError as exc:
        error = str(exc)
    step(1)
    spread = [dist.all_reduce(p, "max").numpy() - dist.all_reduce(p, "min").numpy()
              for p in model.parameters()]  # fmt: skip
    ddp = "rank 0 DistributedDataParallel's gradient all-reduce float32 (452,) in 1 bucket"
    assert ddp in error, error
    assert "rank 1 all_reduce_scalars float64 (2,) op 'sum'" in error, error
    assert max(float(s.max()) for s in spread) == 0.0, "every rank holds the same weights"


# ---------------------------------------------------------------------------- training


def _mlp(device, seed):
    np.random.seed(seed)
    return nn.Sequential(
        nn.Linear(6, 16, device=device), nn.ReLU(), nn.Linear(16, 16, device=device), nn.ReLU(),
        nn.Linear(16, 4, device=device),
    )  # fmt: skip


def _data(steps: int, batch: int):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((steps, batch, 6)).astype(np.float32)
    y = rng.integers(0, 4, (steps, batch)).astype(np.float32)
    return X, y


def _train(model, opt, X, y, device) -> None:
    loss_fn = nn.SoftmaxLoss()
    for Xb, yb in zip(X, y):
        opt.reset_grad()
        loss_fn(model(ndl.Tensor(Xb, device=device)), ndl.Tensor(yb, device=device)).backward()
        opt.step()


OPTIMIZERS = [
    ("SGD momentum", lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), 25.0),
    ("Adam", lambda ps: optim.Adam(ps, lr=0.01), 25.0),
    ("SGD, a bucket per parameter", lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), 1e-4),
]


@pytest.mark.parametrize(
    "make_opt,cap", [o[1:] for o in OPTIMIZERS], ids=[o[0] for o in OPTIMIZERS]
)
def test_n_ranks_with_batches_of_b_over_n_train_like_one_process_with_b(
    job, device, make_opt, cap
) -> None:
    rank, world = job.rank, job.world_size
    share = 4
    X, y = _data(steps=10, batch=share * world)
    reference = _mlp(device, seed=100)  # one process, whole batches, rank 0's initial weights
    _train(reference, make_opt(reference.parameters()), X, y, device)

    model = _mlp(device, seed=100 + rank)  # every rank starts elsewhere...
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=cap)  # ...until rank 0's broadcast
    mine = slice(rank * share, (rank + 1) * share)
    _train(ddp, make_opt(ddp.parameters()), X[:, mine], y[:, mine], device)

    spread = [dist.all_reduce(p, "max").numpy() - dist.all_reduce(p, "min").numpy()
              for p in model.parameters()]  # fmt: skip
    for name, p, q in zip(
        dict(model.named_parameters()), model.parameters(), reference.parameters()
    ):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=0, atol=1e-5, err_msg=name)
    assert max(float(s.max()) for s in spread) == 0.0, "every rank holds the same weights"


def test_the_training_helper_with_jit_keeps_every_rank_equal(job, device) -> None:
    """ndl.models.epoch replays steps through ndl.jit by default: a DDP step must run
    eagerly instead (a replay would skip the all-reduce and the ranks would drift apart)."""
    rank = job.rank
    X, y = _data(steps=6, batch=4 * job.world_size)
    mine = slice(rank * 4, (rank + 1) * 4)
    batches = [(ndl.Tensor(Xb[mine], device=device), ndl.Tensor(yb[mine], device=device))
               for Xb, yb in zip(X, y)]  # fmt: skip
    model = dist.DistributedDataParallel(_mlp(device, seed=200 + rank))
    ndl.models.epoch(batches, model, opt=optim.Adam(model.parameters(), lr=0.01), jit=True)
    for p in model.parameters():
        spread = dist.all_reduce(p, "max").numpy() - dist.all_reduce(p, "min").numpy()
        assert float(spread.max()) == 0.0, "every rank holds the same weights"


def test_no_sync_accumulates_across_ranks(job, device) -> None:
    rank, world = job.rank, job.world_size
    share = 3
    X, y = _data(steps=2, batch=share * world)
    reference = _mlp(device, seed=7)
    loss_fn = nn.SoftmaxLoss()
    total = None
    for Xb, yb in zip(X, y):
        loss_fn(reference(ndl.Tensor(Xb, device=device)), ndl.Tensor(yb, device=device)).backward()
        grads = [p.grad.numpy() for p in reference.parameters()]
        total = grads if total is None else [a + b for a, b in zip(total, grads)]
    ddp = dist.DistributedDataParallel(_mlp(device, seed=7 + rank))
    mine = slice(rank * share, (rank + 1) * share)
    with ddp.no_sync():
        loss_fn(
            ddp(ndl.Tensor(X[0, mine], device=device)), ndl.Tensor(y[0, mine], device=device)
        ).backward()
    loss_fn(
        ddp(ndl.Tensor(X[1, mine], device=device)), ndl.Tensor(y[1, mine], device=device)
    ).backward()
    for want, p in zip(total, ddp.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-5, atol=1e-6)


def test_parameters_unused_on_some_ranks(two_heads, job, device) -> None:
    rank, world = job.rank, job.world_size
    X, y = _data(steps=1, batch=4 * world)
    np.random.seed(3)
    model = two_heads(device)
    ddp = dist.DistributedDataParallel(model, find_unused_parameters=True)
    model.use_right = rank % 2 == 1
    Xr = ndl.Tensor(X[0, rank * 4 : rank * 4 + 4], device=device)
    yr = ndl.Tensor(y[0, rank * 4 : rank * 4 + 4] % 3, device=device)
    np.random.seed(3)
    local = two_heads(device)
    local.use_right = model.use_right
    nn.SoftmaxLoss()(local(Xr), yr).backward()
    zeros = [ndl.Tensor(np.zeros(p.shape, np.float32), device=device) for p in local.parameters()]
    local_grads = [z if p.grad is None else p.grad for p, z in zip(local.parameters(), zeros)]
    want = [dist.all_reduce(g, "mean").numpy() for g in local_grads]
    nn.SoftmaxLoss()(ddp(Xr), yr).backward()
    for name, p, w in zip(dict(model.named_parameters()), model.parameters(), want):
        np.testing.assert_allclose(p.grad.numpy(), w, rtol=1e-5, atol=1e-6, err_msg=name)


def test_building_broadcasts_parameters_and_buffers_then_batchnorm_stays_per_rank(
    job, device
) -> None:
    rank = job.rank
    np.random.seed(rank)
    model = nn.Sequential(nn.Linear(3, 4, device=device), nn.BatchNorm1d(4, device=device))
    model.modules[1].running_mean = ndl.Tensor(np.full(4, rank, np.float32), device=device)
    ddp = dist.DistributedDataParallel(model)
    state = {k: dist.all_gather(ndl.Tensor(v.numpy()[None], device=device)).numpy()
             for k, v in ddp.state_dict().items()}  # fmt: skip
    x = ndl.Tensor(np.random.default_rng(rank).standard_normal((8, 3)).astype(np.float32) + rank)
    ddp(ndl.Tensor(x.numpy(), device=device))
    after = dist.all_gather(ndl.Tensor(model.modules[1].running_mean.numpy()[None], device=device))
    for key, values in state.items():
        assert (values == values[0]).all(), f"{key} differs across ranks after the broadcast"
    assert (state["1.running_mean"] == 0).all(), "rank 0's buffer"
    assert not (after.numpy() == after.numpy()[0]).all(), "each rank's own statistics"


# ---------------------------------------------------------------------------- around it


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("extra", [0, 1, 2])
def test_sampler_split_is_disjoint_and_complete(job, drop_last, extra) -> None:
    world = job.world_size
    n = 4 * world + extra
    sampler = DistributedSampler(range(n), seed=3, drop_last=drop_last)
    mine = sampler.indices()
    everything = dist.all_gather(ndl.Tensor(mine.astype(np.float32))).numpy().astype(int)
    counts = np.bincount(everything, minlength=n)
    if drop_last:
        assert len(everything) == n - n % world and counts.max() == 1, "disjoint"
    else:
        assert (counts >= 1).all(), "complete"
        assert (counts - 1).sum() == len(everything) - n == (-n) % world, "only the padding repeats"
    assert len(mine) == len(everything) // world, "every rank the same number"


def test_epoch_metrics_are_over_every_rank(job, device) -> None:
    rank = job.rank
    model = _mlp(device, seed=5)
    n = 5 + rank  # uneven shares: the metrics must weigh samples, not ranks
    rng = np.random.default_rng(50 + rank)
    X = ndl.Tensor(rng.standard_normal((n, 6)).astype(np.float32), device=device)
    y = ndl.Tensor(rng.integers(0, 4, n).astype(np.float32), device=device)
    acc, loss = ndl.models.evaluate(model, [(X, y)])
    with ndl.no_grad():
        logits = model(X)
        mean_loss = float(nn.SoftmaxLoss()(logits, y).numpy())
    right = (logits.numpy().argmax(1) == y.numpy()).sum()
    stats = dist.all_gather(ndl.Tensor(np.array([[right, mean_loss * n, n]], np.float32))).numpy()
    results = dist.all_gather(ndl.Tensor(np.array([[acc, loss]], np.float32))).numpy()
    assert acc == pytest.approx(stats[:, 0].sum() / stats[:, 2].sum())
    assert loss == pytest.approx(stats[:, 1].sum() / stats[:, 2].sum(), rel=1e-5)
    assert (results == results[0]).all(), "the same numbers on every rank"


def test_save_writes_from_rank_0_only(job, device, monkeypatch) -> None:
    from needle import checkpoint

    path = os.path.join(tempfile.gettempdir(), f"needle-mpi-suite-{os.getppid()}.npz")
    calls = []
    real_save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda obj, p: (calls.append(p), real_save(obj, p)))
    state = {"w": ndl.Tensor(np.full(3, job.rank, np.float32), device=device)}
    dist.save(state, path)
    loaded = ndl.load(path)["w"].numpy()  # every rank reads it once save returns
    counts = dist.all_gather(ndl.Tensor(np.array([len(calls)], np.float32))).numpy()
    dist.barrier()
    if job.rank == 0:
        os.remove(path)
    assert counts.tolist() == [1.0] + [0.0] * (job.world_size - 1)
    np.testing.assert_array_equal(loaded, np.zeros(3, np.float32))
