"""needle-cuda's build, registration, stub and error paths (no GPU needed), and the real kernels
and launchers run on CPU threads against plain loops (tests/emulate)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from needle import contract
from needle.plugins import manager

_ext = pytest.importorskip("needle_cuda._ext")
REASON = _ext.unavailable_reason()
no_gpu = pytest.mark.skipif(REASON is None, reason="kernels run here")
STUB = Path(__file__).parents[1] / "src" / "needle_cuda" / "_ext.pyi"
NUMBERS = ("float32", "float64", "int32", "int64")


def test_entry_point_is_registered():
    eps = {ep.name: ep for ep in metadata.entry_points(group="needle")}
    assert eps["cuda"].value == "needle_cuda.plugin"
    assert eps["cuda"].dist.name == "needle-cuda"


def test_plugin_declares_the_backend_without_importing_kernels():
    code = (
        "import sys, needle_cuda.plugin as p; spec, = p.needle_backends(); "
        "print(spec.name, spec.module, spec.contract_version, spec.accelerator, "
        "spec.distribution, 'needle_cuda._ext' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cuda", "needle_cuda._ext", "2", "True", "needle-cuda", "False"]


def test_extension_meets_contract_v2():
    contract.check_backend(_ext, "cuda", 2)
    assert _ext.__device_name__ == "cuda"
    assert set(contract.capabilities(_ext)) == {
        "ewise_power", "bmm", "to_dlpack", "from_dlpack", "synchronize", "empty_cache",
        "memory_stats",
    }  # fmt: skip
    assert _ext.__build_archs__
    assert _ext.__cuda_runtime_version__ >= 11000


def test_dtype_table_is_the_reference_backends():
    assert _ext.__dtypes__ == {
        "memory": ("float32", "float64", "int32", "int64", "bool"),
        "arithmetic": NUMBERS, "compare": NUMBERS, "unary": ("float32", "float64"),
        "matmul": NUMBERS, "reduce": NUMBERS,
    }  # fmt: skip


def _stub() -> dict[str, ast.AST]:
    """The names the stub declares (functions, classes, annotated constants) and their nodes."""
    names = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def test_stub_lists_exactly_what_the_module_defines():
    standard = {"__doc__", "__file__", "__loader__", "__name__", "__package__", "__spec__"}
    defined = {n for n in dir(_ext) if n not in standard}
    stub = set(_stub())
    assert defined - stub == set(), "defined by _ext but missing from _ext.pyi"
    assert stub - defined == set(), "in _ext.pyi but not defined by _ext"


def test_stub_signatures_follow_the_contract():
    stub = _stub()
    for kernel in contract.KERNELS:
        node = stub.get(kernel.name)
        if isinstance(node, ast.FunctionDef):
            params = tuple(a.arg for a in node.args.args)
            assert params == kernel.params, f"{kernel.name}{params} vs {kernel.signature()}"
    init = next(n for n in stub["Array"].body if getattr(n, "name", "") == "__init__")
    assert tuple(a.arg for a in init.args.args[1:]) == contract.kernel("Array").params


def test_module_signatures_follow_the_contract():
    """pybind11's docstrings carry the compiled functions' parameter names."""
    for kernel in contract.KERNELS:
        fn = getattr(_ext, kernel.name, None)
        if callable(fn) and kernel.name != "Array":
            first = fn.__doc__.splitlines()[0]
            names = tuple(re.findall(r"(\w+): ", first[first.index("(") :]))
            assert names == kernel.params, f"{first} vs {kernel.signature()}"


@pytest.mark.skipif(not shutil.which("ldd"), reason="ldd not available")
def test_cuda_runtime_is_linked_statically():
    out = subprocess.run(["ldd", _ext.__file__], capture_output=True, text=True, check=True)
    assert "libcudart" not in out.stdout
    assert "libcuda.so" not in out.stdout  # the driver is opened at the first CUDA call


def test_unavailable_reason_agrees_with_the_manager():
    assert REASON is None or (isinstance(REASON, str) and REASON)
    record = manager.load_backend("cuda")
    if REASON is None:
        assert record.status == "loaded", record.reason
    else:
        assert (record.status, record.reason) == ("unavailable", REASON)


@no_gpu
def test_without_a_gpu_device_calls_raise_cuda_message():
    print(f"cuda unavailable here: {REASON}")
    with pytest.raises(RuntimeError, match="CUDA error in cudaMalloc"):
        _ext.Array(4, "float64")
    with pytest.raises(RuntimeError, match="cudaDeviceSynchronize"):
        _ext.synchronize()


def test_sizes_and_dtypes_are_validated_before_touching_the_device():
    with pytest.raises(ValueError, match=">= 0"):
        _ext.Array(-1)
    with pytest.raises(ValueError, match="not 'float16'"):
        _ext.Array(3, "float16")
    with pytest.raises(ValueError, match="too large"):
        _ext.Array(2**62, "float64")
    for dtype in ("float32", "float64", "int32", "int64", "bool"):
        empty = _ext.Array(0, dtype)  # no allocation, works without a GPU
        assert (empty.size, empty.dtype, empty.ptr()) == (0, dtype, 0)
        assert repr(empty) == f"Array(0, '{dtype}')"
    assert _ext.Array(0).dtype == "float32"
    empty.free()
    with pytest.raises(ValueError, match="freed"):
        empty.ptr()
    with pytest.raises(ValueError, match="cannot reduce"):
        _ext.reduce_sum(_ext.Array(0), _ext.Array(0), 0)
    with pytest.raises(ValueError, match="out of range"):
        _ext.matmul(_ext.Array(0), _ext.Array(0), _ext.Array(0), -1, 0, 0)
    with pytest.raises(ValueError, match="dtypes differ"):
        _ext.ewise_add(_ext.Array(0), _ext.Array(0, "float64"), _ext.Array(0))
    with pytest.raises(ValueError, match="writes bool, not float32"):
        _ext.ewise_eq(_ext.Array(0), _ext.Array(0), _ext.Array(0))
    with pytest.raises(ValueError, match="ewise_div does not take int32"):
        _ext.ewise_div(_ext.Array(0, "int32"), _ext.Array(0, "int32"), _ext.Array(0, "int32"))
    with pytest.raises(ValueError, match="ewise_add does not take bool"):
        _ext.ewise_add(_ext.Array(0, "bool"), _ext.Array(0, "bool"), _ext.Array(0, "bool"))
    with pytest.raises(ValueError, match="from_numpy: the array holds float64, out holds float32"):
        _ext.from_numpy(np.zeros(0), _ext.Array(0))
    with pytest.raises(TypeError):
        _ext.fill(np.zeros(3, np.float32), 1.0)
    _ext.empty_cache()  # nothing cached: touches no device
    stats = _ext.memory_stats()
    assert stats["cached_bytes"] == 0 and all(isinstance(v, int) for v in stats.values())


@pytest.mark.skipif(not shutil.which("c++"), reason="no C++ compiler")
@pytest.mark.skipif(
    _ext.__build_archs__ == "emulated", reason="ran with the real build (the same kernels)"
)
def test_kernels_on_cpu_threads(tmp_path):
    """The real kernels and launchers for every dtype run on the CPU (tests/emulate, one fiber
    per CUDA thread), checked by plain loops: index math, bounds, launch configurations and
    barriers, without a GPU."""
    source = Path(__file__).parent / "emulate" / "kernels_emulator.cpp"
    exe = tmp_path / "kernels_emulator"
    build = [shutil.which("c++"), "-std=c++17", "-O1", str(source), "-o", str(exe)]
    compiled = subprocess.run(build, capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "\n0 failures" in run.stdout, run.stdout + run.stderr
