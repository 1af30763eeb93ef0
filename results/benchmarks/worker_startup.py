"""Worker start-up and idle time of the process backend on the CPU; writes ``worker_startup.md``.

Run from the repository root (each ``--python`` is an interpreter whose ``cellblock`` is the
code measured; repetitions of the variants are interleaved, as the machine may be shared)::

    .venv/bin/python results/benchmarks/worker_startup.py \\
        --python before=/tmp/main-before/.venv/bin/python --python after=.venv/bin/python

Each run is a fresh ``python -m cellblock search`` process of the digits data on the
``blocks`` space (``--backend process --concurrency 8 --device cpu --strategy random``,
12 trials of 1 epoch, objectives accuracy and macs). The space is wrapped by a file that
appends ``pid time arch_id`` to a trace file whenever a worker builds a candidate; a
trial starts running at the last build of its architecture (an earlier one may count its
MACs) and ends at its ``trial_end`` event. From
these it reports, per run:

- ``first trial``: seconds from the command's start to the first trial running;
- ``all busy``: seconds from the command's start until every worker ran its first trial;
- ``start-up``: seconds from ``run_start`` (the search ready to run trials) until every
  worker ran its first trial (the workers' start-up time);
- ``idle between``: the workers' summed idle seconds between two trials of theirs;
- ``idle``: the fraction of worker time (workers x search span) not spent in a trial;
- ``wall``: the command's wall time; ``load``: the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SPACE = '''
import os, time
from cellblock.search_spaces.api import SPACES, arch_id

_BLOCKS = SPACES.get("blocks")


def space(s, **kwargs):
    if s.build:
        with open(os.environ["CELLBLOCK_BENCH_TRACE"], "a") as f:
            f.write(f"{os.getpid()} {time.time():.6f} {arch_id(getattr(s, 'arch', {}))}\\n")
    return _BLOCKS(s, **kwargs)
'''


def analyse(events: Sequence[Mapping[str, Any]], trace: Sequence[tuple[int, float, str]],
            t_cmd: float, t_exit: float) -> dict[str, float]:
    """The measures of one run (see the module doc) from its log ``events``, its worker
    ``trace`` of ``(pid, time, arch_id)``, and the command's start and exit times."""
    start = next(e for e in events if e["event"] == "run_start")
    run_end = next((e["t"] for e in events if e["event"] == "run_end"), t_exit)
    ends = {e["arch_id"]: e["t"] for e in events if e["event"] == "trial_end"}
    last: dict[str, tuple[int, float]] = {}  # a trial's build is the last of its arch (a worker
    for pid, t, aid in sorted(trace, key=lambda r: r[1]):  # may build it before, to count MACs)
        if pid != start.get("pid"):
            last[aid] = (pid, t)
    spans: dict[int, list[tuple[float, float]]] = {}
    for aid, (pid, t) in last.items():
        if aid in ends:
            spans.setdefault(pid, []).append((t, ends[aid]))
    firsts = [min(s for s, _ in v) for v in spans.values()]
    between = busy = 0.0
    for runs in spans.values():
        runs.sort()  # a queued trial may start before the search records the last one's end
        busy += sum(min(e, b[0]) - s for (s, e), b in zip(runs, [*runs[1:], (math.inf,)]))
        between += sum(max(0.0, b[0] - a[1]) for a, b in zip(runs, runs[1:]))
    span = run_end - start["t"]
    workers = len(spans)
    return {"first_trial_s": min(firsts) - t_cmd, "all_busy_s": max(firsts) - t_cmd,
            "startup_s": max(firsts) - start["t"], "idle_between_s": between,
            "idle_fraction": 1 - busy / (workers * span) if workers and span > 0 else float("nan"),
            "workers": workers, "trials": len(ends), "wall_s": t_exit - t_cmd}


def run_once(python: str, work: Path, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """One search; its measures and the load average around it."""
    work.mkdir(parents=True)
    (work / "sp.py").write_text(SPACE)
    trace = work / "trace.txt"
    cmd = [python, "-m", "cellblock", "search", "--space", f"{work / 'sp.py'}:space",
           "--dataset", "digits", "--trials", str(args.trials), "--epochs", str(args.epochs),
           "--backend", "process", "--concurrency", str(args.concurrency), "--device", "cpu",
           "--strategy", "random", "--objectives", "accuracy,macs", "--seed", str(seed),
           "--no-progress", "--out", str(work / "run")]
    env = {**os.environ, "CELLBLOCK_BENCH_TRACE": str(trace)}
    load0 = os.getloadavg()[0]
    t_cmd = time.time()
    proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=1800)
    t_exit = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    events = [json.loads(line) for line in (work / "run" / "trials.jsonl").read_text().splitlines()]
    rows = [line.split() for line in trace.read_text().splitlines()]
    out = analyse(events, [(int(p), float(t), a) for p, t, a in rows], t_cmd, t_exit)
    return {**out, "load_before": load0, "load_after": os.getloadavg()[0]}


COLUMNS = [("first_trial_s", "first trial (s)", "{:.1f}"),
           ("all_busy_s", "all busy (s)", "{:.1f}"), ("startup_s", "start-up (s)", "{:.1f}"),
           ("idle_between_s", "idle between (s)", "{:.1f}"),
           ("idle_fraction", "idle", "{:.0%}"), ("wall_s", "wall (s)", "{:.1f}"),
           ("load_before", "load before", "{:.2f}"), ("load_after", "load after", "{:.2f}")]


def report(results: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    """The markdown report: every run, then the medians per variant."""
    info = Path("/proc/cpuinfo")
    names = info.read_text().splitlines() if info.exists() else []
    cpu = next((n.split(":", 1)[1].strip() for n in names if n.startswith("model name")),
               platform.processor())
    head = "| variant | rep | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = ["# Worker start-up of the process backend (CPU)", "",
             f"Machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}; shared "
             "with other users (the load average around each run is listed).", "",
             f"Command: `{command}`", "",
             f"Each run: {args.trials} trials of {args.epochs} epoch(s), digits, blocks space, "
             f"`--backend process --concurrency {args.concurrency} --device cpu --strategy random "
             "--objectives accuracy,macs`; variants interleaved.", "",
             head, "|" + " --- |" * (len(COLUMNS) + 2)]
    for r in results:
        lines.append(f"| {r['variant']} | {r['rep']} | "
                     + " | ".join(f.format(r[k]) for k, _, f in COLUMNS) + " |")
    lines += ["", "Medians:", "", "| variant | " + " | ".join(c[1] for c in COLUMNS[:6]) + " |",
              "|" + " --- |" * 7]
    for variant in dict.fromkeys(r["variant"] for r in results):
        mine = [r for r in results if r["variant"] == variant]
        lines.append(f"| {variant} | " + " | ".join(
            f.format(statistics.median(r[k] for r in mine)) for k, _, f in COLUMNS[:6]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", required=True, metavar="LABEL=PATH",
                        help="a variant: its label and interpreter (repeat)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", default="results/benchmarks/worker_startup.md")
    args = parser.parse_args(argv)
    variants = [v.split("=", 1) for v in args.python]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(1, args.reps + 1):
            for label, python in variants:
                r = run_once(python, Path(tmp) / f"{label}-{rep}", args, seed=rep)
                results.append({"variant": label, "rep": rep, **r})
                print(json.dumps(results[-1]), flush=True)
    command = " ".join(["python", "results/benchmarks/worker_startup.py", *(argv or sys.argv[1:])])
    Path(args.out).write_text(report(results, args, command))
    Path(args.out).with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
