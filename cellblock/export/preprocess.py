"""The input normalisation of an export: recorded in ``arch.json`` and applied by every format.

A search trains on images normalised with the train split's per-channel statistics
(:class:`cellblock.data.Normalisation`). An exported network must be fed the same way,
so the export builds it with the normalisation as its first step: the network takes
images as floats in the recorded ``value_range`` (raw pixels divided by ``pixel_scale``:
255 for 8-bit images) and subtracts ``mean`` / divides by ``std`` itself. ``mean`` and
``std`` are non-persistent buffers, so the state dict (``weights.pt``) is unchanged.
``model.py``, TorchScript and ONNX all carry that step; ``model.py`` also has a
``preprocess`` function turning raw arrays (uint8, NHW, NHWC) into that input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from cellblock.core.errors import ExportError

#: Keys of the ``preprocessing`` record that the network itself needs.
REQUIRED_KEYS = ("mean", "std", "pixel_scale", "value_range", "input_shape")


def check_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A ``preprocessing`` record as a plain dict, after checking its keys and sizes.

    Raises:
        ExportError: if a key is missing or mean/std do not match the input's channels.
    """
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ExportError(
            f"preprocessing record lacks {', '.join(missing)}; re-export from the run")
    channels = int(record["input_shape"][0])
    if len(record["mean"]) != channels or len(record["std"]) != channels:
        raise ExportError(f"preprocessing record has {len(record['mean'])} means and "
                          f"{len(record['std'])} stds for {channels} input channel(s)")
    return dict(record)


def preprocessing_of(data: Any, space: Any) -> dict[str, Any] | None:
    """The record of a run's dataset (None without one, or for a hand-built dataset)."""
    norm = getattr(data, "normalisation", None)
    return None if norm is None else norm.to_json(tuple(space.input_shape))


def with_preprocessing(model: nn.Module, record: Mapping[str, Any] | None) -> nn.Module:
    """``model`` turned into a network whose forward normalises its input first.

    The instance is changed in place (its class becomes a subclass whose ``forward``
    applies ``(x - mean) / std`` then the original forward) so torch.fx, TorchScript and
    the ONNX exporter all see the step; its state dict keys stay the same.

    Args:
        model: The network (its forward takes one input tensor).
        record: The ``preprocessing`` record, or None to return ``model`` unchanged.
    """
    if record is None:
        return model
    record = check_record(record)
    base = type(model)
    base_forward = base.forward

    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return base_forward(self, (x - self.input_mean) / self.input_std)

    cls = type(base.__name__, (base,), {"forward": forward, "__doc__": base.__doc__,
                                         "__module__": base.__module__})
    shape = (1, len(record["mean"]), 1, 1)
    model.__class__ = cls
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    model.register_buffer("input_mean", torch.tensor(record["mean"], dtype=torch.float32,
                                                     device=device).reshape(shape),
                                                     persistent=False)
    model.register_buffer("input_std", torch.tensor(record["std"], dtype=torch.float32,
                                                    device=device).reshape(shape), persistent=False)
    return model


def check_input(record: Mapping[str, Any] | None, shape: tuple[int, ...], seed: int = 1234,
                batch: int = 2) -> torch.Tensor:
    """The round trip's input: uniform in the record's value range (standard normal without one)."""
    gen = torch.Generator().manual_seed(seed)
    if record is None:
        return torch.randn(batch, *shape, generator=gen)
    low, high = (float(v) for v in record["value_range"])
    return low + (high - low) * torch.rand(batch, *shape, generator=gen)


PREPROCESS_SOURCE = '''

def preprocess(images: object) -> torch.Tensor:
    """Raw images -> the float32 NCHW batch ``Net`` takes (it normalises by itself).

    Accepts a numpy array or tensor of shape (N, H, W), (N, H, W, C) or (N, C, H, W).
    Integer pixels are divided by ``PREPROCESSING["pixel_scale"]`` (255 for 8-bit images);
    floats are taken as they are, so they must already be in ``PREPROCESSING["value_range"]``.
    The network then applies ``(x - mean[c]) / std[c]`` with the training split's statistics.
    """
    x = torch.as_tensor(images)
    if not torch.is_floating_point(x):
        x = x.to(torch.float32) / (PREPROCESSING["pixel_scale"] if PREPROCESSING else 1.0)
    x = x.to(torch.float32)
    channels = INPUT_SHAPE[0]
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[1] != channels and x.shape[-1] == channels:
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()
'''


def source_lines(record: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(docstring paragraph, code)`` that :mod:`cellblock.export.codegen` adds to ``model.py``."""
    if record is None:
        doc = ("The network takes inputs normalised as in training; that normalisation was not\n"
               "recorded (``PREPROCESSING`` is None).")
        return doc, "PREPROCESSING = None" + PREPROCESS_SOURCE
    import json
    import pprint

    doc = ("Inputs: float32 NCHW images in ``PREPROCESSING['value_range']`` (integer pixels\n"
           "divided by ``PREPROCESSING['pixel_scale']``; ``preprocess(images)`` does that).\n"
           "The network normalises them itself with the training split's mean and std.")
    record = json.loads(json.dumps(dict(record)))
    constant = f"PREPROCESSING = {pprint.pformat(record, sort_dicts=True, width=96)}"
    return doc, constant + PREPROCESS_SOURCE
