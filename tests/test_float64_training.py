"""A float64 model trains in float64 end to end; Module.to converts dtypes."""

from __future__ import annotations

import needle as ndl
import numpy as np
import pytest
from needle import nn, optim


def _model(device, dtype: str) -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 8, device=device, dtype=dtype),
        nn.BatchNorm1d(8, device=device, dtype=dtype),
        nn.ReLU(),
        nn.LayerNorm1d(8, device=device, dtype=dtype),
        nn.Linear(8, 3, device=device, dtype=dtype),
    )


@pytest.mark.parametrize("make_opt", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda p: optim.Adam(p, lr=0.01, weight_decay=0.01),
], ids=["sgd", "adam"])  # fmt: skip
def test_float64_model_keeps_float64_everywhere(device, make_opt) -> None:
    if not device.supports("float64"):
        pytest.skip(f"{device.name} holds no float64")
    np.random.seed(0)
    model = _model(device, "float64")
    opt = make_opt(model.parameters())
    rng = np.random.default_rng(0)
    x = ndl.Tensor(rng.standard_normal((16, 6)), device=device)  # float64 data
    y = ndl.Tensor(rng.integers(0, 3, 16), device=device)
    losses = []
    for _ in range(5):
        opt.reset_grad()
        loss = nn.SoftmaxLoss()(model(x), y)
        assert loss.dtype == "float64"
        loss.backward()
        opt.step()
        losses.append(float(loss.numpy()))
    assert losses[-1] < losses[0], "it trains"
    for name, p in model.named_parameters():
        assert p.dtype == "float64" and p.grad.dtype == "float64", name
    for table in opt._slots().values():
        assert all(t.dtype == "float64" for t in table.values()), "optimizer state"
    assert model[1].running_mean.dtype == "float64"


def test_float32_model_with_float64_data_keeps_float32_parameters(device) -> None:
    np.random.seed(0)
    model = _model(device, "float32")
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = ndl.Tensor(np.random.default_rng(0).standard_normal((16, 6)), device=device)
    loss = nn.SoftmaxLoss()(model(x), ndl.Tensor(np.arange(16) % 3, device=device))
    loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        assert p.dtype == "float32" and p.grad.dtype == "float32", name


def test_module_to_converts_dtype_in_place(device) -> None:
    if not device.supports("float64"):
        pytest.skip(f"{device.name} holds no float64")
    np.random.seed(0)
    model = _model(device, "float32")
    params = model.parameters()
    before = [p.numpy() for p in params]
    assert model.to(dtype="float64") is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    for p, old in zip(model.parameters(), before):
        assert p.dtype == "float64"
        np.testing.assert_array_equal(p.numpy(), old.astype(np.float64))
    assert model[1].running_var.dtype == "float64"
    with pytest.raises(TypeError, match="float dtype"):
        model.to(dtype="int32")
