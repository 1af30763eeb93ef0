"""How well a latency table predicts: random networks of its space measured and compared.

``cellblock latency check`` runs :func:`check` and prints :func:`summary_line`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cellblock.core.errors import ConfigError
from cellblock.evaluators.latency.covers import arch_probe
from cellblock.evaluators.latency.table import LatencyTable, build_real, table_timing
from cellblock.evaluators.latency.timing import measure_networks
from cellblock.search_spaces.api import SearchSpace, arch_id

_log = logging.getLogger(__name__)


def check(table: LatencyTable, space: SearchSpace, samples: int, *, runtime: str | None = None,
          device: str = "cpu", warmup: int = 10, repeats: int = 100, seed: int = 1234,
          clock: str | None = None, statistic: str | None = None, passes: int = 1,
          progress: bool = True) -> dict[str, Any]:
    """Measure ``samples`` random networks on this device and compare with the table.

    Networks are measured as the table was made (its clock, statistic and, for a normalised
    table, relative to its reference network); the raw timings are compared too. With
    ``passes`` >= 2 every network is measured that many times (the mean is compared with the
    prediction) and the agreement of the first two passes is reported too: the ceiling that
    the measurement noise of this device puts on any predictor.

    Returns:
        ``{"kendall_tau", "spearman", "mape_pct", "n", "runtime", "rows"}`` (+ ``repeat_*``,
        and ``raw_*`` for a normalised table).
    """
    from tqdm.auto import tqdm

    from cellblock.core.devices import resolve_device

    if samples < 2 or passes < 1:
        raise ConfigError(f"--samples must be >= 2 and --passes >= 1, got {samples} and {passes}")
    dev = resolve_device(device)
    timing = table_timing(table.data, dev, runtime=runtime, warmup=warmup, repeats=repeats,
                          clock=clock,
                          statistic=statistic)
    shape = tuple(space.arguments()["input_shape"])
    rng = np.random.default_rng(seed)
    rows, models = [], []
    for _ in tqdm(range(samples), unit="net", desc="check: build", disable=not progress,
                  file=sys.stderr):
        arch = space.sample(rng)
        models.append(build_real(arch_probe(space, arch).build, 0))
        rows.append(
            {"arch_id": arch_id(arch),
             "predicted_ms": table.predict(models[-1], shape, f"arch {arch_id(arch)}")})
    if progress:
        _log.info("check: timing %d networks in %s, interleaved", samples, timing.runtime)
    runs = [measure_networks(models, shape, timing) for _ in range(passes)]
    for i, row in enumerate(rows):
        row["measured_passes_ms"] = [r[i]["value_ms"] for r in runs]
        row["measured_ms"] = float(np.mean(row["measured_passes_ms"]))
        row["raw_measured_ms"] = float(np.mean([r[i]["raw_ms"] for r in runs]))
    pred = [r["predicted_ms"] for r in rows]
    out = _agreement(pred, [r["measured_ms"] for r in rows])
    if timing.normalised:
        out.update({f"raw_{k}": v
                    for k, v in _agreement(pred, [r["raw_measured_ms"] for r in rows]).items()})
    if passes >= 2:
        first, second = ([r["value_ms"] for r in run] for run in runs[:2])
        out.update({f"repeat_{k}": v for k, v in _agreement(second, first).items()})
    return {**out, "n": len(rows), "runtime": timing.runtime, "threads": torch.get_num_threads(),
            "clock": timing.clock, "statistic": timing.statistic, "normalise": timing.normalise,
            "passes": passes, "rows": rows}


def _agreement(pred: list[float], meas: list[float]) -> dict[str, float]:
    from cellblock.core.stats import rank_correlations as correlations

    tau, rho = correlations(pred, meas)
    mape = float(np.mean([abs(p - m) / m for p, m in zip(pred, meas, strict=True)]) * 100)
    return {"kendall_tau": tau, "spearman": rho, "mape_pct": mape}


def summary_line(result: Mapping[str, Any]) -> str:
    """One line of a check result."""
    scale = ", relative to the reference network" if result.get("normalise") == "reference" else ""
    line = (f"{result['n']} networks in {result['runtime']} ({result['threads']} threads, "
            f"{result['clock']} clock, {result['statistic']}{scale}): Kendall tau "
            f"{result['kendall_tau']:.3f}, Spearman {result['spearman']:.3f}, MAPE "
            f"{result['mape_pct']:.1f}%")
    if "raw_kendall_tau" in result:
        line += (f"; raw timings: Kendall tau {result['raw_kendall_tau']:.3f}, MAPE "
                 f"{result['raw_mape_pct']:.1f}%")
    if "repeat_kendall_tau" in result:
        line += ("; measurement noise (pass 2 vs pass 1): Kendall tau "
                 f"{result['repeat_kendall_tau']:.3f}, "
                 f"Spearman {result['repeat_spearman']:.3f}, MAPE {result['repeat_mape_pct']:.1f}%")
    return line
