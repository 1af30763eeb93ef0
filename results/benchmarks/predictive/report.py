"""Tables from the JSON lines of ``runs.py``: best@b, mean regret curve, hv ratio, ask time.

Usage (from the repository root):
    .venv/bin/python results/benchmarks/predictive/report.py
    results/benchmarks/predictive/runs*.jsonl \\
        --seeds 0:20 [--tag TAG] [--optimum 73.5133]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

BUDGETS = (25, 50, 100, 200, 300)
CURVE = (10, 25, 50, 75, 100, 150, 200, 250, 300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--seeds", default="0:20")
    ap.add_argument("--tag", default=None, help="only lines with this tag (default: all)")
    ap.add_argument("--optimum", type=float, default=73.5133,
                    help="table optimum (regret = optimum - best)")
    args = ap.parse_args()
    start, stop = (int(x) for x in args.seeds.split(":"))
    so: dict[str, dict[int, list[float]]] = defaultdict(dict)
    mo: dict[str, dict[int, list[float]]] = defaultdict(dict)
    ask: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for path in args.files:
        for line in open(path, encoding="utf-8"):
            r = json.loads(line)
            if not start <= r["seed"] < stop or (args.tag is not None and r["tag"] != args.tag):
                continue
            name = r["strategy"] + (f" [{r['tag']}]" if r["tag"] else "")
            if r.get("budget", 300) != 300:
                name += f" (budget {r['budget']})"
            if r["mode"] == "so":
                so[name][r["seed"]] = r["best"]
            else:
                mo[name][r["seed"]] = r["hv"]
            ask[name].append((r["ask_ms_1_100"], r["ask_ms_101_300"]))
    names = list(dict.fromkeys([*so, *mo]))

    def table(title: str, data: dict, cols: tuple[int, ...], index, fmt: str,
              transform=None) -> None:
        print(f"\n### {title}\n")
        print("| strategy | seeds | " + " | ".join(f"@{b}" for b in cols) + " |")
        print("|---|---:|" + "---:|" * len(cols))
        for n in names:
            runs = data.get(n, {})
            if not runs:
                continue
            A = np.array([[v[index(b)] if index(b) < len(v) else np.nan for b in cols]
                          for v in runs.values()],
                         dtype=float)
            if transform:
                A = transform(A)
            cells = [f"{m:{fmt}} ± {s:{fmt}}" for m, s in zip(A.mean(0), A.std(0))]
            print(f"| {n} | {len(runs)} | " + " | ".join(cells) + " |")

    table("best accuracy (mean ± std over seeds)", so, BUDGETS, lambda b: b - 1, ".2f")
    table("mean regret curve (table optimum - best so far)", so, CURVE, lambda b: b - 1, ".3f",
          lambda A: args.optimum - A)
    table("hypervolume ratio (accuracy, macs)", mo, BUDGETS, lambda b: b // 5 - 1, ".4f")
    print("\n### mean ask time, ms (single- and multi-objective runs together)\n")
    print("| strategy | trials 1-100 | trials 101-300 |\n|---|---:|---:|")
    for n in names:
        a = np.array([x for x, _ in ask[n]])
        b = np.array([y for _, y in ask[n] if y is not None])
        print(f"| {n} | {a.mean():.2f} | {b.mean() if len(b) else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
