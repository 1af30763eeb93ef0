"""Where trials run: in-process, in a local process pool, or on Ray.

A backend takes trials (``submit``) and hands back finished ones with their outcome
(``wait``); it never records or tells: the run loop does, so every backend gives the
same records.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from cellblock.core.errors import ConfigError
from cellblock.core.registry import Registry
from cellblock.evaluators.pipeline import Outcome, trial_seed
from cellblock.records import Trial

#: Backends by name; Ray lives in an optional module imported on its first look-up.
BACKENDS: Registry[type[Backend]] = Registry(
    "backend", lazy={"ray": ("cellblock.run.backends.ray_backend", "cellblock[ray]")})


@dataclass(frozen=True)
class Lost:
    """An attempt lost to the infrastructure (its worker process, actor or node died): not
    an outcome of the architecture; the run loop re-runs the trial (``TrialBook.lose``).

    Attributes:
        node: Where the attempt ran (None when unknown).
        reason: Why it was lost, one line.
        counted: Whether it counts against the retry cap (False for a bystander).
    """

    node: str | None
    reason: str
    counted: bool = True


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator registering a backend under ``name``."""
    return BACKENDS.register(name)  # type: ignore[return-value]


def set_threads(cfg: Mapping[str, Any]) -> None:
    """Apply the run's fixed thread count, if any (see :mod:`cellblock.core.threads`; the
    pipeline sets each trial's own count from its size)."""
    from cellblock.core.threads import apply_threads, threads_for

    apply_threads(threads_for(cfg))


