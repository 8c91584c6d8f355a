"""Checkpoints: data-only, atomic, bit-exact, loadable onto any device, and strict on input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import needle as ndl
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from needle import checkpoint, nn, optim


def _model(device, seed=0):
    np.random.seed(seed)
    return nn.Sequential(
        nn.Conv(2, 3, 3, device=device),
        nn.BatchNorm2d(3, device=device),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 2, device=device),
    )


def _trained(device):
    model = _model(device)
    x = ndl.Tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4)), device=device)
    model(x)  # running statistics move away from their initial values
    return model


def test_round_trip_is_bit_exact(device, tmp_path):
    model = _trained(device)
    path = tmp_path / "model.ckpt"
    ndl.save(model.state_dict(), path)
    state = ndl.load(path, device=device)
    assert set(state) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert isinstance(state[key], ndl.Tensor) and state[key].device == device
        assert not state[key].requires_grad
        np.testing.assert_array_equal(state[key].numpy(), value.numpy(), err_msg=key)
    other = _model(device, seed=1)
    other.load_state_dict(state)
    for (key, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert a.numpy().tobytes() == b.numpy().tobytes(), key


def test_load_onto_another_device(device, other_device, tmp_path):
    model = _trained(device)
    model.save(str(tmp_path / "m.npz"))
    state = ndl.load(tmp_path / "m.npz", device=other_device)
    assert all(t.device == other_device for t in state.values())
    # Module.load puts each value on the module's own device.
    target = _model(device, seed=3).load(str(tmp_path / "m.npz"))
    for a, b in zip(model.state_dict().values(), target.state_dict().values()):
        assert b.device == device
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_nested_state_with_optimizer_and_scalars(device, tmp_path):
    np.random.seed(0)
    model = nn.Linear(3, 2, device=device)
    opt = optim.Adam(model.parameters(), lr=0.02)
    x = ndl.Tensor(np.ones((4, 3)), device=device)
    (model(x) ** 2).sum().backward()
    opt.step()
    obj = {
        "model": model.state_dict(),
        "optim": opt.state_dict(),
        "epoch": 7,
        "best": 0.25,
        "name": "run-1",
        "done": False,
        "note": None,
        "labels": np.arange(5, dtype=np.int64),
        "raw": ndl.NDArray(np.eye(2, dtype=np.float32), device=device),
    }
    ndl.save(obj, tmp_path / "all.ckpt")
    back = ndl.load(tmp_path / "all.ckpt", device=device)
    assert back["epoch"] == 7 and isinstance(back["epoch"], int)
    assert back["best"] == 0.25 and back["name"] == "run-1"
    assert back["done"] is False and back["note"] is None
    np.testing.assert_array_equal(back["labels"], np.arange(5))
    assert back["labels"].dtype == np.int64
    assert isinstance(back["raw"], ndl.NDArray)
    np.testing.assert_array_equal(back["raw"].numpy(), np.eye(2))
    assert back["optim"]["hyper"] == {
        "lr": 0.02,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "t": 1,
    }
    opt2 = optim.Adam(model.parameters())
    opt2.load_state_dict(back["optim"])
    assert opt2.t == 1 and opt2.lr == 0.02
    for p in model.parameters():
        np.testing.assert_array_equal(opt2.m[p].numpy(), opt.m[p].numpy())


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "state.ckpt"
    ndl.save({"w": np.ones(3, np.float32)}, path)
    original = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        ndl.save({"w": np.zeros(3, np.float32)}, path)
    assert path.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["state.ckpt"], "a temporary file was left behind"


def test_not_a_checkpoint(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, weight=np.ones(2))
    with pytest.raises(checkpoint.CheckpointError, match="__needle_checkpoint__"):
        ndl.load(plain, device=ndl.default_device())
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(checkpoint.CheckpointError, match="not a needle checkpoint"):
        ndl.load(junk, device=ndl.default_device())
    bare = tmp_path / "bare.npy"
    np.save(bare, np.ones(2))
    with pytest.raises(checkpoint.CheckpointError, match="not a needle checkpoint"):
        ndl.load(bare, device=ndl.default_device())
    other = tmp_path / "other.npz"
    np.savez(other, __needle_checkpoint__=np.asarray(json.dumps({"format": "other"})))
    with pytest.raises(checkpoint.CheckpointError, match="not a needle checkpoint"):
        ndl.load(other, device=ndl.default_device())
    with pytest.raises(FileNotFoundError):
        ndl.load(tmp_path / "missing.ckpt", device=ndl.default_device())


class _Boom:
    """Unpickling this would create a file: loading must never do it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_loading_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    header = {
        "format": checkpoint.FORMAT_NAME,
        "version": checkpoint.FORMAT_VERSION,
        "keys": {"w": {"kind": "numpy", "entry": "a0"}},
    }
    evil = np.empty(1, dtype=object)
    evil[0] = _Boom(str(marker))
    np.savez(path, a0=evil, __needle_checkpoint__=np.asarray(json.dumps(header)))
    with pytest.raises(checkpoint.CheckpointError, match="'w'"):
        ndl.load(path, device=ndl.default_device())
    assert not marker.exists()


