"""Convolution layers."""

from __future__ import annotations

from .. import init, ops
from ..autograd import Tensor
from .modules_basic import DeviceLike, Module, Parameter

__all__ = ["Conv"]


def _single(value: int | tuple[int, ...], what: str) -> int:
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"Conv supports square {what}s only, got {value}")
        return int(value[0])
    return int(value)


class Conv(Module):
    """2-D convolution of ``(N, C_in, H, W)`` inputs to ``(N, C_out, H', W')`` outputs.

    "Same" padding (``kernel_size // 2``) and the given stride. The weight has
    shape ``(k, k, C_in, C_out)``, drawn by ``kaiming_uniform`` with
    ``fan_in = C_in * k * k`` and ``fan_out = C_out * k * k``; then the bias,
    uniform in ``+-1 / sqrt(C_in * k * k)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        bias: bool = True,
        device: DeviceLike = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        k = _single(kernel_size, "kernel")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = k
        self.stride = _single(stride, "stride")
        self.padding = k // 2
        self.weight = Parameter(
            init.kaiming_uniform(
                in_channels * k * k,
                out_channels * k * k,
                shape=(k, k, in_channels, out_channels),
                device=device,
                dtype=dtype,
            )
        )
        self.bias = None
        if bias:
            bound = 1.0 / (in_channels * k * k) ** 0.5
            self.bias = Parameter(
                init.rand(out_channels, low=-bound, high=bound, device=device, dtype=dtype)
            )

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv({self.in_channels}, {self.out_channels}) expects (N, {self.in_channels}, "
                f"H, W) input, got shape {x.shape}"
            )
        nhwc = x.transpose((1, 2)).transpose((2, 3))
        out = ops.conv(nhwc, self.weight, stride=self.stride, padding=self.padding)
        if self.bias is not None:
            out = out + self.bias.reshape((1, 1, 1, self.out_channels)).broadcast_to(out.shape)
        return out.transpose((2, 3)).transpose((1, 2))
