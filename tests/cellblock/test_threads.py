"""Issue 30: threads that do not collapse on a busy machine."""

from __future__ import annotations

from pathlib import Path

import pytest

import cellblock
from cellblock.cli import main
from cellblock.core import threads as th
from cellblock.core.config import RunConfig


def _reader(*samples):
    it = iter(samples)
    return lambda: next(it)


def test_free_cores_counts_idle_time_within_the_affinity(monkeypatch):
    monkeypatch.setattr(th, "usable_cores", lambda: 2)
    slept: list[float] = []
    # 2 CPUs, 100 jiffies each over the window: 5 idle of 200 -> 0 free -> at least 1
    busy = _reader((1000.0, 5000.0, 2), (1005.0, 5200.0, 2))
    assert th.free_cores(read=busy, sleep=slept.append) == 1 and slept == [th.SAMPLE_S]
    idle = _reader((1000.0, 5000.0, 2), (1190.0, 5200.0, 2))  # 1.9 cores idle -> 2
    assert th.free_cores(read=idle, sleep=slept.append) == 2
    half = _reader((0.0, 0.0, 2), (110.0, 200.0, 2))  # 1.1 idle -> 1
    assert th.free_cores(read=half, sleep=slept.append) == 1
    many = _reader((0.0, 0.0, 8), (800.0, 800.0, 8))  # 8 idle CPUs, but affinity allows 2
    assert th.free_cores(read=many, sleep=slept.append) == 2


def test_free_cores_without_proc_stat_uses_the_load_average(monkeypatch):
    monkeypatch.setattr(th, "usable_cores", lambda: 2)
    monkeypatch.setattr(th.os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # 2 burners + this process
    assert th.free_cores(read=lambda: None, sleep=pytest.fail) == 1
    monkeypatch.setattr(th.os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # only this process
    assert th.free_cores(read=lambda: None, sleep=pytest.fail) == 2


def test_default_threads_never_exceed_torch_default(monkeypatch):
    monkeypatch.setattr(th, "torch_default_threads", lambda: 2)
    assert th.default_threads(lambda: 16) == 2 and th.default_threads(lambda: 1) == 1


SPACE = {"stages": 1, "widths": [[8, 12]], "strides": [1], "depth": [1, 1],
         "block_types": ["basic"],
         "attentions": ["none"], "kernels": [3, 5], "stem_width": 8}


def test_threads_per_trial_may_change_on_an_existing_run_and_train_takes_threads(tmp_path, capsys):
    common = dict(space="blocks", space_args=SPACE, epochs=1, objectives="accuracy,macs",
                  device="cpu", out=str(tmp_path / "run"), seed=0, strategy="random")
    cellblock.search(trials=1, threads_per_trial=1, **common)
    # was refused as a config change
    run = cellblock.search(trials=2, threads_per_trial=2, **common)
    assert [t.metrics["threads"] for t in run.trials] == [1, 2]
    assert main(["train", str(tmp_path / "run"), "--trial", "0", "--epochs", "1", "--device", "cpu",
                 "--threads", "1", "--no-progress", "--out", str(tmp_path / "t")]) == 0
    assert "torch threads: 1" in capsys.readouterr().out
    assert main(
        ["train", str(tmp_path / "run"), "--trial", "0", "--epochs", "1", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    for argv in (["supernet", "train", "--epochs", "1", "--out", "x.pt", "--threads", "0"],
                 ["supernet", "rank", "--supernet", "x.pt", "--epochs", "1", "--out", "r",
                  "--threads", "0"]):
        assert main(argv) == 2 and "--threads must be >= 1" in capsys.readouterr().err
    assert not Path("x.pt").exists()


@pytest.mark.parametrize("cfg, line", [
    ({"threads_per_trial": 3, "concurrency": 1, "backend": "local"},
     "torch threads per trial: 3 (--threads-per-trial)"),
    ({"threads_per_trial": None, "concurrency": 2, "backend": "process"},
     "torch threads per trial: 1 (concurrency > 1)"),
])
def test_a_fixed_thread_count_is_shown_as_a_number(cfg, line):
    assert th.summary(th.describe(RunConfig(**cfg))) == line
