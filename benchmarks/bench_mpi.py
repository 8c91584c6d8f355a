"""needle.distributed on MPI: all-reduce bandwidth against raw mpi4py, and data-parallel
training throughput against one process.

Run it with needle-core, needle-cpu and needle-mpi installed (``nox -s bench-mpi``)::

    python benchmarks/bench_mpi.py                  # both parts, starting mpiexec itself
    python benchmarks/bench_mpi.py --only allreduce

* **all-reduce**: 2 ranks; per message size, ``needle.distributed.all_reduce`` of a float32
  Tensor on the ``cpu`` device against ``MPI.COMM_WORLD.Allreduce`` of numpy arrays of the
  same size, and against ``Allreduce`` on the memory of needle-cpu buffers themselves
  (``mpi4py/cpu``: what the memory costs, apart from needle), timed in interleaved rounds (a
  barrier before each sample). Bandwidth is the message size over the time of one all-reduce.
  Where PyTorch is installed, its CPU all-reduce (``torch.distributed`` on gloo, over TCP on
  this host) runs in the same rounds, for context (``--no-torch`` leaves it out).
* **training**: MLPResNet(784, 100) with Adam on synthetic MNIST-sized batches, one thread per
  rank (``NEEDLE_NUM_THREADS=1``): one process without DistributedDataParallel against 2 ranks
  with it, each rank taking a batch of 100 (the global batch grows: weak scaling) and, for
  reference, 2 ranks x 50 (the global batch stays 100: strong scaling). Throughput is samples
  per second over the whole job. A last configuration runs two independent single processes
  at once, without MPI: what this machine gives two processes, the ceiling for 2 ranks. The
  configurations alternate, ``--repeats`` times each.
* **training, alternating in one job**: the same comparison at a finer grain, as this
  machine's speed drifts over seconds: one ``mpiexec -n 2`` job alternates rounds of ~0.3 s
  of each of rank 0 training alone (rank 1 asleep, the 1-rank figure), both ranks training
  with DistributedDataParallel, both training without it but meeting in a barrier every step
  (what waiting for the slower rank alone costs, without any gradient work), both training
  without it but all-reducing a numpy array of the model's size with raw mpi4py every step
  (what MPI adds: about the best a data-parallel step can do here), and both training without it
  (two independent replicas), in a rotating order; each round's ratios are taken against
  that round's 1-rank figure, and the table gives their median and quartiles over
  ``--rounds`` rounds, with DDP's ratio to the raw all-reduce (needle's own part).

Benchmarks print; they never assert timings. The machine is shared: single runs move.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

SIZES = [2**12, 2**16, 2**20, 2**24, 2**26]  # bytes
HERE = os.path.abspath(__file__)


# --------------------------------------------------------------------------- workers (ranks)


def _torch_gloo(comm: Any) -> Any:
    """torch.distributed on its CPU backend (gloo, over TCP on this host), or None."""
    try:
        import torch
        import torch.distributed as td
    except ImportError:
        return None
    if not (td.is_available() and td.is_gloo_available()):
        return None
    port = None
    if comm.rank == 0:
        with socket.socket() as probe:  # a free port for the process group's rendezvous
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    port = comm.bcast(port)
    torch.set_num_threads(1)
    td.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=comm.rank, world_size=comm.size
    )
    return td


def worker_allreduce(min_seconds: float, with_torch: bool) -> None:
    """Time needle's all_reduce and raw mpi4py side by side on every rank; rank 0 prints."""
    import needle as ndl
    import needle.distributed as dist
    from mpi4py import MPI
    from needle.distributed.buffers import host_view

    dist.init("mpi")
    comm = MPI.COMM_WORLD
    device = ndl.device("cpu")
    td = _torch_gloo(comm) if with_torch else None
    for nbytes in SIZES:
        n = nbytes // 4
        a = np.random.default_rng(comm.rank).random(n, dtype=np.float32)
        raw_out = np.empty_like(a)
        tensor = ndl.Tensor(a, device=device, requires_grad=False)
        out_tensor = ndl.Tensor(raw_out, device=device, requires_grad=False)
        cpu_in = host_view(tensor.realize_cached_data())
        cpu_out = host_view(out_tensor.realize_cached_data())
        contenders = {
            "needle": lambda t=tensor: dist.all_reduce(t, "sum"),
            "mpi4py": lambda a=a, out=raw_out: comm.Allreduce(a, out, op=MPI.SUM),
            "mpi4py/cpu": lambda a=cpu_in, out=cpu_out: comm.Allreduce(a, out, op=MPI.SUM),
        }
        if td is not None:  # in place, on zeros: the sums stay finite
            import torch

            zeros = torch.zeros(n)
            contenders["torch/gloo"] = lambda t=zeros: td.all_reduce(t)
        check = dist.all_reduce(tensor, "sum").numpy()
        comm.Allreduce(a, raw_out, op=MPI.SUM)
        assert np.array_equal(check, raw_out), "needle and mpi4py disagree"
        calls = {k: max(1, int(0.02 / _one_call(fn, comm))) for k, fn in contenders.items()}
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        start = time.perf_counter()
        while True:
            for name, fn in contenders.items():
                comm.Barrier()
                t0 = time.perf_counter()
                for _ in range(calls[name]):
                    fn()
                samples[name].append((time.perf_counter() - t0) / calls[name])
            # every rank must take the same decision to stop: rank 0's
            done = comm.bcast(
                len(samples["needle"]) >= 5 and time.perf_counter() - start >= min_seconds
            )
            if done:
                break
        if comm.rank == 0:
            times = {k: statistics.median(v) for k, v in samples.items()}
            print(json.dumps({"bytes": nbytes, **times}), flush=True)


