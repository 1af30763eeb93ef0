"""Per-device locks between worker processes: latency is timed with the device to itself.

Two ``fcntl.flock`` files per device (in ``$CELLBLOCK_LOCK_DIR``, default
``<tmp>/cellblock-locks-<uid>``), a *gate* and a *main* lock:

* training (:func:`training_hold`) holds ``main`` shared for its whole training and
  looks at the gate between steps (:meth:`TrainingHold.poll`, two system calls);
* a latency measurement (:func:`exclusive_device`) takes the gate, then ``main``
  exclusively: it waits for the running steps of every other trial on the device to
  finish (each drains its CUDA queue and steps aside at its next poll), times alone, and
  lets them go on. Two measurements on one device never overlap either.

Only cellblock processes of this user on this machine take part; other programs using
the device are not paused. A CUDA device is keyed by its UUID, so ``CUDA_VISIBLE_DEVICES``
renumbering does not split one GPU into two locks; the CPU is one key for the machine.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

#: A clock in seconds (tests pass a fake one); the default is :func:`time.perf_counter`.
Clock = Callable[[], float]

#: What a measurement taken under :func:`exclusive_device` records as ``latency_isolation``.
EXCLUSIVE = "device-exclusive"

# Holds of this process by device key (a measurement inside a training of the same process
# steps its own hold aside instead of waiting for itself).
_HOLDS: dict[str, TrainingHold] = {}


def lock_dir() -> Path:
    """Folder of the lock files (created on first use)."""
    default = Path(tempfile.gettempdir()) / f"cellblock-locks-{os.getuid()}"
    path = Path(os.environ.get("CELLBLOCK_LOCK_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_key(device: str | torch.device) -> str:
    """Name of a device's locks: ``cpu``, ``cuda-<uuid>`` (or ``cuda<N>``), ``mps``..."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev.type
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    try:
        return f"cuda-{torch.cuda.get_device_properties(index).uuid}"
    except (AttributeError, RuntimeError, AssertionError):
        return f"cuda{index}"


def _open(key: str, part: str) -> int:
    return os.open(lock_dir() / f"{key}.{part}.lock", os.O_RDWR | os.O_CREAT, 0o600)


def sync_device(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA only; elsewhere nothing is queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainingHold:
    """A training's shared hold on a device; :meth:`poll` between steps lets a waiting
    latency measurement run (see the module docs)."""

    def __init__(self, device: str | torch.device, clock: Clock = time.perf_counter) -> None:
        self.device = torch.device(device)
        self.clock = clock
        self.key = device_key(self.device)
        self.gate = _open(self.key, "gate")
        self.main = _open(self.key, "main")
        self.paused_s = 0.0
        self._enter()

    def _enter(self) -> None:
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        fcntl.flock(self.main, fcntl.LOCK_SH)
        fcntl.flock(self.gate, fcntl.LOCK_UN)

    def step_aside(self) -> None:
        """Finish this process's queued work on the device and release the hold."""
        sync_device(self.device)
        fcntl.flock(self.main, fcntl.LOCK_UN)

    def poll(self) -> None:
        """Between two steps: if a measurement waits at the gate, step aside until it is done."""
        try:
            fcntl.flock(self.gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            t0 = self.clock()
            self.step_aside()
            self._enter()
            self.paused_s += self.clock() - t0
            return
        fcntl.flock(self.gate, fcntl.LOCK_UN)

    @contextmanager
    def released(self) -> Iterator[None]:
        """Let go of the device for a while this training does not use it (an epoch's
        report, which may wait for a scheduler): no measurement waits on it meanwhile."""
        self.step_aside()
        try:
            yield
        finally:
            self._enter()

    def close(self) -> None:
        """Release the hold and its files."""
        for fd in (self.main, self.gate):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class _NoHold:
    paused_s = 0.0

    def poll(self) -> None:
        """Nothing to do (this process already holds the device)."""

    @contextmanager
    def released(self) -> Iterator[None]:
        """Nothing to release (the outer hold decides)."""
        yield


@contextmanager
def training_hold(device: str | torch.device,
                  clock: Clock = time.perf_counter) -> Iterator[TrainingHold | _NoHold]:
    """Hold ``device`` shared while training on it; call ``poll()`` between steps.

    ``clock`` times the pauses (``paused_s``).
    """
    key = device_key(device)
    if key in _HOLDS:  # nested training in one process: the outer hold covers it
        yield _NoHold()
        return
    hold = TrainingHold(device, clock)
    _HOLDS[key] = hold
    try:
        yield hold
    finally:
        del _HOLDS[key]
        hold.close()


@contextmanager
def exclusive_device(device: str | torch.device,
                     clock: Clock = time.perf_counter) -> Iterator[dict[str, Any]]:
    """Have ``device`` to this process alone (among cellblock processes) while in the block.

    Yields a dict completed on entry with ``latency_isolation`` and ``latency_wait_ms``
    (time spent waiting for the device, by ``clock``), to be stored with the measurement.
    """
    dev = torch.device(device)
    key = device_key(dev)
    own = _HOLDS.get(key)
    gate, main = _open(key, "gate"), _open(key, "main")
    t0 = clock()
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)
        if own is not None:
            own.step_aside()
        fcntl.flock(main, fcntl.LOCK_EX)
        sync_device(dev)
        info = {"latency_isolation": EXCLUSIVE, "latency_wait_ms": (clock() - t0) * 1e3}
        try:
            yield info
        finally:
            fcntl.flock(main, fcntl.LOCK_UN)
            if own is not None:
                fcntl.flock(own.main, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
    finally:
        os.close(main)
        os.close(gate)
