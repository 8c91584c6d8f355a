"""Autograd: graph order, gradient accumulation, grad of grad, graph hygiene, operators, devices."""

from __future__ import annotations

import gc

import needle as ndl
import numpy as np
import pytest
from needle.autograd import find_topo_sort

RNG = np.random.default_rng(0)


def _t(device, values, requires_grad=True) -> ndl.Tensor:
    return ndl.Tensor(np.asarray(values, np.float32), device=device, requires_grad=requires_grad)


def _close(got, want, what: str, rtol=1e-5, atol=1e-6) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------------- graph order


def test_find_topo_sort_on_a_diamond(device) -> None:
    x = _t(device, [1.0, 2.0])
    a, b = x * 2.0, x + 1.0  # x feeds both sides of the diamond
    c = a * b
    d = c + a  # a is reached twice, once through c
    order = find_topo_sort([d])
    assert len(order) == len({id(n) for n in order}), "a node appears twice"
    assert {id(n) for n in order} == {id(n) for n in (x, a, b, c, d)}
    position = {id(n): i for i, n in enumerate(order)}
    for node in order:
        for inp in node.inputs:
            assert position[id(inp)] < position[id(node)], (
                f"{type(node.op).__name__} comes before its input"
            )
    assert order[-1] is d


def test_find_topo_sort_survives_deep_graphs(device) -> None:
    x = _t(device, [1.0])
    y = x
    for _ in range(3000):  # deeper than Python's default recursion limit
        y = y + 1.0
    assert len(find_topo_sort([y])) == 3001
    y.backward()
    _close(x.grad.numpy(), [1.0], f"grad through a 3000-op chain on {device.name}")


# ---------------------------------------------------------------------- gradients


def test_gradient_sums_every_use_of_a_value(device) -> None:
    values = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.5]], np.float32)
    x = _t(device, values)
    (x * x + x).sum().backward()  # x is used three times
    _close(x.grad.numpy(), 2 * values + 1, f"d/dx sum(x*x + x) on {device.name}")

    y = _t(device, values)
    z = y * 3.0
    (z * y + z).sum().backward()  # z and y both used twice, through different paths
    _close(y.grad.numpy(), 6 * values + 3, f"d/dy sum(3y*y + 3y) on {device.name}")


def test_gradient_of_a_diamond_reaches_each_leaf_once(device) -> None:
    x = _t(device, [2.0, 3.0])
    w = _t(device, [5.0, 7.0])
    a, b = x * w, x + w
    (a * b).sum().backward()
    # d/dx (xw (x + w)) = w(x + w) + xw ;  d/dw = x(x + w) + xw
    xv, wv = np.array([2.0, 3.0]), np.array([5.0, 7.0])
    _close(x.grad.numpy(), wv * (xv + wv) + xv * wv, f"d/dx on {device.name}")
    _close(w.grad.numpy(), xv * (xv + wv) + xv * wv, f"d/dw on {device.name}")


def test_grad_of_grad(device) -> None:
    values = np.array([-1.5, 0.5, 2.0], np.float32)
    x = _t(device, values)
    (x**3).sum().backward(create_graph=True)
    first = x.grad
    _close(first.numpy(), 3 * values**2, f"d/dx x**3 on {device.name}")
    assert first.op is not None, "create_graph=True must give a gradient with a graph"
    x.grad = None
    first.sum().backward()
    _close(x.grad.numpy(), 6 * values, f"d2/dx2 x**3 on {device.name}")


def test_backward_without_create_graph_keeps_no_graph(device) -> None:
    x = _t(device, [1.0, 2.0])
    y = x * x
    (y * 3.0).sum().backward(create_graph=False)
    assert x.grad.op is None and x.grad.inputs == ()
    assert not x.grad.requires_grad
    assert y.grad is None, "the lean mode keeps .grad on leaves only"
    z = x * x
    z.retain_grad()
    (z * 3.0).sum().backward(create_graph=False)
    _close(z.grad.numpy(), [3.0, 3.0], "retain_grad() keeps a non-leaf's gradient")


def test_backward_keeps_the_course_graph_semantics(device) -> None:
    """As in the course: .grad on every node, and gradients that can be differentiated."""
    x2, x3 = _t(device, [6.0]), _t(device, [0.0])
    y = x2 * x2 + x2 * x3
    square = y.inputs[0]
    y.backward()
    grad_x2, grad_x3 = x2.grad, x3.grad
    _close(grad_x2.numpy(), [12.0], "dy/dx2")
    _close(grad_x3.numpy(), [6.0], "dy/dx3")
    _close(square.grad.numpy(), [1.0], "an intermediate node keeps its .grad")
    grad_x2.backward()  # d(2 x2 + x3)/dx2 = 2, d/dx3 = 1: overwrites .grad
    _close(x2.grad.numpy(), [2.0], "grad of grad")
    _close(x3.grad.numpy(), [1.0], "grad of grad")
    with pytest.raises(RuntimeError, match="does not require grad"):
        _t(device, [1.0], requires_grad=False).backward()


