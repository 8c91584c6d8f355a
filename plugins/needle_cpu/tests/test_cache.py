"""needle-cpu's buffer cache (src/memory.cpp) and thread-pool switching: reuse, the cap,
NEEDLE_CPU_CACHE_MB=0, empty_cache, values never stale, no leaked threads."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

ext = pytest.importorskip("needle_cpu._ext")
BIG = 1 << 20  # floats: 4 MiB, well above the 256 KiB threshold
RNG = np.random.default_rng(2)


def put(values: np.ndarray):
    values = np.ascontiguousarray(values, dtype=np.float32)
    handle = ext.Array(values.size)
    ext.from_numpy(values, handle)
    return handle


def get(handle, shape) -> np.ndarray:
    shape = tuple(shape)
    strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    return ext.to_numpy(handle, shape, strides, 0)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def in_subprocess(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", "import needle_cpu._ext as e\n" + code],
        env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(autouse=True)
def empty():
    ext.empty_cache()
    yield
    ext.empty_cache()


def test_released_big_buffers_are_reused() -> None:
    info = ext.memory_stats()
    assert info["cached_bytes"] == 0 and info["cached_buffers"] == 0
    assert set(info) == {
        "allocated_bytes",
        "cached_bytes",
        "cached_buffers",
        "limit_bytes",
        "hits",
        "misses",
    }
    a = ext.Array(BIG)
    ptr = a.ptr()
    del a
    assert ext.memory_stats()["cached_bytes"] >= BIG * 4
    hits = ext.memory_stats()["hits"]
    b = ext.Array(BIG - 1000)  # a nearby size: the same size class
    assert b.ptr() == ptr and b.ptr() % 64 == 0
    assert ext.memory_stats()["hits"] == hits + 1 and ext.memory_stats()["cached_bytes"] == 0
    b.free()  # free() releases into the cache too; the handle is dead
    assert ext.memory_stats()["cached_buffers"] == 1
    with pytest.raises(ValueError, match="freed"):
        b.ptr()
    c = ext.Array(2 * BIG)  # another class: a new buffer
    assert c.ptr() != ptr and ext.memory_stats()["cached_buffers"] == 1


def test_small_buffers_are_not_cached() -> None:
    for n in (1, 1000, 60_000):  # below 256 KiB
        ext.Array(n).free()
    assert ext.memory_stats()["cached_bytes"] == 0


def test_cap_is_respected_in_a_subprocess() -> None:
    out = in_subprocess(
        "a = [e.Array(1 << 18) for _ in range(5)]\n"  # 5 x 1 MiB, cap 3 MiB
        "del a\n"
        "i = e.memory_stats(); print(i['cached_bytes'], i['cached_buffers'], i['limit_bytes'])",
        NEEDLE_CPU_CACHE_MB="3",
    )
    cached, buffers, limit = map(int, out.split())
    assert limit == 3 << 20 and cached == 3 << 20 and buffers == 3


def test_cache_mb_zero_disables_it() -> None:
    out = in_subprocess(
        "a = e.Array(1 << 20); p = a.ptr(); a.free(); b = e.Array(1 << 20)\n"
        "i = e.memory_stats(); print(i['cached_bytes'], i['limit_bytes'], i['hits'])",
        NEEDLE_CPU_CACHE_MB="0",
    )
    assert out.split() == ["0", "0", "0"]


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_empty_cache_returns_the_memory() -> None:
    n = 64 << 18  # 64 MiB
    a = ext.Array(n)
    ext.fill(a, 1.0)  # touched: resident
    del a
    assert ext.memory_stats()["cached_bytes"] >= n * 4
    held = rss()
    ext.empty_cache()
    assert ext.memory_stats()["cached_bytes"] == 0
    assert held - rss() > 48 << 20


def test_reused_buffers_never_show_old_values() -> None:
    """Every output below is a recycled buffer full of NaN: each op must overwrite it all."""
    m, k, p = 300, 256, 400
    a = RNG.standard_normal((m, k)).astype(np.float32)
    b = RNG.standard_normal((k, p)).astype(np.float32)
    x = RNG.standard_normal((2, 40, 40, 16)).astype(np.float32)  # NHWC
    w = RNG.standard_normal((3, 3, 16, 32)).astype(np.float32)
    ha, hb, hx, hw = put(a), put(b), put(x), put(w)

    def dirty(size: int):
        junk = ext.Array(size)
        ext.fill(junk, np.nan)
        ptr = junk.ptr()
        del junk
        out = ext.Array(size)
        assert out.ptr() == ptr  # the same, dirty buffer
        return out

    out = dirty(m * p)
    ext.matmul(ha, hb, out, m, k, p)
    np.testing.assert_allclose(get(out, (m, p)), a @ b, rtol=1e-4, atol=1e-4)
    out = dirty(m * k)
    ext.ewise_add(ha, ha, out)
    np.testing.assert_array_equal(get(out, (m, k)), a + a)
    out = dirty(m * k)
    ext.ewise_exp(ha, out)
    np.testing.assert_allclose(get(out, (m, k)), np.exp(a), rtol=2e-6)
    out = dirty(m * k)
    ext.compact(ha, out, (k, m), (1, k), 0)
    np.testing.assert_array_equal(get(out, (k, m)), a.T)
    out = dirty(m * k)
    ext.from_numpy(a, out)
    np.testing.assert_array_equal(get(out, (m, k)), a)
    out = dirty(2 * 40 * 40 * 32)
    ext.conv2d(hx, hw, out, 2, 40, 40, 16, 32, 3, 1, 1)
    conv = get(out, (2, 40, 40, 32))
    assert np.isfinite(conv).all()
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = sum(
        pad[:, i : i + 40, j : j + 40, :] @ w[i, j] for i in range(3) for j in range(3)
    )  # fmt: skip
    np.testing.assert_allclose(conv, ref, rtol=1e-4, atol=1e-3)
    big = RNG.standard_normal((1 << 16, 8)).astype(np.float32)
    hbig = put(big)
    for reduce, ref in ((ext.reduce_sum, big.sum(1)), (ext.reduce_max, big.max(1))):
        out = dirty(1 << 16)  # 256 KiB: cached
        reduce(hbig, out, 8)
        np.testing.assert_allclose(get(out, (1 << 16,)), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_switching_thread_counts_leaks_no_threads() -> None:
    before = ext.get_num_threads()
    x = RNG.standard_normal(1 << 20).astype(np.float32)
    h, out = put(x), ext.Array(x.size)

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    try:
        ext.set_num_threads(4)
        ext.ewise_exp(h, out)  # makes the pool
        start = threads()
        for i in range(30):
            ext.set_num_threads(3 + i % 3)
            ext.ewise_exp(h, out)
        ext.set_num_threads(4)
        ext.ewise_exp(h, out)
        assert threads() <= start
        np.testing.assert_allclose(get(out, x.shape), np.exp(x), rtol=2e-6)
    finally:
        ext.set_num_threads(before)


def test_conv2d_output_size_overflow_raises() -> None:
    a, out = put(np.ones(10)), ext.Array(9)
    big = 2**31 - 1
    with pytest.raises(ValueError):
        ext.conv2d(a, a, out, 1, big, big, 1, 1, 1, 1, big)


OUT_OF_MEMORY = """
import resource, sys
import numpy as np
import needle_cpu._ext as e

