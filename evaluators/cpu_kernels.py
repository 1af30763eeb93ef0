"""Tensors that oneDNN's CPU convolution kernels handle correctly.

oneDNN's 1x1 convolution backward-weights kernel (``jit_1x1``, AVX2 and AVX-512) with a
stride above 1 and a channels-last (nhwc) source addresses its reduce-to-unit-stride
workspace with the ISA's channel block instead of the tensor's channel count. When a
group has fewer input channels than that block (8 on AVX2, 16 on AVX-512) it writes past
the workspace: glibc aborts later, far from the culprit ("corrupted double-linked list"),
or, with several threads, the weight gradients are silently wrong
(uxlfoundation/oneDNN#6035, open; torch 2.14.1 ships the affected kernel). A
channels-last source reaches it on CPU whenever a batch has channels-last strides,
which a 1-channel batch (digits, MNIST) can have while ``is_contiguous()`` still says yes.

Two guards, both used by the one training loop and the supernet:

- :func:`in_format` gives a batch the canonical strides of the loop's memory format;
- :func:`guard_convs` hands the affected convolutions (1x1, stride above 1, fewer than
  :data:`CHANNEL_BLOCK` input channels per group) a plain NCHW source on CPU, so oneDNN
  takes its blocked path for them (measured correct on every ISA in the upstream report).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: The largest channel block of the affected kernel (AVX-512's; AVX2's is 8).
CHANNEL_BLOCK = 16
_GUARDED = "_cellblock_onednn_guard"


def canonical_strides(shape: tuple[int, ...], fmt: torch.memory_format) -> tuple[int, ...]:
    """The strides a new tensor of ``shape`` gets in ``fmt`` (4-D for channels-last)."""
    if fmt == torch.channels_last and len(shape) == 4:
        n, c, h, w = shape
        return (h * w * c, 1, w * c, c)
    strides, acc = [], 1
    for size in reversed(shape):
        strides.append(acc)
        acc *= size
    return tuple(reversed(strides))


def in_format(x: Tensor, fmt: torch.memory_format) -> Tensor:
    """``x`` with the canonical strides of ``fmt`` (copied only when they differ).

    ``x.contiguous(memory_format=fmt)`` is not enough: a tensor with a dimension of size
    1 can pass as contiguous in both formats, and kernels then pick the layout its strides
    suggest (an NHWC view of a 1-channel batch runs every convolution channels-last).
    """
    if fmt == torch.channels_last and x.ndim != 4:
        fmt = torch.contiguous_format
    if x.stride() == canonical_strides(tuple(x.shape), fmt):
        return x
    return x.clone(memory_format=fmt)


def affected(module: nn.Module) -> bool:
    """Whether ``module`` is a convolution that oneDNN#6035's kernel can take on CPU."""
    return (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
            and tuple(module.stride) != (1, 1)
            and module.in_channels // module.groups < CHANNEL_BLOCK)


def _nchw_source(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
    """Forward pre-hook: a plain NCHW source for an affected convolution being trained on CPU."""
    x = args[0] if args else None
    if (not isinstance(x, Tensor) or x.device.type != "cpu" or x.ndim != 4
            or not torch.is_grad_enabled() or not module.weight.requires_grad):
        return None
    if x.stride() == canonical_strides(tuple(x.shape), torch.contiguous_format):
        return None
    return (x.clone(memory_format=torch.contiguous_format), *args[1:])


def guard_convs(model: nn.Module) -> int:
    """Guard every affected convolution of ``model`` (idempotent); how many there are.

    Each gets a forward pre-hook giving it an NCHW source while it trains on CPU, and
    NCHW weights (a channels-last weight would select the channels-last kernel too).
    """
    n = 0
    for m in model.modules():
        if not affected(m):
            continue
        n += 1
        if m.__dict__.get(_GUARDED):
            continue
        m.register_forward_pre_hook(_nchw_source)
        m.__dict__[_GUARDED] = True
        if m.weight.device.type != "meta":
            m.weight.data = in_format(m.weight.data, torch.contiguous_format)
    return n
