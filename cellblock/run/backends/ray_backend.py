"""The ``ray`` backend: trials run on Ray, on this machine or on a Ray cluster.

Without a scheduler, trials run on long-lived actors, one per trial slot
(:mod:`cellblock.run.backends.ray_actors`): the driver's cost per trial is a ``ray.wait``.
With ``scheduler`` (asha, mo-asha) they run as Ray Tune trials.

Without ``address`` a private Ray instance is started for the run (on 127.0.0.1 only,
no dashboard) and shut down afterwards; with ``address`` (``auto`` or ``HOST:PORT``) the
run connects to an existing cluster. The driver keeps the records: the actor pool is fed
by the run loop (:meth:`cellblock.run.backends.base.Backend.drive`), and for Tune a
``Searcher`` wraps the run's :class:`cellblock.run.book.TrialBook`; so every cellblock
strategy works unchanged and ``trials.jsonl`` is the same as with the other backends.
The Tune plug-ins (schedulers, searcher, error callback) are in
:mod:`cellblock.run.backends.ray_tune_adapter`.

Workers rebuild the evaluation components with :func:`cellblock.run.components.build_components`
once per worker process (actors are reused between trials), so every node of a cluster
needs the same cellblock (and Python, torch, ray) installed. No shared disk is needed: on
a cluster the driver ships a ``.npz`` dataset, the space file, a supernet checkpoint, a
table and a latency table through the object store (:mod:`cellblock.run.backends.ray_ship`);
``digits`` is embedded; torchvision datasets need ``data_dir`` on a path every node sees
(or ``download`` on each), as do ImageFolder directories. Relative paths are made absolute
by the driver.

A trial whose actor, worker process or node dies (a lost node, preemption, the OOM killer)
has lost an attempt, not failed: it is recorded (``trial_lost``, with the node and the
reason) and runs again on another actor (or as a new Tune trial), up to ``infra_retries``
times (:meth:`cellblock.run.book.TrialBook.lose`); an exception of the trial is FAILED.
With ``concurrency: auto`` as many trials are live as the alive nodes hold
(:class:`cellblock.run.backends.ray_resources.ClusterCapacity`).

With ``scheduler`` (asha, mo-asha) the epoch is the budget: trials report their
validation accuracy after each epoch (and the cheap metrics known before training) and
may be stopped early, never paused. Those trials are recorded as PRUNED with their
accuracy and ``epochs`` at the rung; PRUNED trials never reach the Pareto front. Tune's
synchronous HyperBand (which pauses trials) is not offered: with trials asked one at a
time its brackets never fill and it stopped no trial (measured).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import ray
from ray import tune

from cellblock.core.config import RunConfig
from cellblock.core.errors import CellblockWarning, ConfigError, RunError
from cellblock.core.objectives import parse_objectives
from cellblock.data import dataset_ref
from cellblock.evaluators.pipeline import Outcome
from cellblock.records import Trial
from cellblock.records.meta import INPUT_PATH_KEYS
from cellblock.records.rundir import RunDir
from cellblock.run.backends.base import Backend, Lost, register_backend
from cellblock.run.backends.ray_actors import ActorPool
from cellblock.run.backends.ray_resources import ClusterCapacity, _check_fits, parse_resources
from cellblock.run.backends.ray_ship import ship
from cellblock.run.backends.ray_tune_adapter import (
    SCHEDULERS,
    BookSearcher,
    ErrorCallback,
)
from cellblock.run.backends.ray_worker import run_trial
from cellblock.run.schedulers import rung_epochs, scheduler_objectives

CONNECT_TIMEOUT_S = 3.0
WORKER_NICENESS_VAR = "RAY_worker_niceness"  # read by the raylet (RayConfig worker_niceness)


# ---- cluster ---------------------------------------------------------------------------------
def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition("://")[2].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"address {address!r} is not auto or HOST:PORT; use e.g. --address 10.0.0.5:6379"
        )
    return host, int(port)


def resolve_address(address: str) -> str:
    """The cluster's HOST:PORT, checked reachable with a short TCP connect.

    Raises:
        ConfigError: when no cluster is found (``auto``) or nothing answers there.
    """
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address_or_die

        try:
            address = canonicalize_bootstrap_address_or_die("auto")
        except Exception:
            raise ConfigError(
                "--address auto found no running Ray cluster on this machine; "
                "start one with 'ray start --head' or give HOST:PORT"
            ) from None
    host, port = _split_address(address)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at {host}:{port} ({exc.strerror or exc}); "
            "start it with 'ray start --head' or fix --address"
        ) from None
    return address


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Keep Ray on 127.0.0.1: on Linux Ray swaps 127.0.0.1 for the machine's address (and
    then listens on every interface); as a single-node setting it keeps to loopback."""
    from ray._private import ray_constants

    var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(var)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[var] = "0"  # for the Ray processes started meanwhile
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved[0]
        if saved[1] is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = saved[1]


