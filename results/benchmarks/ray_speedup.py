"""Trials per minute: the default digits search on the ray backend (2 concurrent
single-threaded trials) vs the local backend (1 single-threaded trial at a time).

Both searches run in this one script, interleaved (local, ray, local, ray...), through
the real ``cellblock search`` command; the machine load (os.getloadavg) is recorded
around each run because other work may share the machine. Writes ray_speedup.md.

Usage::

    .venv/bin/python results/benchmarks/ray_speedup.py [--trials 12] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cellblock.results import load_run  # noqa: E402

COMMANDS = {
    "local": ["--backend", "local", "--threads-per-trial", "1"],
    "ray": ["--backend", "ray", "--concurrency", "2", "--threads-per-trial", "1"],
}


def run_one(name: str, trials: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "cellblock", "search", "--trials", str(trials), "--out", str(out),
           "--no-progress", *COMMANDS[name]]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    run = load_run(out)
    done = [t for t in run.trials if t.done]
    span = max(t.end_t for t in done) - min(t.start_t for t in done)
    return {"name": name, "cmd": "cellblock search --trials {} {}".format(trials, " ".join(COMMANDS[name])),
            "trials": len(done), "complete": sum(t.status == "COMPLETE" for t in done),
            "wall_s": wall, "span_s": span, "per_min_wall": 60 * len(done) / wall,
            "per_min_span": 60 * len(done) / span, "load": (load0, load1),
            "train_s": sum(t.value("train_s") or 0.0 for t in done)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in COMMANDS:
                row = run_one(name, args.trials, Path(tmp) / f"{name}{r}")
                print(row, flush=True)
                rows.append(row)
    per = {n: [r for r in rows if r["name"] == n] for n in COMMANDS}

    def mean(n: str, key: str) -> float:
        return sum(r[key] for r in per[n]) / len(per[n])

    lines = [
        "# Ray backend speed-up on 2 cores (digits, default blocks space)",
        "",
        f"Command: `.venv/bin/python results/benchmarks/ray_speedup.py --trials {args.trials} --rounds {args.rounds}`",
        "(runs the two `cellblock search` commands below, interleaved, in one script run).",
        f"Machine: {os.cpu_count()} CPU cores, no GPU. Default epochs (8), default objectives.",
        "",
        "| backend | command | trials | wall s (whole command) | trial span s | trials/min (wall) | trials/min (span) | sum train_s | load avg 1 min before -> after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | `{r['cmd']}` | {r['trials']} ({r['complete']} complete) | {r['wall_s']:.1f} | "
                     f"{r['span_s']:.1f} | {r['per_min_wall']:.2f} | {r['per_min_span']:.2f} | {r['train_s']:.1f} | "
                     f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
    lines += [
        "",
        f"Speed-up ray/local, trials per minute: **{mean('ray', 'per_min_wall') / mean('local', 'per_min_wall'):.2f}x** "
        f"on the whole command (includes Ray start-up and shut-down), "
        f"**{mean('ray', 'per_min_span') / mean('local', 'per_min_span'):.2f}x** over the trial span "
        "(first trial start to last trial end, from trials.jsonl). Target: >= 1.6x.",
    ]
    out = Path(__file__).with_suffix(".md")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
