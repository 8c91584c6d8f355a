"""The results file: a header line naming the grid, then one JSON line per finished run."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .grid import Config, ExperimentError, Grid

__all__ = [
    "RESULTS_FORMAT",
    "RESULTS_VERSION",
    "RESULTS_NAME",
    "HISTORY_KEYS",
    "Run",
    "read_results",
    "open_results",
    "append_run",
]

RESULTS_FORMAT = "needle-experiment-results"
RESULTS_VERSION = 1
RESULTS_NAME = "results.jsonl"
HISTORY_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")


@dataclass
class Run:
    """One finished run: what a results line holds."""

    config: Config
    history: dict[str, list[float]]
    seconds: float
    device: str
    checkpoint: str = ""

    def __post_init__(self) -> None:
        # Kept to the millisecond the results file stores, so a table printed after training
        # and one redrawn from the file add up to the same total.
        self.seconds = round(float(self.seconds), 3)

    def final(self, key: str) -> float:
        """The last epoch's value of ``key`` (one of :data:`HISTORY_KEYS`)."""
        return self.history[key][-1]

    def to_json(self) -> str:
        """The run as one results line (without the newline)."""
        record = {
            "config": asdict(self.config),
            "history": self.history,
            "seconds": self.seconds,
            "device": self.device,
            "checkpoint": self.checkpoint,
        }
        return json.dumps(record)


def _header(grid: Grid) -> str:
    return json.dumps({"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "grid": grid.spec()})


def _run_from_record(record: Any, grid: Grid) -> Run:
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("config", "history", "seconds") if k not in record]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    try:
        config = Config(**record["config"])
    except TypeError as exc:
        raise ValueError(f"bad configuration ({exc})") from None
    if config not in grid.configs:
        raise ValueError(f"its configuration is not in this file's grid: {asdict(config)}")
    history = record["history"]
    if not isinstance(history, dict) or set(history) != set(HISTORY_KEYS):
        raise ValueError(f"history must hold exactly {', '.join(HISTORY_KEYS)}")
    for key in HISTORY_KEYS:
        values = history[key]
        if not isinstance(values, list) or len(values) != grid.epochs:
            raise ValueError(f"history {key!r} must list {grid.epochs} numbers")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"history {key!r} holds something other than numbers")
    seconds = record["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError("seconds must be a number")
    return Run(
        config,
        {k: [float(v) for v in history[k]] for k in HISTORY_KEYS},
        float(seconds),
        str(record.get("device", "")),
        str(record.get("checkpoint", "")),
    )


def read_results(path: str | os.PathLike) -> tuple[Grid, list[Run]]:
    """The grid and the finished runs of a results file, in file order.

    Raises:
        ExperimentError: the file is not a results file, or a line is corrupt, repeats a run
            or belongs to another grid; the message names the file and the line number.
        FileNotFoundError: there is no such file.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        lines = f.read().split("\n")
    try:
        header = json.loads(lines[0])
    except ValueError:
        header = None
    if (
        not isinstance(header, dict)
        or header.get("format") != RESULTS_FORMAT
        or "grid" not in header
    ):
        raise ExperimentError(f"{path}, line 1: not a needle experiment results file")
    if header.get("version") != RESULTS_VERSION:
        raise ExperimentError(
            f"{path}: results format version {header.get('version')}, this needle reads "
            f"version {RESULTS_VERSION}"
        )
    try:
        grid = Grid.from_spec(header["grid"])
    except ExperimentError as exc:
        raise ExperimentError(f"{path}, line 1: {exc}") from None
    runs: list[Run] = []
    seen: dict[Config, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            run = _run_from_record(json.loads(line), grid)
        except ValueError as exc:  # json's JSONDecodeError included
            raise ExperimentError(
                f"{path}, line {number}: corrupt results line ({exc}); delete the line to "
                "run its configuration again"
            ) from None
        if run.config in seen:
            raise ExperimentError(
                f"{path}, line {number}: repeats the run of line {seen[run.config]}"
            )
        seen[run.config] = number
        runs.append(run)
    return grid, runs


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".needle-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def append_run(path: Path, run: Run) -> None:
    """Append ``run`` to the results file ``path`` as one line, synced to disk."""
    # One write per run, so an interruption loses at most the run in progress.
    with path.open("a", encoding="utf-8") as f:
        f.write(run.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def open_results(path: Path, grid: Grid, force: bool) -> list[Run]:
    """The runs already in ``path`` for ``grid``, or ``[]`` after starting the file afresh.

    A file is started afresh when it is missing or empty, holds no run yet, or ``force``.

    Raises:
        ExperimentError: ``path`` holds runs of another grid (and not ``force``), or is
            corrupt.
    """
    if path.exists() and path.stat().st_size and not force:
        old_grid, runs = read_results(path)
        if old_grid != grid and runs:
            raise ExperimentError(
                f"{path} holds the results of another grid ({old_grid.describe()}), not of "
                f"this one ({grid.describe()}); choose another --out, or pass --force to "
                "replace it"
            )
        if runs:
            return runs
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, _header(grid) + "\n")
    return []
