"""Digits search on the ``blocks`` space with the real ``cellblock search`` CLI: predictive vs
evolution.

Runs (sequentially, one thread per trial) for every strategy x seed::

    cellblock search --strategy NAME --seed S --trials 24 --threads-per-trial 1 --no-progress --out
    OUT/NAME-seedS

with everything else at the defaults (``blocks`` space, digits, 8 epochs, objectives accuracy, MACs,
latency_ms), then prints the best validation accuracy among the first 12 and 24 trials (by trial
number). A run directory that already holds 24 finished trials is not run again.

Usage (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/predictive/digits.py --out /tmp/digits
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import numpy as np

import cellblock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--strategies", default="predictive,evolution")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs per trial (default: the CLI's, 8)")
    args = ap.parse_args()
    exe = str(Path(".venv/bin/cellblock"))
    table: dict[str, list[tuple[float, float]]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):  # seeds outer: strategies alternate
        for name in args.strategies.split(","):
            out = Path(args.out) / f"{name}-seed{seed}"
            cmd = [exe, "search", "--strategy", name, "--seed", str(seed), "--trials",
                   str(args.trials),
                   "--threads-per-trial", "1", "--no-progress", "--out", str(out)]
            if args.epochs:
                cmd += ["--epochs", str(args.epochs)]
            run = cellblock.load_run(str(out)) if (out / "trials.jsonl").exists() else None
            if run is None or sum(t.done for t in run.trials) < args.trials:
                t0 = time.time()
                load = os.getloadavg()[0]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                print(f"{' '.join(cmd)}: {time.time() - t0:.0f} s, load {load:.1f} -> "
                      f"{os.getloadavg()[0]:.1f}",
                      flush=True)
                run = cellblock.load_run(str(out))
            trials = sorted(run.trials, key=lambda t: t.number)
            accs = [t.value("accuracy") if t.feasible_complete else None for t in trials]

            def best(k: int, accs: list = accs) -> float:
                vals = [a for a in accs[:k] if a is not None]
                return max(vals) if vals else float("nan")

            table.setdefault(name, []).append((best(12), best(args.trials)))
            print(f"{name} seed {seed}: best@12 {best(12):.4f} best@{args.trials} "
                  f"{best(args.trials):.4f}", flush=True)
    print(f"\n| strategy | seeds | best@12 | best@{args.trials} |\n|---|---|---:|---:|")
    for name, rows in table.items():
        a = np.array(rows)
        print(f"| {name} | {args.seeds} | {a[:, 0].mean():.4f} ± {a[:, 0].std():.4f} | "
              f"{a[:, 1].mean():.4f} ± {a[:, 1].std():.4f} |")


if __name__ == "__main__":
    main()
