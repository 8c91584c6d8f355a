"""``needle experiment``: train a grid of configurations and compare the runs.

Every configuration option takes a comma-separated list; the grid is their product::

    needle experiment --model mlp_resnet --hidden 100,150 --augment none,flip,crop \\
        --epochs 10 --out runs/

trains six runs on the demo's digits (or MNIST idx files given with ``--data``). Each
run seeds numpy's global RNG with its ``seed`` first, so it is reproducible on its own.
When a run ends, one JSON line (configuration, per-epoch train and test loss and
accuracy, seconds) is appended to ``OUT/results.jsonl`` and its final weights are saved
under ``OUT/checkpoints/``. The same command again trains only the runs the file lacks (an
interrupted grid resumes; a finished one is not rerun unless ``--force``); a results file
of another grid is refused. At the end it prints the runs sorted by final test accuracy
and draws their curves side by side into one PNG. ``--plot FILE`` redraws both from a
results file without training.

The same from Python::

    from needle import experiments

    grid = experiments.grid_from_options({"hidden": "100,150"}, epochs=3, data_source="digits")
    runs = experiments.run_grid(grid, "runs", needle.demo.load_digits, ndl.default_device())
    print(experiments.format_table(grid, runs))
"""

from __future__ import annotations

from .command import build_parser, main
from .grid import (
    AUGMENTS,
    DIGITS,
    INITS,
    MODELS,
    OPTIONS,
    Config,
    ExperimentError,
    Grid,
    grid_from_options,
)
from .report import format_table, plot_runs
from .results import RESULTS_NAME, Run, read_results
from .runner import run_config, run_grid

__all__ = [
    "Config",
    "Grid",
    "Run",
    "ExperimentError",
    "DIGITS",
    "MODELS",
    "AUGMENTS",
    "INITS",
    "OPTIONS",
    "RESULTS_NAME",
    "grid_from_options",
    "run_config",
    "run_grid",
    "read_results",
    "format_table",
    "plot_runs",
    "build_parser",
    "main",
]
