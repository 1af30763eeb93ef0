"""Spearman correlation of zero-cost proxies with NAS-Bench-201 CIFAR-100 test accuracy.

Each sampled architecture is built with the ``nb201`` space (3x32x32 inputs, 100 classes,
C=16, N=5, PyTorch default init, seed fixed per architecture) and scored at
initialisation. There is no CIFAR-100 offline: data-dependent proxies get one fixed batch
of random-normal images with random labels. ``synflow`` needs no data.

Usage::

    .venv/bin/python results/benchmarks/proxies_nb201.py --n 1000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from cellblock.evaluators.proxies import PROXIES
from cellblock.search_spaces import SearchSpace
from cellblock.search_spaces.nb201 import from_nb201_string

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO.parent / "shared" / "nb201_cifar100.csv"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(TABLE))
    ap.add_argument("--n", type=int, default=1000, help="architectures sampled (15625 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--proxies", default="synflow,naswot,jacob_cov,grad_norm,snip")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--scores", default="/tmp/proxies_nb201_scores.csv", help="per-arch scores CSV")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [p.strip() for p in args.proxies.split(",") if p.strip()]
    proxies = [PROXIES.get(n) for n in names]

    with open(args.table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(args.seed)
    picks = rng.permutation(len(rows))[: args.n]
    space = SearchSpace("nb201", input_shape=(3, 32, 32), num_classes=100)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=g)
    y = torch.randint(0, 100, (args.batch_size,), generator=g)

    acc: list[float] = []
    scores: dict[str, list[float]] = {n: [] for n in names}
    secs: dict[str, float] = {n: 0.0 for n in names}
    build_s = 0.0
    with open(args.scores, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["arch", "acc", *names])
        start = time.perf_counter()
        for count, i in enumerate(picks, start=1):
            row = rows[int(i)]
            t0 = time.perf_counter()
            torch.manual_seed(args.seed * 100_003 + int(i))
            model = space.build(from_nb201_string(row["arch"]))
            build_s += time.perf_counter() - t0
            values = []
            for name, proxy in zip(names, proxies, strict=True):
                t0 = time.perf_counter()
                values.append(proxy(model, x, y, input_shape=(3, 32, 32)))
                secs[name] += time.perf_counter() - t0
                scores[name].append(values[-1])
            acc.append(float(row["cifar100_test_acc"]))
            writer.writerow([row["arch"], acc[-1], *values])
            out.flush()
            if count % 50 == 0:
                print(f"{count}/{len(picks)} {time.perf_counter() - start:.0f}s", file=sys.stderr,
                      flush=True)
    n = len(acc)
    print(f"n={n} seed={args.seed} batch={args.batch_size} threads={torch.get_num_threads()} "
          f"build_ms/arch={1000 * build_s / n:.1f}")
    print("| proxy | Spearman rho | n (finite) | ms / arch |")
    print("|---|---|---|---|")
    for name in names:
        s = np.asarray(scores[name], dtype=float)
        # -inf (degenerate networks) ranks last; NaN never occurs (checked).
        finite = int(np.isfinite(s).sum())
        assert not np.isnan(s).any(), name
        rho = spearmanr(np.nan_to_num(s, neginf=np.nanmin(s[np.isfinite(s)]) - 1), acc).statistic
        print(f"| {name} | {rho:.3f} | {n} ({finite}) | {1000 * secs[name] / n:.1f} |")
        if math.isnan(rho):
            print(f"warning: {name} correlation undefined", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
