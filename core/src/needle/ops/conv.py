"""Convolution: NHWC input, (KH, KW, Cin, Cout) weight, stride and zero padding."""

from __future__ import annotations

import operator

from ..autograd import Tensor, TensorOp, is_grad_enabled
from ..backend_ndarray import NDArray
from ..backend_ndarray.compose import Padding, conv2d, pair
from .elementwise import _like
from .movement import Dilate, Flip, GetItem, Pad, Transpose

__all__ = ["Conv", "ConvWeightGrad", "conv", "conv_weight_grad"]


class Conv(TensorOp):
    """2-D convolution (cross-correlation) of an NHWC input with a (KH, KW, Cin, Cout) weight.

    ``padding`` is an int or an ``(ph, pw)`` pair of zero rows/columns on each side. A
    strided input (an NCHW tensor seen as NHWC) is copied once: the forward keeps the copy
    for its first-order weight gradient (one op object per call keeps one call's).
    """

    def __init__(self, stride: int = 1, padding: Padding = 0) -> None:
        self._saved: tuple[NDArray, NDArray] | None = None
        self.stride = operator.index(stride)
        self.padding = pair(padding)
        if self.stride < 1 or min(self.padding) < 0:
            raise ValueError(f"conv needs stride >= 1 and padding >= 0, got {stride}, {padding}")

    def compute(self, a: NDArray, b: NDArray) -> NDArray:
        dense = a.compact()  # the NHWC copy of an NCHW view, made once for both passes
        out = conv2d(dense, b, self.stride, self.padding)
        self._saved = (out, dense) if dense is not a else None
        return out

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, weight = node.inputs
        source, saved = x, self._saved
        if saved is not None and saved[0] is node.cached_data and not is_grad_enabled():
            source = Tensor.make_const(saved[1])  # first order: the forward's copy, not another
        kernel = weight.shape[:2]
        grad_x = grad_w = None  # None for an input that needs no gradient (images)
        if x.requires_grad:
            grad_x = _native_input_grad(out_grad, weight, x.shape, self.stride, self.padding)
            if grad_x is None:
                grad_x = _conv_input_grad(out_grad, weight, x.shape, self.stride, self.padding)
        if weight.requires_grad:
            grad_w = ConvWeightGrad(kernel, self.stride, self.padding)(source, out_grad)
        return _like(grad_x, x), _like(grad_w, weight)


def _native_input_grad(
    out_grad: Tensor,
    weight: Tensor,
    x_shape: tuple[int, ...],
    stride: int,
    padding: tuple[int, int],
) -> Tensor | None:
    """The input gradient by the backend's ``conv2d_grad_input`` (one call, no dilated or
    padded copies): for a first-order gradient of a square kernel with equal padding on a
    backend that has it; None otherwise (then composed of Tensor ops)."""
    dev = weight.device
    (kh, kw, cin, cout), (ph, pw) = weight.shape, padding
    if is_grad_enabled() or kh != kw or ph != pw or not dev.has("conv2d_grad_input"):
        return None
    g, w = out_grad.cached_data._matmul_operands(weight.cached_data)
    n, h, wd, _ = x_shape
    out = NDArray.make(x_shape, device=dev, dtype=g.dtype)
    if out.size:
        dev.mod.conv2d_grad_input(
            g.compact().handle, w.compact().handle, out.handle, n, h, wd, cin, cout, kh, stride, ph
        )
    return Tensor.make_const(out)


def _conv_input_grad(
    out_grad: Tensor,
    weight: Tensor,
    x_shape: tuple[int, ...],
    stride: int,
    padding: tuple[int, int],
) -> Tensor:
    """d/dx of ``conv(x, weight, stride, padding)`` for the adjoint ``out_grad``, in Tensor ops.

    The gradient (dilated back to stride 1) is correlated with the flipped, channel-swapped
    kernel, padded k-1-p before and k-1-p+r after. Where padding >= kernel this yields the
    padded input's gradient (padding k-1), whose border is then cut off.
    """
    _, h, w, _ = x_shape
    kh, kw = weight.shape[:2]
    (ph, pw), s = padding, stride
    grad = out_grad
    if s > 1:  # back to stride 1: dilate, dropping the zeros Dilate adds after the last row
        ho, wo = out_grad.shape[1:3]
        grad = Dilate((1, 2), s - 1)(out_grad)
        grad = GetItem((slice(None), slice(0, (ho - 1) * s + 1), slice(0, (wo - 1) * s + 1)))(grad)
    # Rows/columns past the last window (when (h + 2p - k) % s != 0) get no gradient.
    rh, rw = (h + 2 * ph - kh) % s, (w + 2 * pw - kw) % s
    flipped = Transpose((2, 3))(Flip((0, 1))(weight))
    lo_h, cut_h = (kh - 1 - ph, 0) if ph <= kh - 1 else (kh - 1, ph)
    lo_w, cut_w = (kw - 1 - pw, 0) if pw <= kw - 1 else (kw - 1, pw)
    if rh == rw == 0:
        grad_x = Conv(1, (lo_h, lo_w))(grad, flipped)
    else:
        padded = Pad(((0, 0), (lo_h, lo_h + rh), (lo_w, lo_w + rw), (0, 0)))(grad)
        grad_x = Conv(1, 0)(padded, flipped)
    if cut_h or cut_w:
        grad_x = GetItem((slice(None), slice(cut_h, cut_h + h), slice(cut_w, cut_w + w)))(grad_x)
    return grad_x


