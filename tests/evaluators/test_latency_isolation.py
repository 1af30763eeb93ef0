"""Latency timed while three other trials train on the same CPU agrees with latency timed alone."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import pytest
import torch
from torch import nn

from cellblock.evaluators.latency.measure import measure_latency

# One packed "trial": trains a small CNN on digits (one thread) until told to stop.
TRAINER = r'''
import sys, torch
from pathlib import Path
from cellblock.data import load_dataset
from cellblock.evaluators.training import TrainConfig, train_and_evaluate
torch.set_num_threads(1)
out = Path(sys.argv[1])
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
    torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))

class Stop(Exception):
    pass

ready = False

def epoch_end(state):
    global ready
    if not ready:  # the test reads this line: training is under way
        print("ready", flush=True)
        ready = True
    if out.with_suffix(".stop").exists():
        raise Stop

try:
    train_and_evaluate(model, load_dataset("digits"), TrainConfig(epochs=10_000, device="cpu"),
                       on_epoch_end=epoch_end)
except Stop:
    pass
'''


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(),
        nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(24, 10),
    )


def _measure(model: nn.Module) -> dict:
    return measure_latency(model, (1, 28, 28), warmup=5, repeats=40)


def _measure_alone(model: nn.Module, procs: list) -> dict:
    """Latency with the trainers stopped (SIGSTOP): concurrency 1 under the same moment's
    machine load. A stopped trainer may hold the device lock: this measurement uses other
    lock files (nothing else runs)."""
    import signal

    saved = os.environ["CELLBLOCK_LOCK_DIR"]
    os.environ["CELLBLOCK_LOCK_DIR"] = saved + "-alone"
    for p in procs:
        p.send_signal(signal.SIGSTOP)
    try:
        return _measure(model)
    finally:
        for p in procs:
            p.send_signal(signal.SIGCONT)
        os.environ["CELLBLOCK_LOCK_DIR"] = saved


@pytest.fixture(autouse=True)
def private_locks(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLBLOCK_LOCK_DIR", str(tmp_path / "locks"))


@pytest.mark.slow
def test_latency_with_concurrency_4_agrees_with_concurrency_1(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model = _net()
    try:
        alone = [_measure(model)]
        procs = [subprocess.Popen([sys.executable, "-c", TRAINER, str(tmp_path / f"t{i}")],
                                  env=dict(os.environ), stdout=subprocess.PIPE, text=True)
                 for i in range(3)]
        try:
            for p in procs:  # blocks until the trainer has finished its first epoch
                assert p.stdout.readline() == "ready\n", "a trainer died before training"
            packed = []
            for _ in range(3):  # 3 other trials are training on this CPU meanwhile
                packed.append(_measure(model))
                alone.append(_measure_alone(model, procs))
            assert all(p.poll() is None for p in procs), "the trainers must still be training"
        finally:
            for i in range(3):
                (tmp_path / f"t{i}.stop").touch()
            for p in procs:
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
                p.stdout.close()
    finally:
        torch.set_num_threads(before)
    low = min(m["latency_p10_ms"] for m in alone)
    high = max(m["latency_p90_ms"] for m in alone)
    assert all(m["latency_isolation"] == "device-exclusive" for m in packed)
    median = statistics.median(m["latency_ms"] for m in packed)
    assert low <= median <= high, (
        f"latency with 3 trainers {[round(m['latency_ms'], 3) for m in packed]} ms, "
        f"alone p10..p90 {low:.3f}..{high:.3f} ms")
