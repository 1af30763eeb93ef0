"""Benchmark: supernet ranking quality and cost on digits (blocks space).

For one skeleton, trains a supernet with each of several seeds and ranks it against the
same stand-alone trainings, with one torch thread per process (OMP_NUM_THREADS=1):

    cellblock supernet train --space blocks [--space-arg K=V ...] --dataset digits \
        --val-fraction F --epochs E --batch-size B --seed S --device cpu --out DIR/sS.pt
    cellblock supernet rank --supernet DIR/sS.pt --samples 30 --epochs SE --batch-size SB \
        --seeds 2 --out DIR/rank --device cpu

Every rank of one DIR reuses the stand-alone trainings cached in DIR/rank/standalone.jsonl
(same architectures, recipe and split), so the supernet seeds are compared on one
reference. Prints one markdown row per supernet seed and writes DIR/summary.json.

Usage:

    python results/benchmarks/supernet_digits.py DIR [--preset default|ofa-mbconv|residual]
        [--space-arg K=V ...] [--epochs E] [--supernet-seeds 0,1,2] ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: Skeletons measured in supernet_digits.md (all other skeleton arguments: the defaults).
PRESETS = {
    "default": [],
    # OFA-style: one block type, elastic width (from 4 channels), depth, kernel, expansion
    "ofa-mbconv": ["block_types=[mbconv]", "widths=[[4,8,16],[8,16,32],[16,32,64]]",
                   "attentions=[none]", "kernels=[3,5,7]"],
    # the block types whose stage projection is shared (one residual stream)
    "residual": ["block_types=[basic,bottleneck,resnext]"],
}


def run(cmd: list[str], env: dict[str, str]) -> float:
    print("$", " ".join(cmd[2:]), f"  # load {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--space-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--epochs", type=int, default=8, help="supernet epochs")
    p.add_argument("--batch-size", type=int, default=32, help="supernet batch size")
    p.add_argument("--sampling", default="uniform")
    p.add_argument("--val-fraction", default="0.4")
    p.add_argument("--supernet-seeds", default="0,1,2")
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--standalone-epochs", type=int, default=8)
    p.add_argument("--standalone-batch-size", type=int, default=64)
    p.add_argument("--seeds", type=int, default=2, help="stand-alone seeds per architecture")
    args = p.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "cellblock"]
    space_args = [x for a in PRESETS[args.preset] + args.space_arg for x in ("--space-arg", a)]
    rows = []
    for seed in [int(s) for s in args.supernet_seeds.split(",")]:
        ckpt = out / f"s{seed}.pt"
        run([*cli, "supernet", "train", "--space", "blocks", *space_args, "--dataset", "digits",
             "--val-fraction", args.val_fraction, "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--sampling", args.sampling,
             "--seed", str(seed), "--device", "cpu", "--out", str(ckpt)], env)
        run([*cli, "supernet", "rank", "--supernet", str(ckpt), "--samples", str(args.samples),
             "--epochs", str(args.standalone_epochs), "--batch-size", str(args.standalone_batch_size),
             "--seeds", str(args.seeds), "--out", str(out / "rank"), "--device", "cpu"], env)
        r = json.loads((out / "rank" / "rank.json").read_text())
        r["supernet_seed"] = seed
        r["load_after"] = os.getloadavg()[0]
        rows.append(r)
        noise = r["standalone_seed_tau"]
        print(f"| {args.preset} | {seed} | {r['kendall_tau']:.3f} | {r['spearman']:.3f} | "
              f"{r['kendall_tau_no_recal']:.3f} | {r['n']} | {r['supernet_train_s']:.1f} + "
              f"{r['supernet_eval_s']:.1f} | {r['standalone_s']:.1f} | {r['cost_ratio']:.3f} | "
              f"{r['children_per_s']:.1f} | {'n/a' if noise is None else f'{noise:.3f}'} | "
              f"{r['params_tau']:.3f} |",
              flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
