"""``needle checkpoint show`` / ``diff`` (needle.checkpoint_tools) on real checkpoint files."""

from __future__ import annotations

import json
import subprocess
import sys

import needle as ndl
import numpy as np
import pytest
from needle import checkpoint_tools, init, nn


def _model(device, encoder_first: bool, by_name: bool) -> nn.Module:
    """One model whose two Linear layers are created in either order."""
    np.random.seed(0)
    if encoder_first:
        encoder = nn.Linear(6, 8, device=device)
        head = nn.Linear(8, 3, device=device)
    else:
        head = nn.Linear(8, 3, device=device)
        encoder = nn.Linear(6, 8, device=device)
    model = nn.Sequential(encoder, nn.BatchNorm1d(8, device=device), nn.ReLU(), head)
    return init.reinitialize(model, seed=0) if by_name else model


def _save(path, state):
    ndl.save(state, path)
    return path


def test_show_lists_entries_and_metadata(device, tmp_path, capsys):
    model = _model(device, True, False)
    state = {
        "model": model.state_dict(),
        "extra": np.arange(6, dtype=np.int64).reshape(2, 3),
        "meta": {"config": '{"hidden": 8}', "epochs": 3, "acc": 0.5, "done": True, "note": None},
    }
    path = _save(tmp_path / "run.npz", state)
    info = checkpoint_tools.show(path)
    assert (info["format"], info["version"]) == ("needle-checkpoint", 1)
    entries = {e["key"]: e for e in info["entries"]}
    assert list(entries)[:2] == ["model/0.weight", "model/0.bias"]
    assert entries["model/0.weight"] == {"key": "model/0.weight", "kind": "tensor",
        "shape": [6, 8], "dtype": "float32", "size": 48, "nbytes": 192}  # fmt: skip
    assert entries["model/1.running_var"]["shape"] == [8]
    assert entries["extra"]["dtype"] == "int64" and entries["extra"]["kind"] == "numpy"
    meta = {m["key"]: (m["kind"], m["value"]) for m in info["metadata"]}
    assert meta == {"meta/config": ("str", '{"hidden": 8}'), "meta/epochs": ("int", 3),
                    "meta/acc": ("float", 0.5), "meta/done": ("bool", True),
                    "meta/note": ("none", None)}  # fmt: skip
    assert checkpoint_tools.main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "needle-checkpoint version 1" in out
    assert "entries: 9 (" in out and "model/0.weight" in out and "(6, 8)" in out
    assert "meta/config (str): '{\"hidden\": 8}'" in out
    assert checkpoint_tools.main(["show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"][0]["key"] == "model/0.weight"


def test_diff_of_models_built_in_another_order(device, tmp_path, capsys):
    # The course default: another creation order, other initial weights.
    a = _save(tmp_path / "a.npz", _model(device, True, False).state_dict())
    b = _save(tmp_path / "b.npz", _model(device, False, False).state_dict())
    result = checkpoint_tools.diff(a, b)
    assert result["differ"] and not result["only_in_a"] and not result["mismatched"]
    rows = {r["key"]: r for r in result["compared"]}
    assert rows["0.weight"]["beyond"] == 48 and rows["0.weight"]["max_abs"] > 0
    assert rows["1.weight"]["max_abs"] == 0 and rows["1.weight"]["beyond"] == 0
    largest = [r["max_abs"] for r in result["compared"]]
    assert largest == sorted(largest, reverse=True)
    assert checkpoint_tools.main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "result: DIFFERENT: 4 of 8 compared keys differ beyond atol=0, rtol=0" in out
    # Opt-in initialization by name: the same weights whatever the order.
    a2 = _save(tmp_path / "a2.npz", _model(device, True, True).state_dict())
    b2 = _save(tmp_path / "b2.npz", _model(device, False, True).state_dict())
    assert not checkpoint_tools.diff(a2, b2)["differ"]
    assert checkpoint_tools.main(["diff", str(a2), str(b2)]) == 0
    assert "result: identical (8 keys)" in capsys.readouterr().out


def test_diff_numbers_and_tolerances(tmp_path):
    base = np.array([[1.0, -2.0, 0.0], [4.0, 5.0, 6.0]], np.float32)
    a = _save(tmp_path / "a.npz", {"w": base + np.float32(0.5) * (base == 4.0), "v": base})
    b = _save(tmp_path / "b.npz", {"w": base, "v": base})
    rows = {r["key"]: r for r in checkpoint_tools.diff(a, b)["compared"]}
    assert rows["w"]["max_abs"] == 0.5 and rows["w"]["max_rel"] == 0.125
    assert rows["w"]["beyond"] == 1 and rows["w"]["size"] == 6
    assert rows["v"] == {"key": "v", "kind": "numpy", "size": 6, "max_abs": 0.0,
                         "max_rel": 0.0, "beyond": 0}  # fmt: skip
    assert [r["key"] for r in checkpoint_tools.diff(a, b)["compared"]] == ["w", "v"]
    assert checkpoint_tools.diff(a, b, atol=0.5)["differ"] is False
    assert checkpoint_tools.diff(a, b, atol=0.49)["differ"] is True
    assert checkpoint_tools.diff(a, b, rtol=0.125)["differ"] is False  # relative to B's 4.0
    assert checkpoint_tools.diff(a, b, rtol=0.12)["differ"] is True
    assert checkpoint_tools.main(["diff", str(a), str(b), "--atol", "0.5"]) == 0


def test_diff_zero_and_special_values(tmp_path):
    a = _save(tmp_path / "a.npz", {"z": np.array([0.0, 1.0, np.nan, np.inf], np.float32)})
    b = _save(tmp_path / "b.npz", {"z": np.array([1e-3, 1.0, np.nan, np.inf], np.float32)})
    row = checkpoint_tools.diff(a, b)["compared"][0]
    assert row["beyond"] == 1 and row["max_abs"] == pytest.approx(1e-3)
    assert row["max_rel"] == 1.0  # |0 - 1e-3| / 1e-3
    c = _save(tmp_path / "c.npz", {"z": np.array([1e-3, 1.0, 2.0, -np.inf], np.float32)})
    row = checkpoint_tools.diff(b, c, atol=1e9)["compared"][0]
    assert row["max_abs"] == np.inf and row["beyond"] == 2  # NaN vs 2, inf vs -inf


def test_diff_keys_kinds_shapes_dtypes_and_metadata(tmp_path, capsys):
    a = _save(tmp_path / "a.npz", {
        "same": np.ones(3, np.float32), "shape": np.ones((2, 3), np.float32),
        "dtype": np.ones(3, np.float32), "kind": np.ones(3, np.float32),
        "only_a": np.zeros(1, np.float32), "meta": {"name": "run a", "step": 3},
    })  # fmt: skip
    b = _save(tmp_path / "b.npz", {
        "same": np.ones(3, np.float32), "shape": np.ones((3, 2), np.float32),
        "dtype": np.ones(3, np.float64), "kind": ndl.Tensor(np.ones(3, np.float32)),
        "only_b": np.zeros(1, np.float32), "meta": {"name": "run b", "step": 3},
    })  # fmt: skip
    result = checkpoint_tools.diff(a, b, atol=1.0)
    assert result["only_in_a"] == ["only_a"] and result["only_in_b"] == ["only_b"]
    mismatched = {m["key"]: (m["a"], m["b"]) for m in result["mismatched"]}
    assert mismatched == {
        "shape": ("numpy (2, 3) float32", "numpy (3, 2) float32"),
        "dtype": ("numpy (3,) float32", "numpy (3,) float64"),
        "kind": ("numpy (3,) float32", "tensor (3,) float32"),
    }
    rows = {r["key"]: r for r in result["compared"]}
    assert rows["meta/name"]["beyond"] == 1 and rows["meta/name"]["max_abs"] is None
    assert rows["meta/step"]["beyond"] == 0 and rows["same"]["beyond"] == 0
    assert checkpoint_tools.main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "only in A (1): only_a" in out and "only in B (1): only_b" in out
    assert "shape: A numpy (2, 3) float32, B numpy (3, 2) float32" in out
    assert "1 of 3 compared keys differ beyond atol=0, rtol=0; 5 key(s) only in one" in out
    assert checkpoint_tools.main(["diff", str(a), str(b), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["only_in_a"] == ["only_a"]


def test_bad_files_and_tolerances_exit_2(tmp_path, capsys):
    good = _save(tmp_path / "good.npz", {"w": np.ones(2, np.float32)})
    (tmp_path / "text.npz").write_text("not a checkpoint")
    np.savez(tmp_path / "plain.npz", w=np.ones(2))
    cases = [
        (["show", str(tmp_path / "missing.npz")], "No such file"),
        (["show", str(tmp_path / "text.npz")], "is not a needle checkpoint"),
        (["diff", str(good), str(tmp_path / "plain.npz")], "is not a needle checkpoint"),
        (["diff", str(good), str(good), "--rtol", "-1"], "rtol must be a finite number >= 0"),
        (["diff", str(good), str(good), "--atol", "nan"], "atol must be a finite number >= 0"),
    ]
    for args, message in cases:
        assert checkpoint_tools.main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(f"needle checkpoint {args[0]}: ") and message in err, err


def test_needle_checkpoint_is_a_subcommand(tmp_path):
    a = _save(tmp_path / "a.npz", {"w": np.ones(2, np.float32)})
    b = _save(tmp_path / "b.npz", {"w": np.array([1.0, 1.5], np.float32)})

    def needle(*args):
        return subprocess.run([sys.executable, "-m", "needle", "checkpoint", *args],
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    shown = needle("show", str(a))
    assert shown.returncode == 0 and "w  " in shown.stdout
    differ = needle("diff", str(a), str(b))
    assert differ.returncode == 1 and "0.5" in differ.stdout
    assert needle("diff", str(a), str(b), "--atol", "0.5").returncode == 0
