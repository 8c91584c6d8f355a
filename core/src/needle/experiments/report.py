"""The comparison: a table of the runs sorted by final test accuracy, and one PNG of curves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .grid import Grid
from .results import Run

__all__ = ["format_table", "plot_runs"]


def format_table(grid: Grid, runs: Sequence[Run]) -> str:
    """The runs sorted by final test accuracy (best first), one row each, with their time."""
    order = sorted(range(len(runs)), key=lambda i: (-runs[i].final("test_acc"), i))
    names = grid.varying() or ["model"]
    rows = [["rank", *names, "test acc", "best test acc", "test loss", "train acc", "seconds"]]
    for rank, i in enumerate(order, start=1):
        run = runs[i]
        best = int(np.argmax(run.history["test_acc"]))
        rows.append(
            [
                str(rank),
                *(str(getattr(run.config, n)) for n in names),
                f"{100 * run.final('test_acc'):.2f}%",
                f"{100 * run.history['test_acc'][best]:.2f}% (epoch {best + 1})",
                f"{run.final('test_loss'):.4f}",
                f"{100 * run.final('train_acc'):.2f}%",
                f"{run.seconds:.1f}",
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    total = sum(r.seconds for r in runs)
    lines.append(f"{len(runs)} run(s) of {len(grid.configs)}, {total:.1f} s of training in all")
    return "\n".join(lines)


def plot_runs(grid: Grid, runs: Sequence[Run], path: str | os.PathLike) -> bool:
    """Draw every run's curves into one PNG: train and test loss and accuracy per epoch.

    Four panels side by side (train loss, test loss, train accuracy, test accuracy against
    epoch), one line per run in the same colour in each panel, and one legend naming each
    run by its configuration.

    Returns:
        False when matplotlib is not installed (nothing is written).
    """
    from ..demo import pyplot

    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    panels = {
        "train_loss": (axes[0, 0], "train loss"),
        "test_loss": (axes[0, 1], "test loss"),
        "train_acc": (axes[1, 0], "train accuracy (%)"),
        "test_acc": (axes[1, 1], "test accuracy (%)"),
    }
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    for i, run in enumerate(runs):
        for key, (ax, _) in panels.items():
            values = np.asarray(run.history[key]) * (100 if key.endswith("acc") else 1)
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, "o-", ms=3, color=colours(i % colours.N),
                    label=grid.label(run.config))  # fmt: skip
    for ax, title in panels.values():
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    columns = min(3, len(labels))
    rows = -(-len(labels) // columns)
    fig.legend(handles, labels, loc="lower center", ncol=columns, frameon=False)
    models_used = ", ".join(sorted({c.model for c in grid.configs}))
    fig.suptitle(f"needle experiment: {models_used} on {grid.data}, {grid.epochs} epoch(s)")
    fig.tight_layout(rect=(0, 0.03 + 0.035 * rows, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
