"""ndl.jit: a recorded training step replays bit-identically to eager, and refuses what it can't."""

from __future__ import annotations

import needle as ndl
import numpy as np
import pytest
from needle import models, nn, optim

STEPS = 20


def _labels(device, values):
    # a float32-only (contract v1) backend holds labels as float32
    return ndl.Tensor(np.asarray(values), device=device, dtype="int64", requires_grad=False)


def _data(device, shape, classes, count=4, seed=0):
    rng = np.random.default_rng(seed)
    xs = [
        ndl.Tensor(rng.random(shape, dtype=np.float32), device=device, requires_grad=False)
        for _ in range(count)
    ]
    ys = [_labels(device, rng.integers(0, classes, shape[0])) for _ in range(count)]
    return xs, ys


def _classifier_step(model, opt, loss_fn=None):
    loss_fn = loss_fn or nn.SoftmaxLoss()

    def step(x, y):
        loss = loss_fn(model(x), y)
        opt.reset_grad()
        loss.backward(create_graph=False)
        opt.step()
        return loss

    return step


def _run_both(make, device, shape, classes, steps=STEPS):
    """Train two copies made from one seed, eagerly and through ndl.jit; return both."""
    xs, ys = _data(device, shape, classes)
    runs = []
    for use_jit in (False, True):
        np.random.seed(3)
        model, opt = make(device)
        step = _classifier_step(model, opt)
        if use_jit:
            step = ndl.jit(step)
        np.random.seed(7)  # Dropout draws from here on, in the same order in both runs
        losses = [step(xs[i % len(xs)], ys[i % len(ys)]).numpy() for i in range(steps)]
        runs.append((model, opt, step, np.array(losses)))
    return runs


def _assert_same_state(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=name)


def _mlp_resnet(device):
    model = models.MLPResNet(32, 24, num_blocks=2, num_classes=5, drop_prob=0.2, device=device)
    return model, optim.Adam(model.parameters(), lr=0.01, weight_decay=0.001)


def _conv_net(device):
    model = nn.Sequential(
        nn.Conv(3, 6, 3, stride=2, device=device),
        nn.BatchNorm2d(6, device=device),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5, device=device),
    )
    return model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)


def test_mlp_resnet_replays_bit_identical(device):
    (eager, opt_e, _, losses_e), (traced, opt_j, step, losses_j) = _run_both(
        _mlp_resnet, device, (16, 32), 5
    )
    np.testing.assert_array_equal(losses_e, losses_j)
    _assert_same_state(eager, traced)
    assert opt_e.t == opt_j.t == STEPS
    for p in eager.parameters():
        assert opt_e.m[p] is not None
    assert step.stats == {"traces": 1, "replays": STEPS - 1, "eager": 0}


def test_conv_net_replays_bit_identical(device):
    (eager, opt_e, _, losses_e), (traced, opt_j, step, losses_j) = _run_both(
        _conv_net, device, (4, 3, 8, 8), 5
    )
    np.testing.assert_array_equal(losses_e, losses_j)
    _assert_same_state(eager, traced)
    for pe, pj in zip(eager.parameters(), traced.parameters()):
        np.testing.assert_array_equal(opt_e.u[pe].numpy(), opt_j.u[pj].numpy())
    assert step.stats["replays"] == STEPS - 1


def test_returned_tensors_are_copies(device):
    np.random.seed(0)
    model, opt = _mlp_resnet(device)
    step = ndl.jit(_classifier_step(model, opt))
    xs, ys = _data(device, (16, 32), 5)
    first = step(xs[0], ys[0])
    kept = first.numpy()
    step(xs[1], ys[1])
    step(xs[2], ys[2])
    np.testing.assert_array_equal(first.numpy(), kept)
    assert not first.requires_grad


def test_new_signature_traces_again(device):
    np.random.seed(0)
    model, opt = _mlp_resnet(device)
    step = ndl.jit(_classifier_step(model, opt))
    (x16,), (y16,) = _data(device, (16, 32), 5, count=1)
    (x8,), (y8,) = _data(device, (8, 32), 5, count=1)
    step(x16, y16)
    step(x8, y8)
    step(x16, y16)
    assert step.stats["traces"] == 2 and step.stats["replays"] == 1
    model.eval()  # another train/eval flag: a new trace
    step(x16, y16)
    assert step.stats["traces"] == 3


