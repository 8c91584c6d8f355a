"""Convolution: NHWC input, (K, K, Cin, Cout) weight, stride and zero padding."""

from __future__ import annotations

import operator

from ..autograd import Tensor, TensorOp
from ..backend_ndarray import NDArray
from .movement import Dilate, Flip, GetItem, Pad, Transpose

__all__ = ["Conv", "conv"]


def conv2d(a: NDArray, b: NDArray, stride: int, padding: int) -> NDArray:
    """The forward convolution on NDArrays: the backend's ``conv2d`` when it declares one,
    else im2col (a strided view, one compact) and one matmul."""
    if a.ndim != 4 or b.ndim != 4:
        raise ValueError(
            f"conv needs an NHWC input and a (K, K, Cin, Cout) weight, got shapes {a.shape} "
            f"and {b.shape}"
        )
    n, h, w, cin = a.shape
    k, k2, cin2, cout = b.shape
    if k != k2:
        raise ValueError(f"conv needs a square kernel, got weight shape {b.shape}")
    if cin != cin2:
        raise ValueError(f"conv input has {cin} channels, the weight expects {cin2} ({b.shape})")
    if a.device != b.device:
        raise ValueError(f"conv got arrays on {a.device.name} and {b.device.name}")
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"conv kernel {k} is larger than the padded input {h + 2 * padding}x{w + 2 * padding}"
        )
    out = NDArray.make((n, ho, wo, cout), device=a.device)
    if out.size == 0:
        return out
    if a.size == 0 or b.size == 0:
        out.fill(0.0)
        return out
    if a.device.has("conv2d"):
        a.device.mod.conv2d(
            a.compact().handle, b.compact().handle, out.handle,
            n, h, w, cin, cout, k, stride, padding,
        )  # fmt: skip
        return out
    if padding:
        a = a.pad(((0, 0), (padding, padding), (padding, padding), (0, 0)))
    sn, sh, sw, sc = a.strides
    cols = a.as_strided(
        (n, ho, wo, k, k, cin), (sn, sh * stride, sw * stride, sh, sw, sc)
    ).compact()
    return (cols.reshape((n * ho * wo, k * k * cin)) @ b.compact().reshape((k * k * cin, cout))).reshape(
        (n, ho, wo, cout)
    )


class Conv(TensorOp):
    """2-D convolution (cross-correlation) of an NHWC input with a (K, K, Cin, Cout) weight."""

    def __init__(self, stride: int = 1, padding: int = 0) -> None:
        self.stride, self.padding = operator.index(stride), operator.index(padding)
        if self.stride < 1 or self.padding < 0:
            raise ValueError(f"conv needs stride >= 1 and padding >= 0, got {stride}, {padding}")

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        return conv2d(a, b, self.stride, self.padding)

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor, Tensor]:
        x, weight = node.inputs
        _, h, w, _ = x.shape
        k, s, p = weight.shape[0], self.stride, self.padding
        grad = Dilate((1, 2), s - 1)(out_grad) if s > 1 else out_grad
        # Rows/columns past the last window (when (h + 2p - k) % s != 0) get no gradient.
        rh, rw = (h + 2 * p - k) % s, (w + 2 * p - k) % s

        # d/dx: full correlation of the gradient with the flipped, channel-swapped kernel.
        flipped = Transpose((2, 3))(Flip((0, 1))(weight))
        grad_x = Conv(1, k - 1 - p if p <= k - 1 else k - 1)(grad, flipped)
        if rh or rw:
            grad_x = Pad(((0, 0), (0, rh), (0, rw), (0, 0)))(grad_x)
        if p > k - 1:  # that was the gradient of the padded input: cut the border off
            grad_x = GetItem((slice(None), slice(p, p + h), slice(p, p + w)))(grad_x)

        # d/dweight: correlate the input (channels as batch) with the gradient (as kernel).
        xt = Transpose((0, 3))(x)  # (Cin, H, W, N)
        gt = Transpose((1, 2))(Transpose((0, 1))(grad))  # (Ho', Wo', N, Cout)
        grad_w = Conv(1, p)(xt, gt)  # (Cin, K + rh, K + rw, Cout)
        if rh or rw:
            grad_w = GetItem((slice(None), slice(0, k), slice(0, k)))(grad_w)
        grad_w = Transpose((1, 2))(Transpose((0, 1))(grad_w))  # (K, K, Cin, Cout)
        return grad_x, grad_w


def conv(a: Tensor, b: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    return Conv(stride, padding)(a, b)
