"""Issue 10, finding 10: a run interrupted at any point and resumed records the same
architectures, in the same order, as an uninterrupted run with the same seed (local
backend). Kills are simulated exactly by cutting the log (a kill -9 leaves a prefix of it,
maybe with a torn last line), and also done for real."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slow_space import write_slow_space

import cellblock
from cellblock.records import read_events, replay_trials

TRIALS = 8


def _opts(tmp: Path, out: Path, strategy: str) -> dict:
    args = {"population_size": 3} if strategy in ("evolution", "nsga2") else {}
    args = {"n_init": 3} if strategy == "predictive" else args
    return dict(space=f"{tmp / 'sp.py'}:space", trials=TRIALS, epochs=1, out=str(out), device="cpu",
                objectives=["accuracy", "params"], strategy=strategy, strategy_args=args, seed=3)


def _archs(run: Path) -> list[str]:
    return [t.arch_id for t in replay_trials(read_events(run / "trials.jsonl"))]


@pytest.mark.parametrize("strategy", ["predictive", "evolution", "nsga2", "random"])
def test_resume_after_a_cut_at_several_points_follows_the_same_path(tmp_path, strategy):
    write_slow_space(tmp_path)
    full = tmp_path / "full"
    cellblock.search(**_opts(tmp_path, full, strategy))
    reference = _archs(full)
    assert len(reference) == TRIALS
    lines = (full / "trials.jsonl").read_bytes().splitlines(keepends=True)
    # after run_start; mid trial 0; after trial 0; mid trial 3 (+ a torn line); after trial 4
    ends = [i for i, line in enumerate(lines) if b'"trial_end"' in line]
    starts = [i for i, line in enumerate(lines) if b'"trial_start"' in line]
    cuts = [(1, b""), (starts[0] + 1, b""), (ends[0] + 1, b""), (starts[3] + 1, b'{"event":"tri'),
            (ends[4] + 1, b"")]
    for n, (cut, torn) in enumerate(cuts):
        run = tmp_path / f"cut{n}"
        run.mkdir()
        shutil.copy(full / "config.yaml", run / "config.yaml")
        (run / "trials.jsonl").write_bytes(b"".join(lines[:cut]) + torn)
        cellblock.search(**_opts(tmp_path, run, strategy))
        assert _archs(run) == reference, f"cut after line {cut} changed the search path"


@pytest.mark.slow
def test_resume_after_real_kills_follows_the_same_path(tmp_path):
    write_slow_space(tmp_path)
    cmd = [sys.executable, "-m", "cellblock", "search", "--space", f"{tmp_path / 'sp.py'}:space",
           "--space-arg", "pause=0.3", "--trials", str(TRIALS), "--epochs", "1", "--objectives",
           "accuracy,params", "--device", "cpu", "--no-progress", "--seed", "3",
           # the default strategy (predictive), its model used from trial 4
           "--strategy-arg", "n_init=3"]
    from cellblock.cli import main

    assert main([*cmd[3:], "--out", str(tmp_path / "full")]) == 0  # the reference: in-process
    log = tmp_path / "killed" / "trials.jsonl"
    for k, sig in enumerate([signal.SIGKILL, signal.SIGTERM, signal.SIGINT]):
        proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and log.read_bytes().count(b'"trial_end"') >= 2 * k + 1:
                break
            time.sleep(0.05)
        time.sleep(0.1 * k)
        os.kill(proc.pid, sig)
        proc.wait(timeout=120)
    done = subprocess.run([*cmd, "--out", str(tmp_path / "killed")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert _archs(tmp_path / "killed") == _archs(tmp_path / "full")