MB = 1 << 20
case = sys.argv[1]
keep = e.Array(16 * MB)  # 64 MiB, kept
e.fill(keep, 1.0)
strided = np.ones(32 * MB, np.float32)[::2]  # 128 MiB: from_numpy copies this view, 64 MiB
x, w, y = e.Array(10 * 10 * 64), e.Array(3 * 3 * 64 * 256), e.Array(10 * 10 * 256)
e.fill(x, 1.0); e.fill(w, 1.0)
junk = [e.Array(16 * MB) for _ in range(4)]
del junk  # 256 MiB parked in the cache
assert e.memory_stats()["cached_bytes"] == 256 * MB
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * resource.getpagesize()
# The address space in use now, plus 40 MiB: no room for 64 MiB more unless the cache goes.
# A small Array or a conv2d's 230 KiB of scratch gets no room at all.
room = 0 if case in ("small", "conv2d") else 40 * MB
resource.setrlimit(resource.RLIMIT_AS, (used + room, resource.RLIM_INFINITY))
try:
    if case == "to_numpy":
        assert e.to_numpy(keep, (16 * MB,), (1,), 0)[-1] == 1.0
    elif case == "from_numpy":
        e.from_numpy(strided, keep)
    elif case == "small":
        e.Array(60_000)  # 240 KiB: below the cache's sizes, from mmap all the same
    elif case == "conv2d":  # weight over 128K floats, few rows: one im2col buffer
        e.conv2d(x, w, y, 1, 10, 10, 64, 256, 3, 1, 1)
    print("ok", e.memory_stats()["cached_bytes"] // MB)
except MemoryError as error:
    print("MemoryError", e.memory_stats()["cached_bytes"] // MB, error)
    if case == "conv2d":  # trying again succeeds
        e.conv2d(x, w, y, 1, 10, 10, 64, 256, 3, 1, 1)
        assert e.to_numpy(y, (100, 256), (256, 1), 0)[55, 0] == 9 * 64
        print("retried")
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
@pytest.mark.parametrize("case", ["to_numpy", "from_numpy", "small", "conv2d"])
def test_running_out_of_memory_releases_the_cache(case: str) -> None:
    """Under an address-space limit (RLIMIT_AS) the 256 MiB cache is all that stands between a
    call and its memory: each allocation gives the cache back and succeeds; a kernel that runs
    out anyway empties it before raising MemoryError, so trying again succeeds."""
    result = subprocess.run(
        [sys.executable, "-c", OUT_OF_MEMORY, case],
        env={**os.environ, "NEEDLE_NUM_THREADS": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    released = "MemoryError 0 needle-cpu: out of memory (its cached buffers were released)"
    assert result.stdout.split("\n")[:-1] == (
        [released, "retried"] if case == "conv2d" else ["ok 0"]
    ), result.stdout


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds ``address``."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux's /proc only")
def test_big_buffers_are_advised_as_huge_pages() -> None:
    """Buffers of 4 MiB and more start on a 2 MiB boundary with MADV_HUGEPAGE (the "hg" flag
    of their mapping), as numpy's do."""
    ext.empty_cache()  # a fresh buffer, not a cached one
    big = ext.Array(4 * BIG)  # 16 MiB
    assert big.ptr() % (2 << 20) == 0, f"{big.ptr():#x} is not on a 2 MiB boundary"
    assert "hg" in _vm_flags(big.ptr())
