"""Kernel benchmarks: every installed needle backend beside plain numpy and PyTorch CPU.

Each workload runs the same computation on float32 data (``--dtype float64``: float64) in one
process: needle backends
through their kernel functions on handles (results into an existing buffer, as the
training loop's kernels do), numpy and PyTorch through their own ``out=`` calls. conv2d
goes through needle's op (the backend's conv2d where declared, else im2col + matmul).

    python benchmarks/bench_ops.py                  # everything
    python benchmarks/bench_ops.py --only matmul    # a subset
    python benchmarks/bench_ops.py --dtype float64  # the same on float64 (contract v2 backends)

For comparable numbers unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in that command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Table, arg_parser, compare, load_torch, machine_summary, needle_devices

Builder = Callable[[], Callable[[], Any]]
RNG = np.random.default_rng(0)
BIG = 1 << 24  # 16M floats
SIDE = 4096
DTYPE = "float32"  # set by --dtype


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape, dtype=DTYPE)


def _array(mod: Any, size: int) -> Any:
    """A handle of ``size`` elements of DTYPE (a float32 one as contract v1 makes it)."""
    return mod.Array(size) if DTYPE == "float32" else mod.Array(size, DTYPE)


def _put(mod: Any, values: np.ndarray) -> Any:
    handle = _array(mod, values.size)
    mod.from_numpy(np.ascontiguousarray(values), handle)
    return handle


def _torch_dtype(t: Any) -> Any:
    return getattr(t, DTYPE)


def matmul(n: int) -> dict[str, Any]:
    a, b = _rand(n, n), _rand(n, n)

    def needle(dev: Any) -> Callable[[], Any]:
        mod = dev.mod
        ha, hb, out = _put(mod, a), _put(mod, b), _array(mod, n * n)
        return lambda: mod.matmul(ha, hb, out, n, n, n)

    def numpy() -> Callable[[], Any]:
        out = np.empty((n, n), DTYPE)
        return lambda: np.matmul(a, b, out=out)

    def torch(t: Any) -> Callable[[], Any]:
        ta, tb, out = t.from_numpy(a), t.from_numpy(b), t.empty(n, n, dtype=_torch_dtype(t))
        return lambda: t.matmul(ta, tb, out=out)

    return {"needle": needle, "numpy": numpy, "torch": torch}


def elementwise(name: str) -> dict[str, Any]:
    a, b = _rand(BIG), _rand(BIG)
    kernel = {"add": "ewise_add", "mul": "ewise_mul", "exp": "ewise_exp"}[name]
    np_fn = {"add": np.add, "mul": np.multiply, "exp": np.exp}[name]
    unary = name == "exp"

    def needle(dev: Any) -> Callable[[], Any]:
        mod, fn = dev.mod, getattr(dev.mod, kernel)
        ha, hb, out = _put(mod, a), _put(mod, b), _array(mod, BIG)
        mod.fill(out, 0.0)  # touch the pages before timing
        return (lambda: fn(ha, out)) if unary else (lambda: fn(ha, hb, out))

    def numpy() -> Callable[[], Any]:
        out = np.zeros(BIG, DTYPE)
        return (lambda: np_fn(a, out=out)) if unary else (lambda: np_fn(a, b, out=out))

    def torch(t: Any) -> Callable[[], Any]:
        ta, tb, out = t.from_numpy(a), t.from_numpy(b), t.zeros(BIG, dtype=_torch_dtype(t))
        t_fn = {"add": t.add, "mul": t.mul, "exp": t.exp}[name]
        return (lambda: t_fn(ta, out=out)) if unary else (lambda: t_fn(ta, tb, out=out))

    return {"needle": needle, "numpy": numpy, "torch": torch}


def summation(last_axis: bool) -> dict[str, Any]:
    a = _rand(SIDE, SIDE)
    reduce_size = SIDE if last_axis else SIDE * SIDE

    def needle(dev: Any) -> Callable[[], Any]:
        mod = dev.mod
        ha, out = _put(mod, a), _array(mod, a.size // reduce_size)
        return lambda: mod.reduce_sum(ha, out, reduce_size)

    def numpy() -> Callable[[], Any]:
        out = np.empty(SIDE, DTYPE)
        return (lambda: np.sum(a, axis=1, out=out)) if last_axis else (lambda: a.sum())

    def torch(t: Any) -> Callable[[], Any]:
        ta, out = t.from_numpy(a), t.empty(SIDE, dtype=_torch_dtype(t))
        return (lambda: t.sum(ta, dim=1, out=out)) if last_axis else (lambda: ta.sum())

    return {"needle": needle, "numpy": numpy, "torch": torch}


def transpose_compact() -> dict[str, Any]:
    a = _rand(SIDE, SIDE)

    def needle(dev: Any) -> Callable[[], Any]:
        mod = dev.mod
        ha, out = _put(mod, a), _array(mod, a.size)
        mod.fill(out, 0.0)
        return lambda: mod.compact(ha, out, (SIDE, SIDE), (1, SIDE), 0)

    def numpy() -> Callable[[], Any]:
        out = np.zeros_like(a)
        return lambda: np.copyto(out, a.T)

    def torch(t: Any) -> Callable[[], Any]:
        ta, out = t.from_numpy(a), t.zeros(SIDE, SIDE, dtype=_torch_dtype(t))
        return lambda: out.copy_(ta.t())

    return {"needle": needle, "numpy": numpy, "torch": torch}


def conv2d(n: int = 32, cin: int = 3, cout: int = 64, hw: int = 32, k: int = 3) -> dict[str, Any]:
    x, w = _rand(n, hw, hw, cin), _rand(k, k, cin, cout)  # NHWC, (k, k, cin, cout)

    def needle(dev: Any) -> Callable[[], Any]:
        from needle.backend_ndarray import NDArray
        from needle.ops.conv import conv2d as nd_conv2d

        hx, hw_ = NDArray.from_numpy(x, dev), NDArray.from_numpy(w, dev)
        return lambda: nd_conv2d(hx, hw_, 1, 1)

    def numpy() -> Callable[[], Any]:
        def run() -> np.ndarray:
            xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
            return np.tensordot(win, w, axes=([4, 5, 3], [0, 1, 2]))

        return run

    def torch(t: Any) -> Callable[[], Any]:
        tx = t.from_numpy(x.transpose(0, 3, 1, 2).copy())  # torch's native NCHW
        tw = t.from_numpy(w.transpose(3, 2, 0, 1).copy())  # (cout, cin, k, k)

        def run() -> Any:
            with t.no_grad():
                return t.nn.functional.conv2d(tx, tw, padding=1)

        return run

    return {"needle": needle, "numpy": numpy, "torch": torch}


WORKLOADS: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    *((f"matmul n={n}", lambda n=n: matmul(n)) for n in (256, 512, 1024, 2048)),
    *((f"{op} 16M (into out)", lambda op=op: elementwise(op)) for op in ("add", "mul", "exp")),
    ("sum 4096x4096 last axis", lambda: summation(True)),
    ("sum 4096x4096 all", lambda: summation(False)),
    ("transpose+compact 4096x4096", transpose_compact),
    ("conv2d 32x3x32x32 -> 64, k=3 pad 1", conv2d),
]


def main(argv: list[str] | None = None) -> None:
    global DTYPE
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="the data's dtype"
    )
    args = parser.parse_args(argv)
    DTYPE = args.dtype
    devices = [d for d in needle_devices(args.backends) if d.supports(DTYPE, "arithmetic")]
    torch = None if args.no_torch else load_torch()
    print(machine_summary(torch))
    label = "best" if args.best else "median"
    title = f"needle kernel benchmarks, {DTYPE} ({label} wall time)"
    table = Table(title, references=("torch", "numpy"))
    for name, make in WORKLOADS:
        if args.only and not any(s in name for s in args.only):
            continue
        builders = make()
        fns = {dev.name: builders["needle"](dev) for dev in devices}
        if not args.no_numpy:
            fns["numpy"] = builders["numpy"]()
        if torch is not None:
            fns["torch"] = builders["torch"](torch)
        stat = "min" if args.best else "median"
        table.add(name, compare(fns, min_seconds=args.min_seconds, stat=stat))
        print(f"  {name}: done", file=sys.stderr, flush=True)
    table.print()


if __name__ == "__main__":
    main()
