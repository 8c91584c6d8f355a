"""DistributedDataParallel in one process: hooks, buckets, no_sync, unused parameters."""

from __future__ import annotations

import types

import needle as ndl
import numpy as np
import pytest
from needle import nn
from needle.distributed import CommunicatorError, DistributedDataParallel


def _mlp(device, seed=0):
    np.random.seed(seed)
    return nn.Sequential(
        nn.Linear(6, 8, device=device), nn.ReLU(), nn.Linear(8, 8, device=device), nn.ReLU(),
        nn.Linear(8, 3, device=device),
    )  # fmt: skip


def _batch(device, n=10, seed=1):
    rng = np.random.default_rng(seed)
    X = ndl.Tensor(rng.standard_normal((n, 6)).astype(np.float32), device=device)
    y = ndl.Tensor(rng.integers(0, 3, n).astype(np.float32), device=device)
    return X, y


def _grads(model):
    return [p.grad.numpy() for p in model.parameters()]


def test_needs_a_job(clean_env, device) -> None:
    with pytest.raises(CommunicatorError, match="init"):
        DistributedDataParallel(_mlp(device))


def test_wraps_only_modules(local_job) -> None:
    with pytest.raises(TypeError, match="wraps a needle.nn.Module"):
        DistributedDataParallel(lambda x: x)
    with pytest.raises(ValueError, match="bucket_cap_mb must be positive"):
        DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=0)


