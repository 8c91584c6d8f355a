"""needle.init: every initializer's numbers, shapes and devices, against numpy formulas.

All draws come from numpy's global RNG on the host, so each test reseeds numpy,
draws the expected numbers with the course's formula, reseeds, and compares.
"""

from __future__ import annotations

import math

import needle as ndl
import numpy as np
import pytest
from needle import init


def _expect(seed: int, draw) -> np.ndarray:
    np.random.seed(seed)
    return np.asarray(draw(), dtype=np.float32)


def _got(seed: int, make) -> ndl.Tensor:
    np.random.seed(seed)
    return make()


def test_kaiming_uniform_course_sum(device):
    # The course's hw4 test: seed 0, fan_in 16*9, fan_out 8*9, shape (3, 3, 16, 8).
    np.random.seed(0)
    a = init.kaiming_uniform(16 * 9, 8 * 9, shape=(3, 3, 16, 8), device=device)
    assert a.shape == (3, 3, 16, 8)
    assert a.device == device
    assert abs(float(a.sum().numpy()) - -2.5719218) < 1e-4


def test_kaiming_uniform_course_values(device):
    # The course's hw2 test (seed 42, 3x5): its first row.
    np.random.seed(42)
    a = init.kaiming_uniform(3, 5, device=device).numpy()
    expected = [-0.35485414, 1.2748126, 0.65617794, 0.27904832, -0.9729262]
    np.testing.assert_allclose(a[0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name, make, draw",
    [
        (
            "rand",
            lambda d: init.rand(3, 4, low=-2.0, high=5.0, device=d),
            lambda: np.random.rand(3, 4) * 7.0 - 2.0,
        ),
        (
            "randn",
            lambda d: init.randn(5, 2, mean=1.5, std=0.25, device=d),
            lambda: np.random.randn(5, 2) * 0.25 + 1.5,
        ),
        (
            "randb",
            lambda d: init.randb(4, 6, p=0.3, device=d),
            lambda: np.random.rand(4, 6) <= 0.3,
        ),
        (
            "xavier_uniform",
            lambda d: init.xavier_uniform(6, 4, gain=2.0, device=d),
            lambda: np.random.rand(6, 4) * 2 * (2.0 * math.sqrt(0.6)) - 2.0 * math.sqrt(0.6),
        ),
        (
            "xavier_normal",
            lambda d: init.xavier_normal(6, 4, gain=0.5, device=d),
            lambda: np.random.randn(6, 4) * 0.5 * math.sqrt(0.2),
        ),
        (
            "kaiming_uniform",
            lambda d: init.kaiming_uniform(8, 3, device=d),
            lambda: np.random.rand(8, 3) * 2 * math.sqrt(6 / 8) - math.sqrt(6 / 8),
        ),
        (
            "kaiming_uniform_shape",
            lambda d: init.kaiming_uniform(12, 5, shape=(2, 2, 3, 5), device=d),
            lambda: np.random.rand(2, 2, 3, 5) * 2 * math.sqrt(6 / 12) - math.sqrt(6 / 12),
        ),
        (
            "kaiming_normal",
            lambda d: init.kaiming_normal(8, 3, device=d),
            lambda: np.random.randn(8, 3) * math.sqrt(2 / 8),
        ),
    ],
)
def test_random_initializer_matches_numpy_formula(device, name, make, draw):
    expected = _expect(7, draw)
    got = _got(7, lambda: make(device))
    assert got.device == device, name
    assert got.shape == expected.shape, name
    boolean = name == "randb" and device.supports("bool")  # v1 backends hold float32 only
    assert got.dtype == ("bool" if boolean else "float32"), name
    assert not got.requires_grad, name
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6, err_msg=name)


def test_draws_are_identical_on_every_device(device, other_device):
    reference = other_device
    for make in (
        lambda d: init.kaiming_uniform(5, 7, device=d),
        lambda d: init.randn(3, 3, device=d),
    ):
        np.random.seed(3)
        here = make(device).numpy()
        np.random.seed(3)
        np.testing.assert_array_equal(here, make(reference).numpy())


