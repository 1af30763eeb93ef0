"""Soak: interrupt one process-backend search N times (random kill -9 / SIGTERM / SIGINT to
the driver only), then let it finish; check the records and look for orphan processes.

Usage (from the repository root):
    .venv/bin/python results/benchmarks/soak_interruptions.py --interruptions 20 --seed 0

Each round starts ``cellblock search --backend process --concurrency 2`` on a small space,
waits until a trial has started, sleeps a random 0 to --max-delay s, sends the signal to the driver
process only (not its process group), waits for it to exit, then checks that every
process that descended from it (the pool's workers) is gone within 30 s. After the last
round the same command runs to completion. Prints one line per round, the final check and
``ps`` of every process whose command line mentions the run directory.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACE = '''
from torch import nn

def space(s, input_shape=(1, 8, 8), num_classes=10):
    depth = s.integer("depth", 1, 3)
    widths = [s.choice(f"w{i}", [4, 6, 8, 12]) for i in range(depth)]
    if not s.build:
        return None
    layers, c = [], input_shape[0]
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
'''


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        st = _stat(int(e)) if e.isdigit() else None
        if st and st[0] != "Z":
            kids.setdefault(int(st[1]), []).append(int(e))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--interruptions", type=int, default=20)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-delay", type=float, default=8.0,
                    help="longest wait (s) after a trial event")
    args = ap.parse_args()
    from cellblock.records import COMPLETE, read_events, replay_trials

    rnd = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="cellblock-soak-"))
    (tmp / "sp.py").write_text(SPACE)
    run = tmp / "run"
    log = run / "trials.jsonl"
    cmd = [str(Path(sys.executable).parent / "cellblock"), "search", "--space",
           f"{tmp / 'sp.py'}:space",
           "--trials", str(args.trials), "--epochs", "1", "--objectives",
           "accuracy,macs,latency_ms",
           "--backend", "process", "--concurrency", "2", "--out", str(run), "--no-progress"]
    print("command:", " ".join(cmd))
    sigs = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]
    orphans_total = 0
    codes: dict[str, int] = {}
    for i in range(args.interruptions):
        sig = rnd.choice(sigs)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = log.read_bytes().count(b'"trial_') if log.exists() else 0
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and log.read_bytes().count(b'"trial_') > before:
                break
            time.sleep(0.05)
        time.sleep(rnd.uniform(0.0, args.max_delay))
        if proc.poll() is not None:
            print(f"round {i + 1}: the search finished before the signal; stopping the soak early")
            break
        workers = descendants(proc.pid)
        os.kill(proc.pid, sig)
        rc = proc.wait(timeout=300)
        deadline = time.time() + 30
        while time.time() < deadline and any(alive(w) for w in workers):
            time.sleep(0.2)
        left = [w for w in workers if alive(w)]
        orphans_total += len(left)
        codes[sig.name] = codes.get(sig.name, 0) + 1
        done = sum(t.done for t in replay_trials(read_events(log))) if log.exists() else 0
        print(f"round {i + 1}: {sig.name:7s} exit {rc:4d}  workers {len(workers)}  left alive "
              f"after 30 s {len(left)}  finished trials {done}")
        for w in left:
            os.kill(w, signal.SIGKILL)
    final = subprocess.run(cmd, capture_output=True, text=True)
    events = read_events(log)
    trials = replay_trials(events)
    ids = [t.arch_id for t in trials]
    print(f"final run: exit {final.returncode}")
    print(f"signals sent: {codes}; orphans: {orphans_total}")
    print(f"trials recorded: {len(trials)} (budget {args.trials}); complete: "
          f"{sum(t.status == COMPLETE for t in trials)}; numbers 0..N-1: "
          f"{[t.number for t in trials] == list(range(len(trials)))}; duplicate arch_id: "
          f"{len(ids) - len(set(ids))}; trial_start events: "
          f"{sum(e['event'] == 'trial_start' for e in events)}; "
          f"run_start events: {sum(e['event'] == 'run_start' for e in events)}")
    left_files = sorted(
        p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == ".cellblock.lock")
    print(f"temporary or lock files left: {left_files or 'none'}")
    ps = subprocess.run(["ps", "-eo", "pid,ppid,etimes,cmd"], capture_output=True, text=True).stdout
    mine = [line for line in ps.splitlines() if str(tmp) in line or "multiprocessing.spawn" in line
            and str(Path(sys.executable).parent) in line]
    print("processes mentioning the run after the soak (ps -eo pid,ppid,etimes,cmd):")
    print("\n".join(mine) or "(none)")


if __name__ == "__main__":
    main()