def test_loaded_state_is_seen_by_the_replay(device):
    np.random.seed(0)
    model, opt = _mlp_resnet(device)
    step = ndl.jit(_classifier_step(model, opt))
    (x,), (y,) = _data(device, (16, 32), 5, count=1)
    saved = {k: v.numpy() for k, v in model.state_dict().items()}
    step(x, y)
    step(x, y)
    model.load_state_dict(saved)  # new buffers for every parameter: the trace is stale
    np.random.seed(1)
    got = step(x, y).numpy()
    assert step.stats["traces"] == 2
    np.random.seed(0)
    fresh, _ = _mlp_resnet(device)
    fresh.load_state_dict(saved)
    np.random.seed(1)
    want = nn.SoftmaxLoss()(fresh(x), y).numpy()
    np.testing.assert_array_equal(got, want)


def test_learning_rate_changes_reach_the_replay(device):
    np.random.seed(0)
    model = nn.Linear(4, 3, device=device)
    opt = optim.SGD(model.parameters(), lr=0.1)
    step = ndl.jit(_classifier_step(model, opt))
    (x,), (y,) = _data(device, (5, 4), 3, count=1)
    step(x, y)
    step(x, y)
    before = model.weight.numpy()
    opt.lr = 0.0
    step(x, y)
    np.testing.assert_array_equal(model.weight.numpy(), before)


def test_inference_of_a_module(device):
    np.random.seed(0)
    model, _ = _mlp_resnet(device)
    model.eval()
    fast = ndl.jit(model)
    xs, _ = _data(device, (16, 32), 5)
    for x in xs:
        np.testing.assert_array_equal(fast(x).numpy(), model(x).numpy())
    assert fast.stats["replays"] == len(xs) - 1


def test_host_read_inside_is_an_error(device):
    model = nn.Linear(4, 3, device=device)

    def peek(x):
        out = model(x)
        if float(out.sum().numpy()) > 0:  # data-dependent control flow
            return out
        return -out

    (x,), _ = _data(device, (5, 4), 3, count=1)
    with pytest.raises(ndl.JitError, match="host read"):
        ndl.jit(peek)(x)


def test_non_strict_falls_back_to_eager(device):
    model = nn.Linear(4, 3, device=device)

    def peek(x):
        out = model(x)
        return out if float(out.sum().numpy()) > 0 else -out

    (x,), _ = _data(device, (5, 4), 3, count=1)
    lax = ndl.jit(peek, strict=False)
    np.testing.assert_array_equal(lax(x).numpy(), peek(x).numpy())
    np.testing.assert_array_equal(lax(x).numpy(), peek(x).numpy())
    assert "host read" in lax.fallback_reason
    assert lax.stats["eager"] == 1


def test_rebinding_a_parameter_is_an_error(device):
    model = nn.Linear(4, 3, device=device)

    def rebind(x):
        out = model(x)
        model.weight.data = model.weight.detach() * 0.5  # not in place
        return out

    (x,), _ = _data(device, (5, 4), 3, count=1)
    with pytest.raises(ndl.JitError, match="new buffer"):
        ndl.jit(rebind)(x)


def test_raw_numpy_randomness_is_an_error(device):
    def noisy(x):
        return x + ndl.Tensor(np.random.rand(*x.shape).astype("float32"), device=x.device)

    (x,), _ = _data(device, (5, 4), 3, count=1)
    with pytest.raises(ndl.JitError, match="random"):
        ndl.jit(noisy)(x)


def test_dropout_draws_fresh_masks(device):
    drop = nn.Dropout(0.5)
    x = ndl.Tensor(np.ones((8, 8), dtype=np.float32), device=device, requires_grad=False)
    fast = ndl.jit(drop)
    np.random.seed(0)
    first, second = fast(x).numpy(), fast(x).numpy()
    np.random.seed(0)
    np.testing.assert_array_equal(first, drop(x).numpy())
    np.testing.assert_array_equal(second, drop(x).numpy())
    assert not np.array_equal(first, second)


