"""How the process backend's workers start: forked from a preloaded server, early.

A spawned worker starts a fresh interpreter and imports torch and cellblock itself: on a
2-core machine that is about 6 s of CPU per worker, and eight of them starting together
took about 20 s before the first trial ran (results/benchmarks/worker_startup.md). Workers
are instead forked from multiprocessing's *forkserver*, a process that imports
:data:`PRELOAD` once; each fork then only loads the data and builds its pipeline.

The server imports modules and nothing else: it never touches CUDA, never runs a torch op
(so no OpenMP or CUDA state is inherited by the forks) and holds one thread. It is
started by :func:`prestart` before the search process imports torch itself, so that both
imports run at once; it exits with the search process (its pipe closes), and its workers
with it (:func:`cellblock.core.signals.die_with_parent`).

This module imports neither torch nor the rest of cellblock, so that :func:`prestart`
costs nothing.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cellblock.core.config import RunConfig

#: Modules the forkserver imports once for every worker it forks.
PRELOAD = ("torch", "cellblock.run.components", "cellblock.evaluators", "cellblock.search_spaces",
           "cellblock.run.backends.process")


def has_forkserver() -> bool:
    """Whether this platform offers the forkserver start method (not Windows)."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def pool_context() -> BaseContext:
    """The multiprocessing context of worker pools: a forkserver preloading :data:`PRELOAD`
    where available, else spawn."""
    if not has_forkserver():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # used when the server starts
    return context


def wants_pool(cfg: RunConfig) -> bool:
    """Whether a run of ``cfg`` will (probably) run its trials in a local worker pool: the
    process backend, or backend auto with a visible NVIDIA GPU (found without torch)."""
    backend = cfg.backend
    if backend == "process":
        return True
    if backend != "auto" or cfg.device in ("cpu", "mps"):
        return False
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False


def prestart(cfg: RunConfig) -> bool:
    """Start the preloaded forkserver now, in the background, if ``cfg`` wants a worker pool
    (:func:`wants_pool`); returns whether it did. Never blocks (the server imports on its
    own) and never fails: a server that cannot start is started again by the pool."""
    if not (has_forkserver() and wants_pool(cfg)):
        return False
    try:
        from multiprocessing import forkserver

        pool_context()
        forkserver.ensure_running()
    except (OSError, ValueError):
        return False
    return True


__all__ = ["PRELOAD", "has_forkserver", "pool_context", "prestart", "wants_pool"]
