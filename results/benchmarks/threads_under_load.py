"""Default search on MNIST-sized images under 2 busy processes: trials per hour, threads
before and after issue 30.

Usage (from the repository root):
    .venv/bin/python results/benchmarks/threads_under_load.py --minutes 9 \
        --results /tmp/threads_under_load.jsonl
    .venv/bin/python results/benchmarks/threads_under_load.py --candidate 2 \
        --results /tmp/threads_under_load.jsonl
    .venv/bin/python results/benchmarks/threads_under_load.py --report /tmp/threads_under_load.jsonl

Data: no MNIST is available offline here, so ``--npz`` (default ``/tmp/digits28.npz``) is
built from scikit-learn's 1,797 digits, upscaled bilinearly from 8x8 to 28x28 and stored
as uint8 0..255, as a user's MNIST ``.npz``: the candidates have MNIST's MACs per image
(the thread rule looks at MACs per training batch), with 1,797 instead of 70,000 images.

Each variant runs ``cellblock search --dataset NPZ`` with every other option at its default
(``blocks``, ``predictive``, 24 trials of 8 epochs, accuracy / MACs / latency_ms) in a
fresh run directory, with 2 ``yes > /dev/null`` processes, for ``--minutes``; it is then
stopped with SIGTERM (the finished trials are kept) and one JSON line is appended: trials
finished, trials per hour, threads per trial, training images/s, load averages.
``OMP_NUM_THREADS`` is removed from the search's environment, as for a user.

* **before**: the old thread rule, restored by making ``free_cores`` report every core
  free (a candidate above 5e8 MACs per training batch then gets torch's default, 2 here).
* **after**: this branch as it is (such a candidate gets the cores idle right now).

``--candidate ROUNDS`` times, instead, one epoch of the same candidate (the first the
default space samples with seed 0 above 5e8 MACs per training batch), alternating
before / after ROUNDS times, each in a fresh process beside 2 busy processes: a
search's trials per hour for such candidates is about 3600 / (8 epochs x epoch time).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: ``python -c`` launcher of the search; the ``before`` variant patches the free-core count.
LAUNCH = """import sys
import cellblock.core.threads as threads
if sys.argv[1] == "before":
    threads.free_cores = lambda *a, **k: 1 << 20  # every core counted free: the old rule
from cellblock.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


#: ``python -c`` script of ``--candidate``: one epoch of the first sampled candidate above
#: 5e8 MACs per training batch, with the threads the before / after rule gives it.
CANDIDATE = """import json, sys, time
import numpy as np
from cellblock.core import threads as th
from cellblock.data import load_dataset
from cellblock.evaluators.cost import count_macs
from cellblock.evaluators.training import TrainConfig, train_and_evaluate
from cellblock.run.components import build_space
from cellblock.core.config import resolve
label, npz = sys.argv[1], sys.argv[2]
cfg = resolve({"dataset": npz})
data = load_dataset(npz)
space = build_space(cfg, data)
rng = np.random.default_rng(0)
while True:
    arch = space.sample(rng)
    model = space.build(arch)
    macs = count_macs(model, data.input_shape)
    if macs * cfg.batch_size >= th.SMALL_BATCH_MACS:
        break
free = (lambda: 1 << 20) if label == "before" else None
n = th.threads_for(cfg, macs, free=free)
th.apply_threads(n)
t0 = time.perf_counter()
train_and_evaluate(model, data, TrainConfig.from_run(cfg, seed=0, device="cpu", epochs=1))
dt = time.perf_counter() - t0
print(json.dumps({"label": label, "threads": n, "macs_per_batch": macs * cfg.batch_size,
                  "epoch_s": round(dt, 1), "images_per_s": round(len(data.y_train) / dt, 1),
                  "trials_per_hour_at_8_epochs": round(3600 / (8 * dt), 1)}))
"""