def test_disabled_runs_eagerly(device):
    model = nn.Linear(4, 3, device=device)
    off = ndl.jit(model, enabled=False)
    (x,), _ = _data(device, (5, 4), 3, count=1)
    off(x)
    off(x)
    assert off.stats == {"traces": 0, "replays": 0, "eager": 0}


def test_bad_arguments():
    with pytest.raises(ndl.JitError, match="hashable"):
        ndl.jit(lambda x: x)([1, 2])
    with pytest.raises(ndl.JitError, match="returned a float"):
        ndl.jit(lambda: 1.0)()


def _lstm_lm(device, vocab=30):
    model = models.LanguageModel(8, vocab, 12, num_layers=2, seq_model="lstm", device=device)
    return model, optim.SGD(model.parameters(), lr=0.5, momentum=0.5)


def test_lstm_language_model_replays_bit_identical(device):
    seq, batch, vocab = 5, 3, 30
    rng = np.random.default_rng(0)
    xs = [_labels(device, rng.integers(0, vocab, (seq, batch))) for _ in range(3)]
    ys = [_labels(device, rng.integers(0, vocab, seq * batch)) for _ in range(3)]
    runs = []
    for use_jit in (False, True):
        np.random.seed(3)
        model, opt = _lstm_lm(device, vocab)
        loss_fn = nn.SoftmaxLoss()

        def step(x, y, h0, c0, model=model, opt=opt, loss_fn=loss_fn):
            logits, (h, c) = model(x, (h0, c0))
            loss = loss_fn(logits, y)
            opt.reset_grad()
            loss.backward(create_graph=False)
            opt.step()
            return loss, h.detach(), c.detach()

        step = ndl.jit(step) if use_jit else step
        zeros = ndl.Tensor(np.zeros((2, batch, 12), np.float32), device=device)
        h, c = zeros, zeros
        losses = []
        for i in range(STEPS):
            loss, h, c = step(xs[i % 3], ys[i % 3], h, c)
            losses.append(loss.numpy())
        runs.append((model, np.array(losses), h.numpy()))
    (eager, losses_e, h_e), (traced, losses_j, h_j) = runs
    np.testing.assert_array_equal(losses_e, losses_j)
    np.testing.assert_array_equal(h_e, h_j)
    _assert_same_state(eager, traced)


def test_training_helpers_replay_and_match_eager(device):
    from needle import data

    rng = np.random.default_rng(0)
    X = rng.random((70, 32), dtype=np.float32)  # 70 = 4 batches of 16 and a short one of 6
    y = rng.integers(0, 5, 70)
    results = []
    for use_jit in (False, True):
        np.random.seed(3)
        model, opt = _mlp_resnet(device)
        loader = data.DataLoader(data.NDArrayDataset(X, y), 16, device=device)
        np.random.seed(7)
        train = [models.epoch(loader, model, None, opt, jit=use_jit) for _ in range(2)]
        results.append((train, models.evaluate(model, loader, jit=use_jit), model))
    (train_e, eval_e, eager), (train_j, eval_j, traced) = results
    assert train_e == train_j and eval_e == eval_j
    _assert_same_state(eager, traced)


def test_ptb_helper_replays_and_matches_eager(device):
    corpus = np.random.default_rng(0).integers(0, 30, (41, 3)).astype(np.float32)
    results = []
    for use_jit in (False, True):
        np.random.seed(3)
        model, _ = _lstm_lm(device)
        opt = optim.Adam(model.parameters(), lr=0.01)
        got = models.epoch_general_ptb(corpus, model, 5, opt=opt, device=device, jit=use_jit)
        results.append((got, model))
    (got_e, eager), (got_j, traced) = results
    assert got_e == got_j
    _assert_same_state(eager, traced)


