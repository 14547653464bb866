"""Operations of the DARTS cell search space (Liu et al., 2019), the cell space CDARTS searches.

``OPERATIONS[name](C, stride, affine)`` builds one edge operation that maps C
channels to C channels; at stride 2 it halves the spatial size.  The names and
their order follow :data:`cdarts_deploy.genotype.SEARCH_OPS`.
"""

# No ``from __future__ import annotations``: torch.fx copies forward() annotations into generated
# code that TorchScript compiles, and it cannot resolve them as strings.

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cdarts_deploy.genotype import SEARCH_OPS

from .onednn_guard import StridedPointwiseConv2d

__all__ = [
    "OPERATIONS",
    "ReLUConvBN",
    "SepConv",
    "DilConv",
    "FactorizedReduce",
    "Identity",
    "Zero",
    "drop_path",
]


class ReLUConvBN(nn.Sequential):
    """ReLU, a plain convolution, BN: the cell-input preprocessing unit."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise (optionally dilated) KxK conv, pointwise 1x1 conv, BN."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            # plain depthwise conv; training entry points may swap in the faster CPU backward
            # (backbones.depthwise_conv.use_faster_depthwise_backward)
            nn.Conv2d(c_in, c_in, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=c_in,
                      bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable units; only the first one strides."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True
    ) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, dilation=1, affine=affine),
            DilConv(c_in, c_out, kernel_size, 1, padding, dilation=1, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs, the second on the input shifted by one pixel.

    Shifting makes the two halves sample complementary pixels, so no input
    position is ignored entirely.  ``c_out`` must be even.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        # nn.Conv2d subclasses that keep a narrow c_in off oneDNN's faulty strided 1x1 weight gradient
        self.conv_1 = StridedPointwiseConv2d(c_in, c_out // 2, stride=2)
        self.conv_2 = StridedPointwiseConv2d(c_in, c_out // 2, stride=2)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # The shifted branch pads one zero row/column at the far edge before its stride-2 conv, so
        # both halves have ceil(H/2) x ceil(W/2) outputs for any H, W without a branch on shapes
        # (a shape test would be frozen by tracing exporters and break symbolic tracing).  For even
        # sizes the padded row is never sampled; for odd sizes it yields the zero border the
        # bias-free 1x1 conv of a zero pixel gives.
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Identity(nn.Module):
    """The stride-1 skip connection (its own class so drop path can recognise it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The search-only ``none`` operation: zeros of the output shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(c, c, affine=affine)


OPERATIONS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine=affine),
    "none": lambda c, stride, affine: Zero(stride),
}
assert tuple(OPERATIONS) == SEARCH_OPS, "OPERATIONS must follow the SEARCH_OPS order"


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (training only).

    The mask is created on ``x``'s device and dtype, so this works on CPU and GPU alike.
    """
    if not training or drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    shape = [x.shape[0]] + [1] * (x.dim() - 1)  # a list, not a tuple: TorchScript multiplies lists only
    mask = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep
