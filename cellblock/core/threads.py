"""Torch threads per trial, and oneDNN's primitive cache: the one place that decides them.

Small candidates train fastest on one thread, and on a busy machine extra intra-op
threads only fight other processes for the cores (measured: results/benchmarks/
load_robustness.md). So, unless ``threads_per_trial`` is given:

- with ``concurrency > 1``, every trial gets 1 thread;
- otherwise a candidate whose training batch costs under :data:`SMALL_BATCH_MACS`
  forward multiply-accumulates (MACs per image x batch size) gets 1 thread, and a
  larger one the cores free right now (:func:`free_cores`: idle over
  :data:`SAMPLE_S` in ``/proc/stat``, within this process's CPU affinity, at most torch's
  own default). On a 2-core machine with 2 other busy processes that is 1 thread: 2 made
  one training 12x slower (779 s against 65 s, issue 30).

``cellblock train``, ``supernet train`` and ``supernet rank`` take ``--threads``; by
default they use the same rule (:func:`default_threads`).

oneDNN (torch's CPU convolutions) keeps the primitives it builds for each convolution
shape in a cache of 1024 by default. A supernet step, or a search, runs a new network
every time, and when its shapes overflow that cache every step rebuilds them: supernet
steps on the default ``blocks`` skeleton took about 1.35x longer (measured in
results/benchmarks/supernet_digits.md, round 5). Importing cellblock raises the capacity to
:data:`ONEDNN_CACHE_CAPACITY` unless ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is set; oneDNN reads
it when it first builds a primitive, so it takes effect for every process that imports
cellblock before its first convolution (workers inherit it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cellblock.core.config import RunConfig

#: Forward MACs of one training batch below which a candidate trains on one thread.
SMALL_BATCH_MACS = 5e8
#: Seconds over which :func:`free_cores` measures idle CPU time.
SAMPLE_S = 0.25

#: oneDNN's environment variable for its primitive cache, and the capacity cellblock sets.
ONEDNN_CACHE_VAR = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_CAPACITY = 16384

_TORCH_DEFAULT: list[int] = []


def raise_onednn_cache() -> None:
    """Set oneDNN's primitive cache capacity to :data:`ONEDNN_CACHE_CAPACITY` unless the
    user set it (see the module doc)."""
    os.environ.setdefault(ONEDNN_CACHE_VAR, str(ONEDNN_CACHE_CAPACITY))


def torch_default_threads() -> int:
    """Torch's own intra-op thread count in this process (read before any change)."""
    import torch

    if not _TORCH_DEFAULT:
        _TORCH_DEFAULT.append(torch.get_num_threads())
    return _TORCH_DEFAULT[0]


def usable_cores() -> int:
    """CPUs this process may run on (its affinity; the CPU count where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float, int] | None:
    """``(idle, total, cpus)`` jiffies from ``/proc/stat`` (None off Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    fields = [float(v) for v in lines[0].split()[1:9]]  # user..steal (guest is inside user)
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return fields[3] + fields[4], sum(fields), max(cpus, 1)


#: Seconds a measured :func:`free_cores` answer is reused (a bench or proxy search asks it
#: for thousands of cheap candidates; each measurement sleeps :data:`SAMPLE_S`).
FREE_CORES_TTL_S = 10.0
_free_cache: list[float] = []  # [monotonic time, answer] of the last default measurement


def free_cores(sample_s: float | None = None, read: Callable[[], Any] = _cpu_times,
               sleep: Callable[[float], None] = time.sleep) -> int:
    """Cores idle right now, within :func:`usable_cores` (at least 1).

    Idle time over ``sample_s`` seconds (:data:`SAMPLE_S`) of ``/proc/stat``; where that
    is unavailable, the cores less the 1-minute load average (less this process's 1). With
    the defaults, an answer is reused for :data:`FREE_CORES_TTL_S` seconds.
    """
    default = sample_s is None and read is _cpu_times and sleep is time.sleep
    now = time.monotonic()
    if default and _free_cache and now - _free_cache[0] < FREE_CORES_TTL_S:
        return int(_free_cache[1])
    n = _measure_free_cores(sample_s, read, sleep)
    if default:
        _free_cache[:] = [now, n]
    return n


def _measure_free_cores(sample_s: float | None, read: Callable[[], Any],
                        sleep: Callable[[float], None]) -> int:
    cores = usable_cores()
    first = read()
    if first is not None:
        sleep(SAMPLE_S if sample_s is None else sample_s)
        second = read()
        total = second[1] - first[1] if second is not None else 0
        if total > 0:
            idle = (second[0] - first[0]) / total * second[2]
            return max(1, min(cores, int(idle + 0.5)))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, int(cores - max(0.0, load - 1.0) + 0.5)))


def default_threads(free: Callable[[], int] | None = None) -> int:
    """Threads of a command that trains (``cellblock train``, ``supernet``) without
    ``--threads``: the cores free now (``free``, default :func:`free_cores`), at most
    torch's default."""
    return max(1, min(torch_default_threads(), (free or free_cores)()))


def threads_for(cfg: RunConfig, macs: float | None = None,
                free: Callable[[], int] | None = None) -> int | None:
    """Threads for a trial of ``cfg`` whose candidate has ``macs`` per image (None: unknown)."""
    fixed = cfg.threads_per_trial
    if fixed is not None:
        return int(fixed)
    concurrency = cfg.concurrency or 1
    if isinstance(concurrency, str) or concurrency > 1:  # auto: as many as Ray allows
        return 1
    if macs is None:
        return None
    small = float(macs) * int(cfg.batch_size) < SMALL_BATCH_MACS
    return 1 if small else default_threads(free)


def apply_threads(n: int | None) -> None:
    """Set torch's intra-op threads to ``n`` (None: leave them)."""
    import torch

    torch_default_threads()
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(int(n))


def describe(cfg: RunConfig) -> dict[str, Any]:
    """The run's thread policy, as printed and recorded in ``run_start``."""
    fixed = threads_for(cfg)
    if fixed is not None:
        given = cfg.threads_per_trial is not None
        why = "--threads-per-trial" if given else "concurrency > 1"
        return {"policy": "fixed", "threads": fixed, "why": why}
    return {
        "policy": "auto",
        "small": 1,
        "large": "free cores",
        "max": torch_default_threads(),
        "small_batch_macs": SMALL_BATCH_MACS,
    }


def summary(info: Mapping[str, Any]) -> str:
    """One line for the user."""
    if info["policy"] == "fixed":
        return f"torch threads per trial: {info['threads']} ({info['why']})"
    return (
        f"torch threads per trial: 1 for candidates under {info['small_batch_macs']:.0e} MACs "
        f"per training batch, else the cores free of other load when the trial starts (at most "
        f"{info.get('max', info['large'])}; set --threads-per-trial N to override)"
    )
