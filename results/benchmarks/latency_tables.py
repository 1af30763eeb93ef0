"""Latency tables on this CPU: profile time, table size, and how well they predict whole networks.

For one space configuration and one runtime: profile a table (``cellblock latency profile``),
then measure ``--samples`` random networks twice (interleaved rounds) and report Kendall tau,
Spearman and MAPE of the predicted against the measured latency (the mean of the two passes),
and of pass 2 against pass 1: the noise floor of this machine (``cellblock latency check
--passes 2``). One line of JSON per
run is appended to ``--results``; latency_tables.md reports them.

    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/latency_tables.py --config blocks8
    --runtime torch
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from cellblock.evaluators.latency.check import check
from cellblock.evaluators.latency.table import LatencyTable, profile
from cellblock.search_spaces import SearchSpace

# The blocks skeleton measured here: the default one with 3 of its 7 block types and 2 of its
# 3 attentions (the full default skeleton has 6,966 distinct units at 8x8; see the .md).
REDUCED = {"block_types": ["basic", "bottleneck", "mbconv"], "attentions": ["none", "se"]}
CONFIGS = {
    "blocks8": ("blocks", {**REDUCED}),
    "blocks32": ("blocks", {**REDUCED, "input_shape": [1, 32, 32]}),
    "blocks8-full": ("blocks", {}),
    "blocks32-full": ("blocks", {"input_shape": [1, 32, 32]}),
    "nb201": ("nb201", {}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), required=True)
    p.add_argument("--runtime", default="torch")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--calibration", type=int, default=30)
    p.add_argument("--device", default="cpu", help="where to profile and check (cpu, cuda, cuda:1)")
    p.add_argument("--clock", default="thread",
                   help="thread (CPU, one thread) or wall (any device)")
    p.add_argument("--stat", default="median")
    p.add_argument("--normalise", default="reference", choices=("reference", "none"))
    p.add_argument("--dir", default="results/runs/latency_tables")
    p.add_argument("--results", default="results/benchmarks/latency_tables.jsonl")
    args = p.parse_args()
    torch.set_num_threads(1)
    name, kwargs = CONFIGS[args.config]
    space = SearchSpace(name, **kwargs)
    for arg in SearchSpace.CONTEXT_ARGS:
        space.kwargs.setdefault(arg, space.arguments()[arg])
    where = "" if args.device == "cpu" else f"-{args.device.replace(':', '')}"
    norm = "" if args.normalise == "none" else "-ref"
    name = f"{args.config}-{args.runtime}{where}-{args.clock}-{args.stat}{norm}.json"
    out = Path(args.dir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    table = profile(space, args.runtime, out, device=args.device, repeats=args.repeats,
                    calibration=args.calibration,
                    clock=args.clock, statistic=args.stat, normalise=args.normalise, progress=False)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = check(LatencyTable(out), space, args.samples, device=args.device, repeats=args.repeats,
                   passes=2, progress=False)
    row = {
        "config": args.config, "space": name, "space_args": kwargs, "runtime": args.runtime,
        "device": args.device,
        "clock": args.clock, "statistic": args.stat, "normalise": args.normalise,
        "repeats": args.repeats,
        "units": len(table["units"]), "table_kib": round(out.stat().st_size / 1024, 1),
        "profile_s": table["profile_s"], "profile_wall_this_call_s": round(wall, 1),
        "constant_ms": table["constant_ms"], "calibration_fit": table.get("calibration_fit"),
        "check_s": round(time.perf_counter() - t1, 1),
        "kendall_tau": result["kendall_tau"], "spearman": result["spearman"],
        "mape_pct": result["mape_pct"],
        "repeat_kendall_tau": result["repeat_kendall_tau"],
        "repeat_spearman": result["repeat_spearman"],
        "repeat_mape_pct": result["repeat_mape_pct"], "n": result["n"],
        **{k: result[k] for k in ("raw_kendall_tau", "raw_spearman", "raw_mape_pct")
           if k in result},
        "reference_ms": (table.get("reference") or {}).get("ms"),
        "measured_ms_median": sorted(
            r["measured_ms"] for r in result["rows"])[len(result["rows"]) // 2],
        "load_before": load_before, "load_after": os.getloadavg(),
        "cpu": table["fingerprint"]["name"],
    }
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
