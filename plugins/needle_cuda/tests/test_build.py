"""needle-cuda's own tests: the build, registration and error paths (no GPU needed), and direct
kernel checks against numpy at the edges of the launch configurations (where a GPU exists).

The device-independent suite (``tests/`` and the conformance suite with ``--backend cuda``)
covers the contract through needle; these tests call ``needle_cuda._ext`` directly so a failure
names the kernel and the shape that broke.
"""

from __future__ import annotations

import os
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
gpu = pytest.mark.skipif(REASON is not None, reason=f"cuda unavailable: {REASON}")
no_gpu = pytest.mark.skipif(REASON is None, reason="a GPU is present")


# ----------------------------------------------------------------------------- build & plugin


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
    assert out.stdout.split() == ["cuda", "needle_cuda._ext", "1", "True", "needle-cuda", "False"]


def test_extension_meets_the_contract():
    contract.check_backend(_ext, "cuda")
    assert _ext.__device_name__ == "cuda"
    assert set(contract.capabilities(_ext)) >= {"ewise_power", "bmm"}
    assert _ext.__build_archs__
    assert _ext.__cuda_runtime_version__ >= 11000


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
def test_without_a_gpu_allocation_raises_cuda_message():
    print(f"cuda unavailable here: {REASON}")
    with pytest.raises(RuntimeError, match="CUDA error in cudaMalloc"):
        _ext.Array(4)
    with pytest.raises(RuntimeError, match="cudaDeviceSynchronize"):
        _ext.synchronize()


def test_sizes_are_validated_before_touching_the_device():
    with pytest.raises(ValueError, match=">= 0"):
        _ext.Array(-1)
    empty = _ext.Array(0)  # no allocation, works without a GPU
    assert (empty.size, empty.ptr()) == (0, 0)
    empty.free()
    with pytest.raises(ValueError, match="freed"):
        empty.ptr()
    with pytest.raises(ValueError, match="cannot reduce"):
        _ext.reduce_sum(empty, _ext.Array(0), 0)
    with pytest.raises(ValueError, match="out of range"):
        _ext.matmul(_ext.Array(0), _ext.Array(0), _ext.Array(0), -1, 0, 0)
    with pytest.raises(TypeError):
        _ext.fill(np.zeros(3, np.float32), 1.0)
    _ext.empty_cache()  # nothing cached: touches no device
    assert _ext.cached_bytes() == 0


# ----------------------------------------------------------------------- kernels (GPU only)


def put(x: np.ndarray):
    x = np.ascontiguousarray(x, dtype=np.float32)
    h = _ext.Array(x.size)
    _ext.from_numpy(x, h)
    return h


def get(h, shape=None) -> np.ndarray:
    shape = (h.size,) if shape is None else tuple(shape)
    strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    return _ext.to_numpy(h, shape, strides, 0)


rng = np.random.default_rng(0)


@gpu
def test_out_of_memory_is_a_python_exception():
    with pytest.raises(MemoryError, match="out of memory"):
        _ext.Array(1 << 40)
    h = put(np.arange(5))  # the context still works afterwards
    np.testing.assert_array_equal(get(h), np.arange(5))
    h.free()
    with pytest.raises(ValueError, match="freed"):
        _ext.fill(h, 1.0)


@gpu
def test_freed_buffers_are_reused_then_released():
    if os.environ.get("NEEDLE_CUDA_CACHE_MB", "").strip() == "0":
        pytest.skip("the buffer cache is turned off (NEEDLE_CUDA_CACHE_MB=0)")
    _ext.empty_cache()
    first = _ext.Array(1000)
    address = first.ptr()
    del first  # back to the cache, not to the driver
    assert _ext.cached_bytes() == 4096  # 4000 bytes rounded up to 512
    second = _ext.Array(1001)  # same rounded size: the same block
    assert second.ptr() == address
    assert _ext.cached_bytes() == 0
    second.free()
    _ext.empty_cache()
    assert _ext.cached_bytes() == 0


@gpu
@pytest.mark.parametrize("n", [1, 3, 4, 5, 1023, 1 << 20, (1 << 20) + 3])
def test_elementwise(n):
    a, b = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32) + 3
    ha, hb, out = put(a), put(b), _ext.Array(n)
    refs = {"ewise_add": a + b, "ewise_div": a / b, "ewise_maximum": np.maximum(a, b)}
    for name, ref in refs.items():
        getattr(_ext, name)(ha, hb, out)
        np.testing.assert_allclose(get(out), ref, rtol=1e-6, err_msg=f"{name} n={n}")
    _ext.ewise_power(hb, ha, out)
    np.testing.assert_allclose(get(out), np.power(b, a), rtol=1e-5, err_msg=f"power n={n}")
    _ext.scalar_ge(ha, 0.25, out)
    np.testing.assert_array_equal(get(out), (a >= np.float32(0.25)).astype(np.float32))
    _ext.ewise_tanh(ha, ha)  # in place
    np.testing.assert_allclose(get(ha), np.tanh(a), rtol=1e-6, atol=1e-7)
    _ext.fill(out, -2.5)
    np.testing.assert_array_equal(get(out), np.full(n, -2.5, np.float32))
    with pytest.raises(ValueError, match="sizes differ"):
        _ext.ewise_add(ha, _ext.Array(n + 1), out)


@gpu
@pytest.mark.parametrize(
    "m,n,p",
    [(1, 1, 1), (3, 5, 7), (4, 4, 4), (128, 16, 128), (129, 17, 130), (130, 256, 127),
     (257, 64, 384), (64, 1000, 36), (1, 4096, 1), (300, 0, 5), (1024, 512, 1024)],
)  # fmt: skip
def test_matmul(m, n, p):
    a, b = rng.standard_normal((m, n), np.float32), rng.standard_normal((n, p), np.float32)
    out = _ext.Array(m * p)
    _ext.matmul(put(a), put(b), out, m, n, p)
    np.testing.assert_allclose(get(out, (m, p)), a @ b, rtol=1e-4, atol=1e-4 * max(1, n) ** 0.5)


