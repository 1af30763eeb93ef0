"""Per-device locks: a latency measurement has the device to itself; trainings step aside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cellblock.core.device_lock import EXCLUSIVE, device_key, exclusive_device, training_hold

# A training-like loop holding the CPU shared: it records (start, end) of every "step".
TRAINER = r'''
import json, sys, time
from pathlib import Path
from cellblock.core.device_lock import training_hold
out = Path(sys.argv[1])
steps = []
with training_hold("cpu") as hold:
    (out / "ready").touch()
    while not (out / "stop").exists():
        hold.poll()
        t0 = time.monotonic()
        x = 0
        while time.monotonic() - t0 < 0.002:
            x += 1
        steps.append((t0, time.monotonic()))
(out / "steps.json").write_text(json.dumps({"steps": steps, "paused_s": hold.paused_s}))
'''


@pytest.fixture(autouse=True)
def private_locks(tmp_path, monkeypatch):
    """Locks of this test only (other runs on the machine use the default folder)."""
    monkeypatch.setenv("CELLBLOCK_LOCK_DIR", str(tmp_path / "locks"))


def _wait_for(path: Path, timeout_s: float = 120.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)


def test_device_keys():
    assert device_key("cpu") == "cpu"
    assert device_key("cpu") == device_key("cpu:0")


def test_measurement_waits_for_no_one_when_alone():
    with exclusive_device("cpu") as info:
        assert info["latency_isolation"] == EXCLUSIVE and info["latency_wait_ms"] >= 0


def test_measurement_inside_own_training_does_not_deadlock():
    with training_hold("cpu") as hold:
        hold.poll()
        with exclusive_device("cpu") as info:
            assert info["latency_isolation"] == EXCLUSIVE
        hold.poll()
        with training_hold("cpu") as inner:  # nested training: the outer hold covers it
            inner.poll()


def test_no_training_step_overlaps_a_measurement(tmp_path):
    work = tmp_path / "trainer"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", TRAINER, str(work)], env=dict(os.environ))
    try:
        _wait_for(work / "ready")
        time.sleep(0.3)
        with exclusive_device("cpu") as info:
            t_in = time.monotonic()
            time.sleep(0.5)
            t_out = time.monotonic()
        time.sleep(0.3)
        (work / "stop").touch()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    record = json.loads((work / "steps.json").read_text())
    steps = record["steps"]
    assert any(end <= t_in for _, end in steps) and any(start >= t_out for start, _ in steps)
    overlapping = [(s, e) for s, e in steps if s < t_out and e > t_in]
    assert not overlapping, f"{len(overlapping)} training steps ran during the measurement"
    assert record["paused_s"] >= 0.4  # the trainer stepped aside for the measurement
    assert info["latency_wait_ms"] >= 0
