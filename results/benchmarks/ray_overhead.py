"""Per-trial overhead of the ray backend, with a trivial evaluator and actor reuse.

A space file (written to a temporary directory) registers a ``trivial`` evaluator
(``needs_data=False``, ``needs_model=False``, fixed ``costs()`` so no network is built)
whose ``evaluate`` returns a deterministic accuracy computed from the architecture and
records the time it spent (``eval_s``, measured inside the evaluator) and its process id.
The Ray workers rebuild the run's components from the config, so they import the space
file too (a worker process id different from the driver's shows it).

Overhead per trial = (first ``trial_start`` to last ``trial_end`` in trials.jsonl - sum
of ``eval_s``) / trials. Configurations are interleaved (local, ray c1, ray c2, local...)
so that machine load affects all alike; os.getloadavg() is recorded around each run.

Usage::

    .venv/bin/python results/benchmarks/ray_overhead.py [--trials 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cellblock.records import read_events, replay_trials  # noqa: E402

SPACE = '''
import hashlib
import json
import os
import time

from cellblock.evaluators.base import EVALUATORS, Evaluator


class Trivial(Evaluator):
    """No data, no network: a deterministic accuracy from the architecture."""

    needs_data = False
    needs_model = False

    def costs(self, arch):
        return {"params": 1000, "macs": 1000 + sum(arch.values())}

    def evaluate(self, model, arch, seed):
        t0 = time.perf_counter()
        digest = hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).digest()
        acc = int.from_bytes(digest[:4], "little") / 2**32
        return {"accuracy": acc, "eval_s": time.perf_counter() - t0, "pid": os.getpid()}


if "trivial" not in EVALUATORS.names():  # the file may be executed more than once per process
    EVALUATORS.register("trivial")(Trivial)


def space(s, input_shape=(1, 8, 8), num_classes=10):
    for i in range(4):
        s.integer(f"d{i}", 0, 9)
    if not s.build:
        return None
    from torch import nn
    return nn.Flatten()
'''

CONFIGS = {
    "local": ["--backend", "local", "--threads-per-trial", "1"],
    "ray c1": ["--backend", "ray", "--concurrency", "1", "--threads-per-trial", "1"],
    "ray c2": ["--backend", "ray", "--concurrency", "2", "--threads-per-trial", "1"],
}


def run_one(name: str, trials: int, space: Path, out: Path) -> dict:
    common = ["--space", f"{space}:space", "--evaluator", "trivial", "--strategy", "random",
              "--objectives", "accuracy,macs", "--trials", str(trials)]
    cmd = [sys.executable, "-m", "cellblock", "search", *common, "--out", str(out), "--no-progress",
           *CONFIGS[name]]
    load0 = os.getloadavg()[0]
    launched = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, stderr = proc.communicate()
    wall = time.time() - launched
    load1 = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{stderr[-3000:]}")
    trials_ = [t for t in replay_trials(read_events(out / "trials.jsonl")) if t.done]
    first, last = min(t.start_t for t in trials_), max(t.end_t for t in trials_)
    eval_s = sum(t.metrics["eval_s"] for t in trials_)
    span = last - first
    pids = {t.metrics["pid"] for t in trials_}
    # Steady state: after every evaluating process has finished its first trial (which
    # includes starting the process and building the components there).
    ready = max(min(t.end_t for t in trials_ if t.metrics["pid"] == p) for p in pids)
    later = [t for t in trials_ if t.start_t >= ready]
    steady = (last - ready - sum(t.metrics["eval_s"]
                                 for t in later)) / len(later) if later else float("nan")
    return {"name": name,
            "cmd": "cellblock search " + " ".join(common[:1] + ["SPACE.py:space"] + common[2:]
                                                  + ["--out", "RUN"] + CONFIGS[name]),
            "trials": len(trials_), "complete": sum(t.status == "COMPLETE" for t in trials_),
            "wall_s": wall, "startup_s": first - launched, "span_s": span, "eval_s": eval_s,
            "overhead_ms": 1000 * (span - eval_s) / len(trials_), "workers": len(pids),
            "steady_ms": 1000 * steady, "steady_n": len(later),
            "driver_pid_used": proc.pid in pids, "load": (load0, load1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "trivial_space.py"
        space.write_text(SPACE, encoding="utf-8")
        for r in range(args.rounds):
            for i, name in enumerate(CONFIGS):
                row = run_one(name, args.trials, space, Path(tmp) / f"run{r}_{i}")
                print(row, flush=True)
                rows.append(row)
    lines = [
        "# Ray backend overhead per trial (trivial evaluator, actor reuse)",
        "",
        f"Command: `.venv/bin/python results/benchmarks/ray_overhead.py --trials {args.trials} "
        f"--rounds {args.rounds}`",
        "(writes a space file registering a `trivial` evaluator, then runs the `cellblock search` "
        "commands",
        "below interleaved: local, ray c1, ray c2, local, ...). SPACE.py and RUN are temporary "
        "paths.",
        f"Machine: {os.cpu_count()} CPU cores, shared with other engineers' jobs (see the load "
        "column).",
        "",
        "Overhead per trial = (first trial_start -> last trial_end in trials.jsonl - sum of the "
        "time",
        "measured inside the evaluator) / trials. Target for ray: <= 100 ms. The span includes "
        "starting",
        "each Ray worker process and building the components there (imports, space) during its "
        "first trial;",
        "the steady-state overhead leaves that out: (last trial_end - the moment every evaluating "
        "process",
        "had finished its first trial - eval time of the trials started after it) / those trials.",
        "",
        "| config | command | trials | wall s | start-up s (launch -> first trial_start) | span s "
        "| sum eval s | overhead ms/trial | steady-state overhead ms/trial (trials) | evaluating "
        "processes (driver among them?) | load avg 1 min before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | `{r['cmd']}` | {r['trials']} ({r['complete']} complete) | "
                     f"{r['wall_s']:.1f} | {r['startup_s']:.1f} | {r['span_s']:.2f} "
                     f"| {r['eval_s']:.4f} | {r['overhead_ms']:.1f} | {r['steady_ms']:.1f} "
                     f"({r['steady_n']}) | {r['workers']} "
                     f"({'yes' if r['driver_pid_used'] else 'no'}) | {r['load'][0]:.1f} "
                     f"-> {r['load'][1]:.1f} |")
    lines += ["", "Median overhead per trial over the rounds:", ""]
    for name in CONFIGS:
        vals = [r["overhead_ms"] for r in rows if r["name"] == name]
        steady = [r["steady_ms"] for r in rows if r["name"] == name]
        lines.append(f"- {name}: **{statistics.median(vals):.1f} ms** (runs: "
                     f"{', '.join(f'{v:.1f}' for v in vals)}); steady state "
                     f"{statistics.median(steady):.1f} ms")
    out = Path(__file__).with_suffix(".md")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
