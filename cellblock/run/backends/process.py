"""The process backend: a pool of worker processes on this machine.

Workers are forked from a server that imported torch and cellblock once
(:mod:`.startup`), start as soon as the backend is made (while the strategy makes its first
asks), and are reused for every trial until the pool breaks or the search ends.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import socket
import threading
from collections.abc import Mapping
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from cellblock.core.config import RunConfig
from cellblock.evaluators.pipeline import Outcome, trial_seed
from cellblock.records import Trial
from cellblock.run.backends.base import Backend, Lost, _no_scheduler, register_backend, set_threads
from cellblock.run.backends.startup import pool_context

_WORKER: dict[str, Any] = {}


def _init_worker(cfg: RunConfig, parent_pid: int | None = None, counter: Any = None,
                 running: Any = None, env: Mapping[str, str] | None = None) -> None:
    from cellblock.core.signals import die_with_parent
    from cellblock.run.components import build_components

    if parent_pid is not None:
        watched = os.getppid()
        if watched != parent_pid:  # forked by the forkserver, which exits with the search
            _let_forkserver_exit()
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:  # the search is gone already
                os._exit(1)
        die_with_parent(watched)
    if env is not None and env != os.environ:  # the search's environment now, as with spawn
        os.environ.clear()
        os.environ.update(env)
    if counter is not None:  # worker i runs on GPU i mod the number of GPUs
        from cellblock.core.devices import worker_device

        with counter.get_lock():
            index = counter.value
            counter.value += 1
        cfg = cfg.replace(device=worker_device(cfg.device, index))
        if cfg.device.startswith("cuda:"):
            import torch

            torch.cuda.set_device(torch.device(cfg.device))
        if running is not None:
            _WORKER["slot"] = 2 * (index % (len(running) // 2))
    _WORKER["running"] = running
    set_threads(cfg)
    _WORKER["pipeline"] = build_components(cfg).pipeline


def _let_forkserver_exit() -> None:
    """Close this worker's copy of the forkserver's lifeline (multiprocessing hands every
    fork the write end of the pipe whose end-of-file stops the server). With it open, a
    search killed by SIGKILL left its server and workers waiting for each other forever;
    closed, the server exits with the search and the workers with the server."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


def _ready() -> int:
    """A no-op task: submitted once per worker to start them all before the first trial."""
    return os.getpid()


def _evaluate_in_worker(arch: Mapping[str, Any], seed: int, number: int = -1) -> Outcome:
    running, slot = _WORKER.get("running"), _WORKER.get("slot")
    if running is not None and slot is not None:  # which trial this process runs, for the driver
        running[slot], running[slot + 1] = os.getpid(), number
    try:
        return _WORKER["pipeline"](arch, seed)
    finally:
        if running is not None and slot is not None:
            running[slot + 1] = -1


