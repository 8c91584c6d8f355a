"""needle-cpu's own kernel tests, against numpy: the paths the conformance suite does not reach
(threaded sizes, transposes, odd strides, long reductions, both instruction sets, bad calls)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

ext = pytest.importorskip("needle_cpu._ext")
RNG = np.random.default_rng(1)


def put(values: np.ndarray):
    values = np.ascontiguousarray(values, dtype=np.float32)
    handle = ext.Array(values.size)
    ext.from_numpy(values, handle)
    return handle


def get(handle, shape) -> np.ndarray:
    shape = tuple(shape)
    strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    return ext.to_numpy(handle, shape, strides, 0)


def np_view(buf: np.ndarray, shape, strides, offset) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(buf[offset:], shape, [4 * s for s in strides])


def random_view(ndim: int, rng: np.random.Generator):
    """A random (shape, strides, offset) view of a buffer, with flips, broadcasts and gaps."""
    shape = tuple(int(d) for d in rng.integers(0, 6, ndim))
    strides, acc = [0] * ndim, 1
    for dim in rng.permutation(ndim):  # a dense layout in a random dim order, with gaps
        strides[dim] = acc * int(rng.choice([1, 1, -1]))
        acc *= shape[dim] + int(rng.integers(0, 2))
    strides = [0 if rng.random() < 0.15 else s for s in strides]
    lo = -sum((d - 1) * s for d, s in zip(shape, strides) if s < 0 and d > 0)
    hi = sum((d - 1) * s for d, s in zip(shape, strides) if s > 0 and d > 0)
    offset = lo + int(rng.integers(0, 3))
    return shape, tuple(strides), offset, offset + hi + 1 + int(rng.integers(0, 3))


@pytest.mark.parametrize("seed", range(40))
def test_random_views_compact_setitem(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape, strides, offset, size = random_view(int(rng.integers(0, 5)), rng)
    values = rng.standard_normal(size).astype(np.float32)
    n = int(np.prod(shape))
    out = ext.Array(n)
    ext.compact(put(values), out, shape, strides, offset)
    want = np.array(np_view(values, shape, strides, offset)).reshape(-1)
    np.testing.assert_array_equal(get(out, (n,)), want)
    if 0 in strides:
        return
    buf, new, expect = put(values), rng.standard_normal(n).astype(np.float32), values.copy()
    ext.ewise_setitem(put(new), buf, shape, strides, offset)
    view = np.lib.stride_tricks.as_strided(
        expect[offset:], shape, [4 * s for s in strides], writeable=True
    )
    view[...] = new.reshape(shape)
    np.testing.assert_array_equal(get(buf, (size,)), expect)
    ext.scalar_setitem(n, -3.5, buf, shape, strides, offset)
    view[...] = -3.5
    np.testing.assert_array_equal(get(buf, (size,)), expect)


@pytest.mark.parametrize(
    "shape,axes",
    [((300, 500), (1, 0)), ((7, 64, 33), (2, 1, 0)), ((3, 40, 50, 6), (0, 2, 1, 3)),
     ((17, 1000), (1, 0)), ((2, 128, 96), (0, 2, 1))],
)  # fmt: skip
def test_big_transposes_both_ways(shape, axes) -> None:
    a = RNG.standard_normal(shape).astype(np.float32)
    t = a.transpose(axes)
    strides = tuple(s // 4 for s in t.strides)
    out = ext.Array(a.size)
    ext.compact(put(a), out, t.shape, strides, 0)
    np.testing.assert_array_equal(get(out, t.shape), t)
    buf = put(np.zeros_like(a))
    ext.ewise_setitem(put(np.ascontiguousarray(t)), buf, t.shape, strides, 0)
    np.testing.assert_array_equal(get(buf, a.shape), a)


def test_flip_and_broadcast_of_big_arrays() -> None:
    a = RNG.standard_normal((513, 700)).astype(np.float32)
    out = ext.Array(a.size)
    ext.compact(put(a), out, a.shape, (-700, -1), a.size - 1)
    np.testing.assert_array_equal(get(out, a.shape), a[::-1, ::-1])
    col = RNG.standard_normal(513).astype(np.float32)
    ext.compact(put(col), out, (513, 700), (1, 0), 0)
    np.testing.assert_array_equal(get(out, (513, 700)), np.broadcast_to(col[:, None], (513, 700)))


def test_to_numpy_is_a_new_array_and_from_numpy_copies() -> None:
    src = np.arange(12, dtype=np.float32)
    h = put(src)
    src[:] = 0  # from_numpy copied
    got = ext.to_numpy(h, (3, 4), (4, 1), 0)
    assert got.flags.owndata and got.flags.c_contiguous
    got[:] = -1
    np.testing.assert_array_equal(get(h, (12,)), np.arange(12))
    ext.from_numpy(np.arange(24, dtype=np.float32).reshape(3, 8)[:, ::2], h)  # strided: copied
    np.testing.assert_array_equal(get(h, (12,)), np.arange(0, 24, 2))
    with pytest.raises(ValueError, match="float64"):  # converting is core's choice, not ours
        ext.from_numpy(np.arange(12, dtype=np.float64), h)
    with pytest.raises(ValueError, match="float32"):
        ext.from_numpy(np.arange(12, dtype=">f4"), h)  # the other byte order


@pytest.mark.parametrize("size", [0, 5, 1 << 20])
def test_elementwise_big_and_empty(size: int) -> None:
    a = RNG.uniform(-3, 3, size).astype(np.float32)
    b = RNG.uniform(0.5, 2, size).astype(np.float32)
    ha, hb, out = put(a), put(b), ext.Array(size)
    for name, ref in [("ewise_add", np.add), ("ewise_mul", np.multiply), ("ewise_div", np.divide),
                      ("ewise_maximum", np.maximum)]:  # fmt: skip
        getattr(ext, name)(ha, hb, out)
        np.testing.assert_array_equal(get(out, (size,)), ref(a, b).astype(np.float32), name)
    mask = ext.Array(size, "bool")
    ext.ewise_ge(ha, hb, mask)
    np.testing.assert_array_equal(get(mask, (size,)), a >= b)
    for name, ref, x in [("ewise_exp", np.exp, a), ("ewise_tanh", np.tanh, a),
                         ("ewise_log", np.log, b)]:  # fmt: skip
        getattr(ext, name)(put(x), out)
        np.testing.assert_allclose(get(out, (size,)), ref(x), rtol=2e-6, atol=1e-7, err_msg=name)
    for val in (2.0, 0.5, -1.0, 3.0, 1.0, 0.0):
        ext.scalar_power(hb, val, out)
        np.testing.assert_allclose(get(out, (size,)), np.power(b, np.float32(val)), rtol=2e-6)
    ext.ewise_power(hb, ha, out)
    np.testing.assert_allclose(get(out, (size,)), np.power(b, a), rtol=2e-6)


def test_special_values() -> None:
    x = np.array([0.0, -0.0, 1e-42, -1.0, np.inf, -np.inf, np.nan, 88.5, 89.0, -90.0, -200.0,
                  20.0, -20.0, 1e-8, 3.4e38], np.float32)  # fmt: skip
    out = ext.Array(x.size)
    with np.errstate(all="ignore"):
        for name, ref in (("ewise_exp", np.exp), ("ewise_log", np.log), ("ewise_tanh", np.tanh)):
            getattr(ext, name)(put(x), out)
            np.testing.assert_allclose(get(out, x.shape), ref(x), rtol=2e-6, atol=1e-37,
                                       err_msg=name)  # fmt: skip
    ext.ewise_maximum(put(x), put(np.zeros_like(x)), out)
    np.testing.assert_array_equal(get(out, x.shape), np.maximum(x, 0))


@pytest.mark.parametrize("outer,size", [(1, 1 << 24), (2, 5_000_001), (4096, 4096), (100_000, 3)])
def test_reductions_long_and_many(outer: int, size: int) -> None:
    a = RNG.standard_normal((outer, size)).astype(np.float32)
    ha, out = put(a), ext.Array(outer)
    ext.reduce_sum(ha, out, size)
    np.testing.assert_allclose(get(out, (outer,)), a.sum(1, dtype=np.float64), rtol=1e-5, atol=1e-2)
    ext.reduce_max(ha, out, size)
    np.testing.assert_array_equal(get(out, (outer,)), a.max(1))


@pytest.mark.parametrize("m,n,p", [(0, 3, 4), (3, 0, 4), (1, 2000, 3), (600, 300, 5), (5, 300, 700),
                                   (512, 512, 512)])  # fmt: skip
def test_matmul_threaded_shapes(m: int, n: int, p: int) -> None:
    a, b = (
        RNG.standard_normal((m, n)).astype(np.float32),
        RNG.standard_normal((n, p)).astype(np.float32),
    )
    out = ext.Array(m * p)
    ext.matmul(put(a), put(b), out, m, n, p)
    np.testing.assert_allclose(get(out, (m, p)), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("batch,m,n,p", [(1, 200, 300, 100), (64, 8, 16, 8), (3, 0, 2, 2)])
def test_bmm(batch: int, m: int, n: int, p: int) -> None:
    a = RNG.standard_normal((batch, m, n)).astype(np.float32)
    b = RNG.standard_normal((batch, n, p)).astype(np.float32)
    out = ext.Array(batch * m * p)
    ext.bmm(put(a), put(b), out, batch, m, n, p)
    np.testing.assert_allclose(get(out, (batch, m, p)), a @ b, rtol=1e-4, atol=1e-4)


def conv_reference(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))).astype(np.float64)
    k = w.shape[0]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.tensordot(win, w, axes=([4, 5, 3], [0, 1, 2]))


@pytest.mark.parametrize(
    "n,h,w,cin,cout,k,stride,pad",
    [(32, 32, 32, 3, 64, 3, 1, 1), (2, 17, 9, 16, 24, 5, 2, 2), (4, 8, 8, 32, 8, 1, 1, 0),
     (1, 3, 3, 2, 2, 3, 1, 0), (2, 6, 6, 3, 7, 1, 2, 1), (3, 4, 5, 1, 1, 4, 3, 3),
     (1, 6, 6, 64, 256, 3, 1, 1), (4, 20, 20, 64, 256, 3, 1, 1),  # these two: OpenBLAS
     (6, 1, 1, 8, 5, 3, 1, 1), (6, 2, 2, 8, 5, 3, 2, 1), (3, 2, 1, 4, 3, 3, 2, 1),
     (2, 1, 1, 3, 2, 5, 1, 2), (2, 3, 3, 2, 2, 5, 1, 1)],  # one output pixel, whole image
)  # fmt: skip
def test_conv2d(n, h, w, cin, cout, k, stride, pad) -> None:
    x = RNG.standard_normal((n, h, w, cin)).astype(np.float32)
    wt = RNG.standard_normal((k, k, cin, cout)).astype(np.float32)
    want = conv_reference(x, wt, stride, pad)
    out = ext.Array(want.size)
    ext.conv2d(put(x), put(wt), out, n, h, w, cin, cout, k, stride, pad)
    np.testing.assert_allclose(get(out, want.shape), want, rtol=1e-4, atol=1e-4)


def same_bits_at_thread_counts(run):
    """``run()``'s arrays at 1, 2 and 3 kernel threads, checked bit-equal; the 1-thread ones."""
    before = ext.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            ext.set_num_threads(threads)
            results.append(run())
    finally:
        ext.set_num_threads(before)
    for other in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(other, results[0]))
    return results[0]


