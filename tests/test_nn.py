"""needle.nn: every module's forward and backward, on every backend.

Each module is compared with a float64 numpy reference of its formula; its
gradients (inputs and parameters) are compared with central finite differences
of that reference, through the loss ``sum(out * R)`` for a fixed random ``R``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import needle as ndl
import numpy as np
import pytest
from needle import nn

# ---------------------------------------------------------------------- the checker


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list, ndl.TensorTuple)):
        return [leaf for item in value for leaf in _flat(item)]
    return [value]


def _numeric_grad(
    f: Callable[[], float],
    a: np.ndarray,
    rng: np.random.Generator,
    analytic: np.ndarray,
    full_max: int = 64,
    eps: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """(numeric, analytic) derivatives of ``f`` in ``a``: every entry of an array of at
    most ``full_max`` entries, three random directions of a larger one."""
    if a.size <= full_max:
        grad = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            up = f()
            a[i] = old - eps
            down = f()
            a[i] = old
            grad[i] = (up - down) / (2 * eps)
        return grad, analytic
    numeric, projected = [], []
    for _ in range(3):
        d = rng.standard_normal(a.shape)
        old = a.copy()
        a += eps * d
        up = f()
        a[...] = old - eps * d
        down = f()
        a[...] = old
        numeric.append((up - down) / (2 * eps))
        projected.append(float((analytic * d).sum()))
    return np.array(numeric), np.array(projected)


def check_module(
    module: nn.Module,
    device: Any,
    inputs: list[np.ndarray],
    ref: Callable[..., Any],
    *,
    grad_inputs: bool | list[bool] = True,
    tol: float = 1e-4,
    grad_tol: float = 2e-3,
    call: Callable[..., Any] | None = None,
    full_max: int = 64,
) -> None:
    """Check ``module(*inputs)`` against ``ref(params, *inputs)`` and its gradients by
    finite differences. ``params`` is ``{dotted name: float64 array}``."""
    name = type(module).__name__
    if isinstance(grad_inputs, bool):
        grad_inputs = [grad_inputs] * len(inputs)
    inputs = [np.asarray(x, dtype=np.float32).astype(np.float64) for x in inputs]
    named = list(module.named_parameters())
    params = {n: p.numpy().astype(np.float64) for n, p in named}
    for _, p in named:
        assert p.device == device, f"{name}: a parameter is on {p.device}, not {device}"
        p.grad = None
    tensors = [ndl.Tensor(x, device=device, requires_grad=g) for x, g in zip(inputs, grad_inputs)]
    outs = _flat((call or module)(*tensors))
    ref_outs = [np.asarray(o, dtype=np.float64) for o in _flat(ref(params, *inputs))]
    assert len(outs) == len(ref_outs), name
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(r.shape) for r in ref_outs]
    for i, (out, expected) in enumerate(zip(outs, ref_outs)):
        assert out.device == device, f"{name}: output {i} on {out.device}"
        assert out.shape == expected.shape, f"{name}: output {i} shape {out.shape}"
        np.testing.assert_allclose(
            out.numpy(), expected, rtol=tol, atol=tol, err_msg=f"{name} forward, output {i}"
        )

    loss = None
    for out, w in zip(outs, weights):
        term = (out * ndl.Tensor(w, device=device, requires_grad=False)).sum()
        loss = term if loss is None else loss + term
    loss.backward()

    def f() -> float:
        return sum(
            float((np.asarray(o) * w).sum()) for o, w in zip(_flat(ref(params, *inputs)), weights)
        )

    checks = [(f"parameter {n}", params[n], p) for n, p in named]
    checks += [(f"input {i}", inputs[i], t) for i, t in enumerate(tensors) if grad_inputs[i]]
    for what, array, tensor in checks:
        # A parameter outside the graph (W_hh without a hidden state) has no gradient: zero.
        grad = tensor.grad.numpy() if tensor.grad is not None else np.zeros(array.shape)
        analytic = grad.astype(np.float64)
        assert analytic.shape == array.shape, f"{name}: {what} gradient shape {analytic.shape}"
        numeric, got = _numeric_grad(f, array, rng, analytic, full_max)
        scale = 1.0 + np.abs(numeric).max()
        np.testing.assert_allclose(
            got, numeric, rtol=grad_tol, atol=grad_tol * scale, err_msg=f"{name} backward, {what}"
        )


# ---------------------------------------------------------------------- numpy references


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _layernorm(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _linear(x, w, b=None):
    out = x @ w
    return out if b is None else out + b.reshape(-1)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _conv_nchw(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    k, _, _, cout = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, cout, ho, wo))
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
            out += np.einsum("nchw,co->nohw", patch, w[i, j])
    return out if b is None else out + b.reshape(1, -1, 1, 1)


def _rnn_cell(p, x, h, pre="", act=np.tanh):
    out = x @ p[pre + "W_ih"] + p[pre + "bias_ih"] + p[pre + "bias_hh"]
    return act(out if h is None else out + h @ p[pre + "W_hh"])


def _lstm_cell(p, x, h, c, pre=""):
    gates = x @ p[pre + "W_ih"] + p[pre + "bias_ih"] + p[pre + "bias_hh"]
    if h is not None:
        gates = gates + h @ p[pre + "W_hh"]
    i, f, g, o = np.split(gates, 4, axis=1)
    i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
    c = i * g if c is None else f * c + i * g
    return o * np.tanh(c), c


def _mha(q, k, v, causal):
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if causal:
        i, j = scores.shape[-2:]
        scores = scores - 1e30 * np.triu(np.ones((i, j)), j - i + 1)
    probs = _softmax(scores)
    return probs @ v, probs


def _attention(p, q, pre, heads, dim_head, causal, k=None, v=None):
    def project(name, x):
        normed = _layernorm(x, p[f"{pre}prenorm_{name}.weight"], p[f"{pre}prenorm_{name}.bias"])
        x = normed @ p[f"{pre}{name}_projection.weight"]
        return x.reshape(x.shape[0], x.shape[1], heads, dim_head).transpose(0, 2, 1, 3)

    k, v = (q if k is None else k), (q if v is None else v)
    out, _ = _mha(project("q", q), project("k", k), project("v", v), causal)
    out = out.transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], heads * dim_head)
    return out @ p[f"{pre}out_projection.weight"]


def _transformer_layer(p, x, pre, heads, dim_head, causal=True):
    x = x + _attention(p, x, pre + "attn.", heads, dim_head, causal)
    h = _layernorm(x, p[pre + "layernorm.weight"], p[pre + "layernorm.bias"])
    h = np.maximum(_linear(h, p[pre + "linear1.weight"], p[pre + "linear1.bias"]), 0)
    return x + _linear(h, p[pre + "linear2.weight"], p[pre + "linear2.bias"])


# ---------------------------------------------------------------------- basic modules


def _x(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


def test_linear(device):
    np.random.seed(0)
    m = nn.Linear(5, 3, device=device)
    assert m.weight.shape == (5, 3) and m.bias.shape == (1, 3)
    check_module(m, device, [_x(4, 5)], lambda p, x: _linear(x, p["weight"], p["bias"]))


def test_linear_batched_input_and_no_bias(device):
    np.random.seed(1)
    m = nn.Linear(4, 2, device=device)
    check_module(m, device, [_x(2, 3, 4)], lambda p, x: _linear(x, p["weight"], p["bias"]))
    m = nn.Linear(4, 2, bias=False, device=device)
    assert m.bias is None and len(m.parameters()) == 1
    check_module(m, device, [_x(3, 4)], lambda p, x: x @ p["weight"])


def test_linear_init_is_the_course_draw(device):
    # weight = kaiming_uniform(in, out), then bias = kaiming_uniform(out, 1) reshaped.
    np.random.seed(5)
    w = np.random.rand(6, 3) * 2 * math.sqrt(6 / 6) - math.sqrt(6 / 6)
    b = np.random.rand(3, 1) * 2 * math.sqrt(6 / 3) - math.sqrt(6 / 3)
    np.random.seed(5)
    m = nn.Linear(6, 3, device=device)
    np.testing.assert_allclose(m.weight.numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(m.bias.numpy(), b.reshape(1, 3), rtol=1e-6)


def test_linear_course_weight_value(device):
    np.random.seed(1337)
    m = nn.Linear(7, 4, device=device)
    assert abs(float(m.weight.numpy()[0, 0]) - -0.44064468) < 1e-6


@pytest.mark.parametrize(
    "module, ref",
    [
        (nn.ReLU, lambda x: np.maximum(x, 0)),
        (nn.Tanh, np.tanh),
        (nn.Sigmoid, _sigmoid),
        (nn.Identity, lambda x: x),
    ],
    ids=["ReLU", "Tanh", "Sigmoid", "Identity"],
)
def test_activation(device, module, ref):
    x = _x(3, 4, seed=2)
    x[np.abs(x) < 1e-2] = 0.5  # keep finite differences away from relu's kink
    check_module(module(), device, [x], lambda p, x: ref(x))


def test_flatten(device):
    check_module(nn.Flatten(), device, [_x(2, 3, 2, 2)], lambda p, x: x.reshape(2, 12))


def test_sequential_and_residual(device):
    np.random.seed(3)
    m = nn.Sequential(
        nn.Linear(4, 6, device=device), nn.Tanh(), nn.Residual(nn.Linear(6, 6, device=device))
    )

    def ref(p, x):
        h = np.tanh(_linear(x, p["0.weight"], p["0.bias"]))
        return h + _linear(h, p["2.fn.weight"], p["2.fn.bias"])

    check_module(m, device, [_x(3, 4)], ref)


def test_softmax_loss(device):
    logits = _x(5, 4, seed=3, scale=2.0)
    labels = np.array([0, 3, 1, 1, 2])

    def ref(p, z):
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -logp[np.arange(5), labels].mean()

    loss_fn = nn.SoftmaxLoss()
    y = ndl.Tensor(labels, device=device, requires_grad=False)
    check_module(loss_fn, device, [logits], ref, call=lambda z: loss_fn(z, y))


# ---------------------------------------------------------------------- normalization


def _bn_ref(x, w, b, eps=1e-5):
    mean, var = x.mean(0), x.var(0)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _randomize(module, seed=4):
    """Give norm layers non-trivial weights (their init is ones/zeros)."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = ndl.Tensor(
            rng.standard_normal(p.shape) * 0.5 + 1.0, device=p.device, dtype=p.dtype
        )


