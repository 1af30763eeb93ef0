"""Per-device locks: a latency measurement has the device to itself; trainings step aside."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cellblock.core.device_lock import (
    EXCLUSIVE,
    device_key,
    exclusive_device,
    lock_dir,
    training_hold,
)

# A training-like loop holding the CPU shared. Its clock is the number in the file ``clock``,
# which the test sets; each step records whether the test's measurement was on during it.
TRAINER = r'''
import json, sys
from pathlib import Path
from cellblock.core.device_lock import training_hold
out = Path(sys.argv[1])
steps = []
with training_hold("cpu", clock=lambda: float((out / "clock").read_text())) as hold:
    while not (out / "stop").exists():
        hold.poll()
        during = (out / "measuring").exists()
        x = sum(range(10_000))
        steps.append(during or (out / "measuring").exists())
        (out / "steps.tmp").write_text(str(len(steps)))
        (out / "steps.tmp").replace(out / "steps")
(out / "steps.json").write_text(json.dumps({"steps": steps, "paused_s": hold.paused_s}))
'''


class FakeClock:
    """A clock that stands still until the test moves it."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def private_locks(tmp_path, monkeypatch):
    """Locks of this test only (other runs on the machine use the default folder)."""
    monkeypatch.setenv("CELLBLOCK_LOCK_DIR", str(tmp_path / "locks"))


def _wait_until(done, what: str, timeout_s: float = 120.0) -> None:
    """Poll ``done()`` until true (an event to wait for, not a duration to time)."""
    t0 = time.monotonic()
    while not done():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what} never happened")
        time.sleep(0.01)


def _steps(work: Path) -> int:
    try:
        return int((work / "steps").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def test_device_keys():
    assert device_key("cpu") == "cpu"
    assert device_key("cpu") == device_key("cpu:0")


def test_lock_folder_is_the_users_in_tmp_unless_set(monkeypatch, tmp_path):
    """The suite runs on a folder of its own (tests/conftest.py); a user's runs share this one."""
    assert lock_dir() == tmp_path / "locks" and lock_dir().is_dir()
    monkeypatch.delenv("CELLBLOCK_LOCK_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert lock_dir() == tmp_path / "tmp" / f"cellblock-locks-{os.getuid()}"
    assert lock_dir().is_dir()


def test_measurement_waits_for_no_one_when_alone():
    clock = FakeClock(5.0)
    with exclusive_device("cpu", clock=clock) as info:
        assert info == {"latency_isolation": EXCLUSIVE, "latency_wait_ms": 0.0}


def test_measurement_waits_for_the_device_and_records_how_long():
    clock = FakeClock(0.0)
    key = device_key("cpu")
    holder = os.open(lock_dir() / f"{key}.main.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process is measuring on the device

    def finish_other_measurement() -> None:
        probe = os.open(lock_dir() / f"{key}.gate.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            def gate_taken() -> bool:  # ours is at the gate: it has read its start time
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(probe, fcntl.LOCK_UN)
                return False

            _wait_until(gate_taken, "the measurement taking the gate")
            clock.t = 0.25
            fcntl.flock(holder, fcntl.LOCK_UN)
        finally:
            os.close(probe)

    other = threading.Thread(target=finish_other_measurement)
    other.start()
    try:
        with exclusive_device("cpu", clock=clock) as info:
            assert info["latency_wait_ms"] == pytest.approx(250.0)
    finally:
        other.join()
        os.close(holder)


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
    (work / "clock").write_text("0.0")
    proc = subprocess.Popen([sys.executable, "-c", TRAINER, str(work)], env=dict(os.environ))
    try:
        _wait_until(lambda: _steps(work) >= 3 or proc.poll() is not None, "3 training steps")
        with exclusive_device("cpu"):
            (work / "measuring").touch()
            inside = _steps(work)
            (work / "clock").write_text("0.5")  # the measurement takes half a second
            assert _steps(work) == inside  # the trainer has stepped aside
            (work / "measuring").unlink()
        _wait_until(lambda: _steps(work) >= inside + 3 or proc.poll() is not None,
                    "3 training steps after the measurement")
        (work / "stop").touch()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    record = json.loads((work / "steps.json").read_text())
    steps = record["steps"]
    assert len(steps) >= inside + 3 and inside >= 3
    assert not any(steps), f"{sum(steps)} training steps ran during the measurement"
    # the trainer stepped aside for exactly the measurement (by its clock)
    assert record["paused_s"] == 0.5


def _free_for_a_measurement() -> bool:
    """Whether a latency measurement could take the CPU now without waiting."""
    probe = os.open(lock_dir() / f"{device_key('cpu')}.main.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(probe)
    return True


def test_a_training_lets_the_device_go_while_its_epoch_callback_waits():
    """An epoch's report may wait for a scheduler (Ray Tune's synchronous report): meanwhile
    a measurement on the machine, and the trainings queued behind it, must not wait for it."""
    from torch import nn

    from cellblock.data import load_dataset
    from cellblock.evaluators.training import TrainConfig, train_and_evaluate

    data = load_dataset("digits", seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    free_at_epoch_end: list[bool] = []
    train_and_evaluate(model, data, TrainConfig(epochs=2, batch_size=256, seed=0, device="cpu"),
                       on_epoch_end=lambda state: free_at_epoch_end.append(
                           _free_for_a_measurement()))
    assert free_at_epoch_end == [True, True]
    with training_hold("cpu") as hold:  # while it trains, the device is held
        hold.poll()
        assert not _free_for_a_measurement()
