"""Training-step benchmarks: needle's reference models, eager and through ``ndl.jit``, beside
PyTorch CPU eager, in one process, at 1 and 2 threads.

Each workload times one full training step (forward, softmax loss, backward, optimizer
update) on a fixed random batch. Every needle backend gets two columns, ``<backend>`` (eager,
``loss.backward(create_graph=False)`` as needle's training helpers do) and ``<backend>-jit``
(the same step recorded once by ``ndl.jit`` and replayed), beside ``torch``:

* ``mlp_resnet_adam`` / ``mlp_resnet_sgd``: MLPResNet(784, 100), batch 100 (MNIST-sized);
* ``resnet9``: ResNet9, batch 128 of 3 x 32 x 32 images (Adam);
* ``lstm_lm``: LanguageModel(LSTM), sequence 20, batch 20, embedding and hidden 100,
  vocabulary 10,000 (SGD, as the course trains it);
* ``transformer_lm``: LanguageModel(Transformer), 2 layers, d_model 128, sequence 32,
  batch 16, vocabulary 10,000 (Adam).

Then, unless ``--no-memory``: the peak RSS of 20 training steps of each workload and contender,
each in a fresh process that imports both libraries (same baseline), and a flatness check:
1,000 MLPResNet steps through a DataLoader on each needle backend, eager (the course's
``loss.backward()`` and the lean one) and jit, reporting live ``needle.Tensor`` objects and
the process RSS at the start, middle and end (both should stay flat), with time per step.

    python benchmarks/bench_train.py                        # everything, 1 and 2 threads
    python benchmarks/bench_train.py --only mlp --no-memory
    python benchmarks/bench_train.py --backends cpu --threads 2 --memory-steps 200

On a machine shared with other work, multi-threaded PyTorch can stall on its thread
barriers; the 1-thread table is the steadier like-for-like comparison.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Table, arg_parser, compare, load_torch, machine_summary, needle_devices

VOCAB, SEQ, LM_BATCH, LM_HIDDEN = 10_000, 20, 20, 100
TF_SEQ, TF_BATCH, TF_DIM = 32, 16, 128
SPECS = {  # name: samples per step
    "mlp_resnet_adam": 100,
    "mlp_resnet_sgd": 100,
    "resnet9": 128,
    "lstm_lm": SEQ * LM_BATCH,
    "transformer_lm": TF_SEQ * TF_BATCH,
}


def _batch(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name.startswith("mlp_resnet"):
        return rng.random((100, 784), dtype=np.float32), rng.integers(0, 10, 100)
    if name == "resnet9":
        return rng.random((128, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, 128)
    if name == "lstm_lm":
        return rng.integers(0, VOCAB, (SEQ, LM_BATCH)), rng.integers(0, VOCAB, SEQ * LM_BATCH)
    return rng.integers(0, VOCAB, (TF_SEQ, TF_BATCH)), rng.integers(0, VOCAB, TF_SEQ * TF_BATCH)


# --------------------------------------------------------------------------- needle


def needle_model(name: str, device: Any) -> tuple[Any, Any]:
    """The model and optimizer of workload ``name`` on a needle ``device``."""
    from needle import models, optim

    np.random.seed(0)
    if name.startswith("mlp_resnet"):
        model = models.MLPResNet(784, 100, device=device)
    elif name == "resnet9":
        model = models.ResNet9(device=device)
    elif name == "lstm_lm":
        model = models.LanguageModel(LM_HIDDEN, VOCAB, LM_HIDDEN, seq_model="lstm", device=device)
    else:
        model = models.LanguageModel(
            TF_DIM, VOCAB, TF_DIM, num_layers=2, seq_model="transformer", seq_len=TF_SEQ,
            device=device,
        )  # fmt: skip
    model.train()
    if name in ("mlp_resnet_sgd", "lstm_lm"):
        return model, optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optim.Adam(model.parameters(), lr=0.001)


def needle_step(name: str, device: Any, use_jit: bool = False) -> Callable[[], None]:
    """One training step of workload ``name`` on a needle ``device`` (eager or replayed)."""
    import needle as ndl
    from needle import nn

    model, opt = needle_model(name, device)
    x_np, y_np = _batch(name)
    loss_fn = nn.SoftmaxLoss()
    x = ndl.Tensor(x_np, device=device, requires_grad=False)
    y = ndl.Tensor(y_np, device=device, requires_grad=False)

    def train_step(x: Any, y: Any) -> Any:
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss = loss_fn(logits, y)
        opt.reset_grad()
        loss.backward(create_graph=False)
        opt.step()
        return loss

    fn = ndl.jit(train_step) if use_jit else train_step

    def step() -> None:
        fn(x, y).numpy()  # wait for the device, as reading the loss in a training loop does

    return step


# --------------------------------------------------------------------------- PyTorch


def torch_step(name: str, torch: Any) -> Callable[[], None]:
    """The same training step in PyTorch (its default initialisation)."""
    nn = torch.nn
    torch.manual_seed(0)
    x_np, y_np = _batch(name)
    if name.startswith("mlp_resnet"):
        from torch_mnist_reference import mlp_resnet

        model = mlp_resnet(torch)
    elif name == "resnet9":
        model = _torch_resnet9(torch)
    elif name == "lstm_lm":
        model = _TorchLM(torch)
    else:
        model = _TorchTransformerLM(torch)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model.train()
    if name in ("mlp_resnet_sgd", "lstm_lm"):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, dampening=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.001)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.item()

    return step


def _torch_resnet9(torch: Any) -> Any:
    nn = torch.nn

    def cbn(a: int, b: int, k: int, s: int) -> Any:
        return nn.Sequential(nn.Conv2d(a, b, k, s, k // 2), nn.BatchNorm2d(b), nn.ReLU())

    class Residual(nn.Module):
        def __init__(self, fn: Any) -> None:
            super().__init__()
            self.fn = fn

        def forward(self, x: Any) -> Any:
            return self.fn(x) + x

    return nn.Sequential(
        cbn(3, 16, 7, 4), cbn(16, 32, 3, 2),
        Residual(nn.Sequential(cbn(32, 32, 3, 1), cbn(32, 32, 3, 1))),
        cbn(32, 64, 3, 2), cbn(64, 128, 3, 2),
        Residual(nn.Sequential(cbn(128, 128, 3, 1), cbn(128, 128, 3, 1))),
        nn.Flatten(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def _TorchLM(torch: Any) -> Any:  # noqa: N802 - builds a Module
    nn = torch.nn

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, LM_HIDDEN)
            self.lstm = nn.LSTM(LM_HIDDEN, LM_HIDDEN)
            self.linear = nn.Linear(LM_HIDDEN, VOCAB)

        def forward(self, x: Any) -> Any:
            out, _ = self.lstm(self.embedding(x))
            return self.linear(out.reshape(-1, LM_HIDDEN))

    return LM()


def _TorchTransformerLM(torch: Any) -> Any:  # noqa: N802 - builds a Module
    """needle's Transformer LM (course hw4_extra) in PyTorch, layer for layer: learned
    positions; per layer pre-norm attention (separate LayerNorms and bias-free projections for
    q, k, v to 8 heads of 32, causal, bias-free output projection) and a pre-norm ReLU
    feed-forward of width d_model; a linear read-out."""
    nn, functional = torch.nn, torch.nn.functional
    heads, dim_head = 8, 32
    inner = heads * dim_head

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norms = nn.ModuleList(nn.LayerNorm(TF_DIM) for _ in range(3))
            self.proj = nn.ModuleList(nn.Linear(TF_DIM, inner, bias=False) for _ in range(3))
            self.out = nn.Linear(inner, TF_DIM, bias=False)
            self.ff = nn.Sequential(
                nn.LayerNorm(TF_DIM), nn.Linear(TF_DIM, TF_DIM), nn.ReLU(),
                nn.Linear(TF_DIM, TF_DIM),
            )  # fmt: skip

        def forward(self, x: Any) -> Any:
            b, n, _ = x.shape
            q, k, v = (
                p(norm(x)).reshape(b, n, heads, dim_head).transpose(1, 2)
                for norm, p in zip(self.norms, self.proj)
            )
            att = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.out(att.transpose(1, 2).reshape(b, n, inner))
            return x + self.ff(x)

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, TF_DIM)
            self.positions = nn.Embedding(TF_SEQ, TF_DIM)
            self.layers = nn.Sequential(Layer(), Layer())
            self.linear = nn.Linear(TF_DIM, VOCAB)

        def forward(self, x: Any) -> Any:
            x = x.t()  # (batch, seq)
            h = self.layers(self.embedding(x) + self.positions(torch.arange(x.shape[1])))
            return self.linear(h.transpose(0, 1).reshape(-1, TF_DIM))

    return LM()


# --------------------------------------------------------------------------- memory


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, not current


def _live_tensors() -> int:
    from needle.autograd import Tensor

    gc.collect()
    # issubclass(type(o)) rather than isinstance: no __class__ lookups on lazy module proxies
    return sum(1 for o in gc.get_objects() if issubclass(type(o), Tensor))


def memory_check(device: Any, steps: int, mode: str) -> tuple[list[tuple[int, int, float]], float]:
    """``(step, live tensors, RSS MiB)`` after 10 warm-up steps, at the middle and the end,
    and the mean seconds per step (the bookkeeping excluded). ``mode``: ``course``
    (``loss.backward()``), ``lean`` (``create_graph=False``) or ``jit`` (the lean step
    replayed by ``ndl.jit``)."""
    import needle as ndl
    from needle import data, models, nn, optim

    np.random.seed(0)
    rng = np.random.default_rng(0)
    ds = data.NDArrayDataset(rng.random((2000, 784), dtype=np.float32), rng.integers(0, 10, 2000))
    loader = data.DataLoader(ds, batch_size=100, shuffle=True, device=device)
    model = models.MLPResNet(784, 100, device=device)
    opt = optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loss_fn = nn.SoftmaxLoss()

    def train_step(X: Any, y: Any) -> Any:
        loss = loss_fn(model(X), y)
        opt.reset_grad()
        loss.backward(create_graph=mode == "course")
        opt.step()
        return loss

    step = ndl.jit(train_step) if mode == "jit" else train_step
    marks = {10: "start", 10 + steps // 2: "middle", 10 + steps: "end"}
    out: list[tuple[int, int, float]] = []
    done, elapsed = 0, 0.0
    while done < 10 + steps:
        start = time.perf_counter()
        for X, y in loader:
            if X.shape[0] != 100:  # the short last batch would be another jit signature
                continue
            step(X, y).numpy()
            done += 1
            if done in marks:
                break
        if done > 10:
            elapsed += time.perf_counter() - start
        if done in marks:
            del X, y
            out.append((done - 10, _live_tensors(), _rss_mib()))
    return out, elapsed / max(1, done - 10)


def peak_rss(name: str, contender: str, steps: int = 20) -> float:
    """Peak RSS (MiB) of ``steps`` training steps of one contender, in this process: call it
    in a fresh one (``--peak``), after importing both libraries, so baselines are equal."""
    import needle as ndl

    torch = load_torch()
    if contender == "torch":
        step = torch_step(name, torch)
    else:
        dev_name, _, jit = contender.partition("-")
        step = needle_step(name, ndl.device(dev_name), use_jit=bool(jit))
    for _ in range(steps):
        step()
    return _peak_mib()


def time_alone(name: str, contender: str, min_seconds: float) -> float:
    """Median seconds per step of one contender alone in this process (``--separate``): no
    second framework's threads or allocator beside it. Samples of ~0.25 s of back-to-back
    steps, at least five and ``min_seconds`` in all, after three warm-up steps."""
    if contender == "torch":
        torch = load_torch()
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        step = torch_step(name, torch)
    else:
        import needle as ndl

        dev_name, _, jit = contender.partition("-")
        step = needle_step(name, ndl.device(dev_name), use_jit=bool(jit))
    for _ in range(3):
        step()
    samples: list[float] = []
    end = time.perf_counter() + min_seconds
    while len(samples) < 5 or time.perf_counter() < end:
        start, steps = time.perf_counter(), 0
        while steps == 0 or time.perf_counter() - start < 0.25:
            step()
            steps += 1
        samples.append((time.perf_counter() - start) / steps)
    return sorted(samples)[len(samples) // 2]


def _separate_table(
    names: list[str], contenders: list[str], threads: int, rounds: int, min_seconds: float
) -> Table:
    """The timing table with every contender in its own fresh process, the contenders
    alternated, ``rounds`` processes each; a cell is the median of those processes' medians."""
    title = f"training step, median wall time per step, {threads} thread(s), one process each"
    table = Table(title, references=("torch",))
    for name in names:
        found: dict[str, list[float]] = {c: [] for c in contenders}
        for _ in range(rounds):
            for contender in contenders:
                out = _in_fresh_process(
                    "--time", name, contender, str(min_seconds), threads=threads
                )
                if out is not None:
                    found[contender].append(out["seconds"])
        times = {c: sorted(v)[len(v) // 2] for c, v in found.items() if v}
        samples = SPECS[name]
        table.add(f"{name} (batch {samples})", times)
        rates = ", ".join(f"{c} {samples / t:,.0f}" for c, t in times.items())
        print(f"  {name}: samples/s {rates}", flush=True)
    return table


def _peak_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


def _in_fresh_process(*args: str, threads: int) -> Any:
    """Run this script with ``args`` in a new process; its last line of output, as JSON."""
    env = dict(os.environ, NEEDLE_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False
    )
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"  {' '.join(args)} failed: {proc.stderr[-600:]}", flush=True)
        return None


def _peak_table(names: list[str], contenders: list[str], threads: int) -> None:
    table = Table("peak RSS of 20 training steps (MiB, fresh process each)", references=())
    for name in names:
        row = {}
        for contender in contenders:
            found = _in_fresh_process("--peak", name, contender, threads=threads)
            row[contender] = None if found is None else found["peak_mib"]
        table.rows.append((name, row, ""))
    print(_render_mib(table), flush=True)


def _render_mib(table: Table) -> str:
    cols = table.columns()
    lines = [table.title, "workload".ljust(18) + "".join(c.rjust(14) for c in cols)]
    for name, row, _ in table.rows:
        cells = "".join(
            (f"{row[c]:.0f}" if row.get(c) is not None else "-").rjust(14) for c in cols
        )
        lines.append(name.ljust(18) + cells)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _set_threads(threads: int, torch: Any, devices: list[Any]) -> None:
    if torch is not None:
        torch.set_num_threads(threads)
    for dev in devices:
        setter = getattr(dev.mod, "set_num_threads", None)
        if callable(setter):
            setter(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)  # numpy's BLAS (the numpy backend)
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) == 5 and sys.argv[1] == "--time":
        print(json.dumps({"seconds": time_alone(sys.argv[2], sys.argv[3], float(sys.argv[4]))}))
        return
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--peak":
        print(json.dumps({"peak_mib": peak_rss(sys.argv[2], sys.argv[3])}))
        return
    if argv is None and len(sys.argv) == 5 and sys.argv[1] == "--flat":
        import needle as ndl

        marks, per_step = memory_check(ndl.device(sys.argv[2]), int(sys.argv[4]), sys.argv[3])
        print(json.dumps({"marks": marks, "per_step": per_step}))
        return
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--memory-steps", type=int, default=1000, help="steps of the memory check")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory checks")
    parser.add_argument("--no-jit", action="store_true", help="leave the jit columns out")
    parser.add_argument(
        "--threads", type=int, nargs="*", default=[1, 2],
        help="thread counts to run the table at (PyTorch and needle-cpu alike)",
    )  # fmt: skip
    parser.add_argument(
        "--separate", type=int, nargs="?", const=2, default=0, metavar="ROUNDS",
        help="time each contender alone in a fresh process instead, alternated, ROUNDS "
        "processes each (default 2): no second framework's threads beside it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.separate:
        _main_separate(args)
        return
    torch = None if args.no_torch else load_torch()
    devices = needle_devices(args.backends)
    names = [n for n in SPECS if not args.only or any(part in n for part in args.only)]
    contenders = []
    for dev in devices:
        contenders += [dev.name] + ([] if args.no_jit else [f"{dev.name}-jit"])
    for threads in args.threads:
        _set_threads(threads, torch, devices)
        print(machine_summary(torch) + f", {threads} thread(s) for needle-cpu", flush=True)
        title = f"training step, median wall time per step, {threads} thread(s)"
        table = Table(title, references=("torch",))
        for name in names:
            fns = {}
            for dev in devices:
                fns[dev.name] = needle_step(name, dev)
                if not args.no_jit:
                    fns[f"{dev.name}-jit"] = needle_step(name, dev, use_jit=True)
            if torch is not None:
                fns["torch"] = torch_step(name, torch)
            # A sample is ~0.25 s of back-to-back steps, as in a training loop; the harness's
            # pause between samples keeps each contender's threads out of the next one's time.
            times = compare(
                fns, min_seconds=args.min_seconds, sample_seconds=0.25, min_rounds=5,
                stat="min" if args.best else "median",
            )  # fmt: skip
            samples = SPECS[name]
            rates = ", ".join(f"{c} {samples / t:,.0f}" for c, t in times.items())
            table.add(f"{name} (batch {samples if name[0] in 'mr' else SPECS[name]})", times)
            print(f"  {name}: samples/s {rates}", flush=True)
        table.print()
    if args.no_memory:
        return
    _peak_table(names, contenders + ([] if torch is None else ["torch"]), args.threads[-1])
    print(f"\nflatness check: {args.memory_steps} MLPResNet training steps (batch 100), each in a")
    print("fresh process: live needle.Tensor objects and RSS at the start, middle and end")
    for dev in devices:
        for mode in ("course", "lean") + (() if args.no_jit else ("jit",)):
            found = _in_fresh_process(
                "--flat", dev.name, mode, str(args.memory_steps), threads=args.threads[-1]
            )
            if found is None:
                continue
            cells = "  ".join(
                f"step {s}: {n} tensors, {rss:.1f} MiB" for s, n, rss in found["marks"]
            )
            ms = found["per_step"] * 1e3
            print(f"  {dev.name:8s} {mode:6s} {ms:6.2f} ms/step  {cells}", flush=True)


def _main_separate(args: Any) -> None:
    names = [n for n in SPECS if not args.only or any(part in n for part in args.only)]
    contenders = []
    for dev in needle_devices(args.backends):
        contenders += [dev.name] + ([] if args.no_jit else [f"{dev.name}-jit"])
    contenders += [] if args.no_torch else ["torch"]
    for threads in args.threads:
        print(f"{machine_summary(None)}, {threads} thread(s) each, one process per contender")
        _separate_table(names, contenders, threads, args.separate, args.min_seconds).print()


if __name__ == "__main__":
    main()
