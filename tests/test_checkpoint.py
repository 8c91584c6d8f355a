"""Checkpoints: data-only, atomic, bit-exact, loadable onto any device, and strict on input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
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


# ---------------------------------------------------------------------- hostile and broken files


def _write_npz(path: Path, header: object, **arrays: np.ndarray) -> Path:
    """An npz with the given index (any JSON, or raw text) and entries."""
    text = header if isinstance(header, str) else json.dumps(header)
    with open(path, "wb") as f:  # np.savez would add ".npz" to a path
        np.savez(f, __needle_checkpoint__=np.asarray(text), **arrays)
    return path


def _index(keys: object) -> dict:
    return {"format": checkpoint.FORMAT_NAME, "version": checkpoint.FORMAT_VERSION, "keys": keys}


def _load(path: Path) -> dict:
    return ndl.load(path, device=ndl.default_device())


@pytest.mark.parametrize(
    "keys, arrays, match",
    [
        ([["w", "a0"]], {"a0": np.ones(2)}, "'keys' is a list"),
        ({"w": "a0"}, {"a0": np.ones(2)}, r"key 'w'.*\{'kind'"),
        ({"w": {"kind": "tensor", "entry": 7}}, {}, "key 'w' names no entry"),
        (
            {"a": {"kind": "tensor", "entry": "a0"}, "a/b": {"kind": "tensor", "entry": "a1"}},
            {"a0": np.ones(2), "a1": np.ones(2)},
            "'a/b' lies under 'a'",
        ),
        (
            {"a/b": {"kind": "tensor", "entry": "a0"}, "a": {"kind": "tensor", "entry": "a1"}},
            {"a0": np.ones(2), "a1": np.ones(2)},
            "key 'a' .*given twice|key 'a' .*keys under it",
        ),
        ({"w": {"kind": "tensor", "entry": "a0"}}, {"a0": np.array(["x", "y"])}, "'w'.*<U1"),
        ({"n": {"kind": "int", "entry": "a0"}}, {"a0": np.arange(3)}, "'n'.*int.*shape"),
        ({"s": {"kind": "str", "entry": "a0"}}, {"a0": np.float64(2)}, "'s'.*str"),
        ({"w": {"kind": "pickle", "entry": "a0"}}, {"a0": np.ones(1)}, "unknown kind 'pickle'"),
        (
            {"w": {"kind": "tensor", "entry": "a9"}},
            {"a0": np.ones(1)},
            "'a9' of key 'w' is missing",
        ),
    ],
    ids=[
        "keys-list",
        "entry-str",
        "entry-int",
        "a-then-a/b",
        "a/b-then-a",
        "string-tensor",
        "int-array",
        "str-float",
        "unknown-kind",
        "missing",
    ],  # fmt: skip
)
def test_malformed_index_raises_checkpoint_error(tmp_path, keys, arrays, match):
    path = _write_npz(tmp_path / "bad.ckpt", _index(keys), **arrays)
    with pytest.raises(checkpoint.CheckpointError, match=match) as err:
        _load(path)
    assert str(path) in str(err.value)


def test_deeply_nested_index_raises_checkpoint_error(tmp_path):
    path = _write_npz(tmp_path / "deep.ckpt", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(checkpoint.CheckpointError, match="unreadable") as err:
        _load(path)
    assert str(path) in str(err.value)


def test_corrupted_entry_names_file_and_entry(tmp_path):
    path = tmp_path / "state.ckpt"
    ndl.save({"w": np.arange(256, dtype=np.float32)}, path)
    blob = bytearray(path.read_bytes())
    at = blob.index(np.arange(256, dtype=np.float32)[100:104].tobytes())
    blob[at] ^= 0xFF  # one flipped bit in the middle of the data: the CRC no longer matches
    path.write_bytes(bytes(blob))
    with pytest.raises(checkpoint.CheckpointError, match=r"entry 'a0' of key 'w'.*CRC") as err:
        _load(path)
    assert str(path) in str(err.value)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_damage_raises_checkpoint_error_only(tmp_path_factory, data):
    """Truncated, cut or overwritten bytes: the file loads intact or raises CheckpointError."""
    path = tmp_path_factory.mktemp("damage") / "state.ckpt"
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    state = {"w": w, "t": ndl.Tensor(w[:2]), "meta": {"epoch": 3, "s": "x"}}
    ndl.save(state, path)
    blob = bytearray(path.read_bytes())
    how = data.draw(st.sampled_from(["truncate", "overwrite"]))
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        start = data.draw(st.integers(0, len(blob) - 1))
        junk = data.draw(st.binary(min_size=1, max_size=16))
        blob[start : start + len(junk)] = junk
    path.write_bytes(bytes(blob))
    try:
        back = _load(path)
    except checkpoint.CheckpointError as exc:
        assert str(path) in str(exc)
        assert "allow_pickle" not in str(exc)
    else:  # bytes the reader does not depend on (a timestamp, say) may change
        np.testing.assert_array_equal(back["w"], w)
        np.testing.assert_array_equal(back["t"].numpy(), w[:2])
        assert back["meta"] == state["meta"]


def _npy_header(shape: tuple, dtype: str = "<f4") -> bytes:
    """A version 1.0 ``.npy`` header declaring ``shape`` (whatever data follows it)."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}"
    return b"\x93NUMPY\x01\x00" + _padded(text)


