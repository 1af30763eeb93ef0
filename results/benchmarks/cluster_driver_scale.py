"""Does the driver keep up? The ray backend with 32 trial slots of 1-second trials,
beside plain Ray Tune running the same workload.

Cluster: ``ray.cluster_utils.Cluster`` on 127.0.0.1, a head with no CPU and ``--nodes``
worker nodes of ``--cpus`` logical CPUs each (4 x 8 = 32 slots by default; logical: this
machine has 2 cores, and a trial only sleeps). Workload: a ``sleep`` evaluator registered
by the space file (no data, no network built) sleeps 1 s per trial and records the time
it slept (``eval_s``) and its process. cellblock runs ``--concurrency 32`` with the random
strategy; Ray Tune runs a function trainable that sleeps 1 s, ``max_concurrent_trials=32``,
``reuse_actors=True``, the same number of trials.

Measured from the trials' own timestamps: the span (first start to last end), the
fraction of the slots' time spent evaluating (``busy`` = sum of eval_s / (slots x span)),
the same after every worker's first trial (steady state: cold worker start-up excluded),
and the idle slot-time per trial ((slots x span - sum of eval_s) / trials), which is the
time a slot waited for the driver (and for Ray) per trial.

Usage::

    .venv/bin/python results/benchmarks/cluster_driver_scale.py \
        [--trials 2000] [--nodes 4] [--cpus 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray: loopback only
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cellblock.records import read_events, replay_trials  # noqa: E402

SPACE = '''
import os
import time

from cellblock.evaluators.base import EVALUATORS, Evaluator


class Sleep(Evaluator):
    """No data, no network: sleeps 1 s, a deterministic accuracy."""

    needs_data = False
    needs_model = False

    def costs(self, arch):
        return {"params": 1000, "macs": 1000 + sum(arch.values())}

    def evaluate(self, model, arch, seed):
        t0 = time.time()
        time.sleep(1.0)
        t1 = time.time()
        return {"accuracy": (sum(arch.values()) % 97) / 97, "eval_s": t1 - t0, "t0": t0, "t1": t1,
                "pid": os.getpid()}


if "sleep" not in EVALUATORS.names():
    EVALUATORS.register("sleep")(Sleep)


def space(s, input_shape=(1, 8, 8), num_classes=10):
    for i in range(5):
        s.integer(f"d{i}", 0, 9)
    if not s.build:
        return None
    from torch import nn
    return nn.Flatten()
'''


def stats(rows: list[dict[str, float]], slots: int) -> dict[str, Any]:
    """Span, busy fractions and idle slot-time per trial from (t0, t1, eval_s, pid) rows."""
    first, last = min(r["t0"] for r in rows), max(r["t1"] for r in rows)
    span = last - first
    evals = sum(r["eval_s"] for r in rows)
    pids = {r["pid"] for r in rows}
    ready = max(min(r["t1"] for r in rows if r["pid"] == p) for p in pids)
    later = [r for r in rows if r["t0"] >= ready]
    steady = (
        (sum(r["eval_s"] for r in later) / (slots * (last - ready)))
        if later and last > ready
        else float("nan")
    )
    return {
        "trials": len(rows),
        "span_s": span,
        "busy": evals / (slots * span),
        "steady_busy": steady,
        "steady_trials": len(later),
        "workers": len(pids),
        "idle_ms_per_trial": 1000 * (slots * span - evals) / len(rows),
    }


def run_cellblock(address: str, trials: int, slots: int, tmp: Path) -> dict[str, Any]:
    space = tmp / "sleep_space.py"
    space.write_text(SPACE)
    out = tmp / "run"
    cmd = [
        sys.executable,
        "-m",
        "cellblock",
        "search",
        "--space",
        f"{space}:space",
        "--evaluator",
        "sleep",
        "--strategy",
        "random",
        "--objectives",
        "accuracy,macs",
        "--trials",
        str(trials),
        "--backend",
        "ray",
        "--address",
        address,
        "--concurrency",
        str(slots),
        "--threads-per-trial",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"cellblock search failed:\n{(done.stdout + done.stderr)[-3000:]}")
    finished = [t for t in replay_trials(read_events(out / "trials.jsonl")) if t.done]
    rows = [{k: t.metrics[k] for k in ("t0", "t1", "eval_s", "pid")} for t in finished]
    return {"name": "cellblock --backend ray", "wall_s": wall, **stats(rows, slots)}


TUNE = """
import json, os, sys, time
import ray
from ray import tune

address, trials, slots, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
ray.init(address=address, log_to_driver=False)

def trainable(config):
    t0 = time.time()
    time.sleep(1.0)
    t1 = time.time()
    tune.report({"t0": t0, "t1": t1, "eval_s": t1 - t0, "pid": os.getpid()})

space = {f"d{i}": tune.randint(0, 10) for i in range(5)}
tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space=space,
                   tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=slots,
                                               reuse_actors=True),
                   run_config=tune.RunConfig(storage_path=out, verbose=0))
grid = tuner.fit()
rows = [{k: r.metrics[k] for k in ("t0", "t1", "eval_s", "pid")} for r in grid if r.metrics]
print(json.dumps(rows))
"""


def run_tune(address: str, trials: int, slots: int, tmp: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", TUNE, address, str(trials), str(slots), str(tmp / "tune")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"Ray Tune failed:\n{(done.stdout + done.stderr)[-3000:]}")
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return {"name": "plain Ray Tune", "wall_s": wall, **stats(rows, slots)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=8)
    ap.add_argument("--report", default=str(Path(__file__).with_suffix(".md")))
    args = ap.parse_args()
    from ray.cluster_utils import Cluster

    slots = args.nodes * args.cpus
    tmp = Path(tempfile.mkdtemp(prefix="cb-scale-"))
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    rows = []
    try:
        for _ in range(args.nodes):
            cluster.add_node(num_cpus=args.cpus)
        cluster.wait_for_nodes()
        for run in (run_cellblock, run_tune):
            load0 = os.getloadavg()[0]
            row = run(cluster.address, args.trials, slots, tmp)
            row["load"] = (load0, os.getloadavg()[0])
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        "# Driver scale: 1-second trials on 32 slots, cellblock's Ray driver beside plain Ray Tune",
        "",
        "Command: `.venv/bin/python results/benchmarks/cluster_driver_scale.py "
        f"--trials {args.trials} "
        f"--nodes {args.nodes} --cpus {args.cpus}`, on a 2-core machine shared with other work. "
        f"{args.nodes} worker nodes x {args.cpus} logical CPUs = {slots} slots; "
        "each trial sleeps 1 s.",
        "",
        "| " + " | ".join(("driver", "trials", "wall s", "span s", "workers", "busy (whole span)",
                           "busy (steady state, trials)", "idle slot-ms per trial",
                           "load 1-min (start, end)")) + " |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['trials']} | {r['wall_s']:.0f} | {r['span_s']:.0f} | "
            f"{r['workers']} | "
            f"{r['busy']:.2f} | {r['steady_busy']:.2f} ({r['steady_trials']}) | "
            f"{r['idle_ms_per_trial']:.0f} | {r['load'][0]:.1f}, {r['load'][1]:.1f} |"
        )
    Path(args.report).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