def test_shape_mismatch_names_key_and_changes_nothing(device, tmp_path):
    np.random.seed(0)
    small = nn.Sequential(nn.Linear(3, 4, device=device), nn.Linear(4, 2, device=device))
    np.random.seed(1)
    big = nn.Sequential(nn.Linear(3, 4, device=device), nn.Linear(4, 5, device=device))
    big.save(str(tmp_path / "big.ckpt"))
    before = [p.numpy() for p in small.parameters()]
    with pytest.raises(ValueError, match=r"1\.weight.*\(4, 5\).*\(4, 2\)"):
        small.load(str(tmp_path / "big.ckpt"))
    for p, old in zip(small.parameters(), before):
        np.testing.assert_array_equal(p.numpy(), old)  # the matching 0.* was not assigned


def test_bad_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="'bad'"):
        ndl.save({"bad": object()}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="/"):
        ndl.save({"a/b": np.ones(1)}, tmp_path / "x.ckpt")
    with pytest.raises(TypeError, match="object array"):
        ndl.save({"o": np.array([None])}, tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()


def test_special_values_survive_bit_exact(device, tmp_path):
    np.random.seed(0)
    model = nn.Linear(2, 3, device=device)
    weight = np.array([[-0.0, np.inf, -np.inf], [np.nan, 1e-40, -3.5]], dtype=np.float32)
    model.weight.data = ndl.Tensor(weight, device=device)
    model.save(str(tmp_path / "special.ckpt"))
    other = nn.Linear(2, 3, device=device).load(str(tmp_path / "special.ckpt"))
    assert other.weight.numpy().tobytes() == model.weight.numpy().tobytes()


def test_load_state_dict_copies(device):
    np.random.seed(0)
    source = nn.Linear(2, 2, device=device)
    target = nn.Linear(2, 2, device=device)
    target.load_state_dict(source.state_dict())
    before = target.weight.numpy()
    source.weight.cached_data[0, 0] = 123.0  # an in-place write into the source's buffer
    np.testing.assert_array_equal(target.weight.numpy(), before)


_float32_arrays = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
    elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
)


@settings(max_examples=25)
@given(
    st.dictionaries(
        st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1),
        _float32_arrays,
        max_size=4,
    )
)
def test_any_float32_state_round_trips_bit_exact(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("prop") / "state.ckpt"
    tensors = {k: ndl.Tensor(v, device=ndl.default_device()) for k, v in state.items()}
    ndl.save({"t": tensors, "a": state}, path)
    back = ndl.load(path, device=ndl.default_device())
    assert set(back["t"]) == set(state) and set(back["a"]) == set(state)
    for key, value in state.items():
        assert back["t"][key].shape == value.shape, key
        assert back["t"][key].numpy().tobytes() == value.tobytes(), key
        assert back["a"][key].dtype == np.float32
        assert back["a"][key].tobytes() == value.tobytes(), key
