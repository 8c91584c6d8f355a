"""needle-cpu's shared host memory: the buffer protocol of Array, to_dlpack views (strides,
flips, broadcasts, lifetimes past free()) and from_dlpack handles (aliasing, refusals, kernels
on memory this backend did not allocate)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

ext = pytest.importorskip("needle_cpu._ext")
DTYPES = ["float32", "float64", "int32", "int64", "bool"]


def put(values: np.ndarray):
    values = np.ascontiguousarray(values)
    handle = ext.Array(values.size, values.dtype.name)
    ext.from_numpy(values, handle)
    return handle


def get(handle) -> np.ndarray:
    return ext.to_numpy(handle, (handle.size,), (1,), 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_buffer_protocol_views_without_a_copy(dtype: str) -> None:
    values = (np.arange(10) % 3).astype(dtype)
    handle = put(values)
    view = np.asarray(handle)
    assert view.dtype == dtype and view.shape == (10,)
    assert view.ctypes.data == handle.ptr()
    np.testing.assert_array_equal(view, values)
    view[0] = view[1]
    assert get(handle)[0] == values[1]
    mem = memoryview(handle)
    assert (mem.nbytes, mem.itemsize, mem.readonly) == (
        10 * values.itemsize,
        values.itemsize,
        False,
    )


def test_a_view_outlives_free_and_the_handle() -> None:
    """free() (and the last reference) leave memory that numpy still views alone."""
    handle = put(np.arange(1 << 18, dtype=np.float32))  # 1 MiB: a cached size class
    view, mem = np.asarray(handle), memoryview(handle)
    handle.free()
    with pytest.raises(ValueError, match="freed"):
        handle.ptr()
    with pytest.raises(BufferError, match="freed"):
        memoryview(handle)
    junk = [ext.Array(1 << 18) for _ in range(4)]  # would reuse the buffer, were it released
    for j in junk:
        ext.fill(j, -1.0)
    np.testing.assert_array_equal(view, np.arange(1 << 18))
    held = ext.memory_stats()["allocated_bytes"]
    del view, handle
    np.testing.assert_array_equal(np.frombuffer(mem, np.float32), np.arange(1 << 18))
    assert ext.memory_stats()["allocated_bytes"] == held
    mem.release()  # the last holder: now the memory goes
    assert held - ext.memory_stats()["allocated_bytes"] == 1 << 20


VIEWS = [  # (buffer size, shape, strides, offset)
    (24, (2, 3, 4), (12, 4, 1), 0),
    (24, (4, 3, 2), (1, 4, 12), 0),
    (24, (2, 2), (-4, -1), 23),
    (24, (3, 5), (0, 1), 2),
    (24, (), (), 7),
    (24, (0, 3), (3, 1), 0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size,shape,strides,offset", VIEWS, ids=[str(v[1:]) for v in VIEWS])
def test_to_dlpack_is_a_view_as_it_lies(size, shape, strides, offset, dtype) -> None:
    values = (np.arange(size) % 7).astype(dtype)
    handle = put(values)
    view = ext.to_dlpack(handle, shape, strides, offset)
    assert view.dtype == dtype and view.shape == shape
    want = np.lib.stride_tricks.as_strided(
        values[offset:] if size else values, shape, [s * values.itemsize for s in strides]
    )
    np.testing.assert_array_equal(view, want)
    if view.size:
        assert view.strides == tuple(s * values.itemsize for s in strides)
    if view.size and 0 not in strides:  # writes go through to the handle
        view[(0,) * len(shape)] = values[1]
        assert get(handle)[offset] == values[1]


def test_to_dlpack_keeps_the_memory_and_exports_through_numpy() -> None:
    handle = put(np.arange(12, dtype=np.float64))
    view = ext.to_dlpack(handle, (3, 2), (1, 3), 2)  # a transposed window
    shared = np.from_dlpack(view)  # numpy's capsule round trip
    handle.free()
    del handle
    gc.collect()
    np.testing.assert_array_equal(shared, np.arange(12.0)[2:8].reshape(2, 3).T)
    with pytest.raises(ValueError, match="outside"):
        ext.to_dlpack(put(np.zeros(4)), (5,), (1,), 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_dlpack_aliases_the_producer(dtype: str) -> None:
    source = (np.arange(12).reshape(3, 4) % 5).astype(dtype)
    handle, shape = ext.from_dlpack(source)
    assert (handle.size, handle.dtype, shape) == (12, dtype, (3, 4))
    assert handle.ptr() == source.ctypes.data
    source[0, 0] = source[0, 1]
    assert get(handle)[0] == source[0, 1]
    ext.fill(handle, source[2, 3].item())
    assert (source == source[2, 3]).all()


def test_from_dlpack_keeps_the_producer_alive_and_never_frees_it() -> None:
    class Producer(np.ndarray):  # an ndarray subclass can be weakly referenced
        pass

    source = np.arange(1 << 20, dtype=np.float32).view(Producer)
    alive = weakref.ref(source)
    handle, _ = ext.from_dlpack(source)
    del source
    gc.collect()
    assert alive() is not None, "the handle keeps the producer alive"
    out = ext.Array(1 << 20)
    ext.ewise_add(handle, handle, out)
    np.testing.assert_array_equal(get(out), 2 * np.arange(1 << 20, dtype=np.float32))
    before = ext.memory_stats()
    handle.free()  # drops the producer; nothing goes to this backend's cache
    gc.collect()
    assert alive() is None
    after = ext.memory_stats()
    assert (after["cached_bytes"], after["allocated_bytes"]) == (
        before["cached_bytes"],
        before["allocated_bytes"],
    )


def test_kernels_run_on_unaligned_borrowed_memory() -> None:
    """A producer's buffer one element past a 64-byte boundary: every path (the threaded one,
    streaming stores included) works without the alignment this backend's own buffers have."""
    n = (1 << 20) + 3
    base = np.random.default_rng(0).standard_normal(n + 1).astype(np.float32)
    x, y = base[1:], np.empty(n + 1, np.float32)[1:]
    hx, _ = ext.from_dlpack(x)
    hy, _ = ext.from_dlpack(y)
    assert hx.ptr() % 64 and hy.ptr() % 32
    ext.ewise_exp(hx, hy)
    np.testing.assert_allclose(y, np.exp(x), rtol=2e-6)
    ext.compact(hx, hy, (n,), (-1,), n - 1)
    np.testing.assert_array_equal(y, x[::-1])


