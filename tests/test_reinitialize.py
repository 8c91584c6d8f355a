"""needle.init.reinitialize: initial weights from a seed and each parameter's name.

The course's default (numpy's global RNG, in creation order) stays untouched; the
opt-in redraw makes models built in different orders identical.
"""

from __future__ import annotations

import math

import needle as ndl
import numpy as np
import pytest
from needle import init, models, nn


class TwoLayers(nn.Module):
    """The same model (same state-dict keys) with its layers created in either order."""

    def __init__(self, device, encoder_first: bool) -> None:
        super().__init__()
        if encoder_first:
            encoder = nn.Linear(6, 8, device=device)
            head = nn.Linear(8, 3, device=device)
        else:
            head = nn.Linear(8, 3, device=device)
            encoder = nn.Linear(6, 8, device=device)
        self.encoder, self.norm, self.head = encoder, nn.BatchNorm1d(8, device=device), head

    def forward(self, x):
        return self.head(self.norm(self.encoder(x)).relu())


def _state(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_creation_order_changes_the_course_default(device):
    np.random.seed(0)
    a = _state(TwoLayers(device, encoder_first=True))
    np.random.seed(0)
    b = _state(TwoLayers(device, encoder_first=False))
    assert not np.array_equal(a["encoder.weight"], b["encoder.weight"])


def test_reinitialize_makes_creation_order_irrelevant(device):
    np.random.seed(0)
    a = init.reinitialize(TwoLayers(device, encoder_first=True), seed=7)
    np.random.seed(123)  # even another global seed
    b = init.reinitialize(TwoLayers(device, encoder_first=False), seed=7)
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def test_values_depend_on_seed_and_name(device):
    np.random.seed(0)
    m = TwoLayers(device, encoder_first=True)
    first = _state(init.reinitialize(m, seed=1))
    again = _state(init.reinitialize(m, seed=1))
    other = _state(init.reinitialize(m, seed=2))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert not np.array_equal(first["encoder.weight"], other["encoder.weight"])
    # Two parameters of the same shape and distribution but different names differ.
    lin = nn.Sequential(nn.Linear(5, 5, device=device), nn.Linear(5, 5, device=device))
    s = _state(init.reinitialize(lin, seed=1))
    assert not np.array_equal(s["0.weight"], s["1.weight"])


def test_same_distribution_as_the_initializer(device):
    np.random.seed(0)
    m = nn.Sequential(nn.Linear(400, 300, device=device), nn.LayerNorm1d(300, device=device))
    before = {k: p.numpy() for k, p in m.named_parameters()}
    after = {k: v for k, v in _state(init.reinitialize(m, seed=3)).items()}
    bound = math.sqrt(2) * math.sqrt(3 / 400)  # kaiming_uniform(400, 300)
    w = after["0.weight"]
    assert w.shape == (400, 300) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.mean()) < 0.01 and abs(w.std() - bound / math.sqrt(3)) < 0.01
    assert not np.array_equal(w, before["0.weight"])
    b = after["0.bias"]  # kaiming_uniform(300, 1) in the shape (1, 300)
    assert b.shape == (1, 300) and np.abs(b).max() <= math.sqrt(2) * math.sqrt(3 / 300)
    np.testing.assert_array_equal(after["1.weight"], np.ones(300, np.float32))
    np.testing.assert_array_equal(after["1.bias"], np.zeros(300, np.float32))


def test_normal_parameters_redraw_normal(device):
    np.random.seed(0)
    emb = nn.Embedding(200, 50, device=device)  # init.randn(200, 50)
    w = _state(init.reinitialize(emb, seed=0))["weight"]
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1.0) < 0.02


def test_trained_values_are_reset_and_parameters_kept(device):
    np.random.seed(0)
    m = TwoLayers(device, encoder_first=True)
    params = m.parameters()
    fresh = _state(init.reinitialize(m, seed=5))
    for p in params:
        p.data = p.data * 0.0 + 1.0
    init.reinitialize(m, seed=5)
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    for key, value in _state(m).items():
        np.testing.assert_array_equal(value, fresh[key], err_msg=key)
    assert all(p.requires_grad for p in m.parameters())


def test_global_rng_is_untouched(device):
    np.random.seed(0)
    m = models.MLPResNet(20, hidden_dim=8, device=device)
    np.random.seed(42)
    init.reinitialize(m, seed=0)
    got = np.random.rand(3)
    np.random.seed(42)
    np.testing.assert_array_equal(got, np.random.rand(3))


def test_same_values_on_every_device(device, other_device):
    np.random.seed(0)
    a = _state(init.reinitialize(TwoLayers(device, True), seed=9))
    np.random.seed(0)
    b = _state(init.reinitialize(TwoLayers(other_device, True), seed=9))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_the_course_default_is_unchanged(device):
    # Building still draws from the global RNG in creation order, as in the course.
    np.random.seed(5)
    w = np.random.rand(6, 3) * 2 * math.sqrt(6 / 6) - math.sqrt(6 / 6)
    b = np.random.rand(3, 1) * 2 * math.sqrt(6 / 3) - math.sqrt(6 / 3)
    np.random.seed(5)
    m = nn.Linear(6, 3, device=device)
    np.testing.assert_allclose(m.weight.numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(m.bias.numpy(), b.reshape(1, 3), rtol=1e-6)


def test_parameters_of_unknown_origin_are_named(device):
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.known = nn.Parameter(init.rand(3, device=device))
            self.reshaped = nn.Parameter(init.rand(2, 3, device=device).reshape((3, 2)))
            self.given = nn.Parameter(ndl.Tensor(np.ones(4, np.float32), device=device))

    m = Custom()
    before = _state(m)
    with pytest.raises(ValueError, match=r"reshaped, given\. Create them"):
        init.reinitialize(m, seed=0)
    for key, value in _state(m).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_only_the_initializer_result_itself_carries_its_recipe(device):
    draw = init.rand(3, device=device)
    init.rand(3, device=device)  # a later draw: the first is no longer the latest
    assert nn.Parameter(draw)._init_recipe is None


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_seed_must_be_an_integer(device, seed):
    with pytest.raises(TypeError, match="seed must be an integer"):
        init.reinitialize(nn.Linear(2, 2, device=device), seed=seed)


@pytest.mark.parametrize(
    "build",
    [
        lambda d: models.MLPResNet(12, hidden_dim=8, device=d),
        lambda d: models.ResNet9(device=d),
        lambda d: models.LanguageModel(8, 20, 8, 1, "lstm", device=d),
        lambda d: models.LanguageModel(8, 20, 8, 1, "transformer", seq_len=4, device=d),
    ],
    ids=["MLPResNet", "ResNet9", "LanguageModel-lstm", "LanguageModel-transformer"],
)
def test_every_reference_model_can_be_reinitialized(device, build):
    np.random.seed(0)
    model = build(device)
    before = {k: p.numpy() for k, p in model.named_parameters()}
    init.reinitialize(model, seed=0)
    after = {k: p.numpy() for k, p in model.named_parameters()}
    random = [k for k in before if np.unique(before[k]).size > 1]
    assert random and all(not np.array_equal(before[k], after[k]) for k in random)
