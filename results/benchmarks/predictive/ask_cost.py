"""Ask cost of ``predictive`` at 100, 1,000 and 5,000 trials, old code against new in one
invocation.

Each code version runs in its own subprocess: the working tree's, and a git revision
(``--rev``, extracted with ``git archive`` to a temporary folder, imported in place of the
working tree's packages). Versions alternate per run, so machine load affects both alike.
For each checkpoint c (100, 1,000, 5,000) a fresh ``predictive`` is given the first
c - 50 trials of an ``evolution`` search on the NAS-Bench-201 CIFAR-100 table (``replay``,
as a resumed run; evolution's own local search has tried the best trials'
neighbourhoods by then, as a long search has), then asks and is told 50 more; the mean
CPU time (``time.process_time``, what an idle machine's wall time would be with one
thread) and wall time of those 50 asks are reported (model refits included, amortised as
in a run). ``scipy.special`` (the normal CDF of the acquisitions) is imported before the
timed asks: a process pays its import once, which would otherwise add 6-25 ms to the first
checkpoint's 50-ask mean. Run with ``OMP_NUM_THREADS=1``.
Single objective ``accuracy`` or ``accuracy,macs`` (MACs from the bench's cost cache).

Usage (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python results/benchmarks/predictive/ask_cost.py --rev 14186f8 \\
        --trials 5000 --modes accuracy,accuracy+macs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKPOINTS = (100, 1000, 5000)
WINDOW = 50


def child(code: str | None, objectives: str, trials: int, table: str, metric: str) -> None:
    """Run one strategy; print a JSON line of mean ask ms per checkpoint."""
    if code:  # import the packages from ``code`` instead of the working tree
        import __editable___cellblock_0_1_0_finder as finder

        for name, path in list(finder.MAPPING.items()):
            finder.MAPPING[name] = str(Path(code) / Path(path).name)
    import numpy as np
    import scipy.special  # noqa: F401  (imported on the first ask otherwise: 0.3-1.2 s once)

    from cellblock.core.objectives import parse_objectives
    from cellblock.records import Trial
    from cellblock.run.bench import evaluate_all, table_components
    from cellblock.search_spaces.api import arch_id
    from cellblock.strategies.base import make_strategy

    objs = parse_objectives(objectives.replace("+", ","))
    comps = table_components("nb201", {"num_classes": 100}, table, metric, objs)
    archs = list(comps.space.enumerate())
    answers = dict(zip(map(arch_id, archs), evaluate_all(comps, archs)))

    def trial(i: int, arch: dict) -> Trial:
        aid = arch_id(arch)
        o = answers[aid]
        return Trial(number=i, arch_id=aid, arch=dict(arch), status=o.status, metrics=o.metrics)

    # the trials told before a checkpoint's timed asks: an evolution search's
    history: list[Trial] = []
    by_id: dict[str, Trial] = {}
    warm = make_strategy("evolution", comps.space, objs, 0, {})
    while len(history) < max(c for c in CHECKPOINTS if c <= trials) - WINDOW:
        arch = warm.ask()
        if arch_id(arch) in by_id:  # a repeat: told again, not counted (as the run loop does)
            warm.tell(by_id[arch_id(arch)])
            continue
        history.append(trial(len(history), arch))
        by_id[history[-1].arch_id] = history[-1]
        warm.tell(history[-1])
    row = {}
    for c in (c for c in CHECKPOINTS if c <= trials):
        strategy = make_strategy("predictive", comps.space, objs, 0, {})
        strategy.replay(history[: c - WINDOW])  # as a resumed run: told, not asked
        cpu, wall = [], []
        for i in range(c - WINDOW, c):
            t0, c0 = time.perf_counter(), time.process_time()
            arch = strategy.ask()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
            strategy.tell(trial(i, arch))
        row[str(c)] = [round(1e3 * float(np.mean(cpu)), 2), round(1e3 * float(np.mean(wall)), 2)]
    print(json.dumps(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True, help="git revision of the old code")
    ap.add_argument("--trials", type=int, default=5000)
    ap.add_argument("--modes", default="accuracy,accuracy+macs",
                    help="objective sets ('+' joins objectives)")
    ap.add_argument("--table", default="/work/shared/nb201_cifar100.csv")
    ap.add_argument("--metric", default="cifar100_test_acc")
    ap.add_argument("--child", nargs=2, metavar=("CODE", "OBJECTIVES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0] if args.child[0] != "-" else None, args.child[1], args.trials,
              args.table, args.metric)
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.rev], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        print("| objectives | code | " + " | ".join(f"ask ms @{c}: CPU (wall)" for c in CHECKPOINTS
                                                    if c <= args.trials)
              + " |")
        print("|---|---|" + "---:|" * sum(c <= args.trials for c in CHECKPOINTS), flush=True)
        for mode in args.modes.split(","):
            for label, code in ((args.rev, tmp), ("working tree", "-")):
                out = subprocess.run([sys.executable, __file__, "--trials", str(args.trials),
                                      "--table", args.table,
                                      "--metric", args.metric, "--rev", args.rev, "--child", code,
                                      mode],
                                     check=True, capture_output=True, text=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                print(f"| {mode.replace('+', ',')} | {label} | "
                      + " | ".join(f"{cpu:.1f} ({wall:.1f})" for cpu, wall in row.values()) + " |",
                      flush=True)


if __name__ == "__main__":
    main()
