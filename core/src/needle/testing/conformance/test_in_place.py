"""In-place updates, fused kernels and recorded programs: elementwise kernels with ``out``
equal to an input, the fused optimizer updates (``sgd_update``, ``adam_update``), the row
kernels (``broadcast_rows``, ``gather_rows``, ``scatter_add_rows``), softmax cross-entropy and
``run_program``.

The optimizer tests go through :mod:`needle.backend_ndarray.compose`, which runs a backend's
fused update when it declares one and the composition of elementwise kernels otherwise:
either way the result must be numpy's, operation by operation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from needle.backend_ndarray import NDArray, compose

RNG = np.random.default_rng(1)
FLOATS = ("float32", "float64")
INTS = ("int32", "int64")


def _dtypes(device, group: str) -> list[str]:
    return [d for d in FLOATS if device.supports(d, group)]


def _array(device, values: np.ndarray) -> NDArray:
    return NDArray.from_numpy(values, device)


BINARY = {"ewise_add": np.add, "ewise_mul": np.multiply, "ewise_div": np.divide,
          "ewise_maximum": np.maximum}  # fmt: skip
SCALAR = {"scalar_add": np.add, "scalar_mul": np.multiply, "scalar_div": np.divide,
          "scalar_power": np.power, "scalar_maximum": np.maximum}  # fmt: skip
UNARY = {"ewise_exp": np.exp, "ewise_tanh": np.tanh, "ewise_log": np.log}


@pytest.mark.parametrize("size", [1, 1000, 70_001])
@pytest.mark.parametrize("name", [*BINARY, *SCALAR, *UNARY])
def test_elementwise_out_may_be_an_input(device, name: str, size: int) -> None:
    for dtype in _dtypes(device, "unary" if name in UNARY else "arithmetic"):
        a = RNG.uniform(0.5, 2.0, size).astype(dtype)
        b = RNG.uniform(0.5, 2.0, size).astype(dtype)
        x, y = _array(device, a), _array(device, b)
        kernel = getattr(device.mod, name)
        if name in BINARY:
            kernel(x.handle, y.handle, x.handle)  # out is the first input
            want = BINARY[name](a, b)
            kernel(y.handle, x.handle, x.handle)  # out is the second input
            want = BINARY[name](b, want)
        elif name in SCALAR:
            kernel(x.handle, 1.5, x.handle)
            want = SCALAR[name](a, np.array(1.5, dtype))
        else:
            kernel(x.handle, x.handle)
            want = UNARY[name](a)
        tol = {"rtol": 2e-6} if dtype == "float32" else {"rtol": 1e-13}
        np.testing.assert_allclose(x.numpy(), want, **tol, err_msg=f"{name} {dtype} in place")


def _state(device, dtype: str, shapes, count: int) -> list[list[NDArray]]:
    return [
        [_array(device, RNG.uniform(0.1, 1.0, s).astype(dtype)) for s in shapes]
        for _ in range(count)
    ]


SHAPES = [(3, 4), (17,), (1, 5000), (0,)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sgd_update(device, weight_decay: float) -> None:
    for dtype in _dtypes(device, "arithmetic"):
        params, grads, momenta = _state(device, dtype, SHAPES, 3)
        w, g, u = ([x.numpy() for x in group] for group in (params, grads, momenta))
        b, lr = 0.9, 0.05
        compose.sgd_update(params, grads, momenta, (b, 1 - b, -lr, weight_decay))
        t = np.dtype(dtype).type
        for i in range(len(SHAPES)):
            gi = g[i] + w[i] * t(weight_decay) if weight_decay else g[i]
            u[i] = u[i] * t(b) + gi * t(1 - b)
            w[i] = w[i] + u[i] * t(-lr)
            tol = {"rtol": 1e-6} if dtype == "float32" else {"rtol": 1e-14}
            np.testing.assert_allclose(momenta[i].numpy(), u[i], **tol)
            np.testing.assert_allclose(params[i].numpy(), w[i], **tol)
            np.testing.assert_array_equal(grads[i].numpy(), g[i], err_msg="the gradient changed")


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_update(device, weight_decay: float) -> None:
    for dtype in _dtypes(device, "arithmetic"):
        params, grads, firsts, seconds = _state(device, dtype, SHAPES, 4)
        w, g, m, v = ([x.numpy() for x in group] for group in (params, grads, firsts, seconds))
        b1, b2, step, eps_hat = 0.9, 0.999, -0.01, 1e-8
        scalars = (b1, 1 - b1, b2, 1 - b2, weight_decay, step, eps_hat)
        compose.adam_update(params, grads, firsts, seconds, scalars)
        t = np.dtype(dtype).type
        for i in range(len(SHAPES)):
            gi = g[i] + w[i] * t(weight_decay) if weight_decay else g[i]
            m[i] = m[i] * t(b1) + gi * t(1 - b1)
            v[i] = v[i] * t(b2) + (gi * gi) * t(1 - b2)
            w[i] = w[i] + (m[i] * t(step)) / (v[i] ** t(0.5) + t(eps_hat))
            tol = {"rtol": 1e-6} if dtype == "float32" else {"rtol": 1e-14}
            np.testing.assert_allclose(firsts[i].numpy(), m[i], **tol)
            np.testing.assert_allclose(seconds[i].numpy(), v[i], **tol)
            np.testing.assert_allclose(params[i].numpy(), w[i], **tol)


def test_run_program(device) -> None:
    if not device.has("run_program"):
        pytest.skip(f"{device.name} declares no run_program (core replays kernel by kernel)")
    a = RNG.uniform(0.5, 2.0, 64).astype(np.float32)
    x, y, z = _array(device, a), _array(device, a * 2), NDArray.make((64,), device=device)
    total = NDArray.make((1,), device=device)
    device.mod.run_program(
        [
            ("ewise_add", (x.handle, y.handle, z.handle)),
            ("scalar_mul", (z.handle, 0.5, z.handle)),
            ("matmul", (z.handle, y.handle, x.handle, 8, 8, 8)),
            ("reduce_sum", (x.handle, total.handle, 64)),
        ]
    )
    want_z = (a + 2 * a) * 0.5
    want_x = want_z.reshape(8, 8) @ (2 * a).reshape(8, 8)
    np.testing.assert_allclose(z.numpy().reshape(-1), want_z, rtol=1e-6)
    np.testing.assert_allclose(x.numpy().reshape(8, 8), want_x, rtol=1e-5)
    np.testing.assert_allclose(total.numpy(), [want_x.sum()], rtol=1e-5)
    with pytest.raises((ValueError, TypeError, KeyError)):
        device.mod.run_program([("no_such_kernel", ())])


@pytest.mark.parametrize("op", ["add", "mul", "div", "maximum"])
def test_broadcast_rows(device, op: str) -> None:
    if not device.has("broadcast_rows"):
        pytest.skip(f"{device.name} declares no broadcast_rows (core compacts the row)")
    fn = {"add": np.add, "mul": np.multiply, "div": np.divide, "maximum": np.maximum}[op]
    ints = [] if op == "div" else [d for d in INTS if device.supports(d, "arithmetic")]
    for dtype in _dtypes(device, "arithmetic") + ints:
        for rows, width in [(1, 1), (7, 5), (300, 129)]:
            a = RNG.uniform(0.5, 2.0, (rows, width)).astype(dtype)
            b = RNG.uniform(0.5, 2.0, width).astype(dtype)
            if dtype in FLOATS:
                a[0, 0], b[-1] = np.nan, np.nan  # NaN in either operand gives NaN
            else:
                a, b = RNG.integers(-9, 9, (rows, width), dtype), RNG.integers(-9, 9, width, dtype)
            x, y = _array(device, a), _array(device, b)
            out = NDArray.make((rows, width), device=device, dtype=dtype)
            device.mod.broadcast_rows(op, x.handle, y.handle, out.handle, width)
            np.testing.assert_array_equal(out.numpy(), fn(a, b[None]), err_msg=f"{op} {dtype}")
            device.mod.broadcast_rows(op, x.handle, y.handle, x.handle, width)  # in place
            np.testing.assert_array_equal(x.numpy(), fn(a, b[None]), err_msg=f"{op} in place")
    with pytest.raises((ValueError, TypeError)):
        device.mod.broadcast_rows("power", x.handle, y.handle, out.handle, width)


def test_softmax_cross_entropy(device) -> None:
    if not device.has("softmax_cross_entropy"):
        pytest.skip(f"{device.name} declares no softmax_cross_entropy (core composes it)")
    for dtype in _dtypes(device, "unary"):
        for n, k in [(1, 1), (5, 3), (64, 1000)]:
            x = RNG.standard_normal((n, k)).astype(dtype) * 5
            x[0, 0] = 1e30  # a huge logit: the shift keeps exp in range
            labels = RNG.integers(0, k, n)
            logits = _array(device, x)
            index = NDArray.from_numpy(labels, device, "int64")
            losses = NDArray.make((n,), device=device, dtype=dtype)
            probs = NDArray.make((n, k), device=device, dtype=dtype)
            device.mod.softmax_cross_entropy(
                logits.handle, index.handle, losses.handle, probs.handle, n, k
            )
            wide = x.astype(np.float64)
            top = wide.max(axis=1, keepdims=True)
            e = np.exp(wide - top)
            want_p = e / e.sum(axis=1, keepdims=True)
            want_l = np.log(e.sum(axis=1)) + top[:, 0] - wide[np.arange(n), labels]
            tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12}
            np.testing.assert_allclose(probs.numpy(), want_p, **tol)
            np.testing.assert_allclose(losses.numpy(), want_l, **tol)
            g = RNG.standard_normal(n).astype(dtype)
            out = NDArray.make((n, k), device=device, dtype=dtype)
            device.mod.softmax_cross_entropy_grad(
                probs.handle, index.handle, _array(device, g).handle, out.handle, n, k
            )
            want_g = probs.numpy() * g[:, None]
            want_g[np.arange(n), labels] -= g
            np.testing.assert_allclose(out.numpy(), want_g, **tol)
    bad = NDArray.from_numpy(np.array([k], dtype=np.int64), device, "int64")
    with pytest.raises((IndexError, ValueError)):
        device.mod.softmax_cross_entropy(
            logits.handle, bad.handle, losses.handle, probs.handle, 1, k
        )


NORM_SHAPES = [(1, 1), (5, 3), (64, 100), (8, 4, 3, 3), (16, 8, 300), (4, 3, 0)]


@pytest.mark.parametrize("fused", [True, False], ids=["kernels", "composed"])
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
def test_batch_norm(device, shape, fused: bool, monkeypatch) -> None:
    """compose.batch_norm and batch_norm_grad against float64 numpy: outputs, statistics,
    running updates and the three gradients, per channel of axis 1; through the backend's
    kernels, and through core's composition (the kernels hidden)."""
    names = {"batch_norm", "batch_norm_grad"}
    if fused and not names <= set(device.capabilities):
        pytest.skip(f"{device.name} declares no batch_norm kernels (core composes them)")
    if not fused:
        monkeypatch.setattr(device, "_caps", device._caps - names)
    axes = (0, *range(2, len(shape)))
    channels, momentum, eps = shape[1], 0.1, 1e-3
    for dtype in _dtypes(device, "unary"):
        x = RNG.standard_normal(shape) * 3 + 2
        g = RNG.standard_normal(shape)
        w, b = RNG.standard_normal(channels), RNG.standard_normal(channels)
        run = [RNG.random(channels), RNG.random(channels) + 0.5]
        nd = [_array(device, v.astype(dtype)) for v in (x, g, w, b, *run)]
        out, mean, invstd = compose.batch_norm(nd[0], nd[2], nd[3], eps, momentum, (nd[4], nd[5]))
        dx, dw, db = compose.batch_norm_grad(nd[1], nd[0], nd[2], mean, invstd)
        x, g, w, b, rm, rv = (v.astype(dtype).astype(np.float64) for v in (x, g, w, b, *run))
        at = (1, channels) + (1,) * (len(shape) - 2)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an empty channel: NaN statistics
            mu, var = x.mean(axes), x.var(axes)
            xhat = (x - mu.reshape(at)) / np.sqrt(var + eps).reshape(at)
            want = {
                "out": xhat * w.reshape(at) + b.reshape(at),
                "mean": mu,
                "invstd": 1 / np.sqrt(var + eps),
                "running_mean": 0.9 * rm + 0.1 * mu,
                "running_var": 0.9 * rv + 0.1 * var,
                "dbias": g.sum(axes),
                "dweight": (g * xhat).sum(axes),
                "dx": (w / np.sqrt(var + eps)).reshape(at)
                * (g - g.mean(axes).reshape(at) - xhat * (g * xhat).mean(axes).reshape(at)),
            }
        got = {"out": out, "mean": mean, "invstd": invstd, "running_mean": nd[4],
               "running_var": nd[5], "dbias": db, "dweight": dw, "dx": dx}  # fmt: skip
        tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == "float32" else {"rtol": 1e-9, "atol": 1e-9}
        for name, value in got.items():
            assert value.shape == np.shape(want[name]), name
            np.testing.assert_allclose(value.numpy(), want[name], **tol, err_msg=name)
        if len(shape) > 2:  # x and g held channels-last (a convolution's output): same bits
            perm = (0, *range(2, len(shape)), 1)
            back = tuple(perm.index(i) for i in range(len(shape)))
            last = [_array(device, np.ascontiguousarray(v.numpy().transpose(perm))).permute(back)
                    for v in nd[:2]]  # fmt: skip
            run2 = [_array(device, v.astype(dtype)) for v in run]
            out2, mean2, invstd2 = compose.batch_norm(last[0], nd[2], nd[3], eps, momentum, run2)
            dx2, _, _ = compose.batch_norm_grad(last[1], last[0], nd[2], mean2, invstd2)
            np.testing.assert_allclose(out2.numpy(), out.numpy(), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(dx2.numpy(), dx.numpy(), rtol=1e-5, atol=1e-5)


def test_batch_norm_kernels_check_their_arguments(device) -> None:
    if not device.has("batch_norm"):
        pytest.skip(f"{device.name} declares no batch_norm (core composes it)")
    x = _array(device, RNG.standard_normal((4, 3)).astype(np.float32))
    out = NDArray.make((4, 3), device=device, dtype="float32")
    c3 = [_array(device, np.full(3, 7.0, np.float32)) for _ in range(6)]
    w, b, m, inv, rm, rv = (c.handle for c in c3)
    device.mod.batch_norm(x.handle, w, b, out.handle, m, inv, rm, rv, 4, 3, 1, 1e-5, 0.0)
    np.testing.assert_array_equal(c3[4].numpy(), 7.0)  # momentum 0: running left alone
    short = _array(device, np.zeros(2, np.float32)).handle
    for bad in [
        (x.handle, w, b, out.handle, m, inv, rm, rv, 4, 4, 1, 1e-5, 0.1),  # x is not 4 x 4
        (x.handle, short, b, out.handle, m, inv, rm, rv, 4, 3, 1, 1e-5, 0.1),  # weight of 2
        (x.handle, w, b, out.handle, m, inv, short, rv, 4, 3, 1, 1e-5, 0.1),  # running of 2
    ]:
        with pytest.raises(ValueError):
            device.mod.batch_norm(*bad)
    with pytest.raises(ValueError):
        device.mod.batch_norm_grad(x.handle, x.handle, w, m, inv, out.handle, short, b, 4, 3, 1)
    if device.supports("int32"):
        ints = NDArray.make((4, 3), device=device, dtype="int32")
        with pytest.raises((ValueError, TypeError)):
            device.mod.batch_norm(
                ints.handle, w, b, ints.handle, m, inv, rm, rv, 4, 3, 1, 1e-5, 0.1
            )


def _rows_case(device, dtype: str, rows: int, count: int, width: int):
    if dtype == "bool":
        table = RNG.random((rows, width)) < 0.5
    else:
        table = RNG.integers(-50, 50, (rows, width)).astype(dtype)
    index = RNG.integers(0, rows, count)
    index[: min(count, 3)] = rows - 1  # repeated indices, the last row among them
    return table, index, NDArray.from_numpy(index, device, "int64")


@pytest.mark.parametrize("dtype", ("float32", "float64", "int32", "int64", "bool"))
def test_gather_rows(device, dtype: str) -> None:
    if not device.has("gather_rows"):
        pytest.skip(f"{device.name} declares no gather_rows (core gathers with one-hot products)")
    if not device.supports(dtype) or not device.supports("int64"):
        pytest.skip(f"{device.name} holds no {dtype} (or no int64 indices)")
    for rows, count, width in [(1, 1, 1), (10, 7, 3), (50, 400, 129)]:
        table, index, idx = _rows_case(device, dtype, rows, count, width)
        a = NDArray.from_numpy(table, device, dtype)
        out = NDArray.make((count, width), device=device, dtype=dtype)
        device.mod.gather_rows(a.handle, idx.handle, out.handle, count, width)
        np.testing.assert_array_equal(out.numpy(), table[index], err_msg=f"{dtype} {count}")
    bad = NDArray.from_numpy(np.array([rows], dtype=np.int64), device, "int64")
    one = NDArray.make((1, width), device=device, dtype=dtype)
    with pytest.raises(IndexError):
        device.mod.gather_rows(a.handle, bad.handle, one.handle, 1, width)
    with pytest.raises(ValueError):  # out is not count x width
        device.mod.gather_rows(a.handle, idx.handle, one.handle, count, width)


@pytest.mark.parametrize("dtype", ("float32", "float64", "int32", "int64"))
def test_scatter_add_rows(device, dtype: str) -> None:
    if not device.has("scatter_add_rows"):
        pytest.skip(f"{device.name} declares no scatter_add_rows (core uses one-hot products)")
    if not device.supports(dtype, "arithmetic") or not device.supports("int64"):
        pytest.skip(f"{device.name} declares no {dtype} arithmetic (or no int64 indices)")
    for rows, count, width in [(1, 1, 1), (10, 7, 3), (50, 400, 129)]:
        start, index, idx = _rows_case(device, dtype, rows, count, width)
        values = RNG.integers(-50, 50, (count, width)).astype(dtype)
        if dtype in FLOATS:
            values += RNG.uniform(0, 1, (count, width)).astype(dtype)
        out = NDArray.from_numpy(start, device, dtype)
        device.mod.scatter_add_rows(
            _array(device, values).handle, idx.handle, out.handle, count, width
        )
        want = start.copy()
        np.add.at(want, index, values)  # repeated indices add up, in order
        np.testing.assert_array_equal(out.numpy(), want, err_msg=f"{dtype} {count}")
    bad = NDArray.from_numpy(np.array([-1], dtype=np.int64), device, "int64")
    with pytest.raises(IndexError):
        device.mod.scatter_add_rows(
            _array(device, values[:1]).handle, bad.handle, out.handle, 1, width
        )
