"""Ask time of a strategy on spaces with many moves per architecture (``blocks``, ``darts``).

The metrics are synthetic (a hash of the architecture for accuracy, a sum of its numeric
decisions for MACs): this measures the strategy's own cost per ask, not search quality.

Usage (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/predictive/ask_cost_spaces.py darts 200
    accuracy,macs predictive,evolution
"""

from __future__ import annotations

import hashlib
import sys
import time

import numpy as np

from cellblock.core.objectives import parse_objectives
from cellblock.records import COMPLETE, Trial
from cellblock.search_spaces import SearchSpace, arch_id
from cellblock.strategies import make_strategy


def metrics(arch: dict) -> dict[str, float]:
    """Deterministic synthetic metrics of an architecture."""
    h = int(hashlib.sha256(arch_id(arch).encode()).hexdigest()[:8], 16) / 2**32
    nums = [v for v in arch.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {"accuracy": 0.5 + 0.3 * h, "macs": 1e6 * (1 + sum(nums) + 3 * h)}


def main() -> None:
    space_name, n, objectives, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    space, objs = SearchSpace(space_name), parse_objectives(objectives)
    for name in names.split(","):
        strategy, asks = make_strategy(name, space, objs, 0, {}), []
        arch: dict = {}
        for i in range(n):
            t0 = time.perf_counter()
            arch = strategy.ask()
            asks.append(time.perf_counter() - t0)
            strategy.tell(
                Trial(number=i, arch_id=arch_id(arch), arch=arch, status=COMPLETE,
                      metrics=metrics(arch)))
        ms = 1e3 * np.array(asks)
        print(f"{space_name} {objectives} {name}: moves/arch {len(space.moves(arch))}, ask ms: "
              "trials 1-100 "
              f"{ms[:100].mean():.1f}, last 100 {ms[-100:].mean():.1f}, max {ms.max():.0f}")


if __name__ == "__main__":
    main()