def _padded(text: str) -> bytes:
    raw = text.encode("latin1")
    pad = 64 - (10 + len(raw) + 1) % 64
    body = raw + b" " * pad + b"\n"
    return len(body).to_bytes(2, "little") + body


def test_declared_size_larger_than_the_file_is_refused(tmp_path):
    """An entry whose header claims 1 GiB of float32 but holds 1 MB must not allocate 1 GiB."""
    import zipfile

    path = tmp_path / "liar.ckpt"
    header = json.dumps(_index({"w": {"kind": "tensor", "entry": "a0"}}))
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("__needle_checkpoint__.npy", "w") as f:
            np.lib.format.write_array(f, np.asarray(header))
        zf.writestr("a0.npy", _npy_header((2**28,)) + bytes(2**20))
    with pytest.raises(checkpoint.CheckpointError, match=r"entry 'a0'.*\(268435456,\)") as err:
        _load(path)
    assert str(path) in str(err.value)


def test_entry_that_expands_past_the_file_size_is_refused(tmp_path):
    """A compressed entry may not expand beyond the file's own size (a zip bomb)."""
    path = tmp_path / "bomb.ckpt"
    header = json.dumps(_index({"w": {"kind": "numpy", "entry": "a0"}}))
    with open(path, "wb") as f:
        np.savez_compressed(
            f, __needle_checkpoint__=np.asarray(header), a0=np.zeros(16 * 2**20, np.uint8)
        )
    assert path.stat().st_size < 2**20
    with pytest.raises(checkpoint.CheckpointError, match="entry 'a0'.*expands to") as err:
        _load(path)
    assert str(path) in str(err.value)


def test_keys_sharing_one_entry_are_refused(tmp_path):
    """16 keys naming one entry would load it 16 times (a 256 MB file reaching 4 GB)."""
    keys = {f"k{i}": {"kind": "tensor", "entry": "a0"} for i in range(16)}
    path = _write_npz(tmp_path / "alias.ckpt", _index(keys), a0=np.ones(4, np.float32))
    with pytest.raises(checkpoint.CheckpointError, match="'k0' and 'k1' both name entry 'a0'"):
        _load(path)


@pytest.mark.parametrize("kind", ["pickle", "object-npy", "object-entry"])
def test_non_checkpoints_never_suggest_unsafe_loading(tmp_path, kind):
    path = tmp_path / "file.bin"
    if kind == "pickle":
        import pickle

        path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    elif kind == "object-npy":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        path = path.with_suffix(".bin.npy")
    else:
        header = _index({"w": {"kind": "numpy", "entry": "a0"}})
        _write_npz(path, header, a0=np.array([None, 1], dtype=object))
    with pytest.raises(checkpoint.CheckpointError) as err:
        _load(path)
    message = str(err.value)
    assert "allow_pickle" not in message and "pickle=True" not in message, message
    assert str(path) in message


# ---------------------------------------------------------------------- how the file is written


def _kill_during_save(path: Path) -> None:
    """A child process that dies (as if killed) in the middle of ``ndl.save(path)``."""
    code = (
        "import os, sys, numpy as np, needle as ndl\n"
        "from needle import checkpoint\n"
        "def dying_savez(file, **arrays):\n"
        "    file.write(b'half a checkpoint' * 1000); file.flush(); os._exit(9)\n"
        "checkpoint.np.savez = dying_savez\n"
        "ndl.save({'w': np.zeros(4, np.float32)}, sys.argv[1])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr


def test_the_next_save_removes_what_a_killed_save_left(tmp_path):
    path = tmp_path / "state.ckpt"
    _kill_during_save(path)
    assert len(os.listdir(tmp_path)) == 1, "a killed save leaves its temporary file"
    _kill_during_save(path)
    assert len(os.listdir(tmp_path)) == 1, "the second save left the first one's temporary file"
    ndl.save({"w": np.ones(4, np.float32)}, path)
    assert os.listdir(tmp_path) == ["state.ckpt"], "the next save left the dead ones behind"
    np.testing.assert_array_equal(_load(path)["w"], np.ones(4))


def test_save_leaves_other_files_alone(tmp_path):
    (tmp_path / ".other.ckpt.needle-tmp").write_text("not ours")
    (tmp_path / "other.ckpt").write_text("not ours either")
    ndl.save({"w": np.ones(1, np.float32)}, tmp_path / "state.ckpt")
    assert sorted(os.listdir(tmp_path)) == [".other.ckpt.needle-tmp", "other.ckpt", "state.ckpt"]


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_file_mode_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        ndl.save({"w": np.ones(1, np.float32)}, tmp_path / "state.ckpt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state.ckpt").stat().st_mode) == mode


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_overwriting_keeps_the_file_mode(tmp_path):
    path = tmp_path / "state.ckpt"
    ndl.save({"w": np.ones(1, np.float32)}, path)
    path.chmod(0o640)
    ndl.save({"w": np.zeros(1, np.float32)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks here")
def test_saving_to_a_symlink_writes_through_it(tmp_path):
    real = tmp_path / "runs" / "real.ckpt"
    real.parent.mkdir()
    ndl.save({"w": np.zeros(2, np.float32)}, real)
    link = tmp_path / "latest.ckpt"
    link.symlink_to(real)
    ndl.save({"w": np.ones(2, np.float32)}, link)
    assert link.is_symlink(), "saving replaced the link with a file"
    np.testing.assert_array_equal(_load(real)["w"], np.ones(2))
    assert sorted(os.listdir(real.parent)) == ["real.ckpt"]