def _one_call(fn: Any, comm: Any) -> float:
    from mpi4py import MPI

    fn()
    comm.Barrier()
    t0 = time.perf_counter()
    fn()
    elapsed = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    return max(elapsed, 1e-6)


def worker_train(batch: int, seconds: float, use_ddp: bool) -> None:
    """MLPResNet training steps for about ``seconds``; rank 0 prints samples per second."""
    import needle as ndl
    import needle.distributed as dist
    from needle import models, nn, optim

    dist.init()
    rank, world = dist.rank(), dist.world_size()
    np.random.seed(0)
    model = models.MLPResNet(784, 100)
    if use_ddp:
        model = dist.DistributedDataParallel(model)
    opt = optim.Adam(model.parameters(), lr=0.001)
    loss_fn = nn.SoftmaxLoss()
    rng = np.random.default_rng(rank)
    x = ndl.Tensor(rng.random((batch, 784), dtype=np.float32), requires_grad=False)
    y = ndl.Tensor(rng.integers(0, 10, batch), requires_grad=False)

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.reset_grad()
        loss.backward()
        opt.step()
        loss.numpy()

    for _ in range(5):
        step()
    steps = 0
    t0 = time.perf_counter()
    while True:  # a fixed number of steps on every rank: rank 0 decides when to stop
        for _ in range(10):
            step()
        steps += 10
        more = time.perf_counter() - t0 < seconds
        if world > 1:
            more = bool(dist.all_reduce_scalars([float(more)], op="max")[0])
        if not more:
            break
    elapsed = max(dist.all_reduce_scalars([time.perf_counter() - t0], op="max")[0], 1e-9)
    if rank == 0:
        print(json.dumps({"samples_per_s": world * batch * steps / elapsed, "steps": steps}))


