"""Measured inference latency, stamped with the device it was measured on.

Latency numbers are only comparable on the same device, so every result carries a
``latency_device`` fingerprint (device name, torch/CUDA versions, thread count; no
hostname).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from cellblock.core.device_lock import exclusive_device
from cellblock.core.devices import resolve_device
from cellblock.core.errors import ConfigError

#: Extra measurements of a latency whose spread (p90/p10) is over the limit.
LATENCY_RETRIES = 2


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_fingerprint(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Describe the device latency is measured on (no hostname).

    Returns:
        ``{"type", "name", "torch", "threads", "cuda", "machine"}``, plus
        ``"capability"`` on CUDA.
    """
    dev = resolve_device(device)
    info: dict[str, Any] = {
        "type": dev.type,
        "name": _cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "machine": platform.machine(),
    }
    if dev.type == "cuda":
        info["name"] = torch.cuda.get_device_name(dev)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(dev)))
    return info


def _model_device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 10,
    repeats: int = 30,
    max_spread: float | None = None,
    retries: int = LATENCY_RETRIES,
) -> dict[str, Any]:
    """Median forward-pass latency of ``model`` on one batch of random inputs.

    Runs in eval mode under ``torch.inference_mode``: ``warmup`` untimed passes, then
    ``repeats`` timed ones in fp32 (``time.perf_counter``, with ``torch.cuda.synchronize``
    around each pass on CUDA). The model's training flag and device are restored.

    Args:
        model: The network.
        input_shape: ``(C, H, W)`` of one input.
        batch_size: Inputs per forward pass (latency is per batch).
        device: Where to run it.
        warmup: Untimed passes first.
        repeats: Timed passes.
        max_spread: When p90/p10 of the timed passes exceeds it (a busy machine), the
            measurement is repeated up to ``retries`` times and the steadiest one kept;
            if it stays over, the result has ``latency_unstable: True``. None: no check.
        retries: Extra measurements allowed by ``max_spread``.

    Returns:
        ``{"latency_ms", "latency_p10_ms", "latency_p90_ms", "latency_spread",
        "latency_batch_size", "latency_repeats", "latency_device", "latency_isolation",
        "latency_wait_ms"}`` (``latency_ms`` is the median), plus ``latency_attempts`` and
        ``latency_unstable`` with ``max_spread``. Timing holds the device exclusively against
        other cellblock trials (:mod:`cellblock.core.device_lock`): ``latency_isolation`` says
        so and ``latency_wait_ms`` is how long it waited for the device.

    Raises:
        ConfigError: if the shape, counts or device are invalid.
    """
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ConfigError(f"input_shape {tuple(input_shape)} is invalid; give (C, H, W) with positive sizes")
    if batch_size < 1 or warmup < 0 or repeats < 1:
        raise ConfigError(
            f"latency batch_size={batch_size}, warmup={warmup}, repeats={repeats} are invalid; "
            "use batch_size >= 1, warmup >= 0, repeats >= 1"
        )
    dev = resolve_device(device)
    was_training = model.training
    old_device = _model_device(model)
    x = torch.randn(batch_size, *map(int, input_shape), device=dev)
    model.to(dev).eval()
    best: tuple[float, list[float]] | None = None
    attempts = 0
    try:
        with exclusive_device(dev) as isolation, torch.inference_mode():
            for _ in range(warmup):
                model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            allowed = 1 + (max(0, retries) if max_spread is not None else 0)
            while attempts < allowed:
                attempts += 1
                times_ms = _timed(model, x, dev, repeats)
                spread = _spread(times_ms)
                if best is None or spread < best[0]:
                    best = (spread, times_ms)
                if max_spread is None or spread <= max_spread:
                    break
    finally:
        model.train(was_training)
        if old_device is not None and old_device != dev:
            model.to(old_device)
    spread, times_ms = best
    p10, p50, p90 = np.percentile(times_ms, [10, 50, 90])
    out = {
        "latency_ms": float(p50),
        "latency_p10_ms": float(p10),
        "latency_p90_ms": float(p90),
        "latency_spread": float(spread),
        "latency_batch_size": batch_size,
        "latency_repeats": repeats,
        "latency_device": device_fingerprint(dev),
        **isolation,
    }
    if max_spread is not None:
        out["latency_attempts"] = attempts
        out["latency_unstable"] = bool(spread > max_spread)
    return out


def _timed(model: nn.Module, x: torch.Tensor, dev: torch.device, repeats: int) -> list[float]:
    times_ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times_ms.append((time.perf_counter() - t0) * 1e3)
    return times_ms


def _spread(times_ms: Sequence[float]) -> float:
    """p90 / p10 of the timings (inf when p10 is 0)."""
    p10, p90 = np.percentile(times_ms, [10, 90])
    return float(p90 / p10) if p10 > 0 else float("inf")
