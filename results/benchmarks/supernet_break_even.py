"""How many candidates a search must score before a supernet beats short stand-alone training.

``supernet rank`` compares a supernet with stand-alone training that costs the same time on
the ranked architectures (its equal-cost baseline). A search pays the supernet's cost once
for every candidate it scores, while stand-alone training pays per candidate: at N
candidates, the same time buys each one ``steps(N) = supernet_s / (N x step_s)`` steps.
This script trains the architectures of a ranking directory (made by
``supernet_digits.py``, whose 3-seed stand-alone reference is cached there) for a list of
step counts, prints the Kendall tau of each against the reference, and for each supernet
result given, the number of candidates beyond which its tau is above stand-alone training
at equal cost:

    OMP_NUM_THREADS=1 python results/benchmarks/supernet_break_even.py DIR/rank \\
        --steps 1,2,4,8,16,27 --summary DIR1/summary.json [DIR2/summary.json ...]

The short trainings use the rank's stand-alone recipe (SGD lr 0.1, batch 64, cosine fitted
to the step count, digits with ``--val-fraction 0.4``) and are cached in
``DIR/rank/break_even.jsonl``; each step count's tau is the mean over ``--seeds`` seeds, as a
search that trains every candidate once would get on average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from cellblock.core.stats import rank_correlations as correlations
from cellblock.data import load_dataset
from cellblock.evaluators.loop import step_schedule
from cellblock.evaluators.training import TrainConfig
from cellblock.search_spaces.api import SearchSpace
from cellblock.supernet.rank import _train_rows


def reference(rank_dir: Path) -> tuple[list[dict], dict]:
    """Per-architecture mean accuracy and mean step seconds of the cached 3-seed reference."""
    rows: dict[str, dict] = {}
    for line in (rank_dir / "standalone.jsonl").read_text().splitlines():
        r = json.loads(line)
        row = rows.setdefault(r["arch_id"], {"arch": r["arch"], "acc": [], "step_s": []})
        row["acc"].append(r["standalone_accuracy"])
        row["step_s"].append(r["standalone_train_s"] / r["steps"])
    result = json.loads((rank_dir / "rank.json").read_text())
    return [r for r in rows.values() if len(r["acc"]) == result["seeds"]], result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("rank_dir", type=Path)
    p.add_argument("--steps", default="1,2,4,8,16")
    p.add_argument("--seeds", type=int, default=3, help="stand-alone seeds per step count")
    p.add_argument("--summary", nargs="*", default=[], type=Path,
                   help="summary.json files of supernet_digits.py runs (supernet tau and seconds)")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows, result = reference(args.rank_dir)
    ref = [float(np.mean(r["acc"])) for r in rows]
    step_s = float(np.mean([np.mean(r["step_s"]) for r in rows]))
    data = load_dataset("digits", val_fraction=0.4)
    space = SearchSpace.from_spec(result["space"]) if "space" in result else None
    if space is None:
        raise SystemExit("rank.json has no space spec; rerun supernet_digits.py")
    base = TrainConfig(epochs=8, batch_size=64, lr=0.1, seed=0, device="cpu")
    _, _, total, _ = step_schedule(base, len(data.y_train))
    per_epoch = max(1, total // base.epochs)
    print(f"{len(rows)} architectures; stand-alone step {step_s * 1e3:.1f} ms; "
          f"full training {total} steps")
    print(f"| stand-alone steps | kendall tau vs the 3-seed reference (mean ± std over "
          f"{args.seeds} seeds) |\n|---:|---:|")
    taus = {}
    for k in [int(s) for s in args.steps.split(",")]:
        short = dataclasses.replace(base, epochs=math.ceil(k / per_epoch), max_steps=k)
        runs = _train_rows(space, [r["arch"] for r in rows], data, short, 0, args.seeds,
                           args.rank_dir / "break_even.jsonl", f"k{k}", tuple(data.input_shape),
                           lambda s: None, f"{k} steps")
        per_seed = [float(correlations([r[rep]["standalone_accuracy"] for r in runs], ref)[0])
                    for rep in range(args.seeds)]
        taus[k] = float(np.mean(per_seed))
        print(f"| {k} | {taus[k]:.3f} ± {np.std(per_seed):.3f} |", flush=True)
    for path in args.summary:
        for r in json.loads(path.read_text()):
            sn_s = r["supernet_train_s"] + r["supernet_eval_s"]
            # the most steps k such that stand-alone training at every measured count <= k
            # ranks worse than the supernet (on average over seeds)
            k_star = 0
            for k in sorted(taus):
                if taus[k] >= r["kendall_tau"]:
                    break
                k_star = k
            head = (f"{path.parent.name} seed {r['supernet_seed']}: tau {r['kendall_tau']:.3f}, "
                    f"{sn_s:.1f} s")
            if not k_star:
                print(f"{head}; not above stand-alone training at {min(taus)} step(s)")
                continue
            n = math.ceil(sn_s / (k_star * step_s))
            print(f"{head}; above stand-alone training at every measured count <= {k_star} steps "
                  f"per candidate, i.e. from about {n} candidates")

if __name__ == "__main__":
    main()
