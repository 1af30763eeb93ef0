"""Crash safety at a larger scale than the test: SIGKILL the search several times, resume.

Uses the harness ``kill_resume`` of tests/cellblock/test_kill_resume.py (the same tiny
conv space, 1 epoch per trial, objectives accuracy,params): each launch waits until a
trial has started (start-up, Ray's included, is over), sleeps a random 0-1.5 s, then
SIGKILLs the search's whole process group; after the kills the same command runs to
completion. Reported per case: kills that hit a live process, trials requested and
completed, duplicates (an architecture recorded twice; must be 0), and in-flight trials
re-run (trial_start events beyond the number of trials). Ray processes left behind by
the kills are counted as well (processes named ``ray::*``, ``raylet`` or ``gcs_server``
that did not exist before the case).

Usage::

    .venv/bin/python results/benchmarks/kill_resume.py [--trials 12] [--kills 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CASES = [("evolution", "local"), ("nsga2", "process"), ("optuna:tpe", "local"),
         ("evolution", "ray")]


def harness():  # noqa: ANN201  (the test module's kill_resume function)
    path = ROOT / "tests" / "cellblock" / "test_kill_resume.py"
    spec = importlib.util.spec_from_file_location("kill_resume_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ray_processes() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split(None, 1)[0]) for line in out.splitlines()
            if any(k in line for k in ("ray::", "/raylet ", "gcs_server"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    mod = harness()
    rows = []
    for strategy, backend in CASES:
        before = ray_processes()
        load0 = os.getloadavg()[0]
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            out = mod.kill_resume(Path(tmp), strategy, backend, args.trials, args.kills, args.seed)
        wall = time.time() - t0
        time.sleep(5)  # let orphans notice their raylet is gone
        left = ray_processes() - before
        trials = out["trials"]
        ids = [t.arch_id for t in trials]
        row = {"case": f"{strategy} / {backend}", "kills": out["kills"], "requested": args.trials,
               "recorded": len(trials), "complete": sum(t.status == "COMPLETE" for t in trials),
               "duplicates": len(ids) - len(set(ids)), "reruns": out["starts"] - len(trials),
               "numbers_ok": [t.number for t in trials] == list(range(len(trials))),
               "left": len(left), "wall_s": wall, "load": (load0, os.getloadavg()[0])}
        print(row, flush=True)
        rows.append(row)
    lines = [
        "# Kill -9 and resume: nothing lost, nothing duplicated",
        "",
        f"Command: `.venv/bin/python results/benchmarks/kill_resume.py --trials {args.trials} "
        f"--kills {args.kills} --seed {args.seed}`",
        "(harness `kill_resume` of tests/cellblock/test_kill_resume.py: a tiny conv space, 1 epoch "
        "per trial,",
        "`cellblock search ... --objectives accuracy,params --epochs 1`, concurrency 1 for local, "
        "2 otherwise;",
        "each launch is SIGKILLed (whole process group) 0-1.5 s after its first trial event, then "
        "the same",
        "command runs to completion).",
        f"Machine: {os.cpu_count()} CPU cores, shared with other engineers' jobs (see the load "
        "column).",
        "",
        "| strategy / backend | kills | trials requested | recorded | complete | duplicates | "
        "in-flight trials re-run "
        "| numbers 0..n-1 | Ray processes left over | wall s | load avg 1 min before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['kills']} | {r['requested']} | {r['recorded']} | "
                     f"{r['complete']} | {r['duplicates']} | {r['reruns']} "
                     f"| {'yes' if r['numbers_ok'] else 'no'} | {r['left']} | {r['wall_s']:.1f} "
                     f"| {r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
    out_md = Path(__file__).with_suffix(".md")
    out_md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
