"""Cheap cost objectives: parameters and MACs, counted before any training.

MACs come from torch's own ``torch.utils.flop_counter``, which reports FLOPs with
one multiply-add counted as 2 FLOPs; we divide by 2 and call the result ``macs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not, shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> int:
    """Multiply-accumulate operations of one forward pass of ``batch_size`` inputs.

    Works on real and on ``meta``-device models. The model is run in eval mode and
    its training flag is restored afterwards.

    Args:
        model: The network.
        input_shape: ``(C, H, W)`` of one input.
        batch_size: Inputs per forward pass (1 gives MACs per image).
    """
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch_size, *input_shape, device=_model_device(model))
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
        return int(counter.get_total_flops()) // 2
    finally:
        model.train(was_training)


def cost_metrics(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` for one input of ``input_shape``."""
    return {"params": count_params(model), "macs": count_macs(model, input_shape)}
