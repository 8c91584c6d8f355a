"""Shared benchmark machinery: find the contenders, time callables, print tables of ratios.

A benchmark script builds, for each workload, one zero-argument callable per *contender*
(every installed needle backend, plain numpy, PyTorch CPU when installed), times them with
:func:`compare` in this one process, and prints a :class:`Table`. ``compare`` interleaves the
contenders round by round, so load from elsewhere on the machine hits them alike. Ratios are speeds
relative to a reference column: ``2.0x`` means twice as fast as the reference, ``0.5x``
half as fast. Benchmarks print; they never assert timings.

Typical use::

    table = Table("ops", references=("torch", "numpy"))
    for name, fns in workloads:  # fns: {"cpu": callable, "numpy": callable, ...}
        table.add(name, compare(fns))
    table.print()
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Table",
    "compare",
    "median_time",
    "needle_devices",
    "load_torch",
    "machine_summary",
    "arg_parser",
]


def median_time(
    fn: Callable[[], Any],
    *,
    warmup: int = 2,
    min_repeat: int = 5,
    max_repeat: int = 1000,
    min_seconds: float = 0.5,
    sync: Callable[[], Any] | None = None,
) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls.

    Repeats until both ``min_repeat`` calls and ``min_seconds`` of timing have passed (at
    most ``max_repeat`` calls). ``sync`` runs after each call inside the timing, for devices
    that return before the work is done.
    """
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeat and (
        len(times) < min_repeat or time.perf_counter() - start < min_seconds
    ):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(
    fns: dict[str, Callable[[], Any]],
    *,
    warmup: int = 2,
    min_rounds: int = 5,
    max_rounds: int = 50,
    min_seconds: float = 1.0,
    sample_seconds: float = 0.02,
    settle_seconds: float = 0.3,
    stat: str = "median",
) -> dict[str, float]:
    """Median (or ``stat="min"``: best) seconds per call of each of ``fns``, timed in
    interleaved rounds.

    Each contender is warmed up, then calibrated to ``k`` calls per sample (a sample lasts
    about ``sample_seconds``); every round takes one sample of each contender in turn.
    Rounds continue until ``min_rounds`` and ``min_seconds`` in all (``max_rounds`` at most).
    After each sample the process sleeps ``settle_seconds``, so the thread pools of one
    library (OpenBLAS spins 0.1-0.2 s after a call, OpenMP less) are asleep again before the
    next library runs: each is timed with the cores to itself, as it would be alone.
    """
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        calls[name] = max(1, int(sample_seconds / max(time.perf_counter() - t0, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for rounds in range(max_rounds):
        if rounds >= min_rounds and time.perf_counter() - start >= min_seconds:
            break
        for name, fn in fns.items():
            k = calls[name]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - t0) / k)
            time.sleep(settle_seconds)
    pick = min if stat == "min" else statistics.median
    return {name: pick(times) for name, times in samples.items()}


def needle_devices(names: Iterable[str] | None = None) -> list[Any]:
    """The needle devices that can run here (``ndl.all_devices()``), optionally only ``names``."""
    import needle as ndl

    devices = ndl.all_devices()
    if names is not None:
        wanted = set(names)
        devices = [d for d in devices if d.name in wanted]
    return devices


def load_torch(threads: int | None = None) -> Any | None:
    """PyTorch when it is installed (``None`` otherwise), optionally with ``threads`` threads."""
    try:
        import torch
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    return torch


def machine_summary(torch: Any | None = None) -> str:
    """One line naming the machine facts that make timings comparable."""
    import numpy as np

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    parts = [f"{cores} cores", f"numpy {np.__version__}"]
    if torch is not None:
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    for var in ("NEEDLE_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            parts.append(f"{var}={os.environ[var]}")
    return ", ".join(parts)


def arg_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark script shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--backends", nargs="*", default=None, help="needle backends to run (default: all)"
    )
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--no-numpy", action="store_true", help="leave plain numpy out")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="run only workloads whose name contains one of these",
    )
    parser.add_argument(
        "--min-seconds", type=float, default=1.0, help="timing per workload (all contenders)"
    )
    parser.add_argument(
        "--best",
        action="store_true",
        help="report the best sample instead of the median (steadier on a shared machine)",
    )
    return parser


def _format_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


@dataclass
class Table:
    """Rows of median times per contender, printed with speed ratios against references.

    ``references`` name the columns ratios are taken against (those present in a row); every
    other column gets one ratio column per reference, ``t_reference / t_column``.
    """

    title: str
    references: Sequence[str] = ("torch", "numpy")
    rows: list[tuple[str, dict[str, float | None], str]] = field(default_factory=list)

    def add(self, workload: str, times: dict[str, float | None], note: str = "") -> None:
        """Record one workload's times (seconds; ``None`` where a contender cannot run it)."""
        self.rows.append((workload, dict(times), note))

    def columns(self) -> list[str]:
        cols: list[str] = []
        for _, times, _ in self.rows:
            cols += [c for c in times if c not in cols]
        return cols

    def ratio_columns(self) -> list[tuple[str, str]]:
        cols = self.columns()
        refs = [r for r in self.references if r in cols]
        return [(c, r) for r in refs for c in cols if c not in self.references]

    def render(self) -> str:
        cols, ratios = self.columns(), self.ratio_columns()
        header = ["workload", *cols, *(f"{c} vs {r}" for c, r in ratios)]
        if any(note for _, _, note in self.rows):
            header.append("note")
        lines = []
        for workload, times, note in self.rows:
            cells = [workload, *(_format_time(times.get(c)) for c in cols)]
            for c, r in ratios:
                tc, tr = times.get(c), times.get(r)
                cells.append(f"{tr / tc:.2f}x" if tc and tr else "-")
            if len(header) > len(cells):
                cells.append(note)
            lines.append(cells)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
        fmt = lambda cells: "  ".join(  # noqa: E731
            str(x).ljust(w) if i == 0 else str(x).rjust(w)
            for i, (x, w) in enumerate(zip(cells, widths))
        )
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        out = [self.title, rule, fmt(header), rule, *(fmt(cells) for cells in lines), rule]
        out.append("ratios are speeds: reference time / column time (above 1.00x: faster)")
        return "\n".join(out)

    def print(self) -> None:
        print(self.render(), flush=True)
