"""Real reference networks as architectures of the ``blocks`` space: torchvision's ResNets
and ResNeXt, in :data:`~cellblock.search_spaces.blocks_space.RESNET_SKELETON` (their
parameter counts are checked against torchvision in the tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _resnet_arch(block: str, depths: Sequence[int], widths: Sequence[int],
                 **options: Any) -> dict[str, Any]:
    arch: dict[str, Any] = {}
    for i, (d, w) in enumerate(zip(depths, widths, strict=True), start=1):
        arch.update({f"stage{i}.block": block, f"stage{i}.depth": d, f"stage{i}.width": w})
        arch.update({f"stage{i}.{k}": v for k, v in options.items()})
        arch[f"stage{i}.attention"] = "none"
    return arch


def resnet18_arch() -> dict[str, Any]:
    """torchvision ResNet-18 in :data:`RESNET_SKELETON` (11,689,512 params)."""
    return _resnet_arch("basic", (2, 2, 2, 2), (64, 128, 256, 512), kernel=3)


def resnet34_arch() -> dict[str, Any]:
    """torchvision ResNet-34 in :data:`RESNET_SKELETON` (21,797,672 params)."""
    return _resnet_arch("basic", (3, 4, 6, 3), (64, 128, 256, 512), kernel=3)


def resnet50_arch() -> dict[str, Any]:
    """torchvision ResNet-50 (v1.5) in :data:`RESNET_SKELETON` (25,557,032 params)."""
    return _resnet_arch("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), kernel=3, expansion=4)


def resnext50_32x4d_arch() -> dict[str, Any]:
    """torchvision ResNeXt-50 32x4d in :data:`RESNET_SKELETON` (25,028,904 params)."""
    return _resnet_arch(
        "resnext", (3, 4, 6, 3), (128, 256, 512, 1024), kernel=3, expansion=2, cardinality=32
    )
