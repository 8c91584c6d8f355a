"""``needle checkpoint show`` and ``needle checkpoint diff``: look into checkpoint files.

``show`` lists a checkpoint's entries (key, kind, shape, dtype, size) and its stored
metadata (the format, and every value that is not an array: strings, numbers, None).
``diff`` compares two checkpoints key by key: keys only in one, kind, shape or dtype
differences, and for the others the largest absolute and relative difference, largest
first. It exits with status 1 when they differ beyond ``--atol``/``--rtol`` (numpy's rule,
``|a - b| <= atol + rtol * |b|``, elementwise; NaN equals NaN at the same place), 0 when
they do not, and 2 when a file cannot be read. Files are read with
:func:`needle.checkpoint.read_raw`: nothing is executed and nothing moves to a device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, read_raw

__all__ = ["show", "diff", "main"]

# Kinds whose value is an array in the file; the others are metadata (scalars, text, None).
ARRAY_KINDS = ("tensor", "ndarray", "numpy")


def _size(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} B"
    if nbytes < 1024**2:
        return f"{nbytes / 1024:.1f} KiB"
    return f"{nbytes / 1024**2:.1f} MiB"


def _json(data: Any) -> str:
    """Strict JSON: infinite differences are written as the strings "inf" / "-inf"."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(data), indent=2, allow_nan=False)


def _scalar(kind: str, array: Any) -> Any:
    """A metadata value as plain Python data."""
    if kind == "none":
        return None
    if kind == "dict":
        return {}
    return array.item() if isinstance(array, np.ndarray) else array


def show(path: str | os.PathLike) -> dict[str, Any]:
    """What ``needle checkpoint show`` prints, as plain data.

    Returns:
        ``{"path", "format", "version", "file_bytes", "entries": [{"key", "kind", "shape",
        "dtype", "size", "nbytes"}], "metadata": [{"key", "kind", "value"}]}``, in the
        order the keys were saved.

    Raises:
        CheckpointError: ``path`` is not a needle checkpoint.
        FileNotFoundError: there is no such file.
    """
    header, raw = read_raw(path)
    entries, metadata = [], []
    for key, (kind, array) in raw.items():
        if kind in ARRAY_KINDS:
            entries.append(
                {
                    "key": key,
                    "kind": kind,
                    "shape": list(array.shape),
                    "dtype": str(array.dtype),
                    "size": int(array.size),
                    "nbytes": int(array.nbytes),
                }
            )
        else:
            metadata.append({"key": key, "kind": kind, "value": _scalar(kind, array)})
    return {
        "path": os.fspath(path),
        "format": header.get("format"),
        "version": header.get("version"),
        "file_bytes": os.path.getsize(path),
        "entries": entries,
        "metadata": metadata,
    }


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows
    ]


def _print_show(info: dict[str, Any]) -> None:
    entries = info["entries"]
    print(f"{info['path']}: {info['format']} version {info['version']}, "
          f"{_size(info['file_bytes'])} on disk")  # fmt: skip
    values = sum(e["size"] for e in entries)
    nbytes = sum(e["nbytes"] for e in entries)
    print(f"entries: {len(entries)} ({values:,} values, {_size(nbytes)})")
    if entries:
        rows = [["key", "kind", "shape", "dtype", "values", "bytes"]]
        rows += [
            [e["key"], e["kind"], str(tuple(e["shape"])), e["dtype"], f"{e['size']:,}",
             _size(e["nbytes"])]
            for e in entries
        ]  # fmt: skip
        print("\n".join(_table(rows)))
    print(f"metadata: {len(info['metadata'])} value(s)")
    for m in info["metadata"]:
        print(f"  {m['key']} ({m['kind']}): {m['value']!r}")