def test_batchnorm1d_train(device):
    m = nn.BatchNorm1d(3, device=device)
    _randomize(m)
    check_module(m, device, [_x(6, 3, scale=2.0)], lambda p, x: _bn_ref(x, p["weight"], p["bias"]))


def test_batchnorm1d_running_stats_and_eval(device):
    m = nn.BatchNorm1d(3, momentum=0.2, device=device)
    x = _x(8, 3, seed=5) * 3 + 1
    m(ndl.Tensor(x, device=device))
    np.testing.assert_allclose(m.running_mean.numpy(), 0.2 * x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.running_var.numpy(), 0.8 + 0.2 * x.var(0), rtol=1e-5)
    for buf in (m.running_mean, m.running_var):
        assert not isinstance(buf, nn.Parameter) and not buf.requires_grad and buf.op is None
    assert len(m.parameters()) == 2
    m.eval()
    rm, rv = m.running_mean.numpy().astype(np.float64), m.running_var.numpy().astype(np.float64)

    def ref(p, x):
        return (x - rm) / np.sqrt(rv + 1e-5) * p["weight"] + p["bias"]

    _randomize(m)
    check_module(m, device, [_x(4, 3, seed=6)], ref)
    np.testing.assert_allclose(m.running_mean.numpy(), rm, rtol=0)  # eval leaves them alone