def test_every_device_object_is_recorded(device):
    # Devices compare equal by name; a second object of one name (a rebuilt registry) must be
    # recorded too, or replays would return the first call's values.
    twin = ndl.BackendDevice(
        device.name, device.mod, device.capabilities, device.version, dict(device.dtypes)
    )
    model = nn.Linear(4, 3, device=twin)
    fast = ndl.jit(model)
    (x1, x2), _ = _data(twin, (5, 4), 3, count=2)
    fast(x1)
    np.testing.assert_array_equal(fast(x2).numpy(), model(x2).numpy())


def test_transformer_language_model_replays_bit_identical(device):
    seq, batch, vocab = 6, 2, 20
    rng = np.random.default_rng(0)
    xs = [_labels(device, rng.integers(0, vocab, (seq, batch))) for _ in range(2)]
    ys = [_labels(device, rng.integers(0, vocab, seq * batch)) for _ in range(2)]
    runs = []
    for use_jit in (False, True):
        np.random.seed(3)
        model = models.LanguageModel(
            16, vocab, 16, num_layers=2, seq_model="transformer", seq_len=seq, device=device
        )
        opt = optim.Adam(model.parameters(), lr=0.01)
        step = _classifier_step(_First(model), opt)
        step = ndl.jit(step) if use_jit else step
        losses = [step(xs[i % 2], ys[i % 2]).numpy() for i in range(8)]
        runs.append((model, np.array(losses)))
    (eager, losses_e), (traced, losses_j) = runs
    np.testing.assert_array_equal(losses_e, losses_j)
    _assert_same_state(eager, traced)


class _First(nn.Module):
    """The logits of a language model (its first output)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def _counting(monkeypatch, device):
    """Count the calls of the device's run_program (replays bind it when they are made)."""
    monkeypatch.delenv("NEEDLE_JIT_NATIVE", raising=False)  # (a run of the suite may set it)
    calls = []
    run = device.mod.run_program

    def counted(program):
        calls.append(len(program))
        return run(program)

    monkeypatch.setattr(device.mod, "run_program", counted)
    return calls


@pytest.mark.parametrize("make, shape", [(_mlp_resnet, (16, 32)), (_conv_net, (4, 3, 8, 8))])
def test_native_replay_matches_the_python_replay(device, monkeypatch, make, shape):
    # MLPResNet with Dropout and Adam; a conv net with BatchNorm and SGD with momentum: the
    # backend's run_program and core's kernel-by-kernel replay give the same bits.
    if not device.has("run_program"):
        pytest.skip(f"{device.name} declares no run_program (every replay is in Python)")
    native_calls = _counting(monkeypatch, device)
    xs, ys = _data(device, shape, 5)
    runs = []
    for native in (True, False):
        np.random.seed(3)
        model, opt = make(device)
        step = ndl.jit(_classifier_step(model, opt), native=native)
        np.random.seed(7)
        losses = [step(xs[i % len(xs)], ys[i % len(ys)]).numpy() for i in range(STEPS)]
        assert step.stats["replays"] == STEPS - 1
        runs.append((model, np.array(losses), len(native_calls)))
    (native_model, losses_n, calls_n), (python_model, losses_p, calls_p) = runs
    assert calls_n >= STEPS - 1  # every replay went through run_program ...
    assert calls_p == calls_n  # ... and none with native=False
    np.testing.assert_array_equal(losses_n, losses_p)
    _assert_same_state(native_model, python_model)


def test_the_environment_variable_forces_the_python_replay(device, monkeypatch):
    if not device.has("run_program"):
        pytest.skip(f"{device.name} declares no run_program (every replay is in Python)")
    native_calls = _counting(monkeypatch, device)
    model = nn.Linear(4, 3, device=device)
    (x1, x2), _ = _data(device, (5, 4), 3, count=2)
    monkeypatch.setenv("NEEDLE_JIT_NATIVE", "0")  # set when the call is traced
    fast = ndl.jit(model)
    fast(x1)
    np.testing.assert_array_equal(fast(x2).numpy(), model(x2).numpy())
    assert native_calls == []
    monkeypatch.delenv("NEEDLE_JIT_NATIVE")
    fast = ndl.jit(model)
    fast(x1)
    np.testing.assert_array_equal(fast(x2).numpy(), model(x2).numpy())
    assert native_calls