class Backend(ABC):
    """Runs trials' evaluations.

    Args:
        prepared: The validated run (config, pipeline...).
    """

    def __init__(self, prepared: Any) -> None:
        self.prepared = prepared
        self.config = prepared.config
        self.seed = prepared.config["seed"]

    @classmethod  # noqa: B027  (optional hook, a no-op by default)
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        """Validate backend options before anything is written (raise ConfigError)."""

    @property
    def capacity(self) -> int:
        """Trials that may be in flight at once."""
        return 1

    def drive(self, book: Any, after: Callable[[int], None]) -> None:
        """Run trials until the book's budget is spent or the space is exhausted.

        The default loop keeps up to :attr:`capacity` trials in flight through
        :meth:`submit` and :meth:`wait`; an attempt that :meth:`wait` reports :class:`Lost`
        goes back to the book (``lose``: re-run first, or held past the retry cap). A
        backend with its own scheduler (Ray Tune) overrides this, using the same ``book``
        (``next_trial``, ``start``, ``finish``, ``lose``) so that the records are the same.

        Args:
            book: The run's :class:`cellblock.run.runner.TrialBook`.
            after: Called with the number of trials that just finished.
        """
        while book.done + len(book.held) < book.budget:
            while self.capacity > len(book.in_flight) and book.wants_more():
                trial = book.next_trial()
                if trial is None:
                    break
                book.start(trial)
                self.submit(trial)
            if not book.in_flight:
                book.exhausted = not book.rerun
                return
            finished = 0
            for trial, outcome in self.wait():
                if isinstance(outcome, Lost):
                    book.lose(trial, outcome.node, outcome.reason, outcome.counted)
                else:
                    book.finish(trial, outcome, self.node_of(trial))
                    finished += 1
            after(finished)

    def node_of(self, trial: Trial) -> str | None:
        """Where ``trial``'s finished attempt ran (None: this machine)."""
        return None

    @abstractmethod
    def submit(self, trial: Trial) -> None:
        """Start evaluating ``trial``."""

    @abstractmethod
    def wait(self) -> list[tuple[Trial, Outcome | Lost]]:
        """Block until at least one submitted trial finished or was lost; return those."""

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release workers."""


@register_backend("local")
class LocalBackend(Backend):
    """Evaluates in the search process, one trial at a time."""

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        _no_scheduler(cfg, "local")
        if cfg["concurrency"] != 1:
            raise ConfigError(
                "the local backend runs one trial at a time; use --backend process or ray "
                "for --concurrency > 1"
            )

    def __init__(self, prepared: Any) -> None:
        super().__init__(prepared)
        set_threads(self.config)
        self.queue: list[Trial] = []

    def submit(self, trial: Trial) -> None:
        self.queue.append(trial)

    def wait(self) -> list[tuple[Trial, Outcome]]:
        trial = self.queue.pop(0)
        return [(trial, self.prepared.pipeline(trial.arch, trial_seed(self.seed, trial.arch_id)))]


def _no_scheduler(cfg: Mapping[str, Any], backend: str) -> None:
    if cfg.get("scheduler", "none") not in (None, "none"):
        raise ConfigError(
            f"--scheduler {cfg['scheduler']} needs --backend ray (Ray Tune's schedulers); "
            f"the {backend} backend trains every trial fully"
        )


# ---- process pool ---------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(cfg: Mapping[str, Any], parent_pid: int | None = None, counter: Any = None,
                 running: Any = None) -> None:
    from cellblock.core.signals import die_with_parent
    from cellblock.run.components import build_components

    if parent_pid is not None:
        die_with_parent(parent_pid)
    if counter is not None:  # worker i runs on GPU i mod the number of GPUs
        from cellblock.core.devices import worker_device

        with counter.get_lock():
            index = counter.value
            counter.value += 1
        cfg = {**cfg, "device": worker_device(cfg["device"], index)}
        if cfg["device"].startswith("cuda:"):
            import torch

            torch.cuda.set_device(torch.device(cfg["device"]))
        if running is not None:
            _WORKER["slot"] = 2 * (index % (len(running) // 2))
    _WORKER["running"] = running
    set_threads(cfg)
    _WORKER["pipeline"] = build_components(cfg).pipeline


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
    """A pool of ``concurrency`` worker processes (spawned; each loads the data once).

    With GPUs (``device`` auto, cuda or cuda:N), worker ``i`` runs its trials on GPU
    ``i mod len(gpus)`` (:func:`cellblock.core.devices.worker_device`).

    An exception of a trial is its outcome (FAILED, from the pipeline). A worker that dies
    (a signal: the OOM killer, a kill; or an exit) breaks the pool and loses every trial in
    it: the trial that ran in the dead worker loses an attempt (:class:`Lost`, counted
    against ``infra_retries``), the others are bystanders (re-run, not counted), and a
    new pool takes over.
    """

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        _no_scheduler(cfg, "process")

    def __init__(self, prepared: Any) -> None:
        super().__init__(prepared)
        self.futures: dict[cf.Future, Trial] = {}
        self.node = socket.gethostname()
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        n = self.config["concurrency"]
        #: (pid, trial number) of what each worker runs now (number -1: idle)
        self.running = context.Array("q", [0, -1] * n, lock=False)
        self.workers: dict[int, Any] = {}
        return cf.ProcessPoolExecutor(
            max_workers=n,
            mp_context=context,
            initializer=_init_worker,
            initargs=(dict(self.config), os.getpid(), context.Value("i", 0), self.running),
        )

    @property
    def capacity(self) -> int:
        return self.config["concurrency"]

    def submit(self, trial: Trial) -> None:
        seed = trial_seed(self.seed, trial.arch_id)
        try:
            future = self.pool.submit(_evaluate_in_worker, trial.arch, seed, trial.number)
        except BrokenProcessPool:  # a worker died since the last wait: its trials are lost
            self._restart()
            future = self.pool.submit(_evaluate_in_worker, trial.arch, seed, trial.number)
        self.futures[future] = trial
        self.workers.update(getattr(self.pool, "_processes", None) or {})

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
        workers = list((getattr(self.pool, "_processes", None) or {}).values())
        running = bool(self.futures)
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers:
            if running:
                proc.terminate()
        for proc in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