def test_batchnorm1d_grad_of_grad(device):
    """The fused op's gradient is differentiable again: same as through the composed formula."""
    rng = np.random.default_rng(7)
    x_np, r_np, s_np = (rng.standard_normal((5, 3)).astype(np.float32) for _ in range(3))
    w_np = rng.standard_normal(3).astype(np.float32)

    def second_order(normalize):
        x = ndl.Tensor(x_np, device=device, requires_grad=True)
        w = ndl.Tensor(w_np, device=device, requires_grad=True)
        b = ndl.Tensor(np.zeros(3, np.float32), device=device, requires_grad=True)
        (normalize(x, w, b) * ndl.Tensor(r_np, device=device)).sum().backward(create_graph=True)
        gx, gw = x.grad, w.grad
        x.grad = w.grad = b.grad = None
        ((gx * ndl.Tensor(s_np, device=device)).sum() + (gw * gw).sum()).backward()
        return gx.numpy(), x.grad.numpy(), w.grad.numpy()

    def composed(x, w, b):
        n = x.shape[0]
        centered = x - (x.sum((0,)) / n).reshape((1, 3)).broadcast_to(x.shape)
        var = (centered**2).sum((0,)) / n
        normed = centered / ((var + 1e-5) ** 0.5).reshape((1, 3)).broadcast_to(x.shape)
        return w.reshape((1, 3)).broadcast_to(x.shape) * normed + b.reshape((1, 3)).broadcast_to(
            x.shape
        )

    for got, want in zip(second_order(ndl.ops.batch_norm), second_order(composed)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _composed_layer_norm(x, w, b, eps=1e-5):
    """The course's LayerNorm1d formula, op by op."""
    axis, kept = x.ndim - 1, x.shape[:-1] + (1,)
    mean = (x.sum((axis,)) / x.shape[-1]).reshape(kept).broadcast_to(x.shape)
    centered = x - mean
    var = ((centered**2).sum((axis,)) / x.shape[-1]).reshape(kept).broadcast_to(x.shape)
    row = (1,) * (x.ndim - 1) + (x.shape[-1],)
    normed = centered / (var + eps) ** 0.5
    return w.reshape(row).broadcast_to(x.shape) * normed + b.reshape(row).broadcast_to(x.shape)


@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 8)])
def test_layernorm1d_forward_is_the_course_formula_to_the_bit(shape, device):
    rng = np.random.default_rng(9)
    x = ndl.Tensor(rng.standard_normal(shape).astype(np.float32) * 3 + 1, device=device)
    m = nn.LayerNorm1d(8, device=device)
    _randomize(m)
    got = m(x).numpy()
    want = _composed_layer_norm(x, m.weight, m.bias).numpy()
    assert np.array_equal(got, want), f"max difference {np.abs(got - want).max()}"