def _death(exitcode: int) -> str:
    """``killed by SIGKILL`` / ``exited with code 3``."""
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@register_backend("process")
class ProcessBackend(Backend):
    """A pool of ``concurrency`` worker processes (each loads the data once).

    The workers are forked from a preloaded forkserver (spawned where there is none) and
    started at once, in the background; they run trial after trial.

    With GPUs (``device`` auto, cuda or cuda:N), worker ``i`` runs its trials on GPU
    ``i mod len(gpus)`` (:func:`cellblock.core.devices.worker_device`).

    An exception of a trial is its outcome (FAILED, from the pipeline). A worker that dies
    (a signal: the OOM killer, a kill; or an exit) breaks the pool and loses every trial in
    it: the trial that ran in the dead worker loses an attempt (:class:`Lost`, counted
    against ``infra_retries``), the others are bystanders (re-run, not counted), and a
    new pool takes over.
    """

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        _no_scheduler(cfg, "process")

    def __init__(self, prepared: Any) -> None:
        super().__init__(prepared)
        self.futures: dict[cf.Future, Trial] = {}
        self.node = socket.gethostname()
        self.workers: dict[int, Any] = {}
        self.starter: threading.Thread | None = None
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        """A new pool whose workers start now, from a background thread (a fork waits for the
        forkserver's imports; the search asks its strategy meanwhile)."""
        context = pool_context()
        n = self.config.concurrency
        #: (pid, trial number) of what each worker runs now (number -1: idle)
        self.running = context.Array("q", [0, -1] * n, lock=False)
        self.workers = {}
        pool = cf.ProcessPoolExecutor(
            max_workers=n,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.config, os.getpid(), context.Value("i", 0), self.running,
                      dict(os.environ)),
        )
        self.starter = threading.Thread(target=self._start_workers, args=(pool, n),
                                        name="cellblock-worker-start", daemon=True)
        self.starter.start()
        return pool

    def _start_workers(self, pool: cf.ProcessPoolExecutor, n: int) -> None:
        """Submit one no-op per worker: the pool starts a process for each."""
        try:
            for _ in range(n):
                pool.submit(_ready)
        except (BrokenProcessPool, RuntimeError):  # broken or shut down meanwhile
            pass
        self._note_workers(pool)

    def _note_workers(self, pool: cf.ProcessPoolExecutor) -> None:
        """Remember the pool's processes (a broken pool forgets them; :meth:`_culprits`
        needs their exit codes)."""
        if pool is self.pool:
            self.workers.update(getattr(pool, "_processes", None) or {})

    @property
    def capacity(self) -> int:
        return self.config.concurrency

    def ahead(self, book: Any) -> int:
        """A short search (``trials`` at most twice the workers) starts whole: the trials
        beyond the workers wait in the pool's queue and start the moment a worker frees
        (no round trip through the search process), in the order of :meth:`order`. Those
        trials are asked before the first results are told (longer searches ask one per
        freed worker)."""
        return self.capacity if book.budget <= 2 * self.capacity else 0

    def order(self, batch: list[Trial]) -> list[Trial]:
        """Costliest first when more trials start than there are free workers and the
        evaluator knows their MACs without building them (``Evaluator.costs``, e.g. a cost
        cache); as asked otherwise. Building every network first to count its MACs delayed
        the first wave by more than the order saved (results/benchmarks/worker_startup.md)."""
        if len(batch) <= self.capacity - len(self.futures):
            return batch
        evaluator = self.prepared.pipeline.evaluator
        known = [evaluator.costs(t.arch) or {} for t in batch]
        if any(k.get("macs") is None for k in known):
            return batch
        ranked = sorted(range(len(batch)), key=lambda i: -float(known[i]["macs"]))  # stable
        return [batch[i] for i in ranked]

    def submit(self, trial: Trial) -> None:
        seed = trial_seed(self.seed, trial.arch_id)
        try:
            future = self.pool.submit(_evaluate_in_worker, trial.arch, seed, trial.number)
        except BrokenProcessPool:  # a worker died since the last wait: its trials are lost
            self._restart()
            future = self.pool.submit(_evaluate_in_worker, trial.arch, seed, trial.number)
        self.futures[future] = trial
        self._note_workers(self.pool)

    def _restart(self) -> None:
        """Replace a broken pool (its trials were handed back by :meth:`wait`)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    def _culprits(self) -> dict[int, str]:
        """Trial number -> how its worker died, for the workers of the broken pool that
        died by themselves (the pool stops the others with SIGTERM)."""
        by_pid = {self.running[i]: self.running[i + 1] for i in range(0, len(self.running), 2)}
        out = {}
        for pid, proc in self.workers.items():
            proc.join(timeout=5)  # the pool stops the others: wait for every exit code
            code = proc.exitcode
            if code is not None and code != -signal.SIGTERM and by_pid.get(pid, -1) >= 0:
                out[by_pid[pid]] = f"worker process {pid} {_death(code)}"
        return out

    def wait(self) -> list[tuple[Trial, Outcome | Lost]]:
        done, _ = cf.wait(list(self.futures), return_when=cf.FIRST_COMPLETED)
        out: list[tuple[Trial, Outcome | Lost]] = []
        for future in done:
            if isinstance(future.exception(), BrokenProcessPool):
                continue
            out.append((self.futures.pop(future), future.result()))
        if len(out) == len(done):
            return out
        culprits = self._culprits()
        for future, trial in list(self.futures.items()):  # the whole pool is broken
            future.cancel()
            if trial.number in culprits:
                out.append((trial, Lost(self.node, culprits[trial.number])))
            else:
                why = "; ".join(culprits.values()) or "a worker process died"
                lost = Lost(self.node, f"its worker pool broke ({why})", counted=not culprits)
                out.append((trial, lost))
        self.futures.clear()
        self._restart()
        return out

    def close(self) -> None:
        """Shut the pool down without ever hanging: trials still running (an interrupted
        search: Ctrl-C, SIGTERM) are not waited for (their workers are stopped; the trials
        re-run on resume), and idle workers that do not exit within 10 s are stopped."""
        running = bool(self.futures)
        workers = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)  # (forgets its processes)
        if self.starter is not None:
            self.starter.join(timeout=30)  # a fork in progress finishes (or fails) first
        workers += [p for p in self.workers.values() if p not in workers]
        for proc in workers:
            if running:
                proc.terminate()
        for proc in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
