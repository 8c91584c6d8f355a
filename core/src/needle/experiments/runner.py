"""Training: one configuration from its seed, and a grid run by run into its results file."""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .. import data, init, models, nn, optim
from ..checkpoint import save
from .grid import MODELS, Config, ExperimentError, Grid
from .results import HISTORY_KEYS, RESULTS_NAME, Run, append_run, open_results

__all__ = ["run_config", "run_grid"]


class _FlatImages(data.Dataset):
    """Flattened square images and labels; transforms see each image as ``side x side x 1``."""

    def __init__(self, X: np.ndarray, y: np.ndarray, transforms: list[data.Transform]) -> None:
        super().__init__(transforms)
        self.X, self.y = X, y
        self.side = math.isqrt(X.shape[1])
        if self.side * self.side != X.shape[1]:
            raise ExperimentError(f"images of {X.shape[1]} pixels are not square")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        x = self.X[index]
        if self.transforms:
            x = self.apply_transforms(x.reshape(self.side, self.side, 1)).reshape(-1)
        return x, self.y[index]


def _train_epoch(batches: Iterable[Any], model: nn.Module, opt: optim.Optimizer) -> tuple:
    # The one place a run trains: once ndl.jit exists, the switch to it goes here.
    return models.epoch(batches, model, None, opt, progress=False)


def run_config(
    config: Config,
    epochs: int,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    device: Any,
    *,
    progress: bool = False,
    desc: str = "",
    log: Callable[[str], None] | None = None,
) -> tuple[Run, nn.Module]:
    """Train one configuration from its seed and evaluate it after every epoch.

    numpy's global RNG is seeded with ``config.seed``, then the model is built (for
    ``init="name"`` reinitialized by name and the RNG seeded again, so nothing in the run
    depends on creation order), then it trains with Adam and SoftmaxLoss. With
    ``init="order"``, no augmentation and the demo's defaults a run reproduces
    ``needle demo`` exactly.

    Args:
        config: the configuration.
        epochs: training epochs.
        train: training ``(X (n, pixels) float32, y (n,) int)``.
        test: test data, likewise (never augmented).
        device: the needle device.
        progress: one progress bar over all the run's batches.
        desc: the bar's label.
        log: called with a line after each epoch (None: silent).

    Returns:
        The run (per-epoch train and test loss and accuracy, seconds) and the trained model.
    """
    start = time.perf_counter()
    np.random.seed(config.seed)
    model = MODELS[config.model](config, train[0].shape[1], device)
    if config.init == "name":
        init.reinitialize(model, config.seed)
        np.random.seed(config.seed)
    opt = optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    train_loader = data.DataLoader(
        _FlatImages(*train, config.transforms()), config.batch_size, shuffle=True, device=device
    )
    test_loader = data.DataLoader(_FlatImages(*test, []), config.batch_size, device=device)

    def every_batch() -> Iterator[Any]:
        for _ in range(epochs):
            yield from train_loader

    batches = iter(
        models.progress_bar(every_batch(), epochs * len(train_loader), desc, enabled=progress)
    )
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    for i in range(1, epochs + 1):
        t0 = time.perf_counter()
        train_acc, train_loss = _train_epoch(
            itertools.islice(batches, len(train_loader)), model, opt
        )
        test_acc, test_loss = models.evaluate(model, test_loader, progress=False)
        for key, value in zip(HISTORY_KEYS, (train_loss, train_acc, test_loss, test_acc)):
            history[key].append(float(value))
        if log is not None:
            log(
                f"  epoch {i:2d}/{epochs}  train loss {train_loss:.4f}  "
                f"train acc {100 * train_acc:5.2f}%  test loss {test_loss:.4f}  "
                f"test acc {100 * test_acc:5.2f}%  ({time.perf_counter() - t0:.1f} s)"
            )
    return Run(config, history, time.perf_counter() - start, device.name), model


def _checkpoint_name(config: Config) -> str:
    return "-".join(f"{k}_{v}" for k, v in asdict(config).items()).replace("+", "_") + ".npz"


def run_grid(
    grid: Grid,
    out: str | os.PathLike,
    load_data: Callable[[], tuple[tuple, tuple, str]],
    device: Any,
    *,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> list[Run]:
    """Train the runs of ``grid`` that ``OUT/results.jsonl`` lacks, appending each as it ends.

    Args:
        grid: the grid.
        out: the folder of ``results.jsonl`` and ``checkpoints/``.
        load_data: returns train and test ``(X, y)`` and a description (called only when
            something is left to train).
        device: the needle device.
        force: start the results file afresh (rerun everything).
        progress: a progress bar per run; otherwise a line per epoch.
        log: where lines go.

    Returns:
        Every run of the grid, in grid order.

    Raises:
        ExperimentError: the results file belongs to another grid or is corrupt.
    """
    path = Path(out) / RESULTS_NAME
    done = {run.config: run for run in open_results(path, grid, force)}
    todo = [c for c in grid.configs if c not in done]
    if not todo:
        log(f"all {len(grid.configs)} runs of this grid are in {path} (--force reruns them)")
        return [done[c] for c in grid.configs]
    if done:
        log(f"resuming: {len(done)} of {len(grid.configs)} runs are already in {path}")
    train, test, source = load_data()
    log(f"data: {source}: {len(train[1]):,} training and {len(test[1]):,} test images; "
        f"device {device.name}")  # fmt: skip
    (Path(out) / "checkpoints").mkdir(parents=True, exist_ok=True)
    for number, config in enumerate(grid.configs, start=1):
        if config in done:
            continue
        desc = f"run {number}/{len(grid.configs)} {grid.label(config)}"
        log(desc)
        run, model = run_config(
            config, grid.epochs, train, test, device,
            progress=progress, desc=desc, log=None if progress else log,
        )  # fmt: skip
        run.checkpoint = str(Path("checkpoints") / _checkpoint_name(config))
        meta = {"config": json.dumps(asdict(config)), "epochs": grid.epochs, "data": grid.data,
                "test_acc": run.final("test_acc")}  # fmt: skip
        save({"model": model.state_dict(), "meta": meta}, Path(out) / run.checkpoint)
        append_run(path, run)
        done[config] = run
        log(f"{desc}: test acc {100 * run.final('test_acc'):.2f}% after {grid.epochs} "
            f"epoch(s) ({run.seconds:.1f} s)")  # fmt: skip
    return [done[c] for c in grid.configs]