@pytest.mark.parametrize("cap", [25.0, 1e-4], ids=["one bucket", "a bucket per parameter"])
def test_gradients_of_a_world_of_one_are_the_local_ones(local_job, device, cap) -> None:
    plain, wrapped = _mlp(device), DistributedDataParallel(_mlp(device), bucket_cap_mb=cap)
    X, y = _batch(device)
    nn.SoftmaxLoss()(plain(X), y).backward()
    nn.SoftmaxLoss()(wrapped(X), y).backward()
    for a, b in zip(_grads(plain), _grads(wrapped)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert wrapped.parameters() == wrapped.module.parameters()
    assert all(not p.grad.requires_grad for p in wrapped.parameters())


def test_gradients_held_from_an_earlier_step_are_not_overwritten(local_job, device) -> None:
    """The averaged gradients may be ranges of the bucket itself (the slices kernel): a
    later backward pass must reduce in other memory, not in what an earlier one handed out."""
    wrapped = DistributedDataParallel(_mlp(device))
    X, y = _batch(device)
    nn.SoftmaxLoss()(wrapped(X), y).backward()
    held = [p.grad for p in wrapped.parameters()]
    first = [g.numpy().copy() for g in held]
    X2, y2 = _batch(device, seed=2)
    nn.SoftmaxLoss()(wrapped(X2), y2).backward()
    for g, want in zip(held, first):
        np.testing.assert_array_equal(g.numpy(), want)
    assert any(
        not np.array_equal(p.grad.numpy(), want) for p, want in zip(wrapped.parameters(), first)
    )


def test_buckets_start_while_backward_goes_on(spy_job, device) -> None:
    model = _mlp(device)
    ready = []
    for p in model.parameters():  # registered first, so it runs before DDP's own hook
        p.register_grad_ready_hook(lambda t: ready.append(t))
    ddp = DistributedDataParallel(model, bucket_cap_mb=1e-4)  # one parameter per bucket
    X, y = _batch(device)
    loss = nn.SoftmaxLoss()(ddp(X), y)
    starts = []
    original = spy_job.start_all_reduce
    spy_job.start_all_reduce = lambda buf, op: (starts.append(len(ready)), original(buf, op))[1]
    loss.backward()
    n = len(model.parameters())
    assert len(starts) == n, "one all-reduce per bucket"
    assert starts[0] < n, f"the first bucket waited for every gradient: {starts}"
    assert starts == sorted(starts)


def test_no_sync_accumulates_until_the_next_synced_backward(local_job, device) -> None:
    plain, ddp = _mlp(device), DistributedDataParallel(_mlp(device))
    (X1, y1), (X2, y2) = _batch(device, seed=1), _batch(device, seed=2)
    loss = nn.SoftmaxLoss()
    loss(plain(X1), y1).backward()
    first = _grads(plain)
    loss(plain(X2), y2).backward()
    second = _grads(plain)
    with ddp.no_sync():
        loss(ddp(X1), y1).backward()
    for a, b in zip(first, _grads(ddp)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # the local gradient meanwhile
    loss(ddp(X2), y2).backward()
    for a, b, got in zip(first, second, _grads(ddp)):
        np.testing.assert_allclose(got, a + b, rtol=1e-5, atol=1e-6)
    loss(ddp(X2), y2).backward()
    for b, got in zip(second, _grads(ddp)):
        np.testing.assert_allclose(got, b, rtol=1e-6, atol=1e-7)  # the sum was used up


def test_a_step_traced_by_jit_runs_eagerly(local_job, device) -> None:
    """DDP's hook is Python and communication that no replay repeats: refused when strict,
    else every call runs eagerly (gradients still averaged, the same as without jit)."""
    ddp = DistributedDataParallel(_mlp(device))
    X, y = _batch(device)

    def backward(X, y):
        loss = nn.SoftmaxLoss()(ddp(X), y)
        loss.backward()
        return loss

    with pytest.raises(ndl.JitError, match="DistributedDataParallel"):
        ndl.jit(backward)(X, y)
    lenient = ndl.jit(backward, strict=False)
    for _ in range(3):
        lenient(X, y)
    assert lenient.stats["replays"] == 0 and lenient.stats["eager"] == 2


def test_a_parameter_without_gradient_is_reported(two_heads, local_job, device) -> None:
    ddp = DistributedDataParallel(two_heads(device))
    X, y = _batch(device)
    nn.SoftmaxLoss()(ddp(X), y).backward()
    with pytest.raises(RuntimeError, match=r"no gradient to parameters \['right.weight'"):
        ddp(X)


def test_find_unused_parameters_counts_them_as_zero(two_heads, local_job, device) -> None:
    model = two_heads(device)
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    X, y = _batch(device)
    for use_right in (False, True, False):
        model.use_right = use_right
        nn.SoftmaxLoss()(ddp(X), y).backward()
        idle = model.left if use_right else model.right
        busy = model.right if use_right else model.left
        assert not idle.weight.grad.numpy().any(), "unused: zero"
        assert busy.weight.grad.numpy().any()
    with ndl.no_grad():
        ddp(X)  # evaluation: no backward follows, nothing is waited for
    ddp(X)


def test_state_dict_is_the_wrapped_modules(local_job, device, tmp_path) -> None:
    model = _mlp(device)
    ddp = DistributedDataParallel(model)
    assert list(ddp.state_dict()) == list(model.state_dict())
    ddp.save(str(tmp_path / "m.npz"))
    other = _mlp(device, seed=9)
    other.load(str(tmp_path / "m.npz"))
    for a, b in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    ddp.eval()
    assert not model.training
    ddp.train()
    assert all(m.training for m in (model, *model._children()))


class FakePeer:
    """A world of two whose other rank is simulated: all_reduce adds its totals."""

    name, rank, world_size = "fake", 0, 2

    def __init__(self, peer_totals) -> None:
        self.peer = np.asarray(peer_totals, np.float64)

    def all_reduce(self, send, recv, op):
        if send.dtype == np.int64:  # the shape check: the peer passes the same
            recv[...] = send
        else:
            recv[...] = send + self.peer

    def start_all_reduce(self, buf, op):
        self.all_reduce(buf, buf, op)
        return types.SimpleNamespace(wait=lambda: None, test=lambda: True)

    def finalize(self):
        pass


def test_training_helpers_report_metrics_over_every_rank(clean_env, device, monkeypatch) -> None:
    from needle.distributed import collectives

    model = _mlp(device)
    X, y = _batch(device, n=10)
    loader = [(X, y)]
    correct_here, loss_here = ndl.models.epoch(loader, model)
    peer = [3.0, 2.0 * 30, 30.0]  # the other rank: 3 right of 30, mean loss 2.0
    monkeypatch.setattr(collectives, "_comm", FakePeer(peer))
    acc, loss = ndl.models.epoch(loader, model)
    assert acc == pytest.approx((correct_here * 10 + 3) / 40)
    assert loss == pytest.approx((loss_here * 10 + 60) / 40)