@gpu
def test_bmm_and_aliased_output():
    batch, m, n, p = 5, 33, 20, 66
    a = rng.standard_normal((batch, m, n), np.float32)
    b = rng.standard_normal((batch, n, p), np.float32)
    out = _ext.Array(batch * m * p)
    _ext.bmm(put(a), put(b), out, batch, m, n, p)
    np.testing.assert_allclose(get(out, (batch, m, p)), a @ b, rtol=1e-4, atol=1e-4)
    sq = rng.standard_normal((40, 40), np.float32)
    h = put(sq)
    _ext.matmul(h, h, h, 40, 40, 40)  # out is both inputs
    np.testing.assert_allclose(get(h, (40, 40)), sq @ sq, rtol=1e-4, atol=1e-4)


@gpu
@pytest.mark.parametrize(
    "rows,size",
    [(1, 1), (7, 1), (5, 3), (1000, 16), (3, 17), (1000, 64), (9, 2048), (2, 2049), (4, 4096),
     (1, 100_003), (1, 1 << 22), (3, 1_000_000), (5000, 4100)],
)  # fmt: skip
def test_reductions(rows, size):
    a = rng.standard_normal((rows, size), np.float32)
    ha, out = put(a), _ext.Array(rows)
    _ext.reduce_sum(ha, out, size)
    tol = 1e-5 * size**0.5 + 1e-6
    np.testing.assert_allclose(get(out), a.sum(axis=1, dtype=np.float64), rtol=1e-4, atol=tol)
    _ext.reduce_max(ha, out, size)
    np.testing.assert_array_equal(get(out), a.max(axis=1))


@gpu
def test_reduce_max_all_negative_and_nan():
    a = -np.arange(1, 5001, dtype=np.float32)
    out = _ext.Array(1)
    _ext.reduce_max(put(a), out, a.size)
    assert get(out)[0] == -1.0
    a[1234] = np.nan
    _ext.reduce_max(put(a), out, a.size)
    assert np.isnan(get(out)[0])


@gpu
@pytest.mark.parametrize(
    "shape,strides,offset",
    [((4, 3), (1, 4), 0), ((2, 3, 4), (12, 4, 1), 0), ((3, 4), (-4, -1), 11), ((5, 4), (0, 1), 2),
     ((2, 1, 3, 1, 2), (6, 99, 2, 7, 1), 0), ((2,) * 12, tuple(2**i for i in range(12)), 0),
     ((), (), 7), ((3, 0, 2), (0, 0, 0), 0), ((33, 65), (1, 40), 5), ((50, 70), (1, 60), 0),
     ((64, 64), (1, 64), 0), ((3, 40, 5), (1, 15, 3), 0)],
)  # fmt: skip
def test_strided_views(shape, strides, offset):
    base = np.arange(5000, dtype=np.float32)
    h = put(base)
    view = np.lib.stride_tricks.as_strided(base[offset:], shape, tuple(4 * s for s in strides))
    np.testing.assert_array_equal(_ext.to_numpy(h, shape, strides, offset), view)
    out = _ext.Array(view.size)
    _ext.compact(h, out, shape, strides, offset)
    np.testing.assert_array_equal(get(out), view.reshape(-1))
    if 0 not in strides and view.size:  # setitem into a view without repeats
        _ext.scalar_setitem(view.size, -1.0, h, shape, strides, offset)
        expect = base.copy()
        np.lib.stride_tricks.as_strided(expect[offset:], shape, tuple(4 * s for s in strides))[
            ...
        ] = -1.0
        np.testing.assert_array_equal(get(h), expect)
        vals = rng.standard_normal(view.size, np.float32)
        _ext.ewise_setitem(put(vals), h, shape, strides, offset)
        np.lib.stride_tricks.as_strided(expect[offset:], shape, tuple(4 * s for s in strides))[
            ...
        ] = vals.reshape(shape)
        np.testing.assert_array_equal(get(h), expect)


@gpu
def test_bad_views_raise():
    h = put(np.zeros(10))
    with pytest.raises(ValueError, match="outside"):
        _ext.to_numpy(h, (4,), (3,), 0)
    with pytest.raises(ValueError, match="outside"):
        _ext.compact(h, _ext.Array(3), (3,), (-1,), 1)
    with pytest.raises(ValueError, match="non-mergeable"):
        _ext.to_numpy(h, (2,) * 17, (0, 1) * 8 + (0,), 0)
    with pytest.raises(ValueError, match="view has"):
        _ext.compact(h, _ext.Array(4), (5,), (1,), 0)


@pytest.mark.skipif(not shutil.which("c++"), reason="no C++ compiler")
def test_kernels_on_cpu_threads(tmp_path):
    """The real kernels and launchers run on CPU threads (tests/emulate), checked by plain loops:
    index math, bounds and launch configurations, without a GPU."""
    source = Path(__file__).parent / "emulate" / "kernels_emulator.cpp"
    exe = tmp_path / "kernels_emulator"
    build = [shutil.which("c++"), "-std=c++20", "-O1", "-pthread", str(source), "-o", str(exe)]
    compiled = subprocess.run(build, capture_output=True, text=True)
    if compiled.returncode != 0 and "barrier" in compiled.stderr:
        pytest.skip("the C++ compiler lacks <barrier> (C++20)")
    assert compiled.returncode == 0, compiled.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "\n0 failures" in run.stdout, run.stdout + run.stderr
