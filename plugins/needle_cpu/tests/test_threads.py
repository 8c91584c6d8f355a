"""needle-cpu's thread pool against the rest of the process: fork() while another thread runs
kernels, interpreter exit while a daemon thread is inside one, and NEEDLE_NUM_THREADS /
set_num_threads values that cannot be used as given."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

ext = pytest.importorskip("needle_cpu._ext")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run_python(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


FORKS = """
import os, sys, threading, time, warnings
import numpy as np
import needle_cpu._ext as e

warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (Python 3.12+)
N = 1 << 16  # above the size where kernels release the GIL and use the pool
x = np.ones(N, np.float32)
a = e.Array(N); e.from_numpy(x, a); out = e.Array(N)
stop = False

def busy():  # kernels back to back, and new pools (set_num_threads) now and then
    i = 0
    while not stop:
        e.ewise_add(a, a, out)
        i += 1
        if i % 50 == 0:
            e.set_num_threads(2 + i // 50 % 2)

thread = threading.Thread(target=busy)
thread.start()
hung = failed = forks = 0
while forks < {forks} and not hung:  # stop at the first child that hangs
    forks += 1
    pid = os.fork()
    if pid == 0:  # the child: a threaded kernel, a small one, free(); then leave at once
        b, o = e.Array(N), e.Array(N)
        e.from_numpy(x, b)
        e.ewise_mul(b, b, o)
        s = e.Array(3); e.from_numpy(np.ones(3, np.float32), s); e.ewise_add(s, s, s)
        b.free()
        ok = e.to_numpy(o, (N,), (1,), 0).sum() == N and e.to_numpy(s, (3,), (1,), 0).sum() == 6
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            failed += os.waitstatus_to_exitcode(status) != 0
            break
        if time.monotonic() > deadline:
            hung += 1
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            break
        time.sleep(0.001)
stop = True
thread.join()
print("hung", hung, "failed", failed, "forks", forks)
"""


def test_fork_while_another_thread_runs_kernels() -> None:
    """Children forked while another thread runs threaded kernels (and makes new pools) run
    their own kernels and free() and exit: none hangs on a lock or a kernel count copied from
    the parent mid-call."""
    result = run_python(FORKS.format(forks=200), timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hung", "0", "failed", "0", "forks", "200"], result.stderr


DAEMON = """
import threading
import numpy as np
import needle_cpu._ext as e

kind = "{kind}"
n = 1 << 22 if kind == "exp" else 384
a, out = e.Array(n if kind == "exp" else n * n), e.Array(n if kind == "exp" else n * n)
e.fill(a, 0.5)
started = threading.Event()

def work():
    while True:
        e.ewise_exp(a, out) if kind == "exp" else e.matmul(a, a, out, n, n, n)
        started.set()

threading.Thread(target=work, daemon=True).start()
started.wait()
"""


@pytest.mark.parametrize("kind", ["exp", "matmul"])
def test_exit_while_a_daemon_thread_runs_a_kernel(kind: str) -> None:
    """The main thread returns while a daemon thread loops on a big kernel (GIL released):
    the process exits with status 0, never 'terminate called without an active exception'."""
    for _ in range(5):
        result = run_python(DAEMON.format(kind=kind), timeout=60)
        assert result.returncode == 0, f"status {result.returncode}: {result.stderr}"
        assert "terminate" not in result.stderr


THREADS = "import needle_cpu._ext as e; print(e.get_num_threads())"


@pytest.mark.parametrize("value", ["abc", "4abc", "1e3", "0", "-1", "2.5", "99999999999999999999"])
def test_bad_num_threads_env_warns_and_uses_the_cores(value: str) -> None:
    result = run_python(THREADS, NEEDLE_NUM_THREADS=value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(CORES)]
    assert "RuntimeWarning" in result.stderr and f"NEEDLE_NUM_THREADS={value}" in result.stderr


def test_huge_num_threads_env_is_capped_with_a_warning() -> None:
    result = run_python(THREADS, NEEDLE_NUM_THREADS="100000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(4 * CORES)]
    assert "RuntimeWarning" in result.stderr and "NEEDLE_NUM_THREADS=100000" in result.stderr


@pytest.mark.parametrize("value", ["1", "3", " 2 "])
def test_good_num_threads_env_is_used_silently(value: str) -> None:
    result = run_python(THREADS, NEEDLE_NUM_THREADS=value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [value.strip()] and result.stderr == ""


def test_warning_as_error_fails_the_import_clearly() -> None:
    result = run_python(THREADS, NEEDLE_NUM_THREADS="abc", PYTHONWARNINGS="error::RuntimeWarning")
    assert result.returncode != 0 and "NEEDLE_NUM_THREADS=abc" in result.stderr


def test_set_num_threads_bounds() -> None:
    before = ext.get_num_threads()
    try:
        for bad in (0, -3):
            with pytest.raises(ValueError, match="n >= 1"):
                ext.set_num_threads(bad)
        assert ext.get_num_threads() == before
        with pytest.warns(RuntimeWarning, match="set_num_threads"):
            ext.set_num_threads(5000)
        assert ext.get_num_threads() == 4 * CORES
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ext.set_num_threads(4 * CORES)  # the cap itself: no warning
    finally:
        ext.set_num_threads(before)


LATE = """
import os
import needle_cpu._ext as e


class Late:  # dropped while the interpreter finalizes: its kernel runs on the main thread
    def __del__(self, e=e, write=os.write) -> None:
        a, out = e.Array(1 << 20), e.Array(1 << 20)
        e.fill(a, 1.0)
        e.ewise_exp(a, out)  # big: releases and takes back the GIL
        write(1, b"ran")


late = Late()
"""


def test_a_kernel_on_the_main_thread_during_finalization_still_returns() -> None:
    result = run_python(LATE, timeout=60)
    assert result.returncode == 0 and result.stdout == "ran", result.stdout + result.stderr


def test_gemm_puts_openblas_back_to_one_thread() -> None:
    """threadpoolctl's threadpool_limits(n) sets every OpenBLAS of the process, needle-cpu's
    too; its threads would spin against the pool's. The next product sets it back to 1."""
    import numpy as np
    import scipy_openblas32

    ext = pytest.importorskip("needle_cpu._ext")
    blas = scipy_openblas32.dll  # the library needle-cpu links (loaded once per process)
    blas.scipy_openblas_set_num_threads(2)
    assert blas.scipy_openblas_get_num_threads() == 2
    a = np.ones((64, 64), np.float32)
    ha, hb, hc = ext.Array(a.size), ext.Array(a.size), ext.Array(a.size)
    ext.from_numpy(a, ha)
    ext.from_numpy(a, hb)
    ext.matmul(ha, hb, hc, 64, 64, 64)
    assert blas.scipy_openblas_get_num_threads() == 1
    assert ext.to_numpy(hc, (64, 64), (64, 1), 0)[0, 0] == 64.0
