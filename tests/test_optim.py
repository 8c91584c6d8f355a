"""needle.optim: SGD and Adam against the course's known losses and numpy formulas."""

from __future__ import annotations

import needle as ndl
import numpy as np
import pytest
from needle import nn, optim


def _course_tensor(*shape, device, entropy=1, high=None):
    np.random.seed(np.prod(shape) * len(shape) * entropy)
    data = (
        np.random.randint(0, 100, size=shape) / 20
        if high is None
        else (np.random.randint(0, high, size=shape))
    )
    return ndl.Tensor(data, device=device)


def learn_model_1d(device, feature_size, nclasses, make_model, optimizer, epochs=1, **kwargs):
    """The course's hw2 ``learn_model_1d``: seeded model, 32 batches of 32, final loss."""
    np.random.seed(42)
    model = make_model()
    X = _course_tensor(1024, feature_size, device=device).numpy()
    y = _course_tensor(1024, device=device, high=nclasses).numpy()
    loss_func = nn.SoftmaxLoss()
    opt = optimizer(model.parameters(), **kwargs)
    for _ in range(epochs):
        for X0, y0 in zip(np.array_split(X, 32), np.array_split(y, 32)):
            opt.reset_grad()
            out = model(ndl.Tensor(X0, device=device))
            loss = loss_func(out, ndl.Tensor(y0, device=device))
            loss.backward()
            grad_before = model.parameters()[0].grad.numpy()
            opt.step()
            np.testing.assert_array_equal(
                model.parameters()[0].grad.numpy(),
                grad_before,
                err_msg="the optimizer modified a gradient",
            )
    return float(loss.numpy())


def _mlp(device, middle=()):
    return lambda: nn.Sequential(
        nn.Linear(64, 32, device=device),
        nn.ReLU(),
        *[make(device) for make in middle],
        nn.Linear(32, 16, device=device),
    )


COURSE_CASES = [
    ("sgd", (), optim.SGD, {"lr": 0.01, "momentum": 0.0}, 3.207009),
    ("sgd_momentum", (), optim.SGD, {"lr": 0.01, "momentum": 0.9}, 3.311805),
    ("sgd_weight_decay", (), optim.SGD, {"lr": 0.01, "weight_decay": 0.01}, 3.202637),
    (
        "sgd_momentum_weight_decay",
        (),
        optim.SGD,
        {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01},
        3.306993,
    ),
    ("adam", (), optim.Adam, {"lr": 0.001}, 3.703999),
    ("adam_weight_decay", (), optim.Adam, {"lr": 0.001, "weight_decay": 0.01}, 3.705134),
    (
        "adam_batchnorm",
        (lambda d: nn.BatchNorm1d(32, device=d),),
        optim.Adam,
        {"lr": 0.001, "weight_decay": 0.001},
        3.296256,
    ),
    (
        "adam_layernorm",
        (lambda d: nn.LayerNorm1d(32, device=d),),
        optim.Adam,
        {"lr": 0.01, "weight_decay": 0.01},
        2.82192,
    ),
]


@pytest.mark.parametrize(
    "middle, optimizer, kwargs, expected",
    [case[1:] for case in COURSE_CASES],
    ids=[case[0] for case in COURSE_CASES],
)
def test_course_known_loss(device, middle, optimizer, kwargs, expected):
    loss = learn_model_1d(device, 64, 16, _mlp(device, middle), optimizer, **kwargs)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)


def _param(device, values, grad):
    p = nn.Parameter(ndl.Tensor(np.asarray(values, np.float32), device=device))
    p.grad = ndl.Tensor(np.asarray(grad, np.float32), device=device, requires_grad=False)
    return p


def test_sgd_steps_match_formula(device):
    w0, g = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -0.4])
    p = _param(device, w0, g)
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    w, u = w0.copy(), np.zeros(3)
    for _ in range(3):
        opt.step()
        u = 0.9 * u + 0.1 * (g + 0.01 * w)
        w = w - 0.1 * u
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-6, atol=1e-7)
    assert p.dtype == "float32" and p.numpy().dtype == np.float32
    assert p.device == device


def test_adam_steps_match_formula(device):
    w0, g = np.array([[1.0, -2.0], [0.5, 3.0]]), np.array([[0.3, 0.1], [-0.4, 2.0]])
    p = _param(device, w0, g)
    opt = optim.Adam([p], lr=0.05, weight_decay=0.1)
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t in range(1, 4):
        opt.step()
        grad = g + 0.1 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w = w - 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.5), optim.Adam])
def test_step_keeps_no_graph_and_skips_params_without_grad(device, make):
    p = _param(device, [1.0, 2.0], [0.5, -0.5])
    idle = nn.Parameter(ndl.Tensor([3.0], device=device))
    opt = make([p, idle])
    for _ in range(3):
        opt.step()
    assert p.op is None and p.inputs == () and p.requires_grad
    assert isinstance(p, nn.Parameter)
    for table in opt._slots().values():
        assert all(t.op is None and not t.requires_grad for t in table.values())
    np.testing.assert_array_equal(idle.numpy(), [3.0])


def test_reset_grad(device):
    p = _param(device, [1.0], [1.0])
    opt = optim.SGD([p])
    opt.reset_grad()
    assert p.grad is None