def test_course_backward_makes_no_reference_cycles(device) -> None:
    """An intermediate's .grad holds its value: a step's graph is freed by reference counting
    once the gradients are reset, without waiting for the cyclic garbage collector."""
    import weakref

    x, w = _t(device, [[1.0, -2.0], [3.0, 4.0]]), _t(device, [[0.5, 1.0], [-1.0, 2.0]])
    gc.collect()
    gc.disable()
    try:
        h = ndl.relu(x @ w)
        loss = (h * h).sum()
        loss.backward()
        want = 2 * np.maximum(x.numpy() @ w.numpy(), 0)
        _close(h.grad.numpy(), want, "an intermediate keeps its gradient's value")
        assert h.grad.op is None, "an intermediate's .grad carries no graph"
        assert x.grad.op is not None, "a leaf's .grad still carries its graph (grad of grad)"
        alive = weakref.ref(h)
        del h, loss
        x.grad = w.grad = None
        assert alive() is None, "the step's graph is held by a reference cycle"
    finally:
        gc.enable()


def test_grad_returns_gradients_without_touching_dot_grad(device) -> None:
    x = _t(device, [1.0, 2.0])
    unused = _t(device, [3.0])
    (gx, gu) = ndl.autograd.grad((x * x * x).sum(), [x, unused])
    _close(gx.numpy(), [3.0, 12.0], "d(x^3)/dx")
    assert gu is None and x.grad is None
    (ggx,) = ndl.autograd.grad(gx.sum(), [x])
    _close(ggx.numpy(), [6.0, 12.0], "second derivative through grad()")
    y = x * 2.0
    (g1, gy, g2) = ndl.autograd.grad((y * x).sum(), [x, y, x])  # total derivatives
    _close(g1.numpy(), [4.0, 8.0], "d(2 x^2)/dx = 4 x, through y too")
    _close(g2.numpy(), g1.numpy(), "an input named twice gets its gradient twice")
    _close(gy.numpy(), x.numpy(), "d(y x)/dy")


def test_backward_checks_out_grad_shape(device) -> None:
    y = _t(device, [[1.0, 2.0]]) * 2.0
    with pytest.raises(ValueError, match=r"\(2,\).*\(1, 2\)"):
        y.backward(_t(device, [1.0, 1.0], requires_grad=False))


# ---------------------------------------------------------------------- detach, data, no graph


def test_detach(device) -> None:
    x = _t(device, [1.0, 2.0, 3.0])
    d = x.detach()
    assert d.op is None and d.inputs == () and not d.requires_grad
    _close(d.numpy(), x.numpy(), "detach keeps the values")
    (d * x).sum().backward()  # no gradient flows through the detached side
    _close(x.grad.numpy(), [1.0, 2.0, 3.0], f"d/dx (detach(x) * x) on {device.name}")


def test_data_getter_is_a_leaf_without_graph(device) -> None:
    x = _t(device, [1.0, 2.0])
    y = x * 3.0
    data = y.data
    assert data.op is None and not data.requires_grad
    _close(data.numpy(), [3.0, 6.0], "y.data has y's values")
    assert y.op is not None, "reading .data must not cut y's own graph"


def test_data_setter(device, other_device) -> None:
    x = _t(device, [1.0, 2.0])
    x.data = _t(device, [5.0, 6.0], requires_grad=False)
    _close(x.numpy(), [5.0, 6.0], "after x.data = ...")
    assert x.requires_grad and x.op is None, "setting data keeps x a leaf that needs grad"
    x.data = _t(device, [1.0, 2.0, 3.0])  # as in the course: the shape may change
    assert x.shape == (3,)
    x.data = _t(device, [5.0, 6.0])
    if device.supports("float64"):
        with pytest.raises(TypeError, match="float32.*float64"):
            x.data = ndl.Tensor(np.zeros(2), device=device)  # but not the dtype
    with pytest.raises(ValueError) as err:
        x.data = ndl.Tensor([1.0, 2.0], device=other_device)
    assert device.name in str(err.value) and "other" in str(err.value)
    with pytest.raises(TypeError, match="ndarray"):
        x.data = np.zeros(2, np.float32)
    _close(x.numpy(), [5.0, 6.0], "a refused assignment leaves the data unchanged")


