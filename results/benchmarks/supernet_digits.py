"""Benchmark: supernet ranking quality and cost on digits (blocks space), with and without
the few-shot split, against the equal-cost baselines.

For one skeleton, trains a supernet per (split, seed) and ranks each against the same
stand-alone reference, one torch thread per process (OMP_NUM_THREADS=1):

    cellblock supernet train --space blocks [--space-arg K=V ...] --dataset digits \\
        --val-fraction F --epochs E --batch-size B --seed S [--split auto] --device cpu \\
        --out DIR/<split>-sS.pt
    cellblock supernet rank --supernet DIR/<split>-sS.pt --samples 40 --epochs SE \\
        --batch-size SB --seeds 3 --out DIR/rank --device cpu

``--dataset`` runs the same protocol on other data (any ``--dataset`` of the CLI, e.g. an
``.npz``). Every rank of one DIR reuses the stand-alone trainings cached in
DIR/rank/standalone.jsonl
(same stratified architectures, recipe and split): the reference is trained once per
skeleton. ``--reference-only`` trains just that reference (with a one-epoch throw-away
supernet), so it can be cached ahead. Prints one markdown row per supernet and a mean ±
std summary per split, and writes DIR/summary.json.

Usage:

    python results/benchmarks/supernet_digits.py DIR [--preset default|supernet|ofa-mbconv|residual]
        [--splits none,auto] [--epochs E] [--supernet-seeds 0,1,2] [--reference-only] ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cellblock.search_spaces.blocks_space import SUPERNET_SKELETON


def _arg(key: str, value: object) -> str:
    text = json.dumps(list(value)) if isinstance(value, tuple) else json.dumps(value)
    return f"{key}={text.replace(' ', '')}"


#: Skeletons measured in supernet_digits.md (all other skeleton arguments: the defaults).
PRESETS = {
    "default": [],
    # blocks_space.SUPERNET_SKELETON (basic + mbconv, kernels 3/5, no attention, shared stream)
    "supernet": [_arg(k, v) for k, v in SUPERNET_SKELETON.items()],
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


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _mean_std(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--space-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--epochs", type=int, default=8, help="supernet epochs")
    p.add_argument("--batch-size", type=int, default=32, help="supernet batch size")
    p.add_argument("--sampling", default="uniform")
    p.add_argument("--splits", default="none,auto",
                   help="comma list: none, auto or decisions (';' for ',')")
    p.add_argument("--split-after", default="0.5")
    p.add_argument("--split-groups", default="8")
    p.add_argument("--val-fraction", default="0.4")
    p.add_argument("--dataset", default="digits",
                   help="any --dataset of cellblock (default digits), e.g. an .npz file")
    p.add_argument("--supernet-seeds", default="0,1,2")
    p.add_argument("--samples", type=int, default=40)
    p.add_argument("--standalone-epochs", type=int, default=8)
    p.add_argument("--standalone-batch-size", type=int, default=64)
    p.add_argument("--seeds", type=int, default=3, help="stand-alone seeds per architecture")
    p.add_argument("--sample-seed", default="0", help="seed of the stratified architecture sample")
    p.add_argument("--reference-only", action="store_true")
    p.add_argument("--shared-stream", action="store_true",
                   help="every block type adds the stage's shared projection: the same as "
                        "--space-arg shortcut=shared (a patch of the blocks in the round that "
                        "measured it first); use its own DIR")
    args = p.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.shared_stream:
        args.space_arg.append("shortcut=shared")
    cli = [sys.executable, "-m", "cellblock"]
    space_args = [x for a in PRESETS[args.preset] + args.space_arg for x in ("--space-arg", a)]
    common = ["--dataset", args.dataset, "--val-fraction", args.val_fraction,
              "--batch-size", str(args.batch_size), "--sampling", args.sampling, "--device", "cpu"]
    rank = ["--samples", str(args.samples), "--epochs", str(args.standalone_epochs),
            "--batch-size", str(args.standalone_batch_size), "--seeds", str(args.seeds),
            "--seed", args.sample_seed, "--out", str(out / "rank"), "--device", "cpu"]
    if args.reference_only:
        ckpt = out / "reference-dummy.pt"
        run([*cli, "supernet", "train", "--space", "blocks", *space_args, *common, "--epochs", "1",
             "--seed", "0", "--out", str(ckpt)], env)
        run([*cli, "supernet", "rank", "--supernet", str(ckpt), *rank, "--no-baselines"], env)
        r = json.loads((out / "rank" / "rank.json").read_text())
        print(f"reference cached: n {r['n']}, seeds {r['seeds']}, noise ceiling "
              f"{_fmt(r['standalone_seed_tau'])}, stand-alone {r['standalone_s']:.1f} s per seed")
        return
    rows = []
    print("| skeleton | split | supernet seed | final loss | kendall_tau | supernet+macs | "
          "tau no recal | n | supernet_s (train + eval) | standalone_s | ratio | noise ceiling | "
          "params | macs | synflow | naswot | equal-cost stand-alone (steps) |")
    print("|" + "---|" * 17)
    for split in args.splits.split(","):
        extra = [] if split == "none" else ["--split", split.replace(";", ","), "--split-after",
                                            args.split_after, "--split-groups", args.split_groups]
        for seed in [int(s) for s in args.supernet_seeds.split(",")]:
            ckpt = out / f"{split.replace(';', '+')}-s{seed}.pt"
            run([*cli, "supernet", "train", "--space", "blocks", *space_args, *common,
                 "--epochs", str(args.epochs), "--seed", str(seed), *extra,
                 "--checkpoint-every", str(args.epochs), "--out", str(ckpt)], env)
            run([*cli, "supernet", "rank", "--supernet", str(ckpt), *rank], env)
            r = json.loads((out / "rank" / "rank.json").read_text())
            import torch

            r["final_loss"] = float(torch.load(ckpt, weights_only=True)["final_loss"])
            r["split_name"], r["supernet_seed"] = split, seed
            r["load_after"] = os.getloadavg()[0]
            rows.append(r)
            b = r["baselines"]
            eq = b["standalone_equal_cost"]
            print(f"| {args.preset} | {split} | {seed} | {r['final_loss']:.3f} | "
                  f"{_fmt(r['kendall_tau'])} | {_fmt(r['fused']['kendall_tau'])} | "
                  f"{_fmt(r['kendall_tau_no_recal'])} | {r['n']} | {r['supernet_train_s']:.1f} "
                  f"+ {r['supernet_eval_s']:.1f} | {r['standalone_s']:.1f} "
                  f"| {r['cost_ratio']:.3f} | {_fmt(r['standalone_seed_tau'])} | "
                  + " | ".join(
                      _fmt(b[k]["kendall_tau"]) for k in ("params", "macs", "synflow", "naswot"))
                  + f" | {_fmt(eq['kendall_tau'])} ({eq['steps']}) |", flush=True)
            (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| skeleton | split | final loss | kendall_tau | supernet+macs | noise ceiling | "
          "params | macs | synflow | naswot | equal-cost stand-alone | ratio |")
    print("|" + "---|" * 12)
    for split in args.splits.split(","):
        rs = [r for r in rows if r["split_name"] == split]
        b = [r["baselines"] for r in rs]
        print(f"| {args.preset} | {split} | {_mean_std([r['final_loss'] for r in rs])} | "
              f"{_mean_std([r['kendall_tau'] for r in rs])} | "
              f"{_mean_std([r['fused']['kendall_tau'] for r in rs])} | "
              f"{_fmt(rs[0]['standalone_seed_tau'])} | "
              + " | ".join(_mean_std([x[k]["kendall_tau"] for x in b])
                           for k in ("params", "macs", "synflow", "naswot",
                                     "standalone_equal_cost"))
              + f" | {_mean_std([r['cost_ratio'] for r in rs])} |")


if __name__ == "__main__":
    main()