def _compare_arrays(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Largest absolute and relative (to ``b``) differences and the count beyond tolerance."""
    if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
        beyond = int(a.size) if not np.array_equal(a, b) else 0
        return {"max_abs": None, "max_rel": None, "beyond": beyond}
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        delta = np.where(same, 0.0, np.abs(a64 - b64))
        delta = np.where(np.isnan(delta), np.inf, delta)  # NaN against a number, inf - inf
        scale = np.abs(b64)
        rel = np.where(delta == 0, 0.0, delta / np.where(scale > 0, scale, 0.0))
        rel = np.where(np.isnan(rel), np.inf, rel)
        beyond = int(np.count_nonzero(~same & ~(delta <= atol + rtol * scale)))
    return {
        "max_abs": float(delta.max()) if delta.size else 0.0,
        "max_rel": float(rel.max()) if rel.size else 0.0,
        "beyond": beyond,
    }


def diff(
    path_a: str | os.PathLike, path_b: str | os.PathLike, atol: float = 0.0, rtol: float = 0.0
) -> dict[str, Any]:
    """Compare two checkpoints key by key; what ``needle checkpoint diff`` prints.

    Args:
        path_a: the first checkpoint (A).
        path_b: the second (B); relative differences are relative to B.
        atol: absolute tolerance.
        rtol: relative tolerance.

    Returns:
        ``{"a", "b", "atol", "rtol", "only_in_a", "only_in_b", "mismatched": [{"key", "a",
        "b"}], "compared": [{"key", "kind", "size", "max_abs", "max_rel", "beyond"}],
        "differ": bool}``. ``compared`` is sorted by largest absolute difference
        (non-numeric values, compared for equality, carry None); ``differ`` is true when a key
        is only in one file, its kind, shape or dtype differs, or a value differs beyond the
        tolerance.

    Raises:
        ValueError: a tolerance is negative or not finite.
        CheckpointError: a file is not a needle checkpoint.
    """
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {tol}")
    _, raw_a = read_raw(path_a)
    _, raw_b = read_raw(path_b)
    mismatched, compared = [], []
    for key in (k for k in raw_a if k in raw_b):
        (kind_a, a), (kind_b, b) = raw_a[key], raw_b[key]
        arrays = kind_a in ARRAY_KINDS or kind_b in ARRAY_KINDS
        if kind_a != kind_b or (arrays and (a.shape != b.shape or a.dtype != b.dtype)):
            mismatched.append({"key": key, "a": _describe(kind_a, a), "b": _describe(kind_b, b)})
            continue
        if kind_a in ARRAY_KINDS or kind_a in ("int", "float", "bool"):
            row = _compare_arrays(np.asarray(a), np.asarray(b), atol, rtol)
        else:  # text, None, an empty dict: equal or not
            same = _scalar(kind_a, a) == _scalar(kind_b, b)
            row = {"max_abs": None, "max_rel": None, "beyond": 0 if same else 1}
        size = int(np.asarray(a).size) if a is not None else 1
        compared.append({"key": key, "kind": kind_a, "size": size, **row})
    compared.sort(
        key=lambda r: (
            -(r["max_abs"] if r["max_abs"] is not None else (math.inf if r["beyond"] else -1)),
            r["key"],
        )
    )
    only_a = [k for k in raw_a if k not in raw_b]
    only_b = [k for k in raw_b if k not in raw_a]
    return {
        "a": os.fspath(path_a),
        "b": os.fspath(path_b),
        "atol": atol,
        "rtol": rtol,
        "only_in_a": only_a,
        "only_in_b": only_b,
        "mismatched": mismatched,
        "compared": compared,
        "differ": bool(only_a or only_b or mismatched or any(r["beyond"] for r in compared)),
    }


def _describe(kind: str, array: Any) -> str:
    if kind in ARRAY_KINDS:
        return f"{kind} {tuple(array.shape)} {array.dtype}"
    return kind


def _num(x: float | None) -> str:
    return "-" if x is None else ("0" if x == 0 else f"{x:.3g}")


def _print_diff(result: dict[str, Any]) -> None:
    print(f"A: {result['a']}")
    print(f"B: {result['b']}")
    for side in ("a", "b"):
        keys = result[f"only_in_{side}"]
        if keys:
            print(f"only in {side.upper()} ({len(keys)}): {', '.join(keys)}")
    if result["mismatched"]:
        print(f"kind, shape or dtype differs ({len(result['mismatched'])}):")
        for m in result["mismatched"]:
            print(f"  {m['key']}: A {m['a']}, B {m['b']}")
    compared = result["compared"]
    tol = f"atol={result['atol']:g}, rtol={result['rtol']:g}"
    if compared:
        print(f"compared ({len(compared)}), largest difference first ({tol}):")
        rows = [["key", "max abs diff", "max rel diff", "beyond tolerance"]]
        rows += [
            [r["key"], _num(r["max_abs"]), _num(r["max_rel"]), f"{r['beyond']:,} / {r['size']:,}"]
            for r in compared
        ]
        print("\n".join(_table(rows)))
    if not result["differ"]:
        same = "identical" if result["atol"] == result["rtol"] == 0 else f"equal within {tol}"
        print(f"result: {same} ({len(compared)} keys)")
        return
    differing = sum(1 for r in compared if r["beyond"])
    reasons = (
        [f"{differing} of {len(compared)} compared keys differ beyond {tol}"] if compared else []
    )
    unmatched = len(result["only_in_a"]) + len(result["only_in_b"]) + len(result["mismatched"])
    if unmatched:
        reasons.append(f"{unmatched} key(s) only in one file or of another kind, shape or dtype")
    print(f"result: DIFFERENT: {'; '.join(reasons)}")


def build_parser() -> argparse.ArgumentParser:
    """The options of ``needle checkpoint``."""
    p = argparse.ArgumentParser(
        prog="needle checkpoint", description="Inspect and compare needle checkpoint files."
    )
    sub = p.add_subparsers(dest="action", required=True)
    show_p = sub.add_parser("show", help="entries, shapes, dtypes, sizes and metadata of a file")
    show_p.add_argument("file", type=Path)
    show_p.add_argument("--json", action="store_true", help="machine-readable output")
    diff_p = sub.add_parser(
        "diff", help="compare two files; exit 1 when they differ beyond the tolerances"
    )
    diff_p.add_argument("a", type=Path, metavar="A")
    diff_p.add_argument("b", type=Path, metavar="B")
    diff_p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")
    diff_p.add_argument(
        "--rtol", type=float, default=0.0, help="tolerance relative to B (default 0)"
    )
    diff_p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``needle checkpoint``; returns the exit status (1: the files differ; 2: an error)."""
    args = build_parser().parse_args(argv)
    try:
        if args.action == "show":
            info = show(args.file)
        else:
            result = diff(args.a, args.b, atol=args.atol, rtol=args.rtol)
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"needle checkpoint {args.action}: {exc}", file=sys.stderr)
        return 2
    if args.action == "show":
        if args.json:
            print(_json(info))
        else:
            _print_show(info)
        return 0
    if args.json:
        print(_json(result))
    else:
        _print_diff(result)
    return 1 if result["differ"] else 0