def worker_alternate(batch: int, rounds: int, steps: int) -> None:
    """Rounds of three configurations in one 2-rank job; rank 0 prints per-round ratios."""
    import needle as ndl
    import needle.distributed as dist
    from mpi4py import MPI
    from needle import models, nn, optim

    dist.init("mpi")
    comm = MPI.COMM_WORLD
    rank = comm.rank
    loss_fn = nn.SoftmaxLoss()
    rng = np.random.default_rng(rank)
    x = ndl.Tensor(rng.random((batch, 784), dtype=np.float32), requires_grad=False)
    y = ndl.Tensor(rng.integers(0, 10, batch), requires_grad=False)

    def trainer(ddp: bool, lockstep: bool = False, exchange: bool = False) -> Any:
        np.random.seed(0)
        model = models.MLPResNet(784, 100)
        if ddp:
            model = dist.DistributedDataParallel(model)
        opt = optim.Adam(model.parameters(), lr=0.001)
        # exchange: an all-reduce of as many floats as the model has parameters, straight
        # in mpi4py on one numpy array, in place of the barrier (what MPI alone costs)
        grads = np.zeros(sum(int(np.prod(p.shape)) for p in model.parameters()), np.float32)

        def run() -> float:
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = loss_fn(model(x), y)
                opt.reset_grad()
                loss.backward()
                if exchange:
                    comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
                elif lockstep:
                    comm.Barrier()
                opt.step()
                loss.numpy()
            return time.perf_counter() - t0

        run()  # warm up
        return run

    plain, ddp = trainer(False), trainer(True)
    lockstep, exchange = trainer(False, lockstep=True), trainer(False, exchange=True)

    def asleep_until_rank_0_is_done() -> None:
        request = comm.Ibarrier()
        while not request.Test():
            time.sleep(0.001)  # sleeping, not spinning: rank 0 has the machine to itself

    def alone() -> float:
        if rank == 0:
            elapsed = plain()
            comm.Ibarrier().Wait()
            return batch * steps / elapsed
        asleep_until_rank_0_is_done()
        return 0.0

    def both(run: Any) -> float:  # samples per second of the two ranks together
        comm.Barrier()
        elapsed = run()
        times = comm.allgather(elapsed)
        return batch * steps * (sum(1 / t for t in times) if run is plain else 2 / max(times))

    configs = {
        "alone": alone,
        "ddp": lambda: both(ddp),
        "lockstep": lambda: both(lockstep),
        "exchange": lambda: both(exchange),
        "independent": lambda: both(plain),
    }
    names = list(configs)
    for r in range(rounds):
        results = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:  # a rotating order
            results[name] = configs[name]()
        if rank == 0:
            print(json.dumps(results), flush=True)


# --------------------------------------------------------------------------- driver


def _mpiexec() -> str:
    from needle_mpi.communicator import mpiexec

    found = mpiexec()
    if found is None:
        sys.exit("bench_mpi: no mpiexec found (pip install ./plugins/needle_mpi)")
    return found