def test_inputs_without_grad_build_no_graph(device) -> None:
    a = _t(device, [1.0, 2.0], requires_grad=False)
    b = _t(device, [3.0, 4.0], requires_grad=False)
    for name, out in {"a + b": a + b, "a * 2": a * 2.0, "exp(a)": ndl.exp(a)}.items():
        assert out.op is None and out.inputs == (), f"{name} kept a graph"
        assert not out.requires_grad, name
    w = _t(device, [1.0, 1.0])
    assert (a * w).op is not None, "one input needing grad is enough for a graph"


def test_no_grad(device) -> None:
    w = _t(device, [1.0, 2.0])
    assert ndl.is_grad_enabled()
    with ndl.no_grad():
        assert not ndl.is_grad_enabled()
        y = w * 2.0
        with ndl.enable_grad():
            z = w * 2.0
    assert ndl.is_grad_enabled(), "no_grad restores the previous state"
    assert y.op is None and y.inputs == () and not y.requires_grad
    assert z.op is not None and z.requires_grad


def test_no_grad_restores_state_after_an_exception(device) -> None:
    with pytest.raises(RuntimeError), ndl.no_grad():
        raise RuntimeError("boom")
    assert ndl.is_grad_enabled()


def _live_tensors() -> int:
    gc.collect()
    return sum(isinstance(o, ndl.Tensor) for o in gc.get_objects())


def _train(device, steps: int, update) -> list[int]:
    x = _t(device, 0.2 * RNG.standard_normal((8, 4)), requires_grad=False)
    w = _t(device, RNG.standard_normal((4, 1)))
    counts = []
    for step in range(steps):
        loss = ((x @ w) ** 2).sum()
        w.grad = None
        loss.backward()
        w = update(w)
        del loss
        if step in (9, steps - 1):
            counts.append(_live_tensors())
    return counts


def test_sgd_loop_does_not_grow_the_graph(device) -> None:
    def sgd(w):
        w.data = w.data - 0.1 * w.grad.data
        return w

    after_10, after_200 = _train(device, 200, sgd)
    assert after_200 <= after_10, (
        f"{after_200 - after_10} more live Tensors after 190 more SGD steps on {device.name}"
    )


def test_the_live_tensor_count_sees_a_growing_graph(device) -> None:
    """Control for the test above: the classic mistake (no .data) does grow, and is seen."""

    def leaky(w):
        out = w - 0.1 * w.grad  # keeps the whole history in the graph
        out.grad = None
        return out

    after_10, after_50 = _train(device, 50, leaky)
    assert after_50 > after_10 + 40


# ---------------------------------------------------------------------- operators


REFLECTED = {
    "3 + t": (lambda t: 3 + t, lambda v: 3 + v, lambda v: np.ones_like(v)),
    "1 - t": (lambda t: 1 - t, lambda v: 1 - v, lambda v: -np.ones_like(v)),
    "3 * t": (lambda t: 3 * t, lambda v: 3 * v, lambda v: np.full_like(v, 3)),
    "2 / t": (lambda t: 2 / t, lambda v: 2 / v, lambda v: -2 / v**2),
    "2 ** t": (lambda t: 2**t, lambda v: 2**v, lambda v: 2**v * np.log(2)),
    "t - 1": (lambda t: t - 1, lambda v: v - 1, lambda v: np.ones_like(v)),
    "t / 4": (lambda t: t / 4, lambda v: v / 4, lambda v: np.full_like(v, 0.25)),
    "t ** 2": (lambda t: t**2, lambda v: v**2, lambda v: 2 * v),
    "-t": (lambda t: -t, lambda v: -v, lambda v: -np.ones_like(v)),
}


@pytest.mark.parametrize("expr", list(REFLECTED))
def test_scalar_operators_match_numpy(device, expr: str) -> None:
    op, forward, derivative = REFLECTED[expr]
    values = np.array([[0.5, 1.0, 2.5], [3.0, 0.25, 1.5]], np.float32)
    t = _t(device, values)
    out = op(t)
    assert isinstance(out, ndl.Tensor), f"{expr} gave {type(out).__name__}"
    _close(out.numpy(), forward(values.astype(np.float64)), f"{expr} on {device.name}", 1e-5)
    out.sum().backward()
    _close(t.grad.numpy(), derivative(values.astype(np.float64)), f"d/dt {expr} on {device.name}")


def test_numpy_array_on_the_left_defers_to_the_tensor(device) -> None:
    t = _t(device, [1.0, 2.0])
    out = np.float32(3.0) - t
    assert isinstance(out, ndl.Tensor)
    _close(out.numpy(), [2.0, 1.0], "np.float32(3) - t")


