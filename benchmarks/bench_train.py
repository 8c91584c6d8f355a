"""Training-step benchmarks: needle's reference models on every installed backend and in PyTorch.

Each workload times one full training step (forward, softmax loss, backward, Adam update) on
a fixed random batch, for every needle backend and PyTorch CPU (when installed), interleaved
in one process, and prints time per step, samples per second and speed ratios:

* ``mlp_resnet``: MLPResNet(784, 100), batch 100 (MNIST-sized);
* ``resnet9``: ResNet9, batch 128 of 3 x 32 x 32 images;
* ``lstm_lm``: LanguageModel(LSTM), sequence 20, batch 20, embedding and hidden 100,
  vocabulary 10,000.

Then a memory check: 1,000 training steps of MLPResNet through a DataLoader on each needle
backend, reporting live ``needle.Tensor`` objects (counted through ``gc``), the process
RSS at the start, middle and end (both should stay flat) and the mean time per step. It
runs the course's loop (``loss.backward()``: gradients keep their graph, every node gets
``.grad``) and the lean one (``loss.backward(create_graph=False)``, as needle's training
helpers do).

    python benchmarks/bench_train.py                      # everything
    python benchmarks/bench_train.py --only mlp --no-memory
    python benchmarks/bench_train.py --backends cpu --memory-steps 200
    python benchmarks/bench_train.py --threads 1          # same thread count for everyone

On a machine shared with other work, multi-threaded PyTorch can stall on its thread
barriers; ``--threads 1`` gives steadier, like-for-like numbers.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Table, arg_parser, compare, load_torch, machine_summary, needle_devices

VOCAB, SEQ, LM_BATCH, LM_HIDDEN = 10_000, 20, 20, 100
SPECS = {  # name: samples per step
    "mlp_resnet": 100,
    "resnet9": 128,
    "lstm_lm": SEQ * LM_BATCH,
}


def _batch(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "mlp_resnet":
        return rng.random((100, 784), dtype=np.float32), rng.integers(0, 10, 100)
    if name == "resnet9":
        return rng.random((128, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, 128)
    return rng.integers(0, VOCAB, (SEQ, LM_BATCH)), rng.integers(0, VOCAB, SEQ * LM_BATCH)


# --------------------------------------------------------------------------- needle


def needle_step(name: str, device: Any) -> Callable[[], None]:
    """One training step of workload ``name`` on a needle ``device``."""
    import needle as ndl
    from needle import models, nn, optim

    np.random.seed(0)
    x_np, y_np = _batch(name)
    if name == "mlp_resnet":
        model = models.MLPResNet(784, 100, device=device)
    elif name == "resnet9":
        model = models.ResNet9(device=device)
    else:
        model = models.LanguageModel(LM_HIDDEN, VOCAB, LM_HIDDEN, seq_model="lstm", device=device)
    model.train()
    opt = optim.Adam(model.parameters(), lr=0.001)
    loss_fn = nn.SoftmaxLoss()
    x = ndl.Tensor(x_np, device=device, requires_grad=False)
    y = ndl.Tensor(y_np, device=device, requires_grad=False)

    def step() -> None:
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss = loss_fn(logits, y)
        opt.reset_grad()
        loss.backward()
        opt.step()
        loss.numpy()  # wait for the device, as reading the loss in a training loop does

    return step


# --------------------------------------------------------------------------- PyTorch


def torch_step(name: str, torch: Any) -> Callable[[], None]:
    """The same training step in PyTorch (its default initialisation)."""
    nn = torch.nn
    torch.manual_seed(0)
    x_np, y_np = _batch(name)
    if name == "mlp_resnet":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from torch_mnist_reference import mlp_resnet

        model = mlp_resnet(torch)
        x = torch.from_numpy(x_np)
    elif name == "resnet9":
        model = _torch_resnet9(torch)
        x = torch.from_numpy(x_np)
    else:
        model = _TorchLM(torch)
        x = torch.from_numpy(x_np)
    y = torch.from_numpy(y_np)
    model.train()
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


def memory_check(
    device: Any, steps: int, create_graph: bool = True
) -> tuple[list[tuple[int, int, float]], float]:
    """``(step, live tensors, RSS MiB)`` after 10 warm-up steps, at the middle and the end,
    and the mean seconds per step (the bookkeeping excluded)."""
    import time

    from needle import data, models, nn, optim

    np.random.seed(0)
    rng = np.random.default_rng(0)
    ds = data.NDArrayDataset(rng.random((2000, 784), dtype=np.float32), rng.integers(0, 10, 2000))
    loader = data.DataLoader(ds, batch_size=100, shuffle=True, device=device)
    model = models.MLPResNet(784, 100, device=device)
    opt = optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loss_fn = nn.SoftmaxLoss()
    marks = {10: "start", 10 + steps // 2: "middle", 10 + steps: "end"}
    out: list[tuple[int, int, float]] = []
    done, elapsed = 0, 0.0
    while done < 10 + steps:
        start = time.perf_counter()
        for X, y in loader:
            loss = loss_fn(model(X), y)
            opt.reset_grad()
            loss.backward(create_graph=create_graph)
            opt.step()
            loss.numpy()
            done += 1
            if done in marks:
                break
        if done > 10:
            elapsed += time.perf_counter() - start
        if done in marks:
            del X, y, loss
            out.append((done - 10, _live_tensors(), _rss_mib()))
    return out, elapsed / max(1, done - 10)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--memory-steps", type=int, default=1000, help="steps of the memory check")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory check")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for PyTorch and needle-cpu (NEEDLE_NUM_THREADS); default: each its own",
    )
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["NEEDLE_NUM_THREADS"] = str(args.threads)  # read when needle-cpu loads
    torch = None if args.no_torch else load_torch(args.threads)
    devices = needle_devices(args.backends)
    print(machine_summary(torch))
    table = Table("training step, median wall time per step", references=("torch", "numpy"))
    for name, samples in SPECS.items():
        if args.only and not any(part in name for part in args.only):
            continue
        fns = {dev.name: needle_step(name, dev) for dev in devices}
        if torch is not None:
            fns["torch"] = torch_step(name, torch)
        # A sample is ~0.25 s of back-to-back steps, as in a training loop (samples per second
        # is throughput); the harness's pause between samples keeps each contender's threads
        # from spinning into the next one's time.
        times = compare(fns, min_seconds=args.min_seconds, sample_seconds=0.25, min_rounds=5)
        rates = ", ".join(f"{c} {samples / t:,.0f}" for c, t in times.items())
        table.add(f"{name} (batch {samples})", times, note=f"samples/s: {rates}")
        print(f"  {name}: {rates} samples/s", flush=True)
    table.print()
    if args.no_memory:
        return
    print(f"\nmemory check: {args.memory_steps} MLPResNet training steps (batch 100)")
    for dev in devices:
        for mode, create_graph in (("course", True), ("lean", False)):
            marks, per_step = memory_check(dev, args.memory_steps, create_graph)
            cells = "  ".join(f"step {s}: {n} tensors, {rss:.1f} MiB" for s, n, rss in marks)
            print(f"  {dev.name:8s} {mode:6s} {per_step * 1e3:6.2f} ms/step  {cells}", flush=True)


if __name__ == "__main__":
    main()