def _is_loopback(address: str) -> bool:
    host = _split_address(address)[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _connect(address: str | None) -> bool:
    """Connect this process to Ray; return whether it must be shut down afterwards."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        import torch

        # Ray starts its workers at niceness 15: on a shared machine trials would then get
        # only the CPU left over by every other process. Trials are the run's main work.
        os.environ.setdefault(WORKER_NICENESS_VAR, "0")
        with _loopback_only():
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                num_gpus=torch.cuda.device_count(),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                **common,
            )
        return True
    try:
        with _loopback_only() if _is_loopback(address) else nullcontext():
            ray.init(address=address, **common)
    except Exception as exc:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}"
        ) from None
    return True


def _alive_nodes() -> list[dict[str, float]]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _absolute_paths(cfg: RunConfig) -> RunConfig:
    """The config with local file paths made absolute (Tune workers run in other directories)."""
    out: dict[str, Any] = {"dataset": dataset_ref(cfg.dataset)}
    file, sep, fn = str(cfg.space).rpartition(":")
    if sep and file.endswith(".py") and Path(file).exists():
        out["space"] = f"{Path(file).resolve()}:{fn}"
    for key in INPUT_PATH_KEYS:
        if getattr(cfg, key) and key != "dataset":
            out[key] = str(Path(getattr(cfg, key)).resolve())
    return cfg.replace(**out)


@register_backend("ray")
class RayBackend(Backend):
    """Trials as Ray Tune trials (see the module docs)."""

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        from cellblock.evaluators import EVALUATORS

        want = parse_resources(cfg.resources_per_trial)
        SCHEDULERS.get(cfg.scheduler)
        if cfg.scheduler != "none":
            if not hasattr(EVALUATORS.get(cfg.evaluator), "train_config"):
                raise ConfigError(
                    f"--scheduler {cfg.scheduler} needs an evaluator that trains per "
                    f"epoch (train), not {cfg.evaluator!r}; use --scheduler none"
                )
            if not rung_epochs(cfg.grace_epochs, cfg.reduction_factor, cfg.epochs):
                raise ConfigError(
                    f"--scheduler {cfg.scheduler} has no rung below epochs={cfg.epochs} "
                    f"with grace_epochs={cfg.grace_epochs}; "
                    "lower --grace-epochs or raise --epochs"
                )
        if cfg.address is None:
            import torch

            here = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
            _check_fits([here], want, "this machine (local Ray instance)")
            return
        address = resolve_address(cfg.address)
        if ray.is_initialized():
            nodes = _alive_nodes()
        else:
            _connect(address)
            try:
                nodes = _alive_nodes()
            finally:
                ray.shutdown()
        _check_fits(nodes, want, f"the Ray cluster at {address}")

    def __init__(self, prepared: Any) -> None:
        super().__init__(prepared)
        self.resources = parse_resources(self.config.resources_per_trial)
        self.kind = SCHEDULERS.get(self.config.scheduler)
        self.pool: ActorPool | None = None
        self.cluster: ClusterCapacity | None = None
        self.nodes: dict[int, str | None] = {}

    @property
    def capacity(self) -> int:
        concurrency = self.config.concurrency
        if isinstance(concurrency, int):
            return concurrency
        return max(1, self.cluster()) if self.cluster is not None else 1

    def submit(self, trial: Trial) -> None:
        if self.pool is None:
            raise RuntimeError("the ray backend submits trials only inside drive()")
        self.pool.submit(trial)

    def wait(self) -> list[tuple[Trial, Outcome | Lost]]:
        if self.pool is None:
            raise RuntimeError("the ray backend waits for trials only inside drive()")
        out: list[tuple[Trial, Outcome | Lost]] = []
        for trial, outcome, node in self.pool.wait():
            self.nodes[trial.number] = node
            out.append((trial, outcome))
        return out

    def node_of(self, trial: Trial) -> str | None:
        return self.nodes.pop(trial.number, None)

    def drive(self, book: Any, after: Callable[[int], None]) -> None:
        """Connect (or start a private Ray), ship the driver's files to a cluster, then run
        the trials: on actors of our own (no scheduler), or through Ray Tune (asha, mo-asha)."""
        cfg = self.config
        address = resolve_address(cfg.address) if cfg.address else None
        from cellblock.core.signals import start_reaper, stop_reaper

        started = _connect(address)
        # A private instance's processes must not outlive a killed driver (Ray's agents do).
        reaper = start_reaper() if started and address is None else None
        self.cluster = ClusterCapacity(self.resources, ray.nodes, book.log.append)
        settings = {"config": _absolute_paths(cfg), "per_epoch": cfg.scheduler != "none"}
        try:
            if address is not None:  # a cluster: no node needs the driver's files (ray_ship)
                settings["shipped"], notes = ship(settings["config"], ray.put)
                for note in notes:
                    warnings.warn(note, CellblockWarning, stacklevel=2)
            if settings["per_epoch"]:
                self._drive_tune(book, after, settings)
            else:
                cluster = self.cluster
                self.pool = ActorPool(
                    settings,
                    self.resources,
                    lambda: self.capacity,
                    self.seed,
                    poll=cluster.poll,
                    alive=lambda: set(cluster.alive) if cluster.alive is not None else None,
                )
                super().drive(book, after)
        finally:
            if self.pool is not None:
                self.pool.close()
                self.pool = None
            if started:
                ray.shutdown()
            stop_reaper(reaper)

    def _drive_tune(
        self, book: Any, after: Callable[[int], None], settings: dict[str, Any]
    ) -> None:
        """Trials as Ray Tune trials, so that Tune's schedulers can stop them early."""
        cfg = self.config
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # Tune's state lives in the run directory (this driver holds its lock), so a killed
        # driver's leftovers are removed by the next run instead of piling up in /tmp.
        storage = RunDir(self.prepared.run_dir).tune_scratch.resolve()
        shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(parents=True)
        auto = cfg.concurrency == "auto"
        cluster = self.cluster
        assert cluster is not None  # set by drive()
        searcher = BookSearcher(book, after, self.seed, cluster if auto else None)
        objectives = scheduler_objectives(parse_objectives(cfg.objectives))
        scheduler = self.kind.make(cfg, objectives)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, settings=settings),
            tune.PlacementGroupFactory([dict(self.resources)]),
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=-1,
                max_concurrent_trials=None if auto else cfg.concurrency,
                reuse_actors=True,
                trial_dirname_creator=lambda t: t.trial_id,
            ),
            run_config=tune.RunConfig(
                name="cellblock",
                storage_path=str(storage),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[ErrorCallback(searcher, cluster.poll)],
            ),
        )
        quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # no result files are written: Tune's own results are unused
        try:
            tuner.fit()
        finally:
            quiet.setLevel(level)
            for trial_id in list(searcher.errored):  # an error whose callback never came
                searcher.fail(trial_id, "Ray trial failed (no error text was reported)")
            shutil.rmtree(storage, ignore_errors=True)
        if book.done + len(book.held) < book.budget and not book.exhausted:
            raise RunError(
                f"Ray Tune stopped after {book.done} of {book.budget} trials; "
                "run the same command again to continue"
            )