def _run(ranks: int, *worker_args: str, independent: int = 1) -> list[dict[str, Any]]:
    """Run a worker (under mpiexec for ``ranks`` > 1), or ``independent`` copies at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env["NEEDLE_NUM_THREADS"] = "1"
    cmd = [sys.executable, HERE, "--worker", *worker_args]  # worker_args[0]: which worker
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks), *cmd]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(independent)
    ]
    rows = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            sys.exit(f"bench_mpi: {' '.join(cmd)} failed:\n{out}{err}")
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return rows


def _size(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 2**20 else f"{nbytes >> 10} KiB"


def bench_allreduce(min_seconds: float, torch: bool) -> None:
    print("\nall-reduce, 2 ranks, float32 sum: needle.distributed (cpu Tensor) vs raw mpi4py "
          "(on numpy arrays; on needle-cpu buffers), GB/s and speed ratios")  # fmt: skip
    print(f"  {'size':>8}  {'needle':>8}  {'mpi4py':>8}  {'mpi4py/cpu':>10}  "
          f"{'needle / mpi4py':>15}  {'needle / mpi4py/cpu':>19}")  # fmt: skip
    rows = _run(
        2, "allreduce", "--min-seconds", str(min_seconds), *([] if torch else ["--no-torch"])
    )
    for row in rows:
        nbytes, ours, raw, raw_cpu = row["bytes"], row["needle"], row["mpi4py"], row["mpi4py/cpu"]
        print(f"  {_size(nbytes):>8}  {nbytes / ours / 1e9:>8.2f}  {nbytes / raw / 1e9:>8.2f}  "
              f"{nbytes / raw_cpu / 1e9:>10.2f}  {raw / ours:>14.2f}x  "
              f"{raw_cpu / ours:>18.2f}x")  # fmt: skip
    if rows and "torch/gloo" in rows[0]:
        print("  for context, PyTorch's CPU collectives (torch.distributed, gloo over TCP on "
              "this host), microseconds per all-reduce:")  # fmt: skip
        for row in rows:
            print(f"  {_size(row['bytes']):>8}  needle {row['needle'] * 1e6:9.1f}  torch/gloo "
                  f"{row['torch/gloo'] * 1e6:9.1f}  mpi4py {row['mpi4py'] * 1e6:9.1f}")  # fmt: skip


def bench_train(seconds: float, repeats: int) -> None:
    configs = {
        "1 rank x 1 thread, batch 100 (no DDP)": (1, "100", "--no-ddp"),
        "2 ranks x 1 thread, batch 2 x 100": (2, "100"),
        "2 ranks x 1 thread, batch 2 x 50": (2, "50"),
        "2 independent processes, batch 100 each": (1, "100", "--no-ddp"),
    }
    results: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(repeats):  # alternate, so load from elsewhere hits every configuration
        for name, (ranks, batch, *flags) in configs.items():
            independent = 2 if name.startswith("2 independent") else 1
            args = ("train", "--batch", batch, "--seconds", str(seconds), *flags)
            rows = _run(ranks, *args, independent=independent)
            results[name].append(sum(row["samples_per_s"] for row in rows))
    base = statistics.median(results["1 rank x 1 thread, batch 100 (no DDP)"])
    best_base = max(results["1 rank x 1 thread, batch 100 (no DDP)"])
    print(f"\nMLPResNet(784, 100) + Adam training throughput, {repeats} runs of ~{seconds:.0f} s "
          "each (median / best samples per second; ratios against 1 rank)")  # fmt: skip
    for name, values in results.items():
        med, best = statistics.median(values), max(values)
        print(f"  {name:<40} {med:>8.0f} / {best:>8.0f}   {med / base:5.2f}x / "
              f"{best / best_base:5.2f}x")  # fmt: skip


def bench_alternate(rounds: int) -> None:
    rows = _run(2, "alternate", "--batch", "100", "--rounds", str(rounds))
    ddp, lockstep, exchange, independent = (
        sorted(row[name] / row["alone"] for row in rows)
        for name in ("ddp", "lockstep", "exchange", "independent")
    )
    own = sorted(row["ddp"] / row["exchange"] for row in rows)  # needle's part alone

    def spread(values: list[float]) -> str:
        q1, med, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        return f"{med:5.2f}x  ({q1:.2f}-{q3:.2f})"

    print(f"\nthe same in one mpiexec -n 2 job, {len(rows)} rounds alternating ~0.3 s of each "
          "configuration (ratios to the round's 1 rank: median (quartiles))")  # fmt: skip
    print(f"  {'1 rank x 1 thread, batch 100 (no DDP)':<40} "
          f"{statistics.median(row['alone'] for row in rows):>8.0f} samples/s")  # fmt: skip
    print(f"  {'2 ranks x 1 thread, batch 2 x 100':<40} {spread(ddp)}")
    print(f"  {'2 replicas in lockstep (a barrier a step)':<40} {spread(lockstep)}")
    print(f"  {'2 replicas + raw mpi4py all-reduce a step':<40} {spread(exchange)}")
    print(f"  {'2 replicas without DDP, batch 100 each':<40} {spread(independent)}")
    print(f"  {'DDP / raw all-reduce, per round':<40} {spread(own)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["allreduce", "train"], default=None)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timing per size")
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per training run")
    parser.add_argument("--repeats", type=int, default=3, help="training runs per config")
    parser.add_argument(
        "--no-torch", action="store_true", help="leave PyTorch's gloo all-reduce out"
    )
    parser.add_argument("--rounds", type=int, default=30, help="rounds of the one-job table")
    parser.add_argument(
        "--worker", choices=["allreduce", "train", "alternate"], help=argparse.SUPPRESS
    )
    parser.add_argument("--steps", type=int, default=80, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--no-ddp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "allreduce":
        return worker_allreduce(args.min_seconds, not args.no_torch)
    if args.worker == "train":
        return worker_train(args.batch, args.seconds, not args.no_ddp)
    if args.worker == "alternate":
        return worker_alternate(args.batch, args.rounds, args.steps)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"bench_mpi: {cores} cores, numpy {np.__version__}, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    if args.only in (None, "allreduce"):
        bench_allreduce(args.min_seconds, not args.no_torch)
    if args.only in (None, "train"):
        bench_train(args.seconds, args.repeats)
        bench_alternate(args.rounds)


if __name__ == "__main__":
    main()
