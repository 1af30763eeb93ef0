"""One strategy on NAS-Bench-201 over any seed range, with strategy options (held-out checks).

Uses the harness's own functions (``run_strategy``, ``best_at``, ``hv_ratio_at``,
``true_front``) with every table look-up done once up front, so that 30 seeds x 2 runs
take seconds. Prints mean ± std (ddof=0) of ``best`` and ``hv_ratio`` per budget.

Usage (from the repository root):
    .venv/bin/python results/benchmarks/nb201_bench/seeds.py evolution --seeds 10:40 \\
        [--options '{"local_search": false}']
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cellblock.core.objectives import parse_objectives
from cellblock.run.bench import (
    best_at,
    evaluate_all,
    hv_ratio_at,
    run_strategy,
    table_components,
    table_of,
    true_front,
)
from cellblock.search_spaces.api import arch_id

BUDGETS = [25, 50, 100, 200, 300]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("strategy")
    ap.add_argument("--seeds", default="10:40", help="range start:stop")
    ap.add_argument("--options", default="{}", help="strategy options as JSON")
    ap.add_argument("--table", default="../shared/nb201_cifar100.csv")
    ap.add_argument("--metric", default="cifar100_test_acc")
    args = ap.parse_args()
    start, stop = (int(x) for x in args.seeds.split(":"))
    options = json.loads(args.options)
    objectives = parse_objectives("accuracy,macs")
    comps = table_components("nb201", {"num_classes": 100}, args.table, args.metric, objectives)
    space, metric = comps.space, table_of(comps).metric
    front = true_front(comps, objectives)
    archs = list(space.enumerate())
    answers = dict(zip(map(arch_id, archs), evaluate_all(comps, archs)))

    def oracle(arch, seed):  # the table evaluator's outcomes, looked up once
        return answers[arch_id(arch)]

    bests, ratios = [], []
    for seed in range(start, stop):
        so = run_strategy(args.strategy, space, parse_objectives("accuracy"), seed, max(BUDGETS),
                          oracle, options)
        mo = run_strategy(args.strategy, space, objectives, seed, max(BUDGETS), oracle, options)
        bests.append(best_at(so, BUDGETS, metric))
        ratios.append(hv_ratio_at(mo, BUDGETS, front))
    b, h = np.array(bests), np.array(ratios)
    print(f"{args.strategy} {options} seeds {start}..{stop - 1}")
    print("| budget | " + " | ".join(str(x) for x in BUDGETS) + " |")
    print("| best | " + " | ".join(f"{m:.2f} ± {s:.2f}"
                                   for m, s in zip(b.mean(0), b.std(0))) + " |")
    print("| hv_ratio | " + " | ".join(f"{m:.4f} ± {s:.4f}"
                                       for m, s in zip(h.mean(0), h.std(0))) + " |")


if __name__ == "__main__":
    main()