# ---------------------------------------------------------------------- data in and out


def test_numpy_never_aliases_backend_memory(device) -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = _t(device, values)
    for name, tensor in {
        "tensor": t,
        "transposed view": ndl.transpose(t),
        "sliced view": t[1:, ::-2],
    }.items():
        before = tensor.numpy()
        got = tensor.numpy()
        got[...] = -7.0
        _close(tensor.numpy(), before, f"mutating numpy() of a {name} changed it on {device.name}")
    _close(t.numpy(), values, "the tensor is unchanged")
    src = values.copy()
    u = _t(device, src)
    src[...] = 0.0
    _close(u.numpy(), values, "mutating the numpy input after Tensor() changed the tensor")


def test_to_device(device, other_device) -> None:
    t = _t(device, [[1.0, 2.0], [3.0, 4.0]])
    assert t.to(device) is t, "to() the same device is a no-op"
    assert t.to(device.name) is t
    moved = t.to(other_device)
    assert moved.device == other_device and moved.device.name == "other"
    assert moved.requires_grad and moved.op is None
    _close(moved.numpy(), t.numpy(), f"values after {device.name} -> other")
    back = moved.to(device.name)
    assert back.device == device
    _close(back.numpy(), t.numpy(), f"values after other -> {device.name}")


def test_mixing_devices_in_one_op_names_both(device, other_device) -> None:
    a = _t(device, [[1.0, 2.0]])
    b = ndl.Tensor([[3.0], [4.0]], device=other_device)
    cases = {
        "EWiseAdd": lambda: a + b.reshape((1, 2)),
        "EWiseMul": lambda: b.reshape((1, 2)) * a,
        "MatMul": lambda: a @ b,
    }
    for op, call in cases.items():
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert device.name in message and "other" in message, f"{op}: {message}"
        assert op in message, f"the error does not name the op: {message}"


# ---------------------------------------------------------------------- bad input


def test_mismatched_shapes_name_both_shapes(device) -> None:
    a = _t(device, np.ones((2, 3)))
    b = _t(device, np.ones((3, 2)))
    with pytest.raises(ValueError) as err:
        a + b
    assert "(2, 3)" in str(err.value) and "(3, 2)" in str(err.value), str(err.value)
    with pytest.raises(ValueError) as err:
        a @ _t(device, np.ones((2, 3)))
    assert "(2, 3)" in str(err.value), str(err.value)


@pytest.mark.parametrize("axes", [2, -3, (0, 5)])
def test_bad_axis_is_an_error_naming_it(device, axes) -> None:
    t = _t(device, np.ones((2, 3)))
    with pytest.raises((IndexError, ValueError), match="axis"):
        t.sum(axes)


def test_tensor_rejects_non_tensor_inputs_and_other_dtypes(device) -> None:
    t = _t(device, [1.0, 2.0])
    with pytest.raises(TypeError, match="Tensor"):
        ndl.ops.EWiseAdd()(t, np.ones(2, np.float32))
    with pytest.raises(TypeError, match="complex128"):
        ndl.Tensor(np.ones(2, np.complex128), device=device)
    with pytest.raises(TypeError):
        ndl.Tensor(["a", "b"], device=device)


def test_no_grad_is_per_thread(device) -> None:
    """Two threads entering and leaving no_grad() leave the other's grad mode alone."""
    import threading

    entered, release = threading.Event(), threading.Event()

    def worker() -> None:
        with ndl.no_grad():
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    entered.wait(5)
    assert ndl.is_grad_enabled(), "another thread's no_grad() switched this one off"
    x = _t(device, [1.0, 2.0])
    (x * x).sum().backward()
    assert x.grad is not None
    with ndl.no_grad():
        release.set()
        thread.join(5)
    assert ndl.is_grad_enabled()


def test_logsumexp_of_infinite_rows_matches_numpy(device) -> None:
    x = np.array([[-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 2.0], [1.0, 2.0, 3.0]], np.float32)
    got = ndl.logsumexp(_t(device, x, requires_grad=False), axes=(1,)).numpy()
    with np.errstate(all="ignore"):
        want = np.log(np.exp(x.astype(np.float64)).sum(axis=1))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] == -np.inf and got[1] == np.inf


def test_lean_logsumexp_gradient_matches_the_course_gradient(device):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 7)).astype(np.float32) * 3
    grads = []
    for create_graph in (True, False):
        x = ndl.Tensor(data, device=device)
        op = ndl.ops.LogSumExp((1,))
        first = op(x)
        other = op(ndl.Tensor(data[::-1].copy(), device=device))  # the op is called again
        (first * ndl.Tensor(np.arange(4.0, dtype=np.float32), device=device)).sum().backward(
            create_graph=create_graph
        )
        grads.append(x.grad.numpy())
        del other
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6, atol=1e-7)