def test_clip_grad_norm(device):
    a = _param(device, [0.0, 0.0], [3.0, 0.0])
    b = _param(device, [0.0], [4.0])
    none = nn.Parameter(ndl.Tensor([1.0], device=device))
    norm = optim.clip_grad_norm([a, b, none], max_norm=1.0)
    assert abs(norm - 5.0) < 1e-5
    np.testing.assert_allclose(a.grad.numpy(), [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), [0.8], rtol=1e-5)
    assert none.grad is None
    small = _param(device, [0.0], [0.1])
    assert abs(optim.clip_grad_norm([small], 1.0) - 0.1) < 1e-6
    np.testing.assert_allclose(small.grad.numpy(), [0.1], rtol=1e-6)  # under the cap: unchanged
    c = _param(device, [0.0], [2.0])
    optim.SGD([c]).clip_grad_norm(0.5)
    np.testing.assert_allclose(c.grad.numpy(), [0.5], rtol=1e-5)


@pytest.mark.parametrize(
    "make",
    [lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9), lambda ps: optim.Adam(ps, lr=0.01)],
    ids=["SGD", "Adam"],
)
def test_state_dict_resumes_exactly(device, make):
    """Train 3 steps, save model + optimizer, restore into fresh objects, train 2 more:
    the same numbers as 5 uninterrupted steps."""
    x = ndl.Tensor(np.random.default_rng(0).standard_normal((8, 4)), device=device)
    y = ndl.Tensor(np.arange(8) % 3, device=device)

    def build():
        np.random.seed(0)
        model = nn.Sequential(
            nn.Linear(4, 5, device=device), nn.ReLU(), nn.Linear(5, 3, device=device)
        )
        return model, make(model.parameters())

    def train(model, opt, steps):
        for _ in range(steps):
            opt.reset_grad()
            nn.SoftmaxLoss()(model(x), y).backward()
            opt.step()

    model, opt = build()
    train(model, opt, 5)
    model2, opt2 = build()
    train(model2, opt2, 3)
    saved_model, saved_opt = model2.state_dict(), opt2.state_dict()
    model3, opt3 = build()
    model3.load_state_dict(saved_model)
    opt3.load_state_dict(saved_opt)
    train(model3, opt3, 2)
    for a, b in zip(model.parameters(), model3.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_state_dict_validates(device):
    p = _param(device, [1.0, 2.0], [1.0, 1.0])
    opt = optim.SGD([p], momentum=0.9)
    opt.step()
    state = opt.state_dict()
    assert state["type"] == "SGD" and set(state["state"]) == {"0"}
    before = opt.u[p].numpy()
    with pytest.raises(ValueError, match="Adam"):
        optim.Adam([p]).load_state_dict(state)
    bad = {**state, "state": {"0": {"u": np.zeros(3, np.float32)}}}
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        opt.load_state_dict(bad)
    bad = {**state, "state": {"5": {"u": np.zeros(2, np.float32)}}}
    with pytest.raises(ValueError, match="parameter 5"):
        opt.load_state_dict(bad)
    np.testing.assert_array_equal(opt.u[p].numpy(), before)


def test_unknown_optimizer_attribute():
    with pytest.raises(AttributeError, match="NoSuchOptimizer"):
        optim.NoSuchOptimizer  # noqa: B018


@pytest.mark.parametrize(
    "make, name, value, match",
    [
        (optim.Adam, "t", -1, "'t'.*whole number >= 0"),
        (optim.Adam, "t", 2.5, "'t'.*whole number >= 0"),
        (optim.Adam, "t", True, "'t'.*whole number >= 0"),
        (optim.Adam, "lr", "oops", "'lr'.*finite number.*'oops'"),
        (optim.Adam, "lr", float("nan"), "'lr'.*finite number"),
        (optim.Adam, "beta1", 1.0, r"'beta1'.*\[0, 1\)"),
        (optim.Adam, "beta2", -0.5, r"'beta2'.*\[0, 1\)"),
        (optim.Adam, "eps", -1e-8, "'eps'.*>= 0"),
        (optim.Adam, "weight_decay", None, "'weight_decay'.*finite number"),
        (optim.SGD, "momentum", 1.5, r"'momentum'.*\[0, 1\)"),
        (optim.SGD, "lr", [0.1], "'lr'.*finite number"),
    ],
    ids=[
        "t=-1",
        "t=2.5",
        "t=True",
        "lr=oops",
        "lr=nan",
        "beta1=1",
        "beta2<0",
        "eps<0",
        "weight_decay=None",
        "momentum=1.5",
        "lr=list",
    ],  # fmt: skip
)
def test_load_state_dict_refuses_bad_hyperparameters(device, make, name, value, match):
    """A bad value must fail at load_state_dict, naming it, not later in step()."""
    p = _param(device, [1.0, 2.0], [1.0, 1.0])
    opt = make([p], lr=0.1)
    opt.step()
    state = opt.state_dict()
    before = {h: getattr(opt, h) for h in opt.hyperparameters}
    state["hyper"][name] = value
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(state)
    assert {h: getattr(opt, h) for h in opt.hyperparameters} == before, "a bad state changed it"
    opt.step()  # still usable


@pytest.mark.parametrize(
    "state, match",
    [
        ([("type", "SGD")], "dict"),
        ({"type": "SGD", "state": [1, 2]}, "'state'.*dict"),
        ({"type": "SGD", "state": {"first": {}}}, "'first'.*parameter index"),
        ({"type": "SGD", "state": {"0": 5}}, "parameter 0.*dict"),
        ({"type": "SGD", "hyper": "fast"}, "'hyper'.*dict"),
    ],
    ids=["not-a-dict", "state-list", "index-word", "entries-int", "hyper-str"],
)
def test_load_state_dict_refuses_malformed_states(device, state, match):
    p = _param(device, [1.0, 2.0], [1.0, 1.0])
    with pytest.raises((TypeError, ValueError), match=match):
        optim.SGD([p]).load_state_dict(state)
