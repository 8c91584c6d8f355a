"""Every op of the op table, forward against numpy and backward against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle import ops
from needle.testing.optable import OP_TABLE, OpInfo, Sample, make_input

CASES = [pytest.param(op, s, id=f"{op.name}-{s.id}") for op in OP_TABLE for s in op.samples]
GRAD_CASES = [
    pytest.param(op, s, id=f"{op.name}-{s.id}") for op in OP_TABLE if op.grad for s in op.samples
]


def _inputs(op: OpInfo, sample: Sample, device, seed: int = 0):
    rng = np.random.default_rng(seed)
    made = [make_input(shape, sample.layout, device, rng, op.domain) for shape in sample.shapes]
    return [t for t, _ in made], [v for _, v in made]


def test_every_public_op_is_in_the_table() -> None:
    helpers = {name for name in ops.__all__ if name[0].islower()}
    assert helpers == {op.name for op in OP_TABLE}, (
        f"ops missing from the table: {sorted(helpers - {op.name for op in OP_TABLE})}; "
        f"table entries that are not ops: {sorted({op.name for op in OP_TABLE} - helpers)}"
    )


@pytest.mark.parametrize("op,sample", CASES)
def test_forward(op: OpInfo, sample: Sample, device) -> None:
    tensors, values = _inputs(op, sample, device)
    out = op.fn(*tensors, **sample.kwargs)
    want = op.ref(*values, **sample.kwargs)
    assert out.device == device
    assert out.shape == np.shape(want), f"{op.name} on {device.name}: shape {out.shape} != {np.shape(want)}"
    np.testing.assert_allclose(out.numpy(), want, rtol=op.rtol, atol=op.atol, err_msg=f"{op.name} on {device.name}")


def _numeric_gradients(op: OpInfo, sample: Sample, values, weight, eps: float = 1e-6):
    """d/dx of sum(ref(x) * weight) by central differences, in float64."""
    grads = []
    for k, x in enumerate(values):
        x = np.array(x, dtype=np.float64)  # writable copy, own layout
        grad = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            args = list(values)
            orig = x[idx]
            x[idx] = orig + eps
            args[k] = x
            up = np.sum(op.ref(*args, **sample.kwargs) * weight)
            x[idx] = orig - eps
            down = np.sum(op.ref(*args, **sample.kwargs) * weight)
            x[idx] = orig
            grad[idx] = (up - down) / (2 * eps)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("op,sample", GRAD_CASES)
def test_gradient(op: OpInfo, sample: Sample, device) -> None:
    tensors, values = _inputs(op, sample, device, seed=1)
    out = op.fn(*tensors, **sample.kwargs)
    weight = np.random.default_rng(2).standard_normal(out.shape)
    out.backward(ndl.Tensor(weight, device=device, requires_grad=False))
    expected = _numeric_gradients(op, sample, values, weight)
    for i, (t, want) in enumerate(zip(tensors, expected)):
        assert t.grad is not None, f"{op.name}: input {i} got no gradient"
        assert t.grad.shape == t.shape, f"{op.name}: grad of input {i} has shape {t.grad.shape}"
        np.testing.assert_allclose(
            t.grad.numpy(), want, rtol=1e-3, atol=1e-3,
            err_msg=f"gradient of {op.name} wrt input {i} on {device.name}",
        )  # fmt: skip


def test_logsumexp_is_stable_for_huge_inputs(device) -> None:
    x = np.array([[1e10, 1e10 - 1.0, -1e10], [-5.0, 3.0, 2.0]], dtype=np.float32)
    got = ops.logsumexp(ndl.Tensor(x, device=device), axes=(1,)).numpy()
    top = x.astype(np.float64).max(axis=1)
    want = np.log(np.exp(x - top[:, None]).sum(axis=1)) + top
    np.testing.assert_allclose(got, want, rtol=1e-6)
    sm = ops.logsoftmax(ndl.Tensor(x, device=device)).numpy()
    assert np.all(np.isfinite(sm))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d: ops.add(ndl.Tensor(np.ones((2, 3)), device=d), ndl.Tensor(np.ones((3, 2)), device=d)), r"\(2, 3\).*\(3, 2\)"),
        (lambda d: ops.matmul(ndl.Tensor(np.ones((2, 3)), device=d), ndl.Tensor(np.ones((2, 3)), device=d)), "align"),
        (lambda d: ops.summation(ndl.Tensor(np.ones((2, 3)), device=d), axes=2), "axis 2"),
        (lambda d: ops.reshape(ndl.Tensor(np.ones((2, 3)), device=d), (4, 2)), "reshape"),
        (lambda d: ops.broadcast_to(ndl.Tensor(np.ones((2, 3)), device=d), (3, 3)), "broadcast"),
        (lambda d: ops.conv(ndl.Tensor(np.ones((1, 4, 4, 2)), device=d), ndl.Tensor(np.ones((3, 3, 3, 1)), device=d)), "channels"),
        (lambda d: ops.getitem(ndl.Tensor(np.ones((2, 3)), device=d), (0, 5)), "out of bounds"),
        (lambda d: ops.stack([ndl.Tensor(np.ones((2,)), device=d), ndl.Tensor(np.ones((3,)), device=d)], 0), "equal shapes"),
    ],
    ids=["add-shapes", "matmul-shapes", "sum-axis", "reshape-size", "broadcast", "conv-channels", "getitem-index", "stack-shapes"],
)  # fmt: skip
def test_bad_input_raises_a_clear_error(call, message, device) -> None:
    with pytest.raises((ValueError, IndexError, TypeError), match=message):
        call(device)
