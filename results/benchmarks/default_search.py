"""The default `cellblock search` (no arguments): wall time, trials, best accuracy, Pareto size.

Usage (from the repository root):
    .venv/bin/python results/benchmarks/default_search.py [--extra "--threads-per-trial 1"] [--out
    results/benchmarks/default_search.md]

Runs the command in a fresh temporary run directory (so it is a first run, not a
continuation) and reads the results back from the run's records.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cellblock.core.config import FIELDS
from cellblock.pareto.results import load_run


def run_once(extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(Path(sys.executable).parent / "cellblock"), "search", *extra, "--out",
               f"{tmp}/run",
               "--no-progress"]
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        load1 = os.getloadavg()[0]
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        data = load_run(f"{tmp}/run")
        accs = [t.value("accuracy") for t in data.trials if t.feasible_complete]
        return {
            "command": "cellblock search " + " ".join(extra),
            "wall_s": wall,
            "trials": len(data.trials),
            "complete": sum(t.feasible_complete for t in data.trials),
            "best_acc": max(a for a in accs if a is not None),
            "pareto": len(data.pareto),
            "train_s": sum(t.value("train_s") or 0 for t in data.trials),
            "load": (load0, load1),
            "table": done.stdout,
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--extra", action="append", default=[],
                    help="extra options, e.g. '--threads-per-trial 1'")
    ap.add_argument("--out", default="results/benchmarks/default_search.md")
    args = ap.parse_args()
    variants = [[]] + [shlex.split(e) for e in args.extra]
    rows = [run_once(v) for v in variants]
    lines = [
        "# The default search: `cellblock search` with no arguments",
        "",
        f"Command: `.venv/bin/python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} (CPU). Default: `blocks` space "
        f"on digits, {FIELDS['strategy'].default}, objectives accuracy / MACs / latency_ms, 24 "
        "trials x 8 epochs.",
        "",
        "| command | wall (s) | trials | complete | best val accuracy | Pareto size | sum train_s "
        "| load 1 min before -> after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['command'].strip()}` | {r['wall_s']:.1f} | {r['trials']} | "
                     f"{r['complete']} | {r['best_acc']:.4f} | {r['pareto']} | {r['train_s']:.1f} "
                     f"| {r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
    lines += ["", "Output of the first command:", "", "```", rows[0]["table"].strip(), "```", ""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
