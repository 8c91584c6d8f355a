"""Tensor.register_grad_ready_hook: called once per backward when a leaf's gradient is final."""

from __future__ import annotations

import gc

import needle as ndl
import numpy as np
import pytest
from needle import autograd


def test_hook_sees_the_final_gradient_of_a_leaf_used_twice(device) -> None:
    x = ndl.Tensor([1.0, 2.0, 3.0], device=device)
    seen = []
    x.register_grad_ready_hook(lambda t: seen.append((t is x, t.grad.numpy())))
    (x * x + x * 3.0).sum().backward()
    assert len(seen) == 1 and seen[0][0]
    np.testing.assert_allclose(seen[0][1], 2 * x.numpy() + 3.0)


def test_hooks_fire_in_backward_order_before_backward_returns(device) -> None:
    a = ndl.Tensor(np.ones((2, 3), np.float32), device=device)
    b = ndl.Tensor(np.ones((3, 4), np.float32), device=device)
    order = []
    a.register_grad_ready_hook(lambda t: order.append("a"))
    b.register_grad_ready_hook(lambda t: order.append("b"))
    loss = ((a @ b).relu() @ ndl.Tensor(np.ones((4, 1), np.float32), device=device)).sum()
    loss.backward()
    assert sorted(order) == ["a", "b"], "once each, during backward"
    loss.backward()
    assert len(order) == 4, "again on the next backward"


def test_hook_may_replace_the_gradient(device) -> None:
    x = ndl.Tensor([1.0, -1.0], device=device)

    def halve(t: ndl.Tensor) -> None:
        t.grad = t.grad * 0.5

    x.register_grad_ready_hook(halve)
    (x * 4.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_remove_unregisters_the_hook(device) -> None:
    x = ndl.Tensor([1.0], device=device)
    calls = []
    handle = x.register_grad_ready_hook(lambda t: calls.append(1))
    keep = x.register_grad_ready_hook(lambda t: calls.append(2))
    handle.remove()
    handle.remove()  # twice: no effect
    (x * 2.0).sum().backward()
    assert calls == [2]
    keep.remove()
    (x * 2.0).sum().backward()
    assert calls == [2]


def test_hooks_are_for_leaves_only(device) -> None:
    x = ndl.Tensor([1.0], device=device)
    with pytest.raises(ValueError, match="leaf"):
        (x * 2.0).register_grad_ready_hook(lambda t: None)


def test_a_collected_tensor_leaves_no_hook_behind(device) -> None:
    gc.collect()  # earlier tests' graphs (a gradient keeps its graph: cycles) go first
    before = len(autograd._grad_ready_hooks)
    x = ndl.Tensor([1.0], device=device)
    x.register_grad_ready_hook(lambda t: None)
    assert len(autograd._grad_ready_hooks) == before + 1
    del x
    gc.collect()
    assert len(autograd._grad_ready_hooks) == before
