"""``needle experiment`` / needle.experiments: grids of training runs and their comparison.

Grids here are two short runs of one epoch on small data (synthetic 28 x 28 images, or
tiny MNIST idx files written to a temporary folder), on every backend.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import needle as ndl
import numpy as np
import pytest
from needle import data, demo, experiments, models, optim
from needle.experiments import Config, ExperimentError, Grid, Run, grid_from_options, runner


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    X = rng.random((n, 784), dtype=np.float32) * 0.2
    X[np.arange(n), y * 70] = 1.0  # a label-dependent pixel makes the task learnable
    return X, y


TRAIN, TEST = _images(200, 0), _images(100, 1)


def _data() -> tuple[tuple, tuple, str]:
    return TRAIN, TEST, "synthetic test images"


def _no_data() -> tuple[tuple, tuple, str]:
    raise AssertionError("the data were loaded although nothing was left to train")


def _grid(epochs: int = 1, **options: str) -> Grid:
    options = {"hidden": "8,16", "batch_size": "50", **options}
    return grid_from_options(options, epochs, "synthetic test images")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------- the grid


def test_grid_is_the_product_of_the_option_lists():
    grid = grid_from_options({"hidden": "100,150", "augment": "none,flip,crop"}, 10, "d")
    assert [(c.hidden, c.augment) for c in grid.configs] == [
        (100, "none"), (100, "flip"), (100, "crop"), (150, "none"), (150, "flip"), (150, "crop"),
    ]  # fmt: skip
    assert all(c.model == "mlp_resnet" and c.seed == 0 and c.init == "order" for c in grid.configs)
    assert grid.varying() == ["hidden", "augment"]
    assert grid.label(grid.configs[4]) == "hidden=150 augment=flip"
    one = grid_from_options({}, 1, "d")
    assert one.configs == (Config(),) and one.label(Config()) == "mlp_resnet"


def test_values_are_parsed_and_combined_augmentations_accepted():
    grid = grid_from_options(
        {"lr": "0.01, 1e-3", "augment": "flip+crop", "seed": "3", "init": "name"}, 2, "d"
    )
    assert [c.lr for c in grid.configs] == [0.01, 0.001]
    c = grid.configs[0]
    assert (c.augment, c.seed, c.init) == ("flip+crop", 3, "name")
    kinds = [type(t) for t in c.transforms()]
    assert kinds == [data.RandomFlipHorizontal, data.RandomCrop]
    assert Config().transforms() == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({"model": "resnet"}, r"--model: unknown model 'resnet'; valid: mlp_resnet"),
        (
            {"augment": "none,rotate"},
            r"--augment: unknown augmentation 'rotate'; valid: none, "
            r"flip, crop",
        ),
        ({"augment": "flip+rotate"}, r"unknown augmentation 'rotate'"),
        ({"init": "random"}, r"--init: unknown init 'random'; valid: order, name"),
        ({"hidden": "100,abc"}, r"--hidden: 'abc' is not an integer > 0"),
        ({"hidden": "0"}, r"--hidden: '0' is not an integer > 0"),
        ({"lr": "-1"}, r"--lr: '-1' is not a number > 0"),
        ({"lr": "nan"}, r"--lr: 'nan' is not a number > 0"),
        ({"weight_decay": "-0.1"}, r"--weight-decay: '-0.1' is not a number >= 0"),
        ({"seed": "1.5"}, r"--seed: '1.5' is not an integer >= 0"),
        ({"batch_size": "100,,50"}, r"--batch-size: empty value in '100,,50'"),
        ({"hidden": "100,100"}, r"--hidden: 100 is listed twice"),
        ({"width": "3"}, r"unknown options \['width'\]; valid: model, hidden"),
    ],  # fmt: skip
)
def test_bad_values_are_clear_errors(options, message):
    with pytest.raises(ExperimentError, match=message):
        grid_from_options(options, 1, "d")


@pytest.mark.parametrize("epochs", [0, -2, 1.5, True])
def test_epochs_must_be_positive(epochs):
    with pytest.raises(ExperimentError, match="--epochs must be a positive integer"):
        grid_from_options({}, epochs, "d")


# ---------------------------------------------------------------------------- runs


def test_a_run_is_the_demo_loop_seeded(device):
    # Config() with init "order" and no augmentation trains exactly like `needle demo`.
    config = Config(hidden=16, batch_size=50, seed=4)
    run, model = runner.run_config(config, 2, TRAIN, TEST, device)
    np.random.seed(4)
    ref = models.MLPResNet(784, hidden_dim=16, device=device)
    opt = optim.Adam(ref.parameters(), lr=0.001, weight_decay=0.001)
    train = data.DataLoader(data.NDArrayDataset(*TRAIN), 50, shuffle=True, device=device)
    test = data.DataLoader(data.NDArrayDataset(*TEST), 50, device=device)
    for epoch in range(2):
        acc, loss = models.epoch(train, ref, None, opt, progress=False)
        assert run.history["train_loss"][epoch] == loss and run.history["train_acc"][epoch] == acc
        acc, loss = models.evaluate(ref, test, progress=False)
        assert run.history["test_loss"][epoch] == loss and run.history["test_acc"][epoch] == acc
    for (key, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=key)
    assert run.device == device.name and run.seconds > 0


def test_runs_are_seeded_and_the_options_matter(device):
    base = Config(hidden=8, batch_size=50)
    np.random.seed(99)  # the global state before a run does not matter
    first, _ = runner.run_config(base, 1, TRAIN, TEST, device)
    again, _ = runner.run_config(base, 1, TRAIN, TEST, device)
    assert first.history == again.history
    for change in ({"augment": "flip"}, {"seed": 1}, {"init": "name"}, {"lr": 0.01}):
        other, _ = runner.run_config(Config(**{**vars(base), **change}), 1, TRAIN, TEST, device)
        assert other.history != first.history, change


def test_init_by_name_starts_from_the_reinitialized_weights(device, monkeypatch):
    initial: dict[str, np.ndarray] = {}

    def record_and_skip_training(batches, model, opt):
        initial.update({k: v.numpy() for k, v in model.state_dict().items()})
        return 0.0, 0.0

    monkeypatch.setattr(runner, "_train_epoch", record_and_skip_training)
    runner.run_config(Config(hidden=8, init="name", seed=5), 1, TRAIN, TEST, device)
    np.random.seed(12345)  # another global state: the weights depend on the seed 5 only
    expected = ndl.init.reinitialize(models.MLPResNet(784, hidden_dim=8, device=device), 5)
    for key, value in expected.state_dict().items():
        np.testing.assert_array_equal(initial[key], value.numpy(), err_msg=key)


def test_augmentation_sees_28x28_images_before_flattening():
    X = np.arange(2 * 784, dtype=np.float32).reshape(2, 784)
    ds = runner._FlatImages(X, np.array([3, 4]), [data.RandomFlipHorizontal(p=1.0)])
    x, y = ds[1]
    assert y == 4 and x.shape == (784,)
    np.testing.assert_array_equal(x, X[1].reshape(28, 28)[:, ::-1].reshape(784))
    x, _ = runner._FlatImages(X, np.array([3, 4]), [])[0]
    np.testing.assert_array_equal(x, X[0])


# ---------------------------------------------------------------------------- the results file


def test_two_run_grid_writes_results_and_checkpoints(device, tmp_path):
    grid = _grid()
    lines: list[str] = []
    runs = experiments.run_grid(grid, tmp_path, _data, device, log=lines.append)
    assert [r.config.hidden for r in runs] == [8, 16]
    records = _lines(tmp_path / "results.jsonl")
    assert records[0]["format"] == "needle-experiment-results" and records[0]["version"] == 1
    assert records[0]["grid"] == grid.spec()
    assert len(records) == 3
    for record, run in zip(records[1:], runs):
        assert record["config"] == vars(run.config)
        assert set(record["history"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}
        assert all(len(v) == 1 for v in record["history"].values())
        assert record["seconds"] > 0 and record["device"] == device.name
        state = ndl.load(tmp_path / record["checkpoint"], device=device)
        assert json.loads(state["meta"]["config"]) == record["config"]
        assert state["meta"]["test_acc"] == record["history"]["test_acc"][-1]
        assert state["model"]["0.weight"].shape == (784, run.config.hidden)
    assert any("epoch  1/1" in line for line in lines)  # plain lines without a terminal
    grid_again, read = experiments.read_results(tmp_path / "results.jsonl")
    assert grid_again == grid and [r.history for r in read] == [r.history for r in runs]


def test_finished_grid_is_not_rerun_unless_forced(device, tmp_path):
    grid = _grid()
    runs = experiments.run_grid(grid, tmp_path, _data, device, log=lambda s: None)
    before = (tmp_path / "results.jsonl").read_text()
    lines: list[str] = []
    again = experiments.run_grid(grid, tmp_path, _no_data, device, log=lines.append)
    assert [r.history for r in again] == [r.history for r in runs]
    assert (tmp_path / "results.jsonl").read_text() == before
    assert "all 2 runs of this grid are in" in lines[0] and "--force" in lines[0]
    forced = experiments.run_grid(grid, tmp_path, _data, device, force=True, log=lambda s: None)
    assert [r.history for r in forced] == [r.history for r in runs]
    assert len(_lines(tmp_path / "results.jsonl")) == 3


def test_interrupted_grid_resumes_where_it_stopped(device, tmp_path, monkeypatch):
    grid = _grid()
    full = experiments.run_grid(grid, tmp_path / "full", _data, device, log=lambda s: None)
    real_epoch, calls = runner._train_epoch, []

    def interrupted(batches, model, opt):
        calls.append(model)
        if len(calls) == 2:  # the second run is interrupted
            raise KeyboardInterrupt
        return real_epoch(batches, model, opt)

    monkeypatch.setattr(runner, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiments.run_grid(grid, tmp_path, _data, device, log=lambda s: None)
    assert len(_lines(tmp_path / "results.jsonl")) == 2  # the header and the first run
    monkeypatch.setattr(runner, "_train_epoch", real_epoch)
    trained: list[Config] = []
    real_run = runner.run_config
    monkeypatch.setattr(
        runner, "run_config", lambda c, *a, **k: trained.append(c) or real_run(c, *a, **k)
    )
    lines: list[str] = []
    runs = experiments.run_grid(grid, tmp_path, _data, device, log=lines.append)
    assert trained == [grid.configs[1]]
    assert "resuming: 1 of 2 runs are already in" in lines[0]
    assert [r.history for r in runs] == [r.history for r in full]


def test_results_of_another_grid_are_refused(device, tmp_path):
    experiments.run_grid(_grid(), tmp_path, _data, device, log=lambda s: None)
    before = (tmp_path / "results.jsonl").read_text()
    for other in (_grid(hidden="8,32"), _grid(epochs=2), _grid(augment="flip")):
        with pytest.raises(ExperimentError, match=r"holds the results of another grid .*--force"):
            experiments.run_grid(other, tmp_path, _no_data, device)
    other = grid_from_options({"hidden": "8,16", "batch_size": "50"}, 1, "other data")
    with pytest.raises(ExperimentError, match="another grid"):
        experiments.run_grid(other, tmp_path, _no_data, device)
    assert (tmp_path / "results.jsonl").read_text() == before


def test_a_results_file_without_runs_is_started_afresh(device, tmp_path):
    grid = _grid()
    path = tmp_path / "results.jsonl"

    def failing() -> tuple:
        raise ExperimentError("no data here")

    with pytest.raises(ExperimentError, match="no data here"):
        experiments.run_grid(grid, tmp_path, failing, device, log=lambda s: None)
    other = _grid(hidden="8")  # nothing would be lost: it may take the file over
    experiments.run_grid(other, tmp_path, _data, device, log=lambda s: None)
    assert _lines(path)[0]["grid"] == other.spec() and len(_lines(path)) == 2


def _corrupt(tmp_path: Path, device, edit) -> Path:
    experiments.run_grid(_grid(), tmp_path, _data, device, log=lambda s: None)
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: lines.__setitem__(2, lines[2][:40]), r"line 3: corrupt results line"),
        (lambda lines: lines.insert(2, "not json"), r"line 3: corrupt results line"),
        (lambda lines: lines.append(lines[1]), r"line 4: repeats the run of line 2"),
        (
            lambda lines: lines.__setitem__(1, lines[1].replace('"hidden": 8', '"hidden": 9')),
            r"line 2: .*not in this file's grid",
        ),
        (
            lambda lines: lines.__setitem__(2, lines[2].replace('"history"', '"hist"')),
            r"line 3: .*missing history",
        ),
        (
            lambda lines: lines.__setitem__(
                2, lines[2].replace('"test_acc": [', '"test_acc": [1, ')
            ),
            r"line 3: .*history 'test_acc' must list 1 numbers",
        ),
        (lambda lines: lines.__setitem__(0, "{}"), r"line 1: not a needle experiment results"),
    ],  # fmt: skip
)
def test_corrupt_lines_are_reported_with_their_number(device, tmp_path, edit, message):
    path = _corrupt(tmp_path, device, edit)
    before = path.read_text()
    with pytest.raises(ExperimentError, match=message) as info:
        experiments.read_results(path)
    assert str(path) in str(info.value)
    with pytest.raises(ExperimentError, match=message):
        experiments.run_grid(_grid(), tmp_path, _no_data, device)
    assert path.read_text() == before


def test_another_results_version_is_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    header = {"format": "needle-experiment-results", "version": 99, "grid": {}}
    path.write_text(json.dumps(header) + "\n")
    with pytest.raises(ExperimentError, match="version 99, this needle reads version 1"):
        experiments.read_results(path)


# ---------------------------------------------------------------------------- reporting


def _run(hidden: int, test_acc: list[float], seconds: float) -> Run:
    history = {"train_loss": [1.0] * len(test_acc), "train_acc": [0.5] * len(test_acc),
               "test_loss": [0.9] * len(test_acc), "test_acc": test_acc}  # fmt: skip
    return Run(Config(hidden=hidden), history, seconds, "cpu")


def test_table_is_sorted_by_final_test_accuracy_with_times():
    grid = grid_from_options({"hidden": "10,20,30"}, 2, "d")
    runs = [_run(10, [0.5, 0.7], 3.0), _run(20, [0.9, 0.8], 4.5), _run(30, [0.6, 0.95], 2.25)]
    table = experiments.format_table(grid, runs).splitlines()
    assert table[0].split() == ["rank", "hidden", "test", "acc", "best", "test", "acc", "test",
                                "loss", "train", "acc", "seconds"]  # fmt: skip
    assert [row.split()[1] for row in table[1:4]] == ["30", "20", "10"]
    assert "95.00%" in table[1] and "2.2" in table[1]
    assert "90.00% (epoch 1)" in table[2] and "4.5" in table[2]
    assert table[-1] == "3 run(s) of 3, 9.8 s of training in all"


def test_plot_draws_one_png(tmp_path):
    pytest.importorskip("matplotlib")
    grid = grid_from_options({"hidden": "10,20"}, 2, "d")
    path = tmp_path / "sub" / "curves.png"
    assert experiments.plot_runs(grid, [_run(10, [0.5, 0.7], 1), _run(20, [0.6, 0.8], 1)], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_png_is_skipped_and_the_table_printed(tmp_path, monkeypatch,
                                                                     capsys):  # fmt: skip
    monkeypatch.setattr(demo, "pyplot", lambda: None)
    grid = grid_from_options({"hidden": "10,20"}, 2, "d")
    path = tmp_path / "results.jsonl"
    path.write_text(
        json.dumps({"format": "needle-experiment-results", "version": 1, "grid": grid.spec()})
        + "\n" + _run(10, [0.5, 0.7], 1).to_json() + "\n"
    )  # fmt: skip
    assert experiments.main(["--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert "curves: skipped (matplotlib is not installed" in out
    assert "1 run(s) of 2" in out and not (tmp_path / "curves.png").exists()


def test_progress_bar_per_run_instead_of_epoch_lines(device, tmp_path, capsys):
    pytest.importorskip("tqdm")
    lines: list[str] = []
    experiments.run_grid(_grid(), tmp_path, _data, device, progress=True, log=lines.append)
    assert not any("epoch  1/1" in line for line in lines)
    assert [line.split(":")[0] for line in lines if ": test acc" in line] == [
        "run 1/2 hidden=8", "run 2/2 hidden=16"]  # fmt: skip
    assert "run 2/2 hidden=16" in capsys.readouterr().err  # the bar's label


# ---------------------------------------------------------------------------- command line


def _write_idx(folder: Path, prefix: str, X: np.ndarray, y: np.ndarray) -> None:
    pixels = np.round(X * 255).astype(np.uint8)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, len(X), 28, 28) + pixels.tobytes()
    )
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, len(y)) + y.astype(np.uint8).tobytes()
    )


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    folder = tmp_path / "mnist"
    folder.mkdir()
    _write_idx(folder, "train", *TRAIN)
    _write_idx(folder, "t10k", *TEST)
    return folder


def test_command_line_trains_prints_the_table_and_replots(device, tmp_path, mnist_dir, capsys,
                                                          monkeypatch):  # fmt: skip
    out = tmp_path / "runs"
    args = ["--hidden", "8,16", "--batch-size", "50", "--epochs", "1", "--data",
            str(mnist_dir), "--out", str(out), "--device", device.name, "--no-png"]  # fmt: skip
    assert experiments.main(args) == 0
    printed = capsys.readouterr().out
    assert f"MNIST idx files in {mnist_dir.resolve()}: 200 training and 100 test" in printed
    assert "runs sorted by final test accuracy" in printed
    assert "2 run(s) of 2" in printed
    table = printed[printed.index("rank  hidden") :]

    def no_training(*args, **kwargs):
        raise AssertionError("--plot trained")

    monkeypatch.setattr(runner, "run_config", no_training)
    assert experiments.main(["--plot", str(out / "results.jsonl"), "--no-png"]) == 0
    assert table in capsys.readouterr().out
    assert experiments.main(args) == 0  # the finished grid again: nothing trains
    assert "all 2 runs of this grid are in" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "unknown model 'nope'; valid: mlp_resnet"),
        (["--augment", "blur"], "unknown augmentation 'blur'; valid: none, flip, crop"),
        (["--plot", "missing.jsonl"], "No such file"),
        (["--device", "nodevice"], "nodevice"),
    ],
)
def test_command_line_bad_input_exits_2(args, message, tmp_path, capsys):
    assert experiments.main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("needle experiment: ") and message in err


def test_needle_experiment_is_a_subcommand(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "needle", "experiment", "--hidden", "x", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--hidden: 'x' is not an integer > 0" in result.stderr


def test_command_line_unusable_out_folder_exits_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert experiments.main(["--out", str(tmp_path / "file" / "runs"), "--epochs", "1"]) == 2
    assert "Not a directory" in capsys.readouterr().err