class ConvWeightGrad(TensorOp):
    """The weight gradient of ``conv(x, weight, stride, padding)``: ``x`` NHWC and the adjoint
    ``grad`` (N, Ho, Wo, Cout) to (KH, KW, Cin, Cout).

    The backend's ``conv2d_grad_weight`` where it has one (square kernels, equal padding).
    Otherwise one product ``patches^T @ grad``: the im2col matrix is a single strided view
    of the (padded) input, so no dilation is materialised; where the backend reads transposed
    operands in place (``matmul_t``) nothing is transposed, else the (small) gradient and
    result are (``grad^T @ patches``).
    """

    def __init__(self, kernel: tuple[int, int], stride: int = 1, padding: Padding = 0) -> None:
        self.kernel = tuple(operator.index(k) for k in kernel)
        self.stride = operator.index(stride)
        self.padding = pair(padding)
        if len(self.kernel) != 2 or min(self.kernel) < 1:
            raise ValueError(f"conv_weight_grad needs a (KH, KW) kernel >= 1, got {kernel}")
        if self.stride < 1 or min(self.padding) < 0:
            raise ValueError(f"conv needs stride >= 1 and padding >= 0, got {stride}, {padding}")

    def compute(self, x: NDArray, grad: NDArray) -> NDArray:
        (kh, kw), s, (ph, pw) = self.kernel, self.stride, self.padding
        if x.ndim != 4 or grad.ndim != 4:
            raise ValueError(
                f"conv_weight_grad needs NHWC input and gradient, got {x.shape} and {grad.shape}"
            )
        n, h, w, cin = x.shape
        ho, wo = (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1
        cout = grad.shape[3]
        if grad.shape[:3] != (n, ho, wo) or ho <= 0 or wo <= 0:
            raise ValueError(
                f"conv_weight_grad: gradient of shape {grad.shape} does not fit input {x.shape} "
                f"with kernel {self.kernel}, stride {s}, padding {self.padding}"
            )
        x, grad = x._matmul_operands(grad)
        if kh == kw and ph == pw and x.device.has("conv2d_grad_weight"):
            out = NDArray.make((kh, kw, cin, cout), device=x.device, dtype=x.dtype)
            x.device.mod.conv2d_grad_weight(
                x.compact().handle, grad.compact().handle, out.handle, n, h, w, cin, cout, kh, s, ph
            )
            return out
        if ph or pw:
            x = x.pad(((0, 0), (ph, ph), (pw, pw), (0, 0)))
        sn, sh, sw, sc = x.strides
        # im2col in the forward's order, (kw, cin) runs contiguous in memory; the small
        # gradient is transposed instead of the patches: grad_w^T = grad^T @ patches.
        cols = x.as_strided((n, ho, wo, kh, kw, cin), (sn, sh * s, sw * s, sh, sw, sc))
        patches = cols.compact().reshape((n * ho * wo, kh * kw * cin))
        rows = grad.compact().reshape((n * ho * wo, cout))
        if x.device.has("matmul_t"):  # patches^T @ grad, the transpose read in place
            return (patches.permute((1, 0)) @ rows).reshape((kh, kw, cin, cout))
        out_t = rows.permute((1, 0)).compact() @ patches  # (Cout, KH * KW * Cin)
        return out_t.permute((1, 0)).compact().reshape((kh, kw, cin, cout))

    def gradient(self, out_grad: Tensor, node: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, grad = node.inputs  # bilinear: each input's adjoint is a conv with out_grad as weight
        grad_x = grad_g = None
        if x.requires_grad:
            grad_x = _conv_input_grad(grad, out_grad, x.shape, self.stride, self.padding)
        if grad.requires_grad:
            grad_g = Conv(self.stride, self.padding)(x, out_grad)
        return _like(grad_x, x), _like(grad_g, grad)


def conv(a: Tensor, b: Tensor, stride: int = 1, padding: Padding = 0) -> Tensor:
    return Conv(stride, padding)(a, b)


def conv_weight_grad(
    x: Tensor, grad: Tensor, kernel: tuple[int, int], stride: int = 1, padding: Padding = 0
) -> Tensor:
    return ConvWeightGrad(kernel, stride, padding)(x, grad)
