"""nn.Module mechanics: parameter order, children, train/eval, state dicts, errors."""

from __future__ import annotations

import needle as ndl
import numpy as np
import pytest
from needle import init, nn


def _x(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


class _Net(nn.Module):
    def __init__(self, device):
        super().__init__()
        self.first = nn.Linear(2, 3, device=device)
        self.blocks = [nn.BatchNorm1d(3, device=device), nn.Linear(3, 3, device=device)]
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(3, 1, device=device))
        self.extra = {"scale": nn.Parameter(init.ones(1, device=device))}

    def forward(self, x):
        x = self.blocks[1](self.blocks[0](self.first(x)))
        return self.head(x) * self.extra["scale"].broadcast_to((x.shape[0], 1))


def test_parameters_in_definition_order(device):
    net = _Net(device)
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "first.weight",
        "first.bias",
        "blocks.0.weight",
        "blocks.0.bias",
        "blocks.1.weight",
        "blocks.1.bias",
        "head.1.weight",
        "head.1.bias",
        "extra.scale",
    ]
    assert net.parameters()[0] is net.first.weight
    assert [type(c).__name__ for c in net.children()] == [
        "Linear",
        "BatchNorm1d",
        "Linear",
        "Sequential",
    ]


def test_shared_parameter_listed_once():
    shared = nn.Linear(2, 2, device=ndl.default_device())
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(seq.parameters()) == 2


def test_train_eval_reaches_every_module(device):
    net = _Net(device)
    net.eval()
    assert not any(m.training for m in (net, net.first, net.blocks[0], net.head, net.head[1]))
    net.train()
    assert all(m.training for m in (net, net.first, net.blocks[0], net.head, net.head[1]))


def test_state_dict_round_trip(device):
    np.random.seed(0)
    net = _Net(device)
    net(ndl.Tensor(_x(4, 2), device=device))  # move the running stats
    state = net.state_dict()
    assert "blocks.0.running_mean" in state and "blocks.0.running_var" in state
    np.random.seed(1)
    other = _Net(device)
    assert not np.allclose(other.first.weight.numpy(), net.first.weight.numpy())
    other.load_state_dict(state)
    for (name, a), b in zip(net.state_dict().items(), other.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    x = ndl.Tensor(_x(4, 2, seed=3), device=device)
    net.eval()
    other.eval()
    np.testing.assert_array_equal(net(x).numpy(), other(x).numpy())
    assert other.first.weight.requires_grad and isinstance(other.first.weight, nn.Parameter)


def test_load_state_dict_validates_before_assigning(device):
    net = _Net(device)
    before = {k: v.numpy() for k, v in net.state_dict().items()}
    bad = {k: v.numpy() + 1 for k, v in net.state_dict().items()}
    bad["head.1.weight"] = np.zeros((4, 1), np.float32)
    with pytest.raises(ValueError, match=r"head\.1\.weight.*\(4, 1\).*\(3, 1\)"):
        net.load_state_dict(bad)
    missing = {k: v for k, v in bad.items() if k != "first.bias"}
    with pytest.raises(KeyError, match="first.bias"):
        net.load_state_dict(missing)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=f"{k} changed")


def test_running_stats_keep_no_graph(device):
    m = nn.BatchNorm1d(2, device=device)
    x = ndl.Tensor(_x(3, 2), device=device, requires_grad=True)
    for _ in range(3):
        m(x)
    assert m.running_mean.op is None and m.running_var.inputs == ()


def test_module_call_errors(device):
    with pytest.raises(ValueError, match=r"Linear\(3, 2\)"):
        nn.Linear(3, 2, device=device)(ndl.Tensor(_x(2, 4), device=device))
    with pytest.raises(NotImplementedError):
        nn.Module()(1)


def test_unknown_attribute_is_a_short_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchModule") as info:
        nn.NoSuchModule  # noqa: B018
    assert len(str(info.value)) < 300


def test_module_to_moves_parameters_and_buffers(device, other_device):
    np.random.seed(0)
    net = _Net(device)
    net.first.weight.grad = ndl.Tensor(np.ones((2, 3)), device=device)
    params = net.parameters()
    before = {k: v.numpy() for k, v in net.state_dict().items()}
    assert net.to(other_device.name) is net, "to() returns the module itself"
    assert net.parameters() == params, "the parameters are the same objects (optimizers keep them)"
    for key, value in net.state_dict().items():
        assert value.device == other_device, key
        np.testing.assert_array_equal(value.numpy(), before[key], err_msg=key)
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert net.first.weight.grad.device == other_device
    out = net(ndl.Tensor(_x(4, 2), device=other_device))
    assert out.device == other_device and out.shape == (4, 1)
    out.sum().backward()
    assert net.head.modules[1].weight.grad.device == other_device


def test_module_to_updates_the_device_modules_keep(device, other_device):
    layer = nn.MultiHeadAttention(causal=True, device=device)
    assert layer.to(other_device).device == other_device
    with pytest.raises(TypeError, match="device"):
        layer.to(3)