class FakeProducer:
    """A DLPack producer that reports another device."""

    def __init__(self, kind: int) -> None:
        self.kind = kind

    def __dlpack_device__(self) -> tuple[int, int]:
        return (self.kind, 0)

    def __dlpack__(self, **kwargs):
        raise AssertionError("never asked for its capsule")


def test_from_dlpack_refuses_what_it_cannot_share() -> None:
    with pytest.raises(BufferError, match="not one C-contiguous block"):
        ext.from_dlpack(np.arange(10.0)[::2])
    with pytest.raises(BufferError, match="not one C-contiguous block"):
        ext.from_dlpack(np.zeros((3, 4), np.float32).T)
    for dtype in ("float16", "uint8", "int16", "complex64"):
        with pytest.raises(BufferError, match="cannot hold"):
            ext.from_dlpack(np.zeros(4, dtype))
    with pytest.raises(BufferError, match="device type 2"):
        ext.from_dlpack(FakeProducer(2))
    with pytest.raises(TypeError, match="__dlpack__"):
        ext.from_dlpack([1.0, 2.0])
    frozen = np.zeros(4)
    frozen.flags.writeable = False
    with pytest.raises(BufferError):  # numpy refuses to export it, or it arrives read-only
        ext.from_dlpack(frozen)
    handle, shape = ext.from_dlpack(np.zeros((0, 3), np.int64))
    assert (handle.size, shape) == (0, (0, 3))
