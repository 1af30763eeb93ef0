"""Noise ceiling of a stand-alone ranking reference on digits (blocks space).

Trains the architectures that ``cellblock supernet rank --samples N --seed 0`` samples,
stand-alone, twice (training seeds ``trial_seed(0, id)`` and ``trial_seed(1, id)``), and
prints the Kendall tau between the two runs (how far any ranker can agree with one
stand-alone run), the tau of parameter count with the accuracies, and the accuracy range.

    OMP_NUM_THREADS=1 python results/benchmarks/supernet_ceiling.py '{"block_types": ["mbconv"]}' \
        --epochs 8 --batch-size 64 --val-fraction 0.4 --out ceiling.json
"""

from __future__ import annotations

import argparse
import json

import torch
from scipy import stats

from cellblock.data import load_dataset
from cellblock.evaluators.cost import cost_metrics
from cellblock.evaluators.pipeline import trial_seed
from cellblock.evaluators.training import TrainConfig, train_and_evaluate
from cellblock.search_spaces import SearchSpace
from cellblock.search_spaces.api import arch_id
from cellblock.supernet.rank import sample_distinct


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("space_args", help="JSON dict of blocks skeleton arguments ('{}': default)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits", val_fraction=a.val_fraction)
    space = SearchSpace("blocks", **json.loads(a.space_args))
    archs = sample_distinct(space, a.samples, 0)
    acc: dict[int, list[float]] = {0: [], 1: []}
    train_s = {0: 0.0, 1: 0.0}
    params = []
    for arch in archs:
        for rep in (0, 1):
            s = trial_seed(rep, arch_id(arch))
            torch.manual_seed(s)
            model = space.build(arch)
            if rep == 0:
                params.append(cost_metrics(model, tuple(data.input_shape))["params"])
            cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=s)
            res = train_and_evaluate(model, data, cfg)
            acc[rep].append(res["accuracy"])
            train_s[rep] += res["train_s"]

    def tau(x: list[float], y: list[float]) -> float:
        return round(float(stats.kendalltau(x, y).statistic), 3)

    mean = [(u + v) / 2 for u, v in zip(acc[0], acc[1], strict=True)]
    result = {"space_args": json.loads(a.space_args), "epochs": a.epochs,
              "batch_size": a.batch_size,
              "val_fraction": a.val_fraction, "n_val": len(data.y_val),
              "tau_seed0_seed1": tau(acc[0], acc[1]), "tau_params_seed0": tau(params, acc[0]),
              "tau_params_mean": tau(params, mean), "accuracy_range": [min(acc[0]), max(acc[0])],
              "train_s": train_s, "archs": archs, "acc0": acc[0], "acc1": acc[1], "params": params}
    print(json.dumps({k: v for k, v in result.items()
                      if k not in ("archs", "acc0", "acc1", "params")}))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh)


if __name__ == "__main__":
    main()
