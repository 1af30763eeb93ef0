"""Channel attention modules, registered by name: ``none``, ``se`` and ``eca``.

Every entry of :data:`ATTENTIONS` is called as ``factory(channels)`` and returns a module
mapping ``(N, C, H, W)`` to the same shape. Blocks apply it at the end of their residual
branch (before the addition); see :mod:`cellblock.search_spaces.blocks`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from cellblock.core.errors import ConfigError
from cellblock.core.registry import Registry

AttentionFactory = Callable[[int], nn.Module]
ATTENTIONS: Registry[AttentionFactory] = Registry("attention")


def register_attention(name: str) -> Callable[[AttentionFactory], AttentionFactory]:
    """Decorator registering an attention factory ``factory(channels) -> nn.Module``."""
    return ATTENTIONS.register(name)  # type: ignore[return-value]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``).

    Same rule as timm's ``make_divisible(..., round_limit=0.)`` used by its ``SEModule``.
    """
    min_value = min_value or divisor
    return max(min_value, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018), timm ``SEModule`` style.

    Global average pool -> 1x1 conv (bias) to ``rd_channels`` -> ReLU -> 1x1 conv (bias)
    back to ``channels`` -> sigmoid gate multiplied into the input.

    Args:
        channels: Input (and output) channels.
        rd_ratio: Reduction ratio; ``rd_channels = make_divisible(channels * rd_ratio, 8)``.
        rd_channels: Explicit reduced width (overrides ``rd_ratio``).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None):
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, 8)
        if channels < 1 or rd_channels < 1:
            raise ConfigError(
                f"squeeze-excite needs channels >= 1 and rd_channels >= 1, "
                f"got {channels} and {rd_channels}"
            )
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * torch.sigmoid(s)


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """ECA's adaptive kernel size: ``|log2(C) + beta| / gamma`` made odd, at least 3 (timm)."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class EfficientChannelAttention(nn.Module):
    """Efficient channel attention (Wang et al. 2020), timm ``EcaModule`` style.

    Global average pool -> 1-D conv (no bias) across channels with an adaptive odd kernel
    size -> sigmoid gate.

    Args:
        channels: Input (and output) channels; sets the kernel size.
        kernel_size: Explicit 1-D kernel size (odd); default from :func:`eca_kernel_size`.
    """

    def __init__(self, channels: int, kernel_size: int | None = None):
        super().__init__()
        if channels < 1:
            raise ConfigError(f"ECA needs channels >= 1, got {channels}")
        k = eca_kernel_size(channels) if kernel_size is None else kernel_size
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"ECA kernel_size must be a positive odd int, got {k}")
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3)).unsqueeze(1)  # (N, 1, C)
        s = self.conv(s).transpose(1, 2).unsqueeze(-1)  # (N, C, 1, 1)
        return x * torch.sigmoid(s)


register_attention("none")(lambda channels: nn.Identity())
register_attention("se")(SqueezeExcite)
register_attention("eca")(EfficientChannelAttention)


def make_attention(name: str, channels: int) -> nn.Module:
    """Build the registered attention ``name`` for ``channels`` channels.

    Raises:
        RegistryError: if ``name`` is not registered (the message lists known names).
    """
    return ATTENTIONS.get(name)(channels)