def test_layer_norm_grad_of_grad(device):
    """The fused op's gradient is differentiable again: the same second-order gradients as
    through the composed formula."""
    rng = np.random.default_rng(10)
    x_np, r_np, s_np = (rng.standard_normal((4, 5)) for _ in range(3))
    w_np = rng.standard_normal(5)

    def second_order(normalize):
        x = ndl.Tensor(x_np, device=device, dtype="float64", requires_grad=True)
        w = ndl.Tensor(w_np, device=device, dtype="float64", requires_grad=True)
        b = ndl.Tensor(np.zeros(5), device=device, dtype="float64", requires_grad=True)
        r = ndl.Tensor(r_np, device=device, dtype="float64")
        (normalize(x, w, b) * r).sum().backward(create_graph=True)
        gx, gw = x.grad, w.grad
        x.grad = w.grad = b.grad = None
        s = ndl.Tensor(s_np, device=device, dtype="float64")
        ((gx * s).sum() + (gw * gw).sum()).backward()
        return gx.numpy(), gw.numpy(), x.grad.numpy(), w.grad.numpy()

    for got, want in zip(second_order(ndl.ops.layer_norm), second_order(_composed_layer_norm)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_lstm_step_grad_of_grad(device):
    """The fused LSTM step's gradient is differentiable again: the same second-order
    gradients as through the composed gates (split, sigmoid, tanh, products)."""
    rng = np.random.default_rng(8)
    g_np, c_np = rng.standard_normal((3, 8)), rng.standard_normal((3, 2))
    r_np, q_np, s_np = (rng.standard_normal((3, 2)) for _ in range(3))

    def second_order(step):
        gates = ndl.Tensor(g_np, device=device, dtype="float64", requires_grad=True)
        c = ndl.Tensor(c_np, device=device, dtype="float64", requires_grad=True)
        h, c_next = step(gates, c)
        r, q = (ndl.Tensor(v, device=device, dtype="float64") for v in (r_np, q_np))
        ((h * r).sum() + (c_next * q).sum()).backward(create_graph=True)
        g_gates, g_c = gates.grad, c.grad
        gates.grad = c.grad = None
        ((g_gates * g_gates).sum() + (g_c * ndl.Tensor(s_np, device=device)).sum()).backward()
        return g_gates.numpy(), g_c.numpy(), gates.grad.numpy(), c.grad.numpy()

    def composed(gates, c):
        i, f, g, o = ndl.ops.split(gates.reshape((3, 4, 2)), 1)
        c_next = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c_next.tanh(), c_next

    for got, want in zip(second_order(lambda g, c: ndl.ops.lstm_step(g, c).tuple()),
                         second_order(composed)):  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def _course_tensor(*shape, entropy=1, device=None):
    np.random.seed(np.prod(shape) * len(shape) * entropy)
    return ndl.Tensor(np.random.randint(0, 100, size=shape) / 20, device=device)


def test_batchnorm_course_running_stats(device):
    bn = nn.BatchNorm1d(3, device=device)
    for i in range(10):
        bn(_course_tensor(4, 3, entropy=i, device=device))
    np.testing.assert_allclose(
        bn.running_mean.numpy(), [2.020656, 1.69489, 1.498846], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        bn.running_var.numpy(), [1.412775, 1.386191, 1.096604], rtol=1e-5, atol=1e-5
    )


def test_batchnorm2d(device):
    m = nn.BatchNorm2d(3, device=device)
    _randomize(m)

    def ref(p, x):
        mean, var = x.mean((0, 2, 3), keepdims=True), x.var((0, 2, 3), keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * p["weight"].reshape(1, 3, 1, 1) + p[
            "bias"
        ].reshape(1, 3, 1, 1)

    check_module(m, device, [_x(2, 3, 2, 3)], ref)
    assert m.running_mean.shape == (3,)


def test_layernorm1d(device):
    m = nn.LayerNorm1d(4, device=device)
    _randomize(m)
    check_module(
        m, device, [_x(3, 4, scale=2.0)], lambda p, x: _layernorm(x, p["weight"], p["bias"])
    )
    check_module(
        m, device, [_x(2, 3, 4, seed=1)], lambda p, x: _layernorm(x, p["weight"], p["bias"])
    )


# ---------------------------------------------------------------------- dropout


def test_dropout_train_draws_one_mask(device):
    x = _x(4, 5)
    np.random.seed(9)
    keep = (np.random.rand(4, 5) <= 0.7).astype(np.float64)
    m = nn.Dropout(0.3)
    np.random.seed(9)
    check_module(m, device, [x], lambda p, x: x * keep / 0.7)


def test_dropout_course_value(device):
    np.random.seed(3)
    x = _course_tensor(2, 3, device=device)
    out = nn.Dropout(0.45)(x).numpy()
    np.testing.assert_allclose(
        out, [[6.818182, 0.0, 0.0], [0.18181819, 0.0, 6.090909]], rtol=1e-5, atol=1e-5
    )


def test_dropout_eval_is_identity(device):
    m = nn.Dropout(0.9)
    m.eval()
    x = ndl.Tensor(_x(3, 3), device=device)
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    np.testing.assert_array_equal(m(x).numpy(), x.numpy())
    assert (np.random.get_state()[1] == state).all(), "eval-mode dropout drew randomness"


# ---------------------------------------------------------------------- convolution


@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (1, 1), (5, 1)])
def test_conv(device, k, stride):
    np.random.seed(0)
    m = nn.Conv(2, 3, k, stride=stride, device=device)
    assert m.weight.shape == (k, k, 2, 3) and m.bias.shape == (3,)

    def ref(p, x):
        return _conv_nchw(x, p["weight"], p["bias"], stride, k // 2)

    check_module(m, device, [_x(2, 2, 5, 5)], ref)


def test_conv_init_is_the_course_draw(device):
    np.random.seed(2)
    bound = math.sqrt(2) * math.sqrt(3 / (4 * 9))
    w = np.random.rand(3, 3, 4, 6) * 2 * bound - bound
    b = np.random.rand(6) * 2 / math.sqrt(4 * 9) - 1 / math.sqrt(4 * 9)
    np.random.seed(2)
    m = nn.Conv(4, 6, 3, device=device)
    np.testing.assert_allclose(m.weight.numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(m.bias.numpy(), b, rtol=1e-5)


def test_conv_without_bias_and_bad_input(device):
    np.random.seed(0)
    m = nn.Conv(2, 2, 3, bias=False, device=device)
    check_module(m, device, [_x(1, 2, 4, 4)], lambda p, x: _conv_nchw(x, p["weight"], None, 1, 1))
    with pytest.raises(ValueError, match="Conv"):
        m(ndl.Tensor(_x(1, 3, 4, 4), device=device))


# ---------------------------------------------------------------------- sequence models


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_cell(device, nonlinearity):
    np.random.seed(0)
    m = nn.RNNCell(3, 4, nonlinearity=nonlinearity, device=device)
    act = np.tanh if nonlinearity == "tanh" else (lambda z: np.maximum(z, 0))
    check_module(
        m, device, [_x(2, 3), _x(2, 4, seed=1)], lambda p, x, h: _rnn_cell(p, x, h, act=act)
    )
    check_module(m, device, [_x(2, 3)], lambda p, x: _rnn_cell(p, x, None, act=act))


def test_rnn_cell_init_order(device):
    np.random.seed(4)
    k = 1 / math.sqrt(5)
    draws = [np.random.rand(*s) * 2 * k - k for s in ((3, 5), (5, 5), (5,), (5,))]
    np.random.seed(4)
    m = nn.RNNCell(3, 5, device=device)
    for got, want in zip((m.W_ih, m.W_hh, m.bias_ih, m.bias_hh), draws):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_rnn(device):
    np.random.seed(1)
    m = nn.RNN(3, 4, num_layers=2, device=device)

    def ref(p, x, h0):
        hs = []
        for layer in range(2):
            h, outs = h0[layer], []
            for t in range(x.shape[0]):
                h = _rnn_cell(p, x[t], h, pre=f"rnn_cells.{layer}.")
                outs.append(h)
            hs.append(h)
            x = np.stack(outs)
        return x, np.stack(hs)

    check_module(m, device, [_x(3, 2, 3), _x(2, 2, 4, seed=1)], ref)
    out, h = m(ndl.Tensor(_x(3, 2, 3), device=device))
    assert out.shape == (3, 2, 4) and h.shape == (2, 2, 4)


def test_lstm_cell(device):
    np.random.seed(2)
    m = nn.LSTMCell(3, 4, device=device)
    assert m.W_ih.shape == (3, 16) and m.bias_hh.shape == (16,)
    check_module(
        m,
        device,
        [_x(2, 3), _x(2, 4, seed=1), _x(2, 4, seed=2)],
        lambda p, x, h, c: _lstm_cell(p, x, h, c),
        call=lambda x, h, c: m(x, (h, c)),
    )
    check_module(m, device, [_x(2, 3)], lambda p, x: _lstm_cell(p, x, None, None))


def test_lstm(device):
    np.random.seed(3)
    m = nn.LSTM(2, 3, num_layers=2, device=device)

    def ref(p, x, h0, c0):
        hs, cs = [], []
        for layer in range(2):
            h, c, outs = h0[layer], c0[layer], []
            for t in range(x.shape[0]):
                h, c = _lstm_cell(p, x[t], h, c, pre=f"lstm_cells.{layer}.")
                outs.append(h)
            hs.append(h)
            cs.append(c)
            x = np.stack(outs)
        return x, (np.stack(hs), np.stack(cs))

    inputs = [_x(3, 2, 2), _x(2, 2, 3, seed=1), _x(2, 2, 3, seed=2)]
    check_module(m, device, inputs, ref, call=lambda x, h, c: m(x, (h, c)))
    out, (h, c) = m(ndl.Tensor(_x(4, 2, 2), device=device))
    assert out.shape == (4, 2, 3) and h.shape == (2, 2, 3) and c.shape == (2, 2, 3)


def test_embedding(device):
    np.random.seed(0)
    m = nn.Embedding(6, 3, device=device)
    idx = np.array([[0, 5], [2, 2], [1, 0]])
    check_module(m, device, [idx], lambda p, i: p["weight"][i.astype(int)], grad_inputs=False)


# ---------------------------------------------------------------------- attention


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_attention(device, causal):
    m = nn.MultiHeadAttention(causal=causal, device=device)
    q, k, v = _x(2, 2, 3, 4), _x(2, 2, 3, 4, seed=1), _x(2, 2, 3, 4, seed=2)
    check_module(m, device, [q, k, v], lambda p, q, k, v: _mha(q, k, v, causal))


def test_attention_layer(device):
    np.random.seed(0)
    m = nn.AttentionLayer(4, 2, 3, causal=True, device=device)
    _randomize_norms(m)
    check_module(m, device, [_x(2, 3, 4)], lambda p, x: _attention(p, x, "", 2, 3, True))
    # Cross-attention: other feature sizes for k, v and the output, a shorter key sequence.
    m = nn.AttentionLayer(
        4, 2, 3, k_features=5, v_features=6, out_features=7, causal=False, device=device
    )
    _randomize_norms(m)
    check_module(
        m,
        device,
        [_x(2, 3, 4), _x(2, 2, 5, seed=1), _x(2, 2, 6, seed=2)],
        lambda p, q, k, v: _attention(p, q, "", 2, 3, False, k, v),
    )


def _randomize_norms(module):
    rng = np.random.default_rng(7)
    for name, p in module.named_parameters():
        if "norm" in name:
            p.data = ndl.Tensor(
                rng.standard_normal(p.shape) * 0.3 + 1.0, device=p.device, dtype=p.dtype
            )


def test_transformer_layer(device):
    np.random.seed(1)
    m = nn.TransformerLayer(4, 2, 3, 8, device=device)
    _randomize_norms(m)
    check_module(m, device, [_x(2, 3, 4)], lambda p, x: _transformer_layer(p, x, "", 2, 3))


@pytest.mark.parametrize("batch_first", [False, True])
def test_transformer(device, batch_first):
    np.random.seed(2)
    m = nn.Transformer(
        4, 8, 2, num_head=2, dim_head=3, device=device, sequence_len=5, batch_first=batch_first
    )
    _randomize_norms(m)

    def ref(p, x):
        if not batch_first:
            x = x.transpose(1, 0, 2)
        x = x + p["positional_embedding.weight"][: x.shape[1]][None]
        for layer in range(2):
            x = _transformer_layer(p, x, f"layers.{layer}.", 2, 3)
        if not batch_first:
            x = x.transpose(1, 0, 2)
        return x, np.zeros_like(x)

    check_module(
        m, device, [_x(3, 2, 4)], lambda p, x: ref(p, x)[0], call=lambda x: m(x)[0], full_max=8
    )
    out, state = m(ndl.Tensor(_x(3, 2, 4), device=device))
    assert state.shape == out.shape and not state.numpy().any()


def test_transformer_dropout_in_train_and_eval(device):
    np.random.seed(0)
    m = nn.Transformer(4, 8, 1, num_head=2, dim_head=2, dropout=0.5, device=device, sequence_len=4)
    x = ndl.Tensor(_x(3, 2, 4), device=device)
    m.eval()
    a, b = m(x)[0].numpy(), m(x)[0].numpy()
    np.testing.assert_array_equal(a, b)
    m.train()
    c = m(x)[0].numpy()
    assert not np.allclose(a, c), "dropout did nothing in training mode"