@pytest.mark.parametrize(
    "n,h,w,cin,cout,k,stride,pad",
    [(128, 8, 8, 16, 32, 3, 2, 1), (64, 4, 4, 32, 32, 3, 1, 1), (5, 9, 7, 3, 4, 3, 2, 1),
     (128, 1, 1, 128, 128, 3, 1, 1), (64, 2, 2, 64, 128, 3, 2, 1), (3, 2, 1, 4, 3, 3, 2, 1),
     (2, 1, 1, 3, 2, 5, 1, 2), (2, 3, 3, 2, 2, 5, 1, 1)],  # from the 4th: one output pixel
)  # fmt: skip
def test_conv2d_gradients_same_bits_at_any_thread_count(n, h, w, cin, cout, k, stride, pad):
    """The weight gradient sums over the batch in pieces that depend on the sizes alone, and
    the input gradient takes whole images: 1, 2 and 3 threads give the same bits (and numpy's
    values)."""
    x = RNG.standard_normal((n, h, w, cin)).astype(np.float32)
    wt = RNG.standard_normal((k, k, cin, cout)).astype(np.float32)
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    g = RNG.standard_normal((n, ho, wo, cout)).astype(np.float32)
    args = (n, h, w, cin, cout, k, stride, pad)
    xp = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    want_dw = np.einsum("nyxcij,nyxo->ijco", win, g)
    want_dx = np.zeros_like(xp)
    for i in range(k):
        for j in range(k):
            rows = slice(i, i + stride * (ho - 1) + 1, stride)
            cols = slice(j, j + stride * (wo - 1) + 1, stride)
            want_dx[:, rows, cols] += g @ wt[i, j].T.astype(np.float64)
    want_dx = want_dx[:, pad : pad + h, pad : pad + w]

    def run():
        dw, dx = ext.Array(want_dw.size), ext.Array(x.size)
        ext.conv2d_grad_weight(put(x), put(g), dw, *args)
        ext.conv2d_grad_input(put(g), put(wt), dx, *args)
        return get(dw, want_dw.shape), get(dx, x.shape)

    dw, dx = same_bits_at_thread_counts(run)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("outer,channels", [(4096, 16), (8192, 3), (50, 700)])
