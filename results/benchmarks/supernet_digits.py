"""Benchmark: supernet ranking quality and cost on digits (blocks space).

Runs, with one torch thread per process (OMP_NUM_THREADS=1):

    cellblock supernet train --space blocks [--space-arg K=V ...] --dataset digits \
        --epochs E --lr LR --sampling S --device cpu --out DIR/supernet.pt
    cellblock supernet rank --supernet DIR/supernet.pt --samples 30 --epochs 5 \
        --out DIR/rank --device cpu

and prints rank.json plus the machine load. Usage:

    python results/benchmarks/supernet_digits.py [DIR] [--epochs E] [--lr LR] [--sampling S]
        [--space-arg K=V ...]

Stand-alone results are cached in DIR/rank/standalone.jsonl (per architecture and recipe),
so several supernets of the same skeleton and recipe can be ranked against one set of
stand-alone trainings by giving them the same DIR (the supernet checkpoint is
DIR/supernet.pt: delete it, or use --ckpt, to train another).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir", nargs="?", default="results/benchmarks/supernet_digits_run")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--sampling", default="uniform")
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--standalone-epochs", type=int, default=5)
    p.add_argument("--space-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--ckpt", help="checkpoint path (default DIR/supernet.pt)")
    args = p.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "cellblock"]
    ckpt = Path(args.ckpt) if args.ckpt else out / "supernet.pt"
    space_args = [x for a in args.space_arg for x in ("--space-arg", a)]
    cmds = [
        [*cli, "supernet", "train", "--space", "blocks", *space_args, "--dataset", "digits",
         "--epochs", str(args.epochs), "--lr", str(args.lr), "--sampling", args.sampling,
         "--device", "cpu", "--out", str(ckpt)],
        [*cli, "supernet", "rank", "--supernet", str(ckpt), "--samples", str(args.samples),
         "--epochs", str(args.standalone_epochs), "--out", str(out / "rank"), "--device", "cpu"],
    ]
    for cmd in cmds:
        print("load average:", os.getloadavg(), flush=True)
        print("$", " ".join(cmd[2:]), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        print(f"wall {time.perf_counter() - t0:.1f} s", flush=True)
    print("load average:", os.getloadavg())
    print(json.dumps(json.loads((out / "rank" / "rank.json").read_text()), indent=2))


if __name__ == "__main__":
    main()
