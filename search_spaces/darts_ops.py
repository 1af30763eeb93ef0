"""Candidate operations of the DARTS cell space, as in the official DARTS ``operations.py``.

Every op maps ``C`` channels to ``C`` channels; ``stride`` is 2 on the edges of a
reduction cell that read the cell's inputs (then the spatial size is halved).
Ops are registered by name in :data:`DARTS_OPS` (``register_darts_op``); a factory is
``factory(C, stride) -> nn.Module``. BatchNorms are affine, as in DARTS evaluation networks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cellblock.core.registry import Registry

OpFactory = Callable[[int, int], nn.Module]
DARTS_OPS: Registry[OpFactory] = Registry("DARTS op")


def register_darts_op(name: str) -> Callable[[OpFactory], OpFactory]:
    """Decorator registering a cell op factory ``factory(C, stride) -> nn.Module``."""
    return DARTS_OPS.register(name)  # type: ignore[return-value]


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN (the DARTS cell preprocessing)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation,
                      groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Two stacked ReLU -> depthwise conv -> pointwise conv -> BN (stride on the first)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1),
            DilConv(c_in, c_out, kernel, 1, padding, 1),
        )


class Identity(nn.Module):
    """Skip connection (drop path is never applied to it)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs on offset grids, concatenated, BN (halves H and W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        # DARTS feeds x[:, :, 1:, 1:] to the second conv; on odd sizes its output is one
        # row/column short, so pad back to the first conv's size.
        a = self.conv_1(x)
        b = self.conv_2(x[:, :, 1:, 1:])
        if b.shape[-2:] != a.shape[-2:]:
            b = nn.functional.pad(b, (0, a.shape[-1] - b.shape[-1], 0, a.shape[-2] - b.shape[-2]))
        return self.bn(torch.cat([a, b], dim=1))


@register_darts_op("none")
def _none(c: int, stride: int) -> nn.Module:
    return Zero(stride)


@register_darts_op("avg_pool_3x3")
def _avg_pool(c: int, stride: int) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


@register_darts_op("max_pool_3x3")
def _max_pool(c: int, stride: int) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


@register_darts_op("skip_connect")
def _skip(c: int, stride: int) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(c, c)


@register_darts_op("sep_conv_3x3")
def _sep3(c: int, stride: int) -> nn.Module:
    return SepConv(c, c, 3, stride, 1)


@register_darts_op("sep_conv_5x5")
def _sep5(c: int, stride: int) -> nn.Module:
    return SepConv(c, c, 5, stride, 2)


@register_darts_op("dil_conv_3x3")
def _dil3(c: int, stride: int) -> nn.Module:
    return DilConv(c, c, 3, stride, 2, 2)


@register_darts_op("dil_conv_5x5")
def _dil5(c: int, stride: int) -> nn.Module:
    return DilConv(c, c, 5, stride, 4, 2)


def drop_path(x: Tensor, prob: float) -> Tensor:
    """Zero whole samples with probability ``prob`` and rescale the rest by ``1 / (1 - prob)``."""
    keep = 1.0 - prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask
