"""Where trials run: in-process, in a local process pool, or on Ray.

A backend takes trials (``submit``) and hands back finished ones with their outcome
(``wait``); it never records or tells: the run loop does, so every backend gives the
same records.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from cellblock.core.errors import ConfigError
from cellblock.core.registry import Registry
from cellblock.evaluators.pipeline import Outcome, trial_seed
from cellblock.records import FAILED, Trial

#: Backends by name; Ray lives in an optional module imported on its first look-up.
BACKENDS: Registry[type[Backend]] = Registry(
    "backend", lazy={"ray": ("cellblock.run.backends.ray_backend", "cellblock[ray]")})


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
        :meth:`submit` and :meth:`wait`. A backend with its own scheduler (Ray Tune)
        overrides this, using the same ``book`` (``next_trial``, ``start``, ``finish``)
        so that the records are the same.

        Args:
            book: The run's :class:`cellblock.run.runner.TrialBook`.
            after: Called with the number of trials that just finished.
        """
        while book.done < book.budget:
            while self.capacity > len(book.in_flight) and book.wants_more():
                trial = book.next_trial()
                if trial is None:
                    break
                book.start(trial)
                self.submit(trial)
            if not book.in_flight:
                book.exhausted = True
                return
            finished = self.wait()
            for trial, outcome in finished:
                book.finish(trial, outcome)
            after(len(finished))

    @abstractmethod
    def submit(self, trial: Trial) -> None:
        """Start evaluating ``trial``."""

    @abstractmethod
    def wait(self) -> list[tuple[Trial, Outcome]]:
        """Block until at least one submitted trial finished; return the finished ones."""

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


def _init_worker(cfg: Mapping[str, Any], parent_pid: int | None = None, counter: Any = None) -> None:
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
    set_threads(cfg)
    _WORKER["pipeline"] = build_components(cfg).pipeline


def _evaluate_in_worker(arch: Mapping[str, Any], seed: int) -> Outcome:
    return _WORKER["pipeline"](arch, seed)


@register_backend("process")
class ProcessBackend(Backend):
    """A pool of ``concurrency`` worker processes (spawned; each loads the data once).

    With GPUs (``device`` auto, cuda or cuda:N), worker ``i`` runs its trials on GPU
    ``i mod len(gpus)`` (:func:`cellblock.core.devices.worker_device`).

    When a worker dies (killed, out of memory), the pool breaks and every trial in it
    is lost. Those trials are then re-run one at a time: one that kills its worker
    while running alone is FAILED with the error; the others complete as usual.
    """

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        _no_scheduler(cfg, "process")

    def __init__(self, prepared: Any) -> None:
        super().__init__(prepared)
        self.futures: dict[cf.Future, Trial] = {}
        self.suspects: list[Trial] = []
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        return cf.ProcessPoolExecutor(
            max_workers=self.config["concurrency"],
            mp_context=context,
            initializer=_init_worker,
            initargs=(dict(self.config), os.getpid(), context.Value("i", 0)),
        )

    @property
    def capacity(self) -> int:
        return 0 if self.suspects else self.config["concurrency"]

    def submit(self, trial: Trial) -> None:
        args = (_evaluate_in_worker, trial.arch, trial_seed(self.seed, trial.arch_id))
        try:
            future = self.pool.submit(*args)
        except BrokenProcessPool:  # a worker died since the last wait: its trials are suspects
            self._restart()
            future = self.pool.submit(*args)
        self.futures[future] = trial

    def _restart(self) -> None:
        """Replace a broken pool; the trials that were in it will be re-run one at a time."""
        self.suspects.extend(self.futures.values())
        self.futures.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    def wait(self) -> list[tuple[Trial, Outcome]]:
        if not self.futures and self.suspects:
            self.submit(self.suspects.pop(0))  # re-run one suspect alone
            solo = True
        else:
            solo = len(self.futures) == 1 and not self.suspects
        done, _ = cf.wait(list(self.futures), return_when=cf.FIRST_COMPLETED)
        out = []
        broken = False
        for future in done:
            trial = self.futures.pop(future)
            try:
                out.append((trial, future.result()))
            except BrokenProcessPool as exc:
                broken = True
                if solo:
                    out.append((trial, Outcome(FAILED, {}, f"worker process died while evaluating it: {exc}")))
                else:
                    self.suspects.append(trial)
        if broken:
            self._restart()  # the rest of the broken pool become suspects too
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
