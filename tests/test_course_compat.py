"""Course compatibility: what programs written for the course's needle rely on.

Written from the course's API (devices, NDArray internals, graph semantics, numerics,
the apps helpers), so CI guards it without the course's own files.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import needle as ndl
import numpy as np
import pytest
from needle import nn

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


# ---------------------------------------------------------------------- devices


def test_device_helpers_always_return_devices_that_print_as_the_course() -> None:
    for helper, name in ((ndl.cpu, "cpu()"), (ndl.cuda, "cuda()"), (ndl.cpu_numpy, "cpu_numpy()")):
        dev = helper()
        assert str(dev) == repr(dev) == name
        assert isinstance(dev.enabled(), bool)
    # the course's test modules build this list at import time, on any machine
    params = [
        ndl.cpu(),
        pytest.param(
            ndl.cuda(), marks=pytest.mark.skipif(not ndl.cuda().enabled(), reason="no GPU")
        ),
    ]
    assert len(params) == 2


def test_installing_needle_leaves_other_projects_tests_alone(tmp_path: Path) -> None:
    """A project with its own ``device`` parameter or fixture runs unchanged."""
    (tmp_path / "test_other.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.fixture
            def widget():
                return "w"

            @pytest.mark.parametrize("device", ["a", "b"])
            def test_own_parameter(device):
                assert device in ("a", "b")

            @pytest.fixture
            def device():
                return "mine"

            def test_own_fixture(device, widget):
                assert device == "mine"
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout, proc.stdout


# ---------------------------------------------------------------------- NDArray internals


def test_ndarray_internals_course_code_uses(device) -> None:
    a = ndl.NDArray(np.arange(24, dtype=np.float32).reshape(2, 3, 4), device=device)
    assert a.process_slice(slice(None, None, None), 2) == slice(0, 4, 1)
    assert a.process_slice(slice(1, -1, 2), 1) == slice(1, 2, 2)
    labels = ndl.NDArray(np.array([1.0, 7.0, 300.0], np.float32), device=device).astype(np.uint8)
    np.testing.assert_array_equal(labels.numpy(), np.array([1, 7, 300]).astype(np.uint8))
    assert device.compact is device.mod.compact, "backend functions through the device"


def test_matmul_tiled_on_the_course_layout(device) -> None:
    if not device.has("matmul_tiled"):
        pytest.skip(f"{device.name} has no matmul_tiled")
    t = device.__tile_size__
    m, n, p = 2, 3, 1
    A = ndl.backend_ndarray.array(np.random.randn(m, n, t, t), device=device)
    B = ndl.backend_ndarray.array(np.random.randn(n, p, t, t), device=device)
    C = ndl.NDArray.make((m, p, t, t), device=device)
    device.matmul_tiled(A.handle, B.handle, C.handle, m * t, n * t, p * t)
    dense = lambda x, r, c: x.numpy().transpose(0, 2, 1, 3).reshape(r, c)  # noqa: E731
    np.testing.assert_allclose(
        dense(C, m * t, p * t),
        dense(A, m * t, n * t) @ dense(B, n * t, p * t),
        rtol=1e-4,
        atol=1e-4,
    )


# ---------------------------------------------------------------------- the graph


def test_gradient_of_a_gradient_without_flags(device) -> None:
    x2, x3 = ndl.Tensor([6], device=device), ndl.Tensor([0], device=device)
    assert x2.dtype == "float64" if device.supports("float64") else "float32"
    y = x2 * x2 + x2 * x3
    y.backward()
    grad_x2 = x2.grad
    assert grad_x2.numpy() == 12 and x3.grad.numpy() == 6
    grad_x2.backward()
    assert x2.grad.numpy() == 2 and x3.grad.numpy() == 1


def test_live_tensor_counter(device) -> None:
    before = ndl.autograd.TENSOR_COUNTER
    keep = [ndl.Tensor([1.0, 2.0], device=device) for _ in range(5)]
    assert ndl.autograd.TENSOR_COUNTER >= before + 5
    del keep


def test_python_numbers_are_float64_and_numpy_data_keeps_its_dtype(device) -> None:
    if not device.supports("float64"):
        pytest.skip("a float32-only backend")
    assert ndl.Tensor(np.random.randn(), device=device).dtype == "float64"
    assert ndl.Tensor([[1.0, 2.0]], device=device).dtype == "float64"
    assert ndl.Tensor(np.ones(2, np.float32), device=device).dtype == "float32"
    assert ndl.Tensor(np.ones(2, np.uint8), device=device).dtype == "int32"
    label = ndl.Tensor(np.array([1, 2]), device=device)  # integers never require grad
    assert label.dtype == "int64" and not label.requires_grad


def test_binary_ops_broadcast_like_numpy_and_gradients_sum_back(device) -> None:
    a = ndl.Tensor(np.array([[1.0, 2.0, 3.0]]), device=device)
    b = ndl.Tensor(np.ones(3) * 2, device=device)
    out = a**b
    np.testing.assert_allclose(out.numpy(), np.array([[1.0, 4.0, 9.0]]))
    out.sum().backward()
    assert a.grad.shape == (1, 3) and b.grad.shape == (3,)
    np.testing.assert_allclose(a.grad.numpy(), [[2.0, 4.0, 6.0]])
    np.testing.assert_allclose(b.grad.numpy(), [0.0, 4 * np.log(2), 9 * np.log(3)], rtol=1e-6)
    half = ndl.divide_scalar(ndl.Tensor([2.0, 4.0], device=device), scalar=np.array([2.0]))
    np.testing.assert_array_equal(half.numpy(), [1.0, 2.0])


def test_parameter_data_may_change_shape_but_not_dtype(device) -> None:
    layer = nn.Linear(5, 3, device=device)
    layer.bias.data = ndl.Tensor(np.ones(3, np.float32), device=device)  # a (3,) bias
    assert layer.bias.shape == (3,)
    assert layer(ndl.Tensor(np.ones((2, 5), np.float32), device=device)).shape == (2, 3)


def test_logsumexp_gradient_is_exact_at_huge_ties(device) -> None:
    x = ndl.Tensor(np.array([[1e9, 1e9, -1e9]], np.float32), device=device)
    ndl.logsumexp(x, axes=(1,)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.5, 0.5, 0.0]])


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_recurrent_weights_get_gradients_without_an_initial_state(device, cell) -> None:
    make = nn.RNNCell if cell == "rnn" else nn.LSTMCell
    model = make(4, 3, device=device)
    out = model(ndl.Tensor(np.ones((2, 4), np.float32), device=device), None)
    (out if cell == "rnn" else out[0]).sum().backward()
    assert model.W_hh.grad is not None
    np.testing.assert_array_equal(
        model.W_hh.grad.numpy(), np.zeros((3, 3 if cell == "rnn" else 12))
    )


# ---------------------------------------------------------------------- apps


def test_apps_modules_map_the_course_imports() -> None:
    from needle.apps import mlp_resnet, models, simple_ml

    assert models.ResNet9 is ndl.models.ResNet9 and mlp_resnet.MLPResNet is ndl.models.MLPResNet
    for name in ("epoch_general_cifar10", "train_ptb", "evaluate_ptb", "loss_err", "nn_epoch"):
        assert callable(getattr(simple_ml, name)), name


def _mnist_available() -> bool:
    return (MNIST / "t10k-images-idx3-ubyte.gz").exists()


@pytest.mark.skipif(not _mnist_available(), reason="../shared/data/mnist is absent")
def test_apps_epoch_returns_error_rate_and_mean_loss(device, monkeypatch) -> None:
    from needle.apps.mlp_resnet import MLPResNet, epoch

    monkeypatch.setenv("NEEDLE_DEVICE", device.name)
    monkeypatch.setattr(ndl.devices, "_default", [device])
    np.random.seed(1)
    ds = ndl.data.MNISTDataset(
        str(MNIST / "t10k-images-idx3-ubyte.gz"), str(MNIST / "t10k-labels-idx1-ubyte.gz")
    )
    loader = ndl.data.DataLoader(ds, batch_size=500)
    model = MLPResNet(784, 10)
    err, loss = epoch(loader, model)
    acc, loss2 = ndl.models.epoch(loader, model)
    assert err == pytest.approx(1 - acc) and loss == pytest.approx(loss2, rel=1e-6)
    assert 0.85 < err < 0.95 and 2.0 < loss < 6.0, "an untrained 10-class model"


@pytest.mark.skipif(not _mnist_available(), reason="../shared/data/mnist is absent")
def test_apps_train_mnist_runs_the_course_loop(tmp_path, monkeypatch, device) -> None:
    from needle.apps.mlp_resnet import train_mnist

    monkeypatch.setattr(ndl.devices, "_default", [device])
    images, labels = MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz"
    small = tmp_path / "mnist"
    small.mkdir()
    with gzip.open(images) as f:
        raw_images = f.read()
    with gzip.open(labels) as f:
        raw_labels = f.read()
    n = 600  # a small MNIST: the first 600 digits, as training and as test files
    header = (n).to_bytes(4, "big")
    for stem in ("train", "t10k"):
        with gzip.open(small / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(raw_images[:4] + header + raw_images[8:16] + raw_images[16 : 16 + n * 784])
        with gzip.open(small / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(raw_labels[:4] + header + raw_labels[8 : 8 + n])
    train_err, train_loss, test_err, test_loss = train_mnist(
        batch_size=100, epochs=2, lr=0.01, hidden_dim=32, data_dir=os.fspath(small)
    )
    assert train_err < 0.7 and test_err < 0.7, "it learned (an untrained model errs 90 %)"


def test_simple_ml_helpers_match_numpy() -> None:
    from needle.apps.simple_ml import loss_err, nn_epoch, softmax_loss

    rng = np.random.default_rng(0)
    Z = rng.standard_normal((8, 5)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    want = np.mean(np.log(np.exp(Z).sum(axis=1)) - Z[np.arange(8), y])
    got = softmax_loss(ndl.Tensor(Z), ndl.init.one_hot(5, y))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    loss, err = loss_err(ndl.Tensor(Z), y)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert err == np.mean(Z.argmax(axis=1) != y)

    X = rng.standard_normal((20, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 20).astype(np.uint8)
    W1 = rng.standard_normal((6, 4)).astype(np.float32) / 2
    W2 = rng.standard_normal((4, 3)).astype(np.float32) / 2
    got1, got2 = nn_epoch(X, labels, ndl.Tensor(W1), ndl.Tensor(W2), lr=0.1, batch=10)
    w1, w2 = W1.astype(np.float64), W2.astype(np.float64)
    for s in range(0, 20, 10):  # the same SGD epoch, written out in numpy
        x, yb = X[s : s + 10], labels[s : s + 10]
        hidden = np.maximum(x @ w1, 0)
        logits = hidden @ w2
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        probs[np.arange(10), yb] -= 1
        g2 = hidden.T @ probs / 10
        g1 = x.T @ ((probs @ w2.T) * (hidden > 0)) / 10
        w1, w2 = w1 - 0.1 * g1, w2 - 0.1 * g2
    np.testing.assert_allclose(got1.numpy(), w1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got2.numpy(), w2, rtol=1e-4, atol=1e-5)
