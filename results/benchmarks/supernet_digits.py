"""Benchmark: supernet ranking quality and cost on digits (blocks space).

Runs, with one torch thread per process (OMP_NUM_THREADS=1):

    cellblock supernet train --space blocks --dataset digits --epochs E --lr LR \
        --sampling S --device cpu --out DIR/supernet.pt
    cellblock supernet rank --supernet DIR/supernet.pt --samples 30 --epochs 5 \
        --out DIR/rank --device cpu

and prints rank.json plus the machine load. Usage:

    python results/benchmarks/supernet_digits.py [DIR] [--epochs E] [--lr LR] [--sampling S]
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
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--sampling", default="uniform")
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--standalone-epochs", type=int, default=5)
    args = p.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "cellblock"]
    ckpt = out / "supernet.pt"
    cmds = [
        [*cli, "supernet", "train", "--space", "blocks", "--dataset", "digits",
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
