"""Tables of ``stalls.py`` lines: best@50/@100, optimum hits by 100, stall counts, per-seed
best@100.

Two stall counts: the model's (``stalls.py``: runs of >= 10 non-improving evaluations while
the model's expected improvement is higher for an unseen candidate more than one decision
away) and plateaus: runs of >= 10 evaluations after the initial design without improvement
while the best is below the table optimum (DARTS: the best any run of the file found), with
the evaluations spent in them.

Usage (from the repository root):
    .venv/bin/python results/benchmarks/predictive/stalls_report.py
    results/benchmarks/predictive/stalls.jsonl \\
        --seeds 0:20 [--per-seed]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np


def plateaus(best: list[float], top: float, start: int = 10, run: int = 10) -> tuple[int, int]:
    """(count, evaluations) of runs of at least ``run`` evaluations after ``start`` without
    improvement
    while the best is below ``top`` (the table optimum, or the best any run found)."""
    count = total = length = 0
    for i in range(start, len(best)):
        if best[i] > best[i - 1] or best[i] >= top - 1e-9:
            length = 0
            continue
        length += 1
        count += length == run
        total += (length >= run) * (run if length == run else 1)
    return count, total


def targets(runs: dict[tuple[str, str], dict[int, dict]], variants: list[str]) -> None:
    """best@100 and optimum hits of every tagged predictive configuration against TPE on the seeds
    each shares with TPE; "where TPE hits": of the seeds where TPE reaches the optimum by 100."""
    print("\n| variant | predictive | seeds | TPE best@100 | predictive best@100 | seeds at or "
          "above TPE | TPE hits | predictive hits | predictive hits where TPE hits |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in variants:
        tpe = runs.get((v, "optuna:tpe"), {})
        tags = sorted(n[len("predictive ["):-1] for (variant, n) in runs
                      if variant == v and n.startswith("predictive ["))
        for tag in tags:
            mine = runs.get((v, f"predictive [{tag}]"), {})
            seeds = sorted(set(tpe) & set(mine))
            if not seeds:
                continue
            t = np.array([tpe[s]["best"][99] for s in seeds])
            m = np.array([mine[s]["best"][99] for s in seeds])
            cells = [f"{t.mean():.2f}", f"{m.mean():.2f}",
                     f"{int((m >= t - 1e-9).sum())}/{len(seeds)}"]
            opt = tpe[seeds[0]]["optimum"]
            if opt is None:
                cells += ["n/a"] * 3
            else:
                ht, hm = t >= opt - 1e-9, m >= opt - 1e-9
                cells += [f"{ht.sum()}/{len(seeds)}", f"{hm.sum()}/{len(seeds)}",
                          f"{(hm & ht).sum()}/{ht.sum()}"]
            print(f"| {v} | {tag} | {len(seeds)} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--seeds", default="0:20", help="range start:stop")
    ap.add_argument("--per-seed", action="store_true", help="also the per-seed best@100 table")
    ap.add_argument("--targets", action="store_true",
                    help="also the issue's targets: each tagged predictive against TPE, "
                         "same seeds")
    args = ap.parse_args()
    start, stop = (int(x) for x in args.seeds.split(":"))
    runs: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    variants: list[str] = []
    for path in args.files:
        for line in open(path):
            r = json.loads(line)
            if start <= r["seed"] < stop:
                runs[(r["variant"],
                      r["strategy"] + (f" [{r['tag']}]" if r["tag"] else ""))][r["seed"]] = r
                if r["variant"] not in variants:
                    variants.append(r["variant"])
    print("| variant | strategy | seeds | best@50 | best@100 | optimum by 100 | model stalls | "
          "model-stalled evals | plateaus | evals on plateaus | ask ms (1-100) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    known = {v: max(max(r["best"][: r["budget"]]) for (variant, _), by in runs.items()
                    if variant == v
                    for r in by.values()) for v in variants}
    for v in variants:
        for (variant, name), by_seed in sorted(runs.items()):
            if variant != v:
                continue
            rows = [by_seed[s] for s in sorted(by_seed)]
            b50 = np.array([r["best"][49] for r in rows])
            b100 = np.array([r["best"][99] for r in rows])
            opt = rows[0]["optimum"]
            hits = f"{int(np.sum(b100 >= opt - 1e-9))}/{len(rows)}" if opt is not None else "n/a"
            stalls = np.mean(
                [r["stalls"] for r in rows]) if name.startswith("predictive") else np.nan
            evals = np.mean(
                [r["stall_evals"] for r in rows]) if name.startswith("predictive") else np.nan
            ask = np.mean([r["ask_ms_mean"] for r in rows])
            top = opt if opt is not None else known[v]
            flat = np.array([plateaus(r["best"], top) for r in rows])
            print(f"| {v} | {name} | {len(rows)} | {b50.mean():.2f} | {b100.mean():.2f} ± "
                  f"{b100.std():.2f} | {hits} | {stalls:.2f} | {evals:.1f} "
                  f"| {flat[:, 0].mean():.2f} | {flat[:, 1].mean():.1f} | {ask:.1f} |")
    if args.targets:
        targets(runs, variants)
    if not args.per_seed:
        return
    for v in variants:
        names = [n for (variant, n) in sorted(runs) if variant == v]
        seeds = sorted({s for n in names for s in runs[(v, n)]})
        print(f"\n**{v}**, best@100 per seed\n")
        print("| strategy | " + " | ".join(str(s) for s in seeds) + " |")
        print("|---|" + "---:|" * len(seeds))
        for n in names:
            cells = [f"{runs[(v, n)][s]['best'][99]:.2f}" if s in runs[(v, n)] else ""
                     for s in seeds]
            print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
