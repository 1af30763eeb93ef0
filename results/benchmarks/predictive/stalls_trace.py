"""Where one single-objective ``predictive`` run spends its asks: I (initial), L (local move), G
(global pool), * improved.

Usage (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/predictive/stalls_trace.py noise 202 \\
        [--options '{"local_restart": true}']
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from stalls import nb201_values  # noqa: E402

import cellblock.strategies.predictive.search as predictive  # noqa: E402
from cellblock.core.objectives import parse_objectives  # noqa: E402
from cellblock.records import COMPLETE, Trial  # noqa: E402
from cellblock.search_spaces.api import arch_id  # noqa: E402
from cellblock.strategies.base import make_strategy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant")
    ap.add_argument("seed", type=int)
    ap.add_argument("--options", default="{}")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--table", default="/work/shared/nb201_cifar100.csv")
    args = ap.parse_args()
    space, values = nb201_values(args.table, "cifar100_test_acc", args.variant)
    strategy = make_strategy("predictive", space, parse_objectives("accuracy"), args.seed,
                             json.loads(args.options))
    marks: list[str] = []
    local, choose = predictive.PredictiveSearch._local, predictive.PredictiveSearch._choose

    def traced_local(self: Any, score: Any) -> Any:
        arch = local(self, score)
        marks.append("L" if arch is not None else "")
        return arch

    def traced_choose(self: Any, items: Any, score: Any, climb: bool = False) -> Any:
        marks.append("G")
        return choose(self, items, score, climb)

    predictive.PredictiveSearch._local = traced_local  # type: ignore[method-assign]
    predictive.PredictiveSearch._choose = traced_choose  # type: ignore[method-assign]
    best, line = float("-inf"), []
    for i in range(args.budget):
        n = len(marks)
        arch = strategy.ask()
        value = values[arch_id(arch)]
        line.append(("".join(marks[n:]) or "I") + ("*" if value > best else ""))
        best = max(best, value)
        strategy.tell(
            Trial(number=i, arch_id=arch_id(arch), arch=arch, status=COMPLETE,
                  metrics={"accuracy": value}))
    print(f"{args.variant} seed {args.seed}: best {best:.2f}, optimum {max(values.values()):.2f}")
    print(" ".join(line))


if __name__ == "__main__":
    main()
