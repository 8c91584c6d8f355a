"""needle-cuda's kernels beside PyTorch CUDA, on one GPU, in one process.

Each workload calls the backend-contract function needle itself would call (``needle_cuda._ext``)
and the PyTorch equivalent on the same data, and prints median times and the ratio
``torch_time / needle_time`` (1.0 = as fast as PyTorch, higher is better) next to its goal.
TF32 is off for PyTorch's matmul, so both sides compute true float32 products.

    python benchmarks/bench_gpu.py [--reps 10] [--json results.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import numpy as np

__all__ = ["main"]

GOALS = {"matmul 4096": 0.7, "add 256M": 0.8}


def median_ms(fn: Callable[[], object], sync: Callable[[], object], reps: int) -> float:
    """Median wall time of ``fn`` in milliseconds, the device synchronized around each call."""
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions per workload")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args(argv)

    from needle_cuda import _ext

    reason = _ext.unavailable_reason()
    if reason is not None:
        print(f"needle-cuda cannot run here: {reason}", file=sys.stderr)
        return 2
    import torch

    if not torch.cuda.is_available():
        print("PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    print(
        f"GPU: {torch.cuda.get_device_name(dev)}; torch {torch.__version__}, needle-cuda archs "
        f"{_ext.__build_archs__}, CUDA runtime {_ext.__cuda_runtime_version__}"
    )

    def sync() -> None:
        _ext.synchronize()
        torch.cuda.synchronize()

    def upload(t: torch.Tensor):  # a needle handle holding a copy of t's values
        h = _ext.Array(t.numel())
        _ext.from_numpy(t.cpu().numpy(), h)
        return h

    rows: list[dict[str, object]] = []
    failed: list[str] = []

    @contextmanager
    def guarded(name: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - one broken workload must not hide the rest
            failed.append(name)
            print(f"{name:<28} FAILED: {type(exc).__name__}: {exc}", flush=True)

    def record(name: str, ours: float, theirs: float, note: str = "") -> None:
        ratio = theirs / ours
        goal = GOALS.get(name)
        verdict = "" if goal is None else ("  ok" if ratio >= goal else f"  BELOW goal {goal}")
        rows.append({"workload": name, "needle_ms": ours, "torch_ms": theirs, "ratio": ratio,
                     "goal": goal, "note": note})  # fmt: skip
        print(f"{name:<28} needle {ours:9.3f} ms   torch {theirs:9.3f} ms   "
              f"ratio {ratio:5.2f}{verdict} {note}", flush=True)  # fmt: skip

    # matmul, float32 (TF32 off), aligned and unaligned sizes
    sizes = [1024, 2048] if args.quick else [1024, 2048, 4096, 4095]
    for size in sizes:
        with guarded(f"matmul {size}"):
            a = torch.randn(size, size, device=dev)
            b = torch.randn(size, size, device=dev)
            c = torch.empty(size, size, device=dev)
            ha, hb, hc = upload(a), upload(b), _ext.Array(size * size)
            ours = median_ms(partial(_ext.matmul, ha, hb, hc, size, size, size), sync, args.reps)
            theirs = median_ms(partial(torch.matmul, a, b, out=c), sync, args.reps)
            got = torch.from_numpy(_ext.to_numpy(hc, (size, size), (size, 1), 0)).to(dev)
            err = ((got - c).abs().max() / c.abs().max()).item()
            tflops = 2 * size**3 / ours / 1e9
            note = f"({tflops:.1f} TFLOP/s, max rel diff {err:.1e})"
            record(f"matmul {size}", ours, theirs, note)

    # elementwise add of 256M floats into an existing buffer; sums; transpose + compact
    n = (1 << 24) if args.quick else (1 << 28)
    side = int(n**0.5)
    label = f"{n >> 20}M"
    with guarded(f"add {label}"):
        x = torch.randn(n, device=dev)
        y = torch.randn(n, device=dev)
        z = torch.empty(n, device=dev)
        hx, hy, hz = upload(x), upload(y), _ext.Array(n)
        ours = median_ms(lambda: _ext.ewise_add(hx, hy, hz), sync, args.reps)
        theirs = median_ms(lambda: torch.add(x, y, out=z), sync, args.reps)
        record(f"add {label}", ours, theirs, f"({3 * 4 * n / ours / 1e6:.0f} GB/s)")

    with guarded(f"sum all {label}"):
        one = _ext.Array(1)
        total = torch.empty((), device=dev)
        ours = median_ms(lambda: _ext.reduce_sum(hx, one, n), sync, args.reps)
        theirs = median_ms(partial(torch.sum, x, dim=0, out=total), sync, args.reps)
        want = total.item()
        diff = abs(float(_ext.to_numpy(one, (), (), 0)) - want) / max(1.0, abs(want))
        record(f"sum all {label}", ours, theirs, f"(rel diff {diff:.1e})")

    for cols in (side, 64, 8):
        name = f"sum last axis {n // cols}x{cols}"
        with guarded(name):
            mat = x.view(n // cols, cols)
            hout, tout = _ext.Array(n // cols), torch.empty(n // cols, device=dev)
            ours = median_ms(partial(_ext.reduce_sum, hx, hout, cols), sync, args.reps)
            theirs = median_ms(partial(torch.sum, mat, dim=1, out=tout), sync, args.reps)
            got = torch.from_numpy(_ext.to_numpy(hout, (n // cols,), (1,), 0)).to(dev)
            err = ((got - tout).abs().max() / tout.abs().max()).item()
            record(name, ours, theirs, f"(max rel diff {err:.1e})")

    with guarded(f"transpose+compact {side}^2"):
        square = x.view(side, side)
        view = ((side, side), (1, side), 0)
        ours = median_ms(lambda: _ext.compact(hx, hz, *view), sync, args.reps)
        theirs = median_ms(lambda: z.view(side, side).copy_(square.t()), sync, args.reps)
        got = _ext.to_numpy(hz, (4, 4), (side, 1), 0)
        same = np.array_equal(got, square.t()[:4, :4].cpu().numpy())
        record(f"transpose+compact {side}^2", ours, theirs, f"(values match: {same})")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"gpu": torch.cuda.get_device_name(dev), "results": rows}, fh, indent=2)
    below = [r["workload"] for r in rows if r["goal"] is not None and r["ratio"] < r["goal"]]
    print("all goals met" if not below else f"below goal: {', '.join(map(str, below))}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