def candidate(label: str, npz: Path, busy: int = 2) -> dict:
    """One epoch of the same large candidate under ``busy`` processes (see :data:`CANDIDATE`)."""
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(busy)]
    try:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        load0 = os.getloadavg()
        done = subprocess.run([sys.executable, "-c", CANDIDATE, label, str(npz)], env=env,
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        row = json.loads(done.stdout.strip().splitlines()[-1])
        return {**row, "mode": "candidate", "busy": busy,
                "load_before": [round(v, 2) for v in load0],
                "load_after": [round(v, 2) for v in os.getloadavg()]}
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def make_npz(path: Path) -> None:
    """scikit-learn's digits upscaled to 28x28, uint8 0..255 (N, 28, 28)."""
    import numpy as np
    import torch

    from cellblock.data.loaders import digits_arrays

    images, target = digits_arrays()
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = (x.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    np.savez(path, x=x, y=target.astype(np.int64))


def run(label: str, npz: Path, minutes: float, busy: int = 2) -> dict:
    from cellblock.pareto.results import load_run

    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["search", "--dataset", str(npz), "--out", f"{tmp}/run", "--no-progress"]
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            load0 = os.getloadavg()
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", LAUNCH, label, *argv], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                out, _ = proc.communicate(timeout=minutes * 60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                out, _ = proc.communicate(timeout=600)
            wall = time.perf_counter() - t0
            data = load_run(f"{tmp}/run")
            done = [t for t in data.trials if t.done]
            ips = [t.metrics["images_per_s"] for t in done if t.metrics.get("images_per_s")]
            return {
                "label": label, "busy": busy, "minutes": minutes, "wall_s": round(wall, 1),
                "trials_finished": len(done), "trials_per_hour": round(len(done) / wall * 3600, 1),
                "threads": [t.metrics.get("threads") for t in done],
                "large": [t.metrics.get("macs", 0) * 64 >= 5e8 for t in done],  # default batch 64
                "images_per_s_median": round(statistics.median(ips)) if ips else None,
                "load_before": [round(v, 2) for v in load0],
                "load_after": [round(v, 2) for v in os.getloadavg()],
                "command": "cellblock " + " ".join(argv).replace(tmp, "TMP"),
                "last_lines": out.strip().splitlines()[-2:],
            }
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def report(path: str) -> str:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    cands = [r for r in rows if r.get("mode") == "candidate"]
    rows = [r for r in rows if r.get("mode") != "candidate"]
    out = ["| variant | busy `yes` | threads | MACs per batch | epoch (s) | images/s | trials/hour "
           "at 8 epochs | load 1 min before -> after |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in cands:
        out.append(f"| {r['label']} | {r['busy']} | {r['threads']} | {r['macs_per_batch']:.2e} | "
                   f"{r['epoch_s']} | {r['images_per_s']} | {r['trials_per_hour_at_8_epochs']} | "
                   f"{r['load_before'][0]} -> {r['load_after'][0]} |")
    out += ["", "| variant | busy `yes` | wall (s) | trials finished | trials / hour | threads per "
                "trial "
           "| over 5e8 MACs/batch | images/s (median) | load 1 min before -> after |",
           "|---|---:|---:|---:|---:|---|---|---:|---|"]
    for r in rows:
        out.append(f"| {r['label']} | {r['busy']} | {r['wall_s']} | {r['trials_finished']} | "
                   f"{r['trials_per_hour']} | {r['threads']} | {sum(r['large'])} of "
                   f"{len(r['large'])} | "
                   f"{r['images_per_s_median']} | {r['load_before'][0]} -> {r['load_after'][0]} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--minutes", type=float, default=7.0)
    ap.add_argument("--npz", default="/tmp/digits28.npz")
    ap.add_argument("--results", default="/tmp/threads_under_load.jsonl")
    ap.add_argument("--report", help="print the markdown table of a results file")
    ap.add_argument("--candidate", type=int, metavar="ROUNDS",
                    help="instead of searches: ROUNDS x (before, after) epochs of one large "
                         "candidate")
    args = ap.parse_args()
    if args.report:
        print(report(args.report))
        return
    npz = Path(args.npz)
    if not npz.is_file():
        make_npz(npz)
    labels = args.variants.split(",")
    for label in labels * (args.candidate or 1):
        row = candidate(label, npz) if args.candidate else run(label, npz, args.minutes)
        with open(args.results, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
