"""Device slots: which GPUs a search uses, how many trials share each, and which worker runs where.

Plain logic (no CUDA needed to test it: the device count, cores and memory are
arguments). On a machine with GPUs the search uses every visible GPU (``--device auto``
or ``cuda``; ``--device cuda:N`` or ``CUDA_VISIBLE_DEVICES`` limits the set) and packs
``trials_per_gpu`` trials on each: worker ``i`` of the process backend runs on GPU
``gpus[i % len(gpus)]``; the Ray backend asks ``gpu=1/K`` per trial. Without a GPU nothing
changes: ``backend: auto`` is the local backend, one trial at a time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cellblock.core.config import RunConfig

from cellblock.core.errors import ConfigError

#: Upper bound of ``trials_per_gpu: auto``: past a few processes a GPU is no longer idle
#: between small kernels, and every process holds its own CUDA context and data copy.
MAX_AUTO_TRIALS_PER_GPU = 8
#: Memory assumed per packed trial by ``auto``: CUDA context (~0.5 GiB) plus data, weights,
#: activations and the graph pool of a small-image candidate.
TRIAL_BYTES = int(2.5 * 2**30)
#: Share of a GPU's memory ``auto`` plans to fill.
MEMORY_SHARE = 0.8


def gpu_count() -> int:
    """Visible CUDA devices (0 without CUDA); respects ``CUDA_VISIBLE_DEVICES``."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def visible_gpus(device: str, count: int | None = None) -> list[int]:
    """GPU indices a search on ``device`` uses.

    Args:
        device: The config's device: ``auto`` and ``cuda`` mean every visible GPU,
            ``cuda:N`` only GPU N, ``cpu``/``mps`` none.
        count: Visible CUDA devices (default: ask torch).

    Raises:
        ConfigError: for ``cuda``/``cuda:N`` when that GPU is not there.
    """
    count = gpu_count() if count is None else count
    if device == "auto":
        return list(range(count))
    if device.startswith("cuda") and count == 0:
        raise ConfigError(
            f"device {device!r} was asked for but torch sees no CUDA device; use --device cpu"
        )
    if device == "cuda":
        return list(range(count))
    match = re.fullmatch(r"cuda:(\d+)", device)
    if match:
        index = int(match.group(1))
        if index >= count:
            raise ConfigError(
                f"device {device!r} does not exist: {count} CUDA device(s) visible "
                f"(indices 0..{count - 1}); check --device and CUDA_VISIBLE_DEVICES"
            )
        return [index]
    return []


def worker_device(device: str, worker: int, count: int | None = None) -> str:
    """Device of process-backend worker ``worker``: GPU ``gpus[worker % len(gpus)]``, or
    ``device`` itself when no GPU is used."""
    gpus = visible_gpus(device, count)
    return f"cuda:{gpus[worker % len(gpus)]}" if gpus else device


