"""Latency measured on a busy machine: the thresholds, and which trials to distrust.

Every measured latency of a search comes with ``latency_reference_ms``: the time of a fixed
reference network, run right before and after it (:func:`cellblock.evaluators.latency.measure.
measure_latency`). A machine that other processes slow down slows the reference too. When
a trial is measured, its latency is normalised by the reference's slowdown (over
:data:`NORMALISE_ABOVE`) and flagged over :data:`BUSY_ABOVE`; when a run is read,
:func:`unstable_latency` flags again against the fastest reference of the whole run (the
first trials of a process have no faster reference to compare with yet).

Torch-free: ``show``, ``trials.csv`` and the report use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: Reference slowdown above which a measured latency is normalised (raw / slowdown).
NORMALISE_ABOVE = 1.25
#: Reference slowdown above which a measured latency is flagged unstable (a busy machine).
BUSY_ABOVE = 2.0

#: The reason of a latency flagged unstable by its spread in records older than the reason.
SPREAD_REASON = "spread: p90/p10 over latency_max_spread"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _threads(metrics: dict[str, Any]) -> Any:
    device = metrics.get("latency_device")
    return (device.get("name"), device.get("threads")) if isinstance(device, dict) else None


def unstable_latency(trials: Sequence[Any]) -> dict[int, str]:
    """Trial number -> why its latency is not trusted, for the trials whose latency is not.

    A latency is not trusted when its measurement flagged it (``latency_unstable``: a wide
    spread, or a busy machine), or when its reference network ran over :data:`BUSY_ABOVE`
    times slower than the fastest reference of the run on the same device and threads.
    """
    fastest: dict[Any, float] = {}
    for t in trials:
        ref = _number(t.metrics.get("latency_reference_ms"))
        if ref is not None and ref > 0:
            key = _threads(t.metrics)
            fastest[key] = min(fastest.get(key, ref), ref)
    out: dict[int, str] = {}
    for t in trials:
        m = t.metrics
        reasons = []
        if m.get("latency_unstable"):
            reasons.append(str(m.get("latency_unstable_reason") or SPREAD_REASON))
        ref, best = _number(m.get("latency_reference_ms")), fastest.get(_threads(m))
        slowdown = ref / best if ref is not None and best else None
        if slowdown is not None and slowdown > BUSY_ABOVE and not any("busy" in r for r in reasons):
            reasons.append(f"busy machine: the reference network ran {slowdown:.1f}x slower than "
                           "in the run's fastest measurement")
        if reasons:
            out[t.number] = "; ".join(reasons)
    return out


def remedy(run: str) -> str:
    """What to do about trials kept off the front for their latency (one line)."""
    return ("measure them again: repeat the search with a new --out when the machine is idle; or "
            f"continue {run} with --allow-unstable-latency to let them onto the front as "
            "measured; or search with --latency-table FILE ('cellblock latency profile'), which "
            "times nothing during the search")


__all__ = ["BUSY_ABOVE", "NORMALISE_ABOVE", "remedy", "unstable_latency"]
