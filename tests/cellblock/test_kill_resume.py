"""Crash safety: kill -9 the search process at random moments, resume, lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from spaces import conv_space

from cellblock.records import COMPLETE, RunDir, read_events, replay_trials

SPACE = conv_space([4, 6, 8, 12], depth=(1, 2))


def _command(tmp: Path, strategy: str, backend: str, trials: int) -> list[str]:
    cfg = tmp / "run.yaml"
    cfg.write_text(f"backend: {backend}\nconcurrency: {1 if backend == 'local' else 2}\n")
    return [sys.executable, "-m", "cellblock", "search", str(cfg), "--space",
            f"{tmp / 'sp.py'}:space",
           "--strategy", strategy, "--trials", str(trials), "--epochs", "1", "--objectives",
           "accuracy,params", "--out", str(tmp / "run"), "--device", "cpu", "--no-progress"]


def _trial_event_after(log: Path, offset: int) -> bool:
    """Whether a trial started or ended after byte ``offset`` of the log (a run's start-up,
    Ray's included, is over: the kill then lands among trials, not before them)."""
    if not log.exists() or log.stat().st_size <= offset:
        return False
    with log.open("rb") as f:
        f.seek(offset)
        return b'"trial_' in f.read()


def kill_resume(tmp: Path, strategy: str, backend: str, trials: int, kills: int, seed: int) -> dict:
    """Start the search, SIGKILL it ``kills`` times at random moments, then let it finish."""
    (tmp / "sp.py").write_text(SPACE)
    rng = np.random.default_rng(seed)
    log = tmp / "run" / "trials.jsonl"
    done_kills = 0
    for _ in range(kills):
        proc = subprocess.Popen(_command(tmp, strategy, backend, trials), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        before = log.stat().st_size if log.exists() else 0
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # wait until a trial is under way
            if _trial_event_after(log, before):
                break
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 1.5)))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the search process and its workers
            done_kills += 1
        proc.wait()
    final = subprocess.run(_command(tmp, strategy, backend, trials), capture_output=True, text=True,
                           timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    events = read_events(log)
    trials_ = replay_trials(events)
    return {
        "kills": done_kills,
        "trials": trials_,
        "starts": sum(e["event"] == "trial_start" for e in events),
        "run": log.parent,
    }


@pytest.mark.slow
@pytest.mark.parametrize("strategy, backend", [("evolution", "local"), ("nsga2", "process"),
                                               ("optuna:tpe", "local"), ("evolution", "ray")])
def test_kill_and_resume_loses_nothing(tmp_path, strategy, backend):
    requested = 10
    tune_dirs = set(Path(tempfile.gettempdir()).glob("cellblock-tune-*"))
    out = kill_resume(tmp_path, strategy, backend, requested, kills=3, seed=7)
    trials = out["trials"]
    assert out["kills"] >= 1
    assert len(trials) == requested
    assert all(t.status == COMPLETE for t in trials)
    ids = [t.arch_id for t in trials]
    assert len(set(ids)) == len(ids), "an architecture was recorded twice"
    assert [t.number for t in trials] == list(range(requested))
    # Ray Tune's state, left by the killed drivers, is gone once a run ends (it used to
    # stay in /tmp as cellblock-tune-* after every killed Ray driver).
    assert not (out["run"] / RunDir.TUNE_SCRATCH).exists()
    assert set(Path(tempfile.gettempdir()).glob("cellblock-tune-*")) <= tune_dirs