def auto_trials_per_gpu(
    n_gpus: int, cpu_cores: int, gpu_memory_bytes: int, trial_bytes: int = TRIAL_BYTES
) -> tuple[int, str]:
    """``(K, reason)``: trials per GPU from CPU cores, GPU memory and the cap.

    Each packed trial is a process that needs a core to launch its kernels (small
    candidates are launch-bound) and its own share of the GPU's memory.
    """
    by_cores = max(1, cpu_cores // max(1, n_gpus))
    by_memory = max(1, int(gpu_memory_bytes * MEMORY_SHARE // trial_bytes))
    k = min(by_cores, by_memory, MAX_AUTO_TRIALS_PER_GPU)
    gib = 2**30
    reason = (
        f"smallest of {cpu_cores} CPU cores / {n_gpus} GPU(s) = {by_cores}, "
        f"{MEMORY_SHARE:.0%} of {gpu_memory_bytes / gib:.1f} GiB / ~{trial_bytes / gib:.1f} GiB "
        f"a trial = {by_memory}, cap {MAX_AUTO_TRIALS_PER_GPU}"
    )
    return k, reason


@dataclass
class SlotPlan:
    """How a search's trials are placed.

    Attributes:
        gpus: GPU indices used (empty: no GPU).
        trials_per_gpu: Trials packed on each GPU.
        backend: The concrete backend (``auto`` resolved).
        concurrency: Trials in flight at once.
        resources_per_trial: Ray resources of one trial.
        reason: One line saying what was chosen and why.
    """

    gpus: list[int]
    trials_per_gpu: int
    backend: str
    #: Trials in flight at once, or ``auto`` (as many as a Ray cluster allows).
    concurrency: int | str
    resources_per_trial: str
    reason: str

    def worker_device(self, worker: int, default: str) -> str:
        """Device of worker ``worker`` (``default`` when no GPU is used)."""
        return f"cuda:{self.gpus[worker % len(self.gpus)]}" if self.gpus else default


def _gpu_memory(gpus: list[int]) -> int:
    import torch

    return min(torch.cuda.get_device_properties(i).total_memory for i in gpus)


def plan_slots(
    cfg: RunConfig,
    *,
    count: int | None = None,
    cpu_cores: int | None = None,
    gpu_memory_bytes: int | None = None,
) -> SlotPlan:
    """Resolve ``backend: auto``, ``concurrency`` and ``resources_per_trial`` for ``cfg``.

    Rules: with GPUs, an unset ``concurrency`` is ``len(gpus) * K`` (at most the trial
    budget) for the process and Ray backends; ``backend: auto`` is the process backend
    when more than one trial runs at a time, else the local backend (always, without GPUs
    and without ``concurrency``). An explicit ``concurrency`` or ``resources_per_trial`` is
    kept; an unset ``resources_per_trial`` is ``cpu=1,gpu=1/K`` on Ray with GPUs.

    Args:
        cfg: The resolved config.
        count: Visible CUDA devices (default: ask torch).
        cpu_cores: CPU cores (default: ``os.cpu_count()``).
        gpu_memory_bytes: Memory of the smallest GPU used (default: ask torch).

    Raises:
        ConfigError: for a GPU device that is not there.
    """
    backend, concurrency = cfg.backend, cfg.concurrency
    if concurrency == "auto" and backend != "ray":
        raise ConfigError(
            "--concurrency auto follows a Ray cluster's resources and needs --backend ray; "
            "give the process backend a number, e.g. --concurrency 4"
        )
    want = cfg.trials_per_gpu
    if (
        backend == "ray"
        and cfg.address
        and want != "auto"
        and cfg.resources_per_trial is None
        and cfg.device != "cpu"
    ):
        # the GPUs are the cluster's, not this driver's: K trials share each of them
        k = int(want)
        return SlotPlan(
            [],
            k,
            backend,
            concurrency or 1,
            f"cpu=1,gpu={1 / k:.4g}",
            f"device slots: the Ray cluster's GPUs x {k} trial(s) per GPU; backend ray, "
            f"concurrency {concurrency or 1}; Ray resources per trial cpu=1,gpu={1 / k:.4g}",
        )
    gpus = visible_gpus(cfg.device, count)
    if not gpus:
        k, why = 1, "no GPU used"
    elif want != "auto":
        k, why = int(want), "trials_per_gpu set"
    else:
        memory = gpu_memory_bytes if gpu_memory_bytes is not None else _gpu_memory(gpus)
        k, why = auto_trials_per_gpu(len(gpus), cpu_cores or os.cpu_count() or 1, memory)
        why = f"trials_per_gpu auto: {why}"
    packed = len(gpus) * k
    if backend == "auto":
        n = concurrency if concurrency is not None else (min(packed, cfg.trials) if gpus else 1)
        backend = "process" if n == "auto" or int(n) > 1 else "local"
    if concurrency is None:
        concurrency = min(packed, cfg.trials) if gpus and backend != "local" else 1
    resources = cfg.resources_per_trial
    if resources is None:
        resources = f"cpu=1,gpu={1 / k:.4g}" if gpus and backend == "ray" else "cpu=1"
    where = (
        f"{len(gpus)} GPU(s) ({', '.join(f'cuda:{g}' for g in gpus)}) x {k} trial(s) per GPU"
        if gpus
        else f"device {cfg.device}"
    )
    if gpus and backend == "local":
        where += " (the local backend runs one trial at a time)"
    reason = f"device slots: {where}; backend {backend}, concurrency {concurrency} ({why})"
    if backend == "ray" and gpus:
        reason += f"; Ray resources per trial {resources}"
    return SlotPlan(gpus, k, backend, concurrency, resources, reason)


def apply_slots(cfg: RunConfig, **inject: Any) -> tuple[RunConfig, SlotPlan]:
    """``cfg`` with ``backend``, ``concurrency`` and ``resources_per_trial`` made concrete
    by :func:`plan_slots` (``inject``: its ``count``, ``cpu_cores``, ``gpu_memory_bytes``)."""
    plan = plan_slots(cfg, **inject)
    out = cfg.replace(backend=plan.backend, concurrency=plan.concurrency,
                      resources_per_trial=plan.resources_per_trial)
    return out, plan


def device_label(device: Any) -> str:
    """``cuda:N`` (with the index of the current device when none is given) or the type."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return str(dev)


def resolve_device(device: Any) -> Any:
    """The ``torch.device`` of ``device``: ``auto`` is cuda when available, else cpu; a
    plain ``cuda`` becomes the current CUDA device.

    Raises:
        ConfigError: if the device string is malformed or the device is unavailable.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"device {device!r} is not a valid torch device; use cpu or cuda"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {str(device)!r} requested but CUDA is not available; use --device cpu"
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev
