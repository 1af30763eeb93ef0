"""Trials per minute: the default digits search on the ray backend (2 concurrent
single-threaded trials) vs the local backend (1 single-threaded trial at a time).

Both searches run in this one script, interleaved (local, ray, local, ray...), through
the real ``cellblock search`` command; the machine load (os.getloadavg) is recorded
around each run because other work may share the machine. Writes ray_speedup.md.

Usage::

    .venv/bin/python results/benchmarks/ray_speedup.py [--trials 8] [--epochs 4] [--rounds 2]

Ray start-up is reported apart from the per-trial rate: the rate is measured from the
first ``trial_start`` to the last ``trial_end`` in trials.jsonl, the start-up as the time
from launching the command to the first ``trial_start`` (process start, imports, data
loading, and for ray the Ray instance), the tail as the time from the last ``trial_end``
to the command's exit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cellblock.pareto.results import load_run  # noqa: E402

COMMANDS = {
    "local": ["--backend", "local", "--threads-per-trial", "1"],
    "ray": ["--backend", "ray", "--concurrency", "2", "--threads-per-trial", "1"],
}


class SessionCPU(threading.Thread):
    """CPU-seconds (user + system) of every process of one session, sampled from /proc.

    Each command runs in a session of its own (so also in its own scheduler autogroup,
    see the markdown); processes ending between two samples lose at most one interval.
    """

    def __init__(self, sid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.sid, self.interval = sid, interval
        self.cpu: dict[int, float] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[3]) == self.sid:  # fields after "(comm)": state ppid pgrp session ...
                self.cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()

    def total(self) -> float:
        self.stop.set()
        self.join()
        return sum(self.cpu.values())


def run_one(name: str, trials: int, epochs: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "cellblock", "search", "--trials", str(trials), "--epochs",
           str(epochs),
           "--out", str(out), "--no-progress", *COMMANDS[name]]
    load0 = os.getloadavg()[0]
    launched = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            start_new_session=True)
    meter = SessionCPU(proc.pid)
    meter.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    exited = time.time()
    cpu_s = meter.total()
    load1 = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{stderr[-3000:]}")
    run = load_run(out)
    done = [t for t in run.trials if t.done]
    first, last = min(t.start_t for t in done), max(t.end_t for t in done)
    span = last - first
    # Steady state: from the moment the first `concurrency` trials (each on a fresh worker:
    # process start, imports, data) have all ended, to the last trial_end.
    conc = 2 if name == "ray" else 1
    ready = max(t.end_t for t in sorted(done, key=lambda t: t.number)[:conc])
    steady_n = sum(t.end_t > ready for t in done)
    return {"cpu_s": cpu_s, "cores": cpu_s / wall,
            "per_min_steady": 60 * steady_n / (last - ready) if last > ready else float("nan"),
            "steady_n": steady_n,"name": name,
            "cmd": "cellblock search --trials {} --epochs {} {}".format(
                trials, epochs, " ".join(COMMANDS[name])),
            "startup_s": first - launched, "tail_s": exited - last,
            "trials": len(done), "complete": sum(t.status == "COMPLETE" for t in done),
            "wall_s": wall, "span_s": span, "per_min_wall": 60 * len(done) / wall,
            "per_min_span": 60 * len(done) / span, "load": (load0, load1),
            "train_s": sum(t.value("train_s") or 0.0 for t in done)}


def autogroup() -> str:
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
        return "on" if autogroup == "1" else "off"
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in COMMANDS:
                row = run_one(name, args.trials, args.epochs, Path(tmp) / f"{name}{r}")
                print(row, flush=True)
                rows.append(row)
    per = {n: [r for r in rows if r["name"] == n] for n in COMMANDS}

    def mean(n: str, key: str) -> float:
        return sum(r[key] for r in per[n]) / len(per[n])

    lines = [
        "# Ray backend speed-up on 2 cores (digits, default blocks space)",
        "",
        f"Command: `.venv/bin/python results/benchmarks/ray_speedup.py --trials {args.trials} "
        f"--epochs {args.epochs} --rounds {args.rounds}`",
        "(runs the two `cellblock search` commands below, interleaved local, ray, local, ray..., "
        "in one script run;",
        f"{args.trials} trials per run and --epochs {args.epochs} instead of the default 8 to fit "
        "the time).",
        f"Machine: {os.cpu_count()} CPU cores, no GPU, shared with other engineers' jobs (see the "
        "load column).",
        "Default space (blocks), dataset (digits), strategy (evolution), objectives and seed (0): "
        "both backends",
        "evaluate the same architectures.",
        "",
        "| backend | command | trials | wall s (whole command) | start-up s (launch -> first "
        "trial_start) | trial span s | tail s (last trial_end -> exit) | trials/min (wall) | "
        "trials/min (span) | trials/min (steady state; trials) | sum train_s | CPU-s of the "
        "command (cores obtained) | load avg 1 min before -> after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | `{r['cmd']}` | {r['trials']} ({r['complete']} complete) | "
                     f"{r['wall_s']:.1f} | {r['startup_s']:.1f} | {r['span_s']:.1f} "
                     f"| {r['tail_s']:.1f} | {r['per_min_wall']:.2f} | {r['per_min_span']:.2f} "
                     f"| {r['per_min_steady']:.2f} ({r['steady_n']}) | {r['train_s']:.1f} | "
                     f"{r['cpu_s']:.1f} ({r['cores']:.2f}) | {r['load'][0]:.1f} -> "
                     f"{r['load'][1]:.1f} |")
    lines += [
        "",
        "Speed-up ray/local, trials per minute: "
        f"**{mean('ray', 'per_min_wall') / mean('local', 'per_min_wall'):.2f}x** on the whole "
        "command (includes Ray start-up and shut-down), "
        f"**{mean('ray', 'per_min_span') / mean('local', 'per_min_span'):.2f}x** over the trial "
        "span (first trial start to last trial end, from trials.jsonl), "
        f"**{mean('ray', 'per_min_steady') / mean('local', 'per_min_steady'):.2f}x** in the "
        "steady state (after the first trial of every worker). Target: >= 1.6x.",
        "",
        "Steady state: trials ending after the first `concurrency` trials (1 local, 2 ray: each on "
        "a fresh",
        "worker that starts a process, imports torch and loads the data) have all ended, per "
        "minute.",
        "CPU-s: user + system CPU time of every process of the command's session (driver, Ray's "
        "processes,",
        "workers), sampled from /proc every 0.25 s; cores obtained = CPU-s / wall.",
        f"Kernel autogroup scheduling: {autogroup()} (when on, CPU time is shared equally between "
        "sessions",
        "first, then between the processes of a session: with other sessions busy, a run gets "
        "about the same",
        "CPU share whether it runs one trial or two at a time).",
    ]
    out = Path(__file__).with_suffix(".md")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
