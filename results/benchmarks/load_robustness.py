"""Default search under load: wall time and latency spread with 0 or N busy processes.

Usage (from the repository root; OMP_NUM_THREADS is removed from the search's environment
so torch picks its own thread count, as for a user):
    .venv/bin/python results/benchmarks/load_robustness.py --busy 2 --label after \
        --results /tmp/load.jsonl [-- extra search options]
    .venv/bin/python results/benchmarks/load_robustness.py --report /tmp/load.jsonl

Each run: starts ``--busy`` processes ``yes > /dev/null``, runs ``cellblock search`` with
the default space, dataset, strategy and objectives (``--trials``/``--epochs`` as given) in
a fresh temporary run directory, stops the busy processes, and appends one JSON line:
wall time, load averages before/after, trials, Pareto size, training images/s (median
over trials), and p90/p10 of the latency of every Pareto trial.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(busy: int, label: str, trials: int, epochs: int, extra: list[str],
        timeout: float | None = None) -> dict:
    from cellblock.pareto.results import load_run

    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [str(Path(sys.executable).parent / "cellblock"), "search", "--trials",
                   str(trials),
                   "--epochs", str(epochs), "--out", f"{tmp}/run", "--no-progress", *extra]
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            load0 = os.getloadavg()
            t0 = time.perf_counter()
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
            except subprocess.TimeoutExpired:  # too slow: record a lower bound and what finished
                data = load_run(f"{tmp}/run")
                return {"label": label, "busy": busy,
                        "command": " ".join(["cellblock", *cmd[1:]]).replace(tmp, "TMP"),
                        "wall_s": None, "stopped_after_s": timeout,
                        "load_before": [round(x, 2) for x in load0],
                        "load_after": [round(x, 2) for x in os.getloadavg()],
                        "trials": sum(t.done for t in data.trials), "pareto": None,
                        "images_per_s_median": round(statistics.median(
                            [t.metrics["images_per_s"] for t in data.trials
                             if t.metrics.get("images_per_s")] or [0])),
                        "front_p90_p10": [], "unstable": None, "threads": [], "stderr_head": []}
            wall = time.perf_counter() - t0
            load1 = os.getloadavg()
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            data = load_run(f"{tmp}/run")
            front = data.pareto
            spreads = [t.metrics["latency_p90_ms"] / t.metrics["latency_p10_ms"] for t in front
                       if t.metrics.get("latency_p10_ms")]
            ips = [t.metrics.get("images_per_s") for t in data.trials
                   if t.metrics.get("images_per_s")]
            return {
                "label": label, "busy": busy,
                "command": " ".join(["cellblock", *cmd[1:]]).replace(tmp, "TMP"),
                "wall_s": round(wall, 1), "load_before": [round(x, 2) for x in load0],
                "load_after": [round(x, 2) for x in load1], "trials": len(data.trials),
                "pareto": len(front),
                "images_per_s_median": round(statistics.median(ips)) if ips else None,
                "front_p90_p10": [round(s, 2) for s in spreads],
                "unstable": sum(bool(t.metrics.get("latency_unstable")) for t in data.trials),
                "threads": sorted({t.metrics.get("threads") for t in data.trials} - {None}),
                "stderr_head": done.stderr.splitlines()[:3],
            }
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def report(path: str) -> str:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    out = ["| variant | busy `yes` | wall (s) | x idle | trials | Pareto | images/s (median) | "
           "front p90/p10 | unstable | threads | load 1 min before -> after |",
           "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|"]
    idle = {r["label"]: r["wall_s"] for r in rows if r["busy"] == 0}
    for r in rows:
        wall = r["wall_s"] if r["wall_s"] is not None else r["stopped_after_s"]
        ratio = wall / idle[r["label"]] if idle.get(r["label"]) else float("nan")
        shown = wall if r["wall_s"] is not None else f">= {wall:.0f} (stopped)"
        more = ">= " if r["wall_s"] is None else ""
        out.append(
            f"| {r['label']} | {r['busy']} | {shown} | {more}{ratio:.2f} | {r['trials']} | "
            f"{r['pareto']} | {r['images_per_s_median']} "
            f"| {', '.join(map(str, r['front_p90_p10']))} | {r['unstable']} | "
            f"{r['threads'] or '-'} | {r['load_before'][0]} -> {r['load_after'][0]} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--busy", type=int, default=0)
    ap.add_argument("--label", default="after")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--results", default="/tmp/load_robustness.jsonl")
    ap.add_argument("--report", help="print the markdown table of a results file")
    ap.add_argument("--timeout", type=float,
                    help="stop the search after this many seconds (lower bound)")
    ap.add_argument("extra", nargs="*", help="extra search options (after --)")
    args = ap.parse_args()
    if args.report:
        print(report(args.report))
        return
    row = run(args.busy, args.label, args.trials, args.epochs, args.extra, args.timeout)
    with open(args.results, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
