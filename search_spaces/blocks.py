"""The built-in blocks of the ``blocks`` space, registered in :data:`BLOCKS` on import.

``basic``, ``bottleneck``, ``resnext``, ``preact`` (the ResNet family), ``dense``,
``inception`` and ``mbconv``, in that order. The block API (:class:`Block`,
:func:`register_block`, :func:`build_stage`...) lives in :mod:`.blocks_base`; users import
``Block`` and ``register_block`` from :mod:`cellblock.search_spaces`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from cellblock.core.errors import ConfigError
from cellblock.search_spaces.attention import make_attention
from cellblock.search_spaces.blocks_base import (
    SHORTCUTS,
    Block,
    check_kernel,
    check_positive_int,
    check_shortcut,
    register_block,
)
from cellblock.search_spaces.tags import shared


def _conv_bn(
    cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: nn.Module | None = None
) -> nn.Sequential:
    """Conv (no bias, ``padding=k//2``) -> BN -> optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


def _projection(cin: int, cout: int, stride: int) -> nn.Module:
    """torchvision's downsample: 1x1 conv (stride) + BN when the shape changes, else identity.

    In a supernet every block type of a position that projects this way shares it
    (:func:`~cellblock.search_spaces.tags.shared`): their branches add to one residual stream,
    so the next stage sees similar features whichever type ran (measured on digits with
    basic/bottleneck/resnext stages: loss 1.89 -> 0.94 after 8 supernet epochs).
    """
    if stride != 1 or cin != cout:
        return shared(_conv_bn(cin, cout, 1, stride))
    return nn.Identity()


@register_block("basic")
class BasicBlock(Block):
    """ResNet basic block (torchvision): conv-BN-ReLU-conv-BN (+attention) + shortcut, ReLU."""

    options = {"kernel": (3, 5, 7)}
    shortcuts = SHORTCUTS  # its own shortcut is the shared projection

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, *, attention: str = "none",
        kernel: int = 3, shortcut: str = "own",
    ) -> None:
        super().__init__(in_channels, width, stride, attention=attention)
        check_kernel(kernel)
        check_shortcut("basic", type(self), shortcut)
        self.conv1 = nn.Conv2d(in_channels, width, kernel, stride, kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, kernel, 1, kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.attn = make_attention(attention, width)
        self.downsample = _projection(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + self.downsample(x))

    def last_norm(self) -> nn.Module | None:
        return self.bn2


@register_block("bottleneck")
class Bottleneck(Block):
    """ResNet-50 v1.5 bottleneck: 1x1 -> kxk (stride) -> 1x1 to ``width * expansion``.

    ``width`` is the mid width (torchvision's ``planes``).
    """

    options = {"kernel": (3, 5), "expansion": (4,)}
    shortcuts = SHORTCUTS  # its own shortcut is the shared projection

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, *, attention: str = "none",
        kernel: int = 3, expansion: int = 4, shortcut: str = "own",
    ) -> None:
        super().__init__(in_channels, width, stride, attention=attention)
        check_kernel(kernel)
        check_shortcut("bottleneck", type(self), shortcut)
        out = self.out_channels(width, expansion=expansion)
        self.conv1 = _conv_bn(in_channels, width, 1, act=nn.ReLU(inplace=True))
        self.conv2 = _conv_bn(width, width, kernel, stride, act=nn.ReLU(inplace=True))
        self.conv3 = _conv_bn(width, out, 1)
        self.attn = make_attention(attention, out)
        self.downsample = _projection(in_channels, out, stride)
        self.relu = nn.ReLU(inplace=True)

    @classmethod
    def out_channels(cls, width: int, expansion: int = 4, **options: Any) -> int:
        return width * check_positive_int("expansion", expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attn(self.conv3(self.conv2(self.conv1(x))))
        return self.relu(out + self.downsample(x))

    def last_norm(self) -> nn.Module | None:
        return self.conv3[1]


def resnext_groups(width: int, cardinality: int) -> tuple[int, int]:
    """``(groups, mid)``: groups = min(cardinality, width); mid = width rounded up to groups."""
    check_positive_int("width", width)
    groups = min(check_positive_int("cardinality", cardinality), width)
    return groups, math.ceil(width / groups) * groups


@register_block("resnext")
class ResNeXtBlock(Block):
    """ResNeXt grouped bottleneck: 1x1 -> grouped kxk (stride) -> 1x1 to ``mid * expansion``.

    ``width`` is the grouped (mid) width; it is rounded up to a multiple of the groups, and
    the groups are ``min(cardinality, width)``, so any width/cardinality pair is valid.
    torchvision's resnext50_32x4d is widths 128/256/512/1024, cardinality 32, expansion 2.
    """

    options = {"kernel": (3, 5), "expansion": (2, 4), "cardinality": (8, 16, 32)}
    shortcuts = SHORTCUTS  # its own shortcut is the shared projection

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, *, attention: str = "none",
        kernel: int = 3, expansion: int = 2, cardinality: int = 32, shortcut: str = "own",
    ) -> None:
        super().__init__(in_channels, width, stride, attention=attention)
        check_kernel(kernel)
        check_shortcut("resnext", type(self), shortcut)
        groups, mid = resnext_groups(width, cardinality)
        out = self.out_channels(width, expansion=expansion, cardinality=cardinality)
        self.conv1 = _conv_bn(in_channels, mid, 1, act=nn.ReLU(inplace=True))
        self.conv2 = _conv_bn(mid, mid, kernel, stride, groups=groups, act=nn.ReLU(inplace=True))
        self.conv3 = _conv_bn(mid, out, 1)
        self.attn = make_attention(attention, out)
        self.downsample = _projection(in_channels, out, stride)
        self.relu = nn.ReLU(inplace=True)

    @classmethod
    def out_channels(
        cls, width: int, expansion: int = 2, cardinality: int = 32, **options: Any
    ) -> int:
        return resnext_groups(width, cardinality)[1] * check_positive_int("expansion", expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attn(self.conv3(self.conv2(self.conv1(x))))
        return self.relu(out + self.downsample(x))

    def last_norm(self) -> nn.Module | None:
        return self.conv3[1]


@register_block("preact")
class PreActBlock(Block):
    """Pre-activation basic block (He et al. 2016b): BN-ReLU-conv-BN-ReLU-conv + shortcut.

    The projection shortcut (1x1 conv, no BN) takes the pre-activated input; with
    ``shortcut="shared"`` the block adds the stage's shared projection of its raw input
    (``downsample``, identity when the shape is kept) instead.
    """

    options = {"kernel": (3, 5, 7)}
    shortcuts = SHORTCUTS

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, *, attention: str = "none",
        kernel: int = 3, shortcut: str = "own",
    ) -> None:
        super().__init__(in_channels, width, stride, attention=attention)
        check_kernel(kernel)
        check_shortcut("preact", type(self), shortcut)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, width, kernel, stride, kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel, 1, kernel // 2, bias=False)
        self.attn = make_attention(attention, width)
        self.shortcut: nn.Module | None = None
        self.downsample: nn.Module | None = None  # the stage's shared projection
        if shortcut == "shared":
            self.downsample = _projection(in_channels, width, stride)
        elif stride != 1 or in_channels != width:
            self.shortcut = nn.Conv2d(in_channels, width, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        if self.downsample is not None:
            identity = self.downsample(x)
        else:
            identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.attn(self.conv2(self.relu(self.bn2(out))))
        return out + identity


class DenseLayer(nn.Module):
    """DenseNet-BC layer: BN-ReLU-1x1 (``bn_size * growth``)-BN-ReLU-3x3 (``growth``), concat."""

    def __init__(self, in_channels: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        mid = bn_size * growth
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


@register_block("dense")
class DenseBlock(Block):
    """A DenseNet-BC stage: ``num_layers`` dense layers, then a transition to ``width``.

    Transition: BN-ReLU-1x1 conv to ``width`` channels (+attention), then a 2x2 average
    pool (``stride`` x ``stride``, ceil mode, so sizes match a strided conv) when
    ``stride > 1``. In a stage, ``depth`` counts dense layers: :meth:`make_stage` builds
    ONE DenseBlock with ``num_layers=depth`` (so the stride comes at the end of the stage).
    With ``shortcut="shared"`` the stage's shared projection of the input is added at the end.
    """

    options = {"growth": (12, 24, 32)}
    shortcuts = SHORTCUTS

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, *, attention: str = "none",
        growth: int = 12, num_layers: int = 1, shortcut: str = "own",
    ) -> None:
        super().__init__(in_channels, width, stride, attention=attention)
        check_positive_int("growth", growth)
        check_shortcut("dense", type(self), shortcut)
        check_positive_int("num_layers", num_layers)
        layers = []
        channels = in_channels
        for _ in range(num_layers):
            layers.append(DenseLayer(channels, growth))
            channels += growth
        self.layers = nn.Sequential(*layers)
        self.transition = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, width, 1, bias=False),
        )
        self.attn = make_attention(attention, width)
        self.pool: nn.Module = nn.Identity()
        if stride > 1:
            self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True)
        self.downsample: nn.Module | None = None  # the stage's shared projection
        if shortcut == "shared":
            self.downsample = _projection(in_channels, width, stride)

    @classmethod
    def make_stage(
        cls, in_channels: int, width: int, stride: int, depth: int, *,
        attention: str = "none", **options: Any,
    ) -> nn.Sequential:
        check_positive_int("depth", depth)
        return nn.Sequential(
            cls(in_channels, width, stride, attention=attention, num_layers=depth, **options)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.attn(self.transition(self.layers(x))))
        return out if self.downsample is None else out + self.downsample(x)