def test_lean_batch_norm_gradient_of_a_reused_op(device):
    rng = np.random.default_rng(1)
    x1, x2, r = (rng.standard_normal((5, 3)).astype(np.float32) for _ in range(3))
    weight = rng.standard_normal(3).astype(np.float32)
    grads = []
    for reuse in (False, True):
        x = ndl.Tensor(x1, device=device)
        w = ndl.Tensor(weight, device=device)
        b = ndl.Tensor(np.zeros(3, np.float32), device=device)
        op = ndl.ops.BatchNorm()
        out = op(x, w, b)
        if reuse:  # the op's saved statistics now belong to another output
            op(ndl.Tensor(x2, device=device), w, b)
        # A random adjoint: (out * out).sum()'s gradient cancels to rounding noise.
        (out * ndl.Tensor(r, device=device)).sum().backward(create_graph=False)
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_softmax_cross_entropy_with_float_labels_that_require_grad(device):
    logits = ndl.Tensor(np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0]], np.float32), device=device)
    labels = ndl.Tensor(np.array([1.0, 2.0], np.float32), device=device)  # requires grad
    ndl.nn.SoftmaxLoss()(logits, labels).backward()
    assert logits.grad is not None
    if labels.grad is not None:  # the fused op: zeros (labels are indices)
        assert not labels.grad.numpy().any()


HVP_CASES = {
    "matmul and tanh": lambda x, w, ndl: ndl.tanh(x @ w).sum(),
    "exp and log": lambda x, w, ndl: (ndl.log(ndl.exp(x * 0.5) + 1.0) @ w).sum(),
    "power and division": lambda x, w, ndl: ((x**3) / (w.sum() + 10.0)).sum(),
    "broadcast and reshape": lambda x, w, ndl: ((x * x).reshape((4, 3)) * w.sum((0,))).sum(),
    "logsumexp": lambda x, w, ndl: ndl.logsumexp(x @ w, axes=(1,)).sum(),
    "softmax loss": lambda x, w, ndl: ndl.nn.SoftmaxLoss()(x @ w, _labels(ndl, x)),
    "batch norm": lambda x, w, ndl: (
        ndl.ops.batch_norm(x, w.sum((1,)) + 1.0, x.sum((0,))) ** 2
    ).sum(),
    "relu and max": lambda x, w, ndl: (ndl.relu(x @ w) ** 2).sum() + (x**2).max(),
    "linear": lambda x, w, ndl: (
        ndl.ops.linear(x, w, (w * w).sum((0,)).reshape((1, 3))) ** 2
    ).sum(),
}


def _labels(ndl, x):
    return ndl.Tensor(np.arange(x.shape[0]) % 3, device=x.device)


@pytest.mark.parametrize("case", list(HVP_CASES), ids=list(HVP_CASES))
def test_gradients_of_gradients_match_finite_differences(device, case) -> None:
    """A Hessian-vector product through x.grad (the course's backward: gradients are
    differentiable) equals the central difference of the first gradient, in float64."""
    if not device.supports("float64"):
        pytest.skip(f"{device.name} holds no float64")
    f = HVP_CASES[case]
    rng = np.random.default_rng(3)
    x0, w0 = rng.normal(size=(3, 4)), rng.normal(size=(4, 3))
    v = rng.normal(size=(3, 4))

    def first_gradient(xv):
        x = ndl.Tensor(xv, device=device, dtype="float64")
        w = ndl.Tensor(w0, device=device, dtype="float64")
        f(x, w, ndl).backward()
        return x

    x = first_gradient(x0)
    (x.grad * ndl.Tensor(v, device=device, dtype="float64")).sum().backward()
    eps = 1e-6
    plus, minus = first_gradient(x0 + eps * v).grad, first_gradient(x0 - eps * v).grad
    want = (plus.numpy() - minus.numpy()) / (2 * eps)
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=case)


def test_third_derivative(device) -> None:
    x = _t(device, [2.0])
    (x**4).sum().backward()  # 4 x^3 = 32
    _close(x.grad.numpy(), [32.0], "first")
    x.grad.sum().backward()  # 12 x^2 = 48
    _close(x.grad.numpy(), [48.0], "second")
    x.grad.sum().backward()  # 24 x = 48
    _close(x.grad.numpy(), [48.0], "third")
    x.grad.sum().backward()  # 24
    _close(x.grad.numpy(), [24.0], "fourth")
