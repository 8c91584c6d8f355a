"""Every op of the op table, forward against numpy and backward against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import needle as ndl
from needle import ops
from needle.backend_ndarray.dtypes import canonical
from needle.testing.optable import FLOATS, OP_TABLE, OpInfo, Sample, make_input

CASES = [
    pytest.param(op, s, dtype, id=f"{op.name}-{s.id}-{dtype}")
    for op in OP_TABLE
    for s in op.samples
    for dtype in op.dtypes
]
GRAD_CASES = [
    pytest.param(op, s, dtype, id=f"{op.name}-{s.id}-{dtype}")
    for op in OP_TABLE
    if op.grad
    for s in op.samples
    for dtype in op.dtypes
    if dtype in FLOATS
]


def _inputs(op: OpInfo, sample: Sample, device, dtype: str, seed: int = 0):
    for wanted in (dtype, sample.kwargs.get("dtype", dtype)):
        if not device.supports(wanted, "arithmetic"):
            pytest.skip(f"{device.name} declares no {wanted} arithmetic")
    rng = np.random.default_rng(seed)
    made = [
        make_input(shape, sample.layout, device, rng, op.domain, dtype) for shape in sample.shapes
    ]
    return [t for t, _ in made], [v for _, v in made]


def _tolerance(op: OpInfo, dtype: str) -> dict:
    if dtype == "float32":
        return {"rtol": op.rtol, "atol": op.atol}
    return {"rtol": 1e-10, "atol": 1e-10} if dtype == "float64" else {"rtol": 0, "atol": 0}


def test_every_public_op_is_in_the_table() -> None:
    helpers = {name for name in ops.__all__ if name[0].islower()}
    assert helpers == {op.name for op in OP_TABLE}, (
        f"ops missing from the table: {sorted(helpers - {op.name for op in OP_TABLE})}; "
        f"table entries that are not ops: {sorted({op.name for op in OP_TABLE} - helpers)}"
    )


@pytest.mark.parametrize("op,sample,dtype", CASES)
def test_forward(op: OpInfo, sample: Sample, dtype: str, device) -> None:
    tensors, values = _inputs(op, sample, device, dtype)
    out = op.fn(*tensors, **sample.kwargs)
    want = op.ref(*values, **sample.kwargs)
    where = f"{op.name} on {device.name} ({dtype})"
    assert out.device == device
    assert out.shape == np.shape(want), f"{where}: shape {out.shape} != {np.shape(want)}"
    expected_dtype = canonical(np.asarray(want).dtype) if dtype not in FLOATS else dtype
    if op.name == "astype":
        expected_dtype = sample.kwargs["dtype"]
    assert out.dtype == expected_dtype, f"{where}: dtype {out.dtype}, expected {expected_dtype}"
    precision = "float32" if "float32" in (dtype, out.dtype) else dtype
    np.testing.assert_allclose(out.numpy(), want, **_tolerance(op, precision), err_msg=where)


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


@pytest.mark.parametrize("op,sample,dtype", GRAD_CASES)
def test_gradient(op: OpInfo, sample: Sample, dtype: str, device) -> None:
    """Backward against central differences (eps 1e-6, in float64): within 1e-3 for float32;
    for float64 a maximum error of 1e-6 (absolute, relative where a gradient exceeds 1)."""
    tensors, values = _inputs(op, sample, device, dtype, seed=1)
    out = op.fn(*tensors, **sample.kwargs)
    weight = np.random.default_rng(2).standard_normal(out.shape)
    out.backward(ndl.Tensor(weight, device=device, dtype=out.dtype, requires_grad=False))
    expected = _numeric_gradients(op, sample, values, weight)
    tol = 1e-3 if dtype == "float32" else 1e-6
    for i, (t, want) in enumerate(zip(tensors, expected)):
        where = f"gradient of {op.name} wrt input {i} on {device.name} ({dtype})"
        assert t.grad is not None, f"{where}: none"
        assert t.grad.shape == t.shape, f"{where}: shape {t.grad.shape}"
        assert t.grad.dtype == t.dtype, f"{where}: dtype {t.grad.dtype}, the input's {t.dtype}"
        got = t.grad.numpy()
        if dtype == "float64":
            error = np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)), initial=0.0)
            assert error <= tol, f"{where}: maximum error {error:.2e} > {tol:.0e}"
        else:
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=where)


def test_logsumexp_is_stable_for_huge_inputs(device) -> None:
    x = np.array([[1e10, 1e10 - 1.0, -1e10], [-5.0, 3.0, 2.0]], dtype=np.float32)
    got = ops.logsumexp(ndl.Tensor(x, device=device), axes=(1,)).numpy()
    top = x.astype(np.float64).max(axis=1)
    want = np.log(np.exp(x - top[:, None]).sum(axis=1)) + top
    np.testing.assert_allclose(got, want, rtol=1e-6)
    sm = ops.logsoftmax(ndl.Tensor(x, device=device)).numpy()
    assert np.all(np.isfinite(sm))


BAD_CALLS = {  # id: (call on a device, what the message must say)
    "add-shapes": (lambda t: ops.add(t(2, 3), t(3, 2)), r"\(2, 3\).*\(3, 2\)"),
    "matmul-shapes": (lambda t: ops.matmul(t(2, 3), t(2, 3)), "align"),
    "sum-axis": (lambda t: ops.summation(t(2, 3), axes=2), "axis 2"),
    "reshape-size": (lambda t: ops.reshape(t(2, 3), (4, 2)), "reshape"),
    "broadcast": (lambda t: ops.broadcast_to(t(2, 3), (3, 3)), "broadcast"),
    "conv-channels": (lambda t: ops.conv(t(1, 4, 4, 2), t(3, 3, 3, 1)), "channels"),
    "getitem-index": (lambda t: ops.getitem(t(2, 3), (0, 5)), "out of bounds"),
    "stack-shapes": (lambda t: ops.stack([t(2), t(3)], 0), "equal shapes"),
}


@pytest.mark.parametrize("call, message", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_input_raises_a_clear_error(call, message, device) -> None:
    with pytest.raises((ValueError, IndexError, TypeError), match=message):
        call(lambda *shape: ndl.Tensor(np.ones(shape), device=device))
