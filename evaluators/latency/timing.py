"""Timing for latency tables: statistics, interleaved rounds and speed normalisation.

A shared VM, or a phone that throttles, changes speed by tens of percent within seconds.
On the 2-vCPU development VM, the one-second medians of a fixed Python loop ranged from
1.17 to 1.79 ms in 20 s. Timings taken minutes apart (a table's units, then whole networks)
then disagree by more than any predictor could fix.

With ``normalise="reference"``, each timed round of a callable is preceded by a few runs of
a fixed reference network in the same runtime. The value kept is::

    median over rounds of (round statistic / reference's round statistic) x reference_ms

This is the latency at the speed the device had when ``reference_ms`` was measured (at the
start of the table's profile). On a steady device it is the plain latency. The raw,
unnormalised statistic is always kept too (``raw_ms``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cellblock.core.errors import ConfigError
from cellblock.evaluators.latency.measure import (
    reference_network as reference_network,  # re-exported
)
from cellblock.evaluators.latency.runtimes import check_clock, get_runtime, time_call

#: Statistic of the timed runs kept as "the" latency: the median, or the 10th percentile
#: (steadier on a shared machine, where other processes slow some runs down).
STATISTICS = {"median": 50, "p10": 10}
#: ``none``: raw timings. ``reference``: relative to the reference network (module docstring).
NORMALISE = ("none", "reference")
#: Version of :func:`reference_network`; a table made with another one is not normalised against it.
REFERENCE_NETWORK = "conv3-bn-relu/1"
#: Reference runs before each timed round.
REFERENCE_RUNS = 5
#: Rounds a single callable (a unit, the runtime's overhead) is timed in when normalising.
UNIT_ROUNDS = 5


def check_statistic(statistic: str) -> int:
    """The percentile of ``statistic``; ConfigError for an unknown one."""
    if statistic not in STATISTICS:
        raise ConfigError(
            f"unknown latency statistic {statistic!r}; use one of: {', '.join(STATISTICS)}")
    return STATISTICS[statistic]


def check_normalise(normalise: str) -> str:
    """``normalise`` itself; ConfigError for an unknown mode."""
    if normalise not in NORMALISE:
        raise ConfigError(
            f"unknown latency normalisation {normalise!r}; use one of: {', '.join(NORMALISE)}")
    return normalise


def statistics(times: Sequence[float], statistic: str) -> dict[str, float]:
    """``raw_ms`` (the kept statistic), ``median_ms``, ``p10_ms`` and ``p90_ms`` of ``times``."""
    p10, p50, p90, kept = np.percentile(times, [10, 50, 90, check_statistic(statistic)])
    return {"raw_ms": float(kept), "median_ms": float(p50), "p10_ms": float(p10),
            "p90_ms": float(p90)}


@dataclass
class Timing:
    """How callables are timed: runtime, device, clock, statistic and normalisation.

    Attributes:
        runtime: Runtime name (builds the reference network's runner).
        device: Where things run.
        warmup: Untimed runs before the first round.
        repeats: Timed runs of each callable, over all its rounds.
        clock: ``wall`` or ``thread``.
        statistic: ``median`` or ``p10``, per round and overall.
        normalise: ``none`` or ``reference``.
        input_shape: ``(C, H, W)`` of the reference network's input (needed to normalise).
        reference_ms: The reference's latency all values are scaled to; measured by
            :meth:`measure_reference` when None.
    """

    runtime: str
    device: torch.device
    warmup: int = 10
    repeats: int = 30
    clock: str = "wall"
    statistic: str = "median"
    normalise: str = "none"
    input_shape: tuple | None = None
    reference_ms: float | None = None
    _reference: Callable[[], Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_clock(self.clock)
        check_statistic(self.statistic)
        check_normalise(self.normalise)
        if self.warmup < 0 or self.repeats < 1:
            raise ConfigError(f"warmup={self.warmup}, repeats={self.repeats} are invalid; "
                              "use warmup >= 0, repeats >= 1")
        if self.normalise == "reference":
            if self.input_shape is None:
                raise ConfigError(
                    "normalising latency needs the input shape of the reference network")
            x = torch.randn(1, *map(int, self.input_shape), device=self.device)
            self._reference = get_runtime(self.runtime)(reference_network(self.input_shape), (x,),
                                                        self.device)

    @property
    def normalised(self) -> bool:
        """Whether values are relative to the reference network."""
        return self._reference is not None

    def measure_reference(self) -> float:
        """Time the reference network alone; sets and returns ``reference_ms``."""
        if self._reference is None:
            raise ConfigError(
                "latency timing is not normalised: there is no reference network to time")
        times = time_call(self._reference, self.warmup, REFERENCE_RUNS * 10, self.clock)
        self.reference_ms = statistics(times, self.statistic)["raw_ms"]
        return self.reference_ms

    def time_one(self, run: Callable[[], Any]) -> dict[str, float]:
        """Time one callable: ``repeats`` runs, in :data:`UNIT_ROUNDS` rounds when normalising."""
        return self.time_many([run], UNIT_ROUNDS if self.normalised else 1)[0]

    def time_many(self, runs: Sequence[Callable[[], Any]],
                  rounds: int = 5) -> list[dict[str, float]]:
        """Time several callables in ``rounds`` interleaved rounds.

        Each round times every callable ``repeats // rounds`` times (after ``warmup`` runs in
        the first round, one later), so a slow phase of the machine hits all of them alike.

        Returns:
            Per callable, :func:`statistics` of all its runs plus ``value_ms``: the
            normalised latency (with ``norm_ms``, the same) when normalising, else ``raw_ms``.
        """
        if self.normalised and self.reference_ms is None:
            self.measure_reference()
        per = max(1, self.repeats // max(1, rounds))
        times: list[list[float]] = [[] for _ in runs]
        ratios: list[list[float]] = [[] for _ in runs]
        pct = STATISTICS[self.statistic]
        for r in range(max(1, rounds)):
            for i, run in enumerate(runs):
                if self._reference is not None:
                    ref = time_call(self._reference, 1, REFERENCE_RUNS, self.clock)
                batch = time_call(run, self.warmup if r == 0 else min(self.warmup, 1), per,
                                  self.clock)
                times[i] += batch
                if self._reference is not None:
                    ref_stat = float(np.percentile(ref, pct))
                    if ref_stat > 0:
                        ratios[i].append(float(np.percentile(batch, pct)) / ref_stat)
        out = []
        for t, q in zip(times, ratios, strict=True):
            stats = statistics(t, self.statistic)
            if self._reference is not None and q:
                stats["norm_ms"] = float(np.median(q)) * float(self.reference_ms)
            stats["value_ms"] = stats.get("norm_ms", stats["raw_ms"])
            out.append(stats)
        return out

    def settings(self) -> dict[str, Any]:
        """What a table records of this timing."""
        return {"warmup": self.warmup, "repeats": self.repeats, "clock": self.clock,
                "statistic": self.statistic, "normalise": self.normalise}


def runtime_overhead(timing: Timing) -> float:
    """Latency (ms) of the runtime running an identity on a 1-element tensor."""
    run = get_runtime(timing.runtime)(nn.Identity(),
                                      (torch.zeros(1, 1, 1, 1, device=timing.device),),
                                      timing.device)
    return timing.time_one(run)["value_ms"]


def measure_networks(models: Sequence[nn.Module], input_shape: tuple, timing: Timing,
                     rounds: int = 5) -> list[dict[str, float]]:
    """Batch-1 latency of whole networks, timed in ``rounds`` interleaved rounds (see
    :meth:`Timing.time_many`)."""
    x = torch.randn(1, *map(int, input_shape), device=timing.device)
    runs = [get_runtime(timing.runtime)(m, (x,), timing.device) for m in models]
    return timing.time_many(runs, rounds)
