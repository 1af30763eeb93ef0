"""Multi-objective early stopping (``--scheduler mo-asha``) vs plain ASHA, same budget.

Both searches use the ray backend (2 concurrent single-threaded trials), the random
strategy with the same seed (so both see the same architectures in the same order),
the same number of trials, max epochs, grace period and reduction factor, and the
objectives accuracy (max) and macs (min). Per seed the two runs are interleaved (asha,
mo-asha for the first seed, mo-asha, asha for the next, ...) so that machine load
affects both alike; os.getloadavg() is recorded around each run.

Reported per run: hypervolume of the front of COMPLETE trials (PRUNED trials never reach
the front), with both runs' points normalised by the ideal/nadir of the union of all
COMPLETE points of the two runs of that seed and reference point 1.1 per objective
(:func:`cellblock.pareto.hypervolume`); CPU-seconds (sum of ``train_s`` over all trials,
PRUNED included); the number of trials trained to the full budget.

Usage::

    .venv/bin/python results/benchmarks/mo_early_stopping.py [--trials 16] [--epochs 6] [--seeds
    0,1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cellblock.pareto import hypervolume, nondominated_mask, normalize, to_minimization  # noqa: E402
from cellblock.records import read_events, replay_trials  # noqa: E402

DIRECTIONS = ["maximize", "minimize"]  # accuracy, macs


def common_args(args: argparse.Namespace, seed: int) -> list[str]:
    return ["--strategy", "random", "--objectives", "accuracy,macs", "--trials", str(args.trials),
            "--epochs", str(args.epochs), "--grace-epochs", str(args.grace_epochs),
            "--reduction-factor", str(args.reduction_factor), "--seed", str(seed),
            "--backend", "ray", "--concurrency", "2", "--threads-per-trial", "1"]


def run_one(scheduler: str, seed: int, args: argparse.Namespace, out: Path) -> dict:
    rest = [*common_args(args, seed), "--scheduler", scheduler]
    cmd = [sys.executable, "-m", "cellblock", "search", *rest, "--out", str(out), "--no-progress"]
    load0 = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    load1 = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"{scheduler} seed {seed} failed:\n{proc.stderr[-3000:]}")
    trials = [t for t in replay_trials(read_events(out / "trials.jsonl")) if t.done]
    complete = [t for t in trials if t.status == "COMPLETE"]
    return {"scheduler": scheduler, "seed": seed, "cmd": "cellblock search " + " ".join(rest),
            "trials": trials, "complete": complete, "wall_s": wall, "load": (load0, load1),
            "pruned": sum(t.status == "PRUNED" for t in trials),
            "other": sum(t.status not in ("COMPLETE", "PRUNED") for t in trials),
            "cpu_s": sum(t.value("train_s") or 0.0 for t in trials),
            "epochs": sum(int(t.metrics.get("epochs") or 0) for t in trials),
            "full": sum(int(t.metrics.get("epochs") or 0) == args.epochs for t in complete)}


def points(trials: list) -> np.ndarray:
    return to_minimization([[t.value("accuracy"), t.value("macs")] for t in trials], DIRECTIONS)


def score(pair: list[dict]) -> None:
    """Hypervolume of each run's front, normalised by the union of both runs' COMPLETE points."""
    union = np.vstack([points(r["complete"]) for r in pair if r["complete"]])
    ideal, nadir = union.min(axis=0), union.max(axis=0)
    for r in pair:
        F = points(r["complete"])
        if not len(F):
            r["hv"], r["front"] = 0.0, 0
            continue
        mask = nondominated_mask(F)
        r["front"] = int(mask.sum())
        r["hv"] = hypervolume(normalize(F[mask], ideal, nadir), [1.1, 1.1])
        r["best_acc"] = max(t.value("accuracy") for t in r["complete"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--grace-epochs", type=int, default=1)
    ap.add_argument("--reduction-factor", type=int, default=3)
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(seeds):
            order = ["asha", "mo-asha"] if i % 2 == 0 else ["mo-asha", "asha"]
            pair = [run_one(sch, seed, args, Path(tmp) / f"{sch}-{seed}") for sch in order]
            same = [t.arch_id for t in pair[0]["trials"]] == [t.arch_id for t in pair[1]["trials"]]
            for r in pair:
                r["same_archs"] = same
            score(pair)
            for r in pair:
                print({k: v for k, v in r.items() if k not in ("trials", "complete")}, flush=True)
            rows += sorted(pair, key=lambda r: r["scheduler"])
    lines = [
        "# Multi-objective early stopping (mo-asha) vs plain ASHA, same budget (digits, blocks "
        "space)",
        "",
        "Command: `.venv/bin/python results/benchmarks/mo_early_stopping.py --trials "
        f"{args.trials} --epochs {args.epochs} --seeds {args.seeds}`",
        "(runs the `cellblock search` commands below; per seed the two schedulers run back to "
        "back,",
        "in alternating order from one seed to the next, so that machine load affects both alike).",
        f"Machine: {os.cpu_count()} CPU cores, shared with other engineers' jobs (see the load "
        "column).",
        f"Rungs: {args.grace_epochs} * {args.reduction_factor}^k epochs below {args.epochs}. "
        "Hypervolume: front of COMPLETE trials",
        "in (accuracy max, macs min), both runs of a seed normalised by the ideal/nadir of the "
        "union of",
        "their COMPLETE points, reference point (1.1, 1.1); the maximum is 1.21. CPU-s = sum of "
        "train_s",
        "over all trials (PRUNED included; evaluation passes excluded). Same archs = both runs "
        "recorded",
        "the same architectures in the same order.",
        "",
        "| seed | scheduler | command | trials (complete / pruned / other) | trained to full "
        "budget | epochs trained | CPU-s (sum train_s) | front size | hypervolume | best accuracy "
        "| wall s | same archs | load avg 1 min before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['scheduler']} | `{r['cmd']}` | {len(r['trials'])} "
            f"({len(r['complete'])} / {r['pruned']} / {r['other']}) | {r['full']} | {r['epochs']} "
            f"| {r['cpu_s']:.1f} | {r['front']} | {r['hv']:.4f} | "
            f"{r.get('best_acc', float('nan')):.4f} | {r['wall_s']:.1f} | "
            f"{'yes' if r['same_archs'] else 'no'} | {r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
    lines += ["", "Means over seeds:", ""]
    for sch in ("asha", "mo-asha"):
        sel = [r for r in rows if r["scheduler"] == sch]
        lines.append(f"- {sch}: hypervolume {np.mean([r['hv'] for r in sel]):.4f}, CPU-s "
                     f"{np.mean([r['cpu_s'] for r in sel]):.1f}, trained to full budget "
                     f"{np.mean([r['full'] for r in sel]):.1f}, front size "
                     f"{np.mean([r['front'] for r in sel]):.1f}")
    out = Path(__file__).with_suffix(".md")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