def test_draw_order_is_the_course_order(device):
    # Two draws in a row continue numpy's stream: the second equals numpy's second draw.
    np.random.seed(11)
    init.rand(2, 3, device=device)
    second = init.rand(4, device=device).numpy()
    np.random.seed(11)
    np.random.rand(2, 3)
    np.testing.assert_allclose(second, np.random.rand(4), rtol=1e-6)


def test_randb_fraction(device):
    np.random.seed(0)
    b = init.randb(200, 50, p=0.25, device=device).numpy()
    assert set(np.unique(b)) <= {0.0, 1.0}
    assert abs(b.mean() - 0.25) < 0.02


def test_constants(device):
    np.testing.assert_array_equal(
        init.constant(2, 3, c=-1.5, device=device).numpy(), np.full((2, 3), -1.5, np.float32)
    )
    np.testing.assert_array_equal(init.ones(4, device=device).numpy(), np.ones(4))
    np.testing.assert_array_equal(init.zeros((2, 2), device=device).numpy(), np.zeros((2, 2)))
    z = init.zeros(3, device=device, requires_grad=True)
    assert z.requires_grad and z.device == device


def test_like(device):
    x = ndl.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), device=device)
    for fn, value in ((init.zeros_like, 0.0), (init.ones_like, 1.0)):
        y = fn(x)
        assert y.shape == (2, 3) and y.device == device and not y.requires_grad
        np.testing.assert_array_equal(y.numpy(), np.full((2, 3), value))


def test_one_hot(device):
    labels = ndl.Tensor([2.0, 0.0, 3.0], device=device)
    y = init.one_hot(4, labels, device=device)
    assert y.device == device
    np.testing.assert_array_equal(y.numpy(), np.eye(4)[[2, 0, 3]])
    y2 = init.one_hot(3, np.array([[1, 2], [0, 0]]), device=device)
    assert y2.shape == (2, 2, 3)
    with pytest.raises(IndexError):
        init.one_hot(3, [3], device=device)


def test_device_by_name_and_default():
    name = ndl.default_device().name
    a = init.zeros(2, device=name)
    assert a.device == ndl.device(name)
    assert init.ones(2).device == ndl.default_device()


@pytest.mark.parametrize("dtype", ["float64", "int32", "int64", "bool"])
def test_initializers_honour_dtype(device, dtype):
    if not device.supports(dtype):
        pytest.skip(f"{device.name} holds no {dtype}")
    np.random.seed(0)
    made = {
        "zeros": init.zeros(2, 3, dtype=dtype, device=device),
        "ones": init.ones(2, 3, dtype=dtype, device=device),
        "rand": init.rand(2, 3, dtype=dtype, device=device),
        "randb": init.randb(2, 3, dtype=dtype, device=device),
    }
    for name, t in made.items():
        assert t.dtype == dtype and t.numpy().dtype == dtype, name
    assert made["ones"].numpy().tolist() == np.ones((2, 3), dtype).tolist()
    if dtype == "float64":
        np.random.seed(0)
        want = np.random.randn(4, 3) * math.sqrt(2 / 4)
        np.random.seed(0)
        got = init.kaiming_normal(4, 3, dtype=dtype, device=device).numpy()
        np.testing.assert_array_equal(got, want)  # drawn and scaled in float64: no rounding
    with pytest.raises(TypeError, match="only float tensors"):
        init.zeros(2, dtype="int32", device=device, requires_grad=True)


def test_unknown_dtypes_are_refused():
    with pytest.raises(TypeError, match="complex64"):
        init.zeros(2, dtype="complex64", device=ndl.default_device())


def test_kaiming_rejects_other_nonlinearities():
    with pytest.raises(ValueError, match="relu"):
        init.kaiming_uniform(3, 3, nonlinearity="tanh", device=ndl.default_device())
