"""Strategies x seeds on NAS-Bench-201 with the bench harness; one JSON line per run (resumable).

Uses ``cellblock bench``'s own functions (``run_strategy``, ``best_at``, ``hv_ratio_at``,
``true_front``) with every table look-up done once up front (the answers are those of
the ``table`` evaluator's pipeline, ``table_components``). Per strategy x seed it records:
best-so-far after every evaluation of the single-objective run (``accuracy``), the hv
ratio of the ``accuracy,macs`` run at every 5th evaluation, and the wall time of every
ask (mean at trials 1-100, 101-300). A line already in ``--out`` for the same strategy,
options and seed is not run again.

Usage (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/predictive/runs.py \\
        --strategies predictive,evolution --seeds 0:20 --out
        results/benchmarks/predictive/runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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

BUDGET = 300
HV_EVERY = 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", required=True, help="comma-separated names")
    ap.add_argument("--seeds", default="0:20", help="range start:stop")
    ap.add_argument("--options", default="{}", help="strategy options as JSON (all strategies)")
    ap.add_argument("--tag", default="", help="label stored with each line (variants)")
    ap.add_argument("--modes", default="so,mo", help="so (accuracy), mo (accuracy,macs) or both")
    ap.add_argument("--budget", type=int, default=BUDGET, help="evaluations per run (default 300)")
    ap.add_argument("--table", default="/work/shared/nb201_cifar100.csv")
    ap.add_argument("--metric", default="cifar100_test_acc")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    start, stop = (int(x) for x in args.seeds.split(":"))
    options = json.loads(args.options)
    modes = args.modes.split(",")
    out = Path(args.out)
    done = set()
    if out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["strategy"], r["tag"], r["seed"], r["mode"], r.get("budget", BUDGET)))
    objectives = parse_objectives("accuracy,macs")
    comps = table_components("nb201", {"num_classes": 100}, args.table, args.metric, objectives)
    space, metric = comps.space, table_of(comps).metric
    front = true_front(comps, objectives)
    archs = list(space.enumerate())
    answers = dict(zip(map(arch_id, archs), evaluate_all(comps, archs)))

    def oracle(arch, seed):  # the table evaluator's outcomes, looked up once
        return answers[arch_id(arch)]

    for name in args.strategies.split(","):
        for seed in range(start, stop):
            for mode in modes:
                if (name, args.tag, seed, mode, args.budget) in done:
                    continue
                objs = parse_objectives("accuracy") if mode == "so" else objectives
                asks: list[float] = []
                t0 = time.perf_counter()
                trials = run_strategy(name, space, objs, seed, args.budget, oracle, options, asks)
                wall = time.perf_counter() - t0
                row = {"strategy": name, "tag": args.tag, "options": options, "seed": seed,
                       "mode": mode,
                       "budget": args.budget, "n": len(trials), "wall_s": round(wall, 3),
                       "ask_ms_1_100": 1e3 * float(np.mean(asks[:100])),
                       "ask_ms_101_300": 1e3 * float(
                           np.mean(asks[100:300])) if len(asks) > 100 else None,
                       "ask_ms_901_1000": 1e3 * float(
                           np.mean(asks[900:1000])) if len(asks) > 900 else None}
                if mode == "so":
                    row["best"] = best_at(trials, list(range(1, args.budget + 1)), metric)
                else:
                    row["hv_budgets"] = list(range(HV_EVERY, args.budget + 1, HV_EVERY))
                    row["hv"] = hv_ratio_at(trials, row["hv_budgets"], front)
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(f"{name} {args.tag} seed {seed} {mode}: {wall:.1f} s", flush=True)


if __name__ == "__main__":
    main()
