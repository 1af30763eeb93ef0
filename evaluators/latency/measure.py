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
from cellblock.core.load import BUSY_ABOVE, NORMALISE_ABOVE

#: Extra measurements of a latency whose spread (p90/p10) is over the limit.
LATENCY_RETRIES = 2
#: Timed runs of the reference network on each side of a measurement (median kept).
REFERENCE_REPEATS = 10
#: Fastest reference time (ms) seen in this process, per (device, threads, input shape).
_REFERENCE_BEST: dict[tuple[Any, ...], float] = {}


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
            With it, the reference network is timed before and after each measurement
            (:mod:`cellblock.core.load`): a slowdown over ``NORMALISE_ABOVE`` normalises
            ``latency_ms`` (``latency_raw_ms``
            keeps the raw median), one over ``BUSY_ABOVE`` is re-measured like a wide
            spread, then flagged (``latency_unstable_reason`` says which and why).
        retries: Extra measurements allowed by ``max_spread``.

    Returns:
        ``{"latency_ms", "latency_p10_ms", "latency_p90_ms", "latency_spread",
        "latency_batch_size", "latency_repeats", "latency_device", "latency_isolation",
        "latency_wait_ms"}`` (``latency_ms`` is the median), plus ``latency_attempts`` and
        ``latency_unstable`` (and ``latency_reference_ms``, ``latency_slowdown``,
        ``latency_normalised``) with ``max_spread``. Timing holds the device exclusively against
        other cellblock trials (:mod:`cellblock.core.device_lock`): ``latency_isolation`` says
        so and ``latency_wait_ms`` is how long it waited for the device.

    Raises:
        ConfigError: if the shape, counts or device are invalid.
    """
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ConfigError(
            f"input_shape {tuple(input_shape)} is invalid; give (C, H, W) with positive sizes")
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
            reference = _Reference(dev, x) if max_spread is not None else None
            while attempts < allowed:
                attempts += 1
                before = reference.time() if reference is not None else None
                times_ms = _timed(model, x, dev, repeats)
                slowdown = reference.slowdown(before,
                                              reference.time()) if reference is not None else 1.0
                spread = _spread(times_ms)
                score = (slowdown > BUSY_ABOVE, spread)
                if best is None or score < best[0]:
                    best = (score, times_ms, slowdown,
                            reference.last if reference is not None else None)
                if max_spread is None or (spread <= max_spread and slowdown <= BUSY_ABOVE):
                    break
    finally:
        model.train(was_training)
        if old_device is not None and old_device != dev:
            model.to(old_device)
    (_, spread), times_ms, slowdown, ref_ms = best
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
        out.update(_load_metrics(float(p50), slowdown, ref_ms, spread, max_spread))
    return out


def _load_metrics(raw_ms: float, slowdown: float, ref_ms: float | None, spread: float,
                  max_spread: float) -> dict[str, Any]:
    """How the machine's load was handled: the reference's time and slowdown, the latency
    normalised by it (``latency_normalised``), and ``latency_unstable`` with its reason."""
    out: dict[str, Any] = {"latency_reference_ms": ref_ms, "latency_slowdown": round(slowdown, 4),
                           "latency_normalised": slowdown > NORMALISE_ABOVE}
    if slowdown > NORMALISE_ABOVE:
        out["latency_raw_ms"] = raw_ms
        out["latency_ms"] = raw_ms / slowdown
    reasons = []
    if spread > max_spread:
        reasons.append(f"spread: p90/p10 {spread:.2f} over {max_spread:g}")
    if slowdown > BUSY_ABOVE:
        reasons.append(f"busy machine: the reference network ran {slowdown:.1f}x slower than "
                       "at its fastest")
    out["latency_unstable"] = bool(reasons)
    if reasons:
        out["latency_unstable_reason"] = "; ".join(reasons)
    return out


def reference_network(input_shape: Sequence[int]) -> nn.Module:
    """The fixed reference workload (``REFERENCE_NETWORK`` of
    :mod:`~cellblock.evaluators.latency.timing`) for inputs of ``input_shape``.

    Three 3x3 convolutions with batch norm and ReLU (16, 16, 32 channels, the last one with
    stride 2), global pooling and a 10-way linear layer; weights from seed 0.
    """
    channels = int(input_shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for c_in, c_out, stride in ((channels, 16, 1), (16, 16, 1), (16, 32, 2)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU()]
        net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    return net.eval()


class _Reference:
    """The fixed reference network, timed around a measurement to tell a busy machine."""

    def __init__(self, dev: torch.device, x: torch.Tensor) -> None:
        self.net = reference_network(tuple(x.shape[1:])).to(dev)
        self.x, self.dev = x, dev
        self.key = (str(dev), torch.get_num_threads(), tuple(x.shape))
        self.last: float | None = None
        for _ in range(2):
            self.net(x)

    def time(self) -> float:
        """Median of :data:`REFERENCE_REPEATS` timed runs (ms)."""
        return float(np.median(_timed(self.net, self.x, self.dev, REFERENCE_REPEATS)))

    def slowdown(self, before: float, after: float) -> float:
        """How much slower the reference ran around the measurement than at its fastest."""
        self.last = (before + after) / 2
        best = min(_REFERENCE_BEST.get(self.key, float("inf")), before, after)
        _REFERENCE_BEST[self.key] = best
        return self.last / best if best > 0 else 1.0


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
