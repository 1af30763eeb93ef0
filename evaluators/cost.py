"""Cheap cost objectives: parameters and MACs, counted before any training.

MACs come from torch's own ``torch.utils.flop_counter``, which reports FLOPs with
one multiply-add counted as 2 FLOPs; we divide by 2 and call the result ``macs``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils import flop_counter
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


@contextmanager
def without_dynamo_import() -> Iterator[None]:
    """Count FLOPs without importing ``torch._dynamo`` (2-3 s of every fresh process).

    torch wraps a dispatch mode's ``__torch_dispatch__`` in ``torch._disable_dynamo``, which
    imports ``torch._dynamo`` on its first call to build a compile-disabled version of the
    function, and caches it on the function as ``__dynamo_disable``. While ``torch._dynamo``
    is not imported nothing is being compiled, so there is nothing to disable: for the
    duration of the block the raw function is its own cached version. Where torch changes
    this (no such wrapper), nothing is done and torch imports ``torch._dynamo`` as before.
    """
    mode = getattr(flop_counter, "_FlopCounterMode", None)
    raw = getattr(getattr(mode, "__torch_dispatch__", None), "__wrapped__", None)
    skip = (raw is not None and "torch._dynamo" not in sys.modules
            and getattr(raw, "__dynamo_disable", None) is None)
    if skip:
        setattr(raw, "__dynamo_disable", raw)  # noqa: B010 (a dunder-like name, not mangled)
    try:
        yield
    finally:
        if skip and getattr(raw, "__dynamo_disable", None) is raw:
            delattr(raw, "__dynamo_disable")


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
        with without_dynamo_import(), counter:
            model(x)
        return int(counter.get_total_flops()) // 2
    finally:
        model.train(was_training)


def cost_metrics(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` for one input of ``input_shape``."""
    return {"params": count_params(model), "macs": count_macs(model, input_shape)}