def inception_split(width: int) -> tuple[int, int, int, int]:
    """Branch widths (1x1, 3x3, 5x5, pool) ~ 1/4, 1/2, 1/8, 1/8 of ``width`` (GoogLeNet 3a)."""
    if width < 4:
        raise ConfigError(f"an inception block needs width >= 4 (four branches), got {width}")
    b1, b3, b5 = max(1, width // 4), max(1, width // 2), max(1, width // 8)
    bp = width - b1 - b3 - b5
    if bp < 1:  # small widths: every branch keeps at least one channel
        b3, bp = b3 - (1 - bp), 1
    return b1, b3, b5, bp


@register_block("inception")
class InceptionBlock(Block):
    """Inception module: 1x1 / 1x1-3x3 / 1x1-5x5 (or 1x1-3x3-3x3) / 3x3 pool-1x1, concatenated.

    Every conv is conv-BN-ReLU (Inception-v3's BasicConv2d); the branches sum to ``width``
    channels; ``stride`` is applied by the last conv of each branch and by the pool. With
    ``shortcut="shared"`` the stage's shared projection of the input is added to the output.
    """

    options = {"variant": ("5x5", "double3x3")}
    min_width = 4
    shortcuts = SHORTCUTS

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, *, attention: str = "none",
        variant: str = "5x5", shortcut: str = "own",
    ) -> None:
        super().__init__(in_channels, width, stride, attention=attention)
        check_shortcut("inception", type(self), shortcut)
        b1, b3, b5, bp = inception_split(width)
        r3, r5 = max(1, b3 * 3 // 4), max(1, b5 // 2)

        def cbr(cin: int, cout: int, k: int, s: int = 1) -> nn.Sequential:
            return _conv_bn(cin, cout, k, s, act=nn.ReLU(inplace=True))

        self.branch1 = cbr(in_channels, b1, 1, stride)
        self.branch3 = nn.Sequential(cbr(in_channels, r3, 1), cbr(r3, b3, 3, stride))
        if variant == "5x5":
            self.branch5 = nn.Sequential(cbr(in_channels, r5, 1), cbr(r5, b5, 5, stride))
        elif variant == "double3x3":
            self.branch5 = nn.Sequential(
                cbr(in_channels, r5, 1), cbr(r5, b5, 3), cbr(b5, b5, 3, stride)
            )
        else:
            raise ConfigError(f"inception variant must be '5x5' or 'double3x3', got {variant!r}")
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride, 1), cbr(in_channels, bp, 1)
        )
        self.attn = make_attention(attention, width)
        self.downsample: nn.Module | None = None  # the stage's shared projection
        if shortcut == "shared":
            self.downsample = _projection(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat(
            [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1
        )
        out = self.attn(out)
        return out if self.downsample is None else out + self.downsample(x)


@register_block("mbconv")
class MBConv(Block):
    """Inverted residual (MobileNetV2 / EfficientNet): expand 1x1 -> depthwise kxk -> project.

    The expansion conv is skipped when ``expansion == 1``; activations are ReLU6; attention
    follows the depthwise conv (on ``in_channels * expansion`` channels); the residual is
    used when ``stride == 1`` and ``in_channels == width``. With ``shortcut="shared"`` every
    block adds the stage's shared projection of its input (identity where the shape is kept).
    """

    options = {"kernel": (3, 5, 7), "expansion": (1, 4, 6)}
    shortcuts = SHORTCUTS

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, *, attention: str = "none",
        kernel: int = 3, expansion: int = 6, shortcut: str = "own",
    ) -> None:
        super().__init__(in_channels, width, stride, attention=attention)
        check_kernel(kernel)
        check_shortcut("mbconv", type(self), shortcut)
        mid = in_channels * check_positive_int("expansion", expansion)
        self.expand: nn.Module = nn.Identity()
        if expansion != 1:
            self.expand = _conv_bn(in_channels, mid, 1, act=nn.ReLU6(inplace=True))
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid, act=nn.ReLU6(inplace=True))
        self.attn = make_attention(attention, mid)
        self.project = _conv_bn(mid, width, 1)
        self.use_residual = stride == 1 and in_channels == width
        self.downsample: nn.Module | None = None  # the stage's shared projection
        if shortcut == "shared" and not self.use_residual:
            self.downsample = _projection(in_channels, width, stride)
            self.use_residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.attn(self.depthwise(self.expand(x))))
        if self.downsample is not None:
            return out + self.downsample(x)
        return out + x if self.use_residual else out

    def last_norm(self) -> nn.Module | None:
        return self.project[1] if self.use_residual else None
