"""Speed of the Pareto math on 1,000 points (was a timed unit test; timing belongs here).

Run: ``python results/benchmarks/pareto_speed.py`` -> prints a Markdown table and writes
``results/benchmarks/pareto_speed.md``. Targets (5x margin kept from the old test):
hypervolume of 1,000 front points < 1.0 s (m = 2, 3); non-dominated ranks of 1,000
points in 3-D < 2.5 s.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

import cellblock.pareto as pareto


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for m in (2, 3):
        S = rng.random((1000, m))
        S /= np.linalg.norm(S, axis=1, keepdims=True)
        t0 = time.perf_counter()
        pareto.hypervolume(S, np.full(m, 1.1))
        rows.append((f"hypervolume, 1,000 front points, m={m}", time.perf_counter() - t0, 1.0))
    F = rng.random((1000, 3))
    t0 = time.perf_counter()
    pareto.nondominated_rank(F)
    rows.append(("nondominated_rank, 1,000 points, m=3", time.perf_counter() - t0, 2.5))
    load = os.getloadavg()[0]
    lines = ["# Pareto math speed", "",
             "Command: `python results/benchmarks/pareto_speed.py`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"load average {load:.1f} when measured.", "",
             "| what | seconds | target | ok |", "|---|---|---|---|"]
    lines += [f"| {w} | {s:.3f} | < {t} | {'yes' if s < t else 'NO'} |" for w, s, t in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(__file__).with_suffix(".md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
