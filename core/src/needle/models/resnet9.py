"""ResNet9 for 3 x 32 x 32 images (course hw4)."""

from __future__ import annotations

from typing import Any

from .. import nn
from ..autograd import Tensor

__all__ = ["ConvBN", "ResNet9"]


class ConvBN(nn.Module):
    """``ReLU(BatchNorm2d(Conv(x)))`` with "same" padding.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        device: where the parameters live.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        device: Any = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv(
            in_channels, out_channels, kernel_size, stride=stride, device=device, dtype=dtype
        )
        self.bn = nn.BatchNorm2d(out_channels, device=device, dtype=dtype)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class ResNet9(nn.Module):
    """The course's ResNet9: (N, 3, 32, 32) images to 10 logits; 431,946 parameters.

    Args:
        device: where the parameters live (the default device when None).
        dtype: parameter dtype.
    """

    def __init__(self, device: Any = None, dtype: str = "float32") -> None:
        super().__init__()

        def cbn(a: int, b: int, k: int, s: int) -> ConvBN:
            return ConvBN(a, b, k, s, device=device, dtype=dtype)

        self.model = nn.Sequential(
            cbn(3, 16, 7, 4),
            cbn(16, 32, 3, 2),
            nn.Residual(nn.Sequential(cbn(32, 32, 3, 1), cbn(32, 32, 3, 1))),
            cbn(32, 64, 3, 2),
            cbn(64, 128, 3, 2),
            nn.Residual(nn.Sequential(cbn(128, 128, 3, 1), cbn(128, 128, 3, 1))),
            nn.Flatten(),
            nn.Linear(128, 128, device=device, dtype=dtype),
            nn.ReLU(),
            nn.Linear(128, 10, device=device, dtype=dtype),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