def test_channels_last_batch_norm_same_bits_at_any_thread_count(outer, channels) -> None:
    """inner == 1 sums rows in blocks set by the size (not the threads): 1, 2 and 3 threads
    give the same bits, and numpy's statistics and gradients."""
    x = (RNG.standard_normal((outer, channels)) * 3 + 1).astype(np.float32)
    g = RNG.standard_normal((outer, channels)).astype(np.float32)
    w = RNG.standard_normal(channels).astype(np.float32)
    b = RNG.standard_normal(channels).astype(np.float32)
    mu, var = x.astype(np.float64).mean(0), x.astype(np.float64).var(0)
    inv = 1 / np.sqrt(var + 1e-5)
    xhat = (x - mu) * inv
    want_out = xhat * w + b
    want_dx = w * inv * (g - g.mean(0) - xhat * (g * xhat).mean(0))

    def run():
        out, dx = ext.Array(x.size), ext.Array(x.size)
        stats = [ext.Array(channels) for _ in range(5)]  # mean, invstd, dw, db, unused
        hx = put(x)
        ext.batch_norm(hx, put(w), put(b), out, stats[0], stats[1], stats[4], stats[4],
                       outer, channels, 1, 1e-5, 0.0)  # fmt: skip
        ext.batch_norm_grad(put(g), hx, put(w), stats[0], stats[1], dx, stats[2], stats[3],
                            outer, channels, 1)  # fmt: skip
        return [get(out, x.shape), get(dx, x.shape)] + [get(s, (channels,)) for s in stats[:4]]

    out, dx, mean, invstd, dw, db = same_bits_at_thread_counts(run)
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(invstd, inv, rtol=1e-5)
    np.testing.assert_allclose(out, want_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, g.sum(0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dw, (g * xhat).sum(0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_optimizer_updates_are_numpys_bits(dtype, wd) -> None:
    """The vectorized sgd_update / adam_update round each operation to the dtype in the
    contract's order (no fused multiply-add): numpy's step, bit for bit, at any length."""
    t = np.dtype(dtype).type
    for n in (1, 7, 100_003):
        w, g, m, v = (RNG.uniform(0.1, 1.0, n).astype(dtype) for _ in range(4))
        hs = [ext.Array(n, np.dtype(dtype).name) for _ in range(4)]
        for h, x in zip(hs, (w, g, m, v)):
            ext.from_numpy(x, h)
        ext.adam_update((hs[0],), (hs[1],), (hs[2],), (hs[3],), 0.9, 0.1, 0.999, 0.001, wd,
                        -0.01, 1e-8)  # fmt: skip
        gi = g + w * t(wd) if wd else g
        m2, v2 = m * t(0.9) + gi * t(0.1), v * t(0.999) + (gi * gi) * t(0.001)
        w2 = w + (m2 * t(-0.01)) / (np.sqrt(v2) + t(1e-8))
        for h, want in zip(hs, (w2, g, m2, v2)):
            assert np.array_equal(ext.to_numpy(h, (n,), (1,), 0), want)
        ext.sgd_update((hs[0],), (hs[1],), (hs[2],), 0.9, 0.1, -0.05, wd)
        gi = g + w2 * t(wd) if wd else g
        u = m2 * t(0.9) + gi * t(0.1)
        assert np.array_equal(ext.to_numpy(hs[2], (n,), (1,), 0), u)
        assert np.array_equal(ext.to_numpy(hs[0], (n,), (1,), 0), w2 + u * t(-0.05))


def test_bad_calls_raise() -> None:
    a, small = put(np.ones(10)), ext.Array(3)
    with pytest.raises(ValueError, match="sizes differ"):
        ext.ewise_mul(a, a, small)
    with pytest.raises(ValueError, match="outside"):
        ext.to_numpy(a, (2, 2), (-1, 1), 0)
    with pytest.raises(ValueError, match="outside"):
        ext.ewise_setitem(small, a, (3,), (5,), 0)
    with pytest.raises(ValueError, match="negative"):
        ext.compact(a, small, (-1, 3), (1, 1), 0)
    with pytest.raises(ValueError):
        ext.compact(a, small, (3,), (1, 1), 0)
    with pytest.raises(ValueError):
        ext.scalar_setitem(4, 1.0, a, (3,), (1,), 0)
    with pytest.raises(ValueError):
        ext.Array(-5)
    with pytest.raises(ValueError):
        ext.reduce_max(a, small, 0)
    with pytest.raises(ValueError):
        ext.matmul(a, a, small, -1, 2, 3)
    with pytest.raises(ValueError):
        ext.conv2d(a, a, small, 1, 2, 2, 1, 1, 5, 1, 0)
    with pytest.raises(TypeError):
        ext.ewise_add(a, np.ones(10, np.float32), a)  # not a handle of this device


def test_free_waits_for_a_kernel_running_without_the_gil() -> None:
    """free() from one thread while a big matmul reads the buffer in another: the kernel
    finishes on intact data (the buffer is reused and poisoned right after free), no crash."""
    import threading

    n = 768
    a, b = RNG.standard_normal((n, n)), RNG.standard_normal((n, n))
    want = a.astype(np.float32) @ b.astype(np.float32)
    ha, hb, out = put(a), put(b), ext.Array(n * n)
    results: list[object] = []
    started = threading.Event()

    def work() -> None:
        started.set()
        for _ in range(50):
            try:
                ext.matmul(ha, hb, out, n, n, n)
            except ValueError as e:  # b was freed before this call began
                results.append(e)
                return
            results.append(get(out, (n, n)))

    thread = threading.Thread(target=work)
    thread.start()
    started.wait()
    hb.free()
    poison = ext.Array(n * n)  # most likely b's buffer, from the cache
    ext.fill(poison, float("nan"))
    thread.join()
    assert isinstance(results[-1], ValueError) and "freed" in str(results[-1])
    for r in results[:-1]:
        np.testing.assert_allclose(r, want, rtol=1e-3, atol=1e-3)


def test_freed_handle_raises_and_memory_is_released() -> None:
    a = put(np.ones(4))
    a.free()
    a.free()  # twice is fine
    for call in (lambda: ext.fill(a, 1.0), a.ptr, lambda: ext.to_numpy(a, (4,), (1,), 0)):
        with pytest.raises(ValueError, match="freed"):
            call()

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    if not os.path.exists("/proc/self/statm"):
        return
    before = rss()
    for _ in range(10):  # 10 x 200 MB, each touched: a leak would show in the resident size
        ext.fill(ext.Array(50_000_000), 1.0)
    assert rss() - before < 400e6


def test_alignment_and_threads() -> None:
    assert all(ext.Array(n).ptr() % 64 == 0 for n in (1, 3, 1000))
    assert ext.__device_name__ == "cpu" and ext.get_num_threads() >= 1


@pytest.mark.parametrize("env", [{"NEEDLE_CPU_BASELINE": "1"}, {"NEEDLE_NUM_THREADS": "3"}])
def test_baseline_isa_and_thread_count_in_a_subprocess(env) -> None:
    code = (
        "import numpy as np, needle_cpu._ext as e;"
        "x = np.linspace(-5, 5, 100_003, dtype=np.float32);"
        "h = e.Array(x.size); e.from_numpy(x, h); o = e.Array(x.size);"
        "e.ewise_exp(h, o); r = e.to_numpy(o, (x.size,), (1,), 0);"
        "assert np.allclose(r, np.exp(x), rtol=2e-6), 'exp';"
        "e.ewise_tanh(h, o); assert np.allclose(e.to_numpy(o, (x.size,), (1,), 0), np.tanh(x), "
        "rtol=2e-6, atol=1e-7), 'tanh'; s = e.Array(1); e.reduce_sum(h, s, x.size);"
        "assert abs(e.to_numpy(s, (), (), 0) - x.sum(dtype=np.float64)) < 1e-2;"
        "print(e.__isa__, e.get_num_threads())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    isa, threads = result.stdout.split()
    if "NEEDLE_CPU_BASELINE" in env:
        assert isa == "isa_base"
    else:
        assert threads == "3"


def test_views_with_overflowing_extents_raise() -> None:
    a, out = put(np.ones(10)), ext.Array(9)
    with pytest.raises(ValueError):
        ext.compact(a, out, (3, 3), (2**62, 2**62), 0)
    with pytest.raises(ValueError):
        ext.compact(a, out, (3, 3), (-(2**62), -(2**62)), 9)
    with pytest.raises(ValueError):
        ext.conv2d(a, a, out, 1, 1, 1, 1, 1, 1, 1, 2**40)
